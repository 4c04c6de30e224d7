"""Dependability numbers of a run: failures, MTTF, MTTR and availability as
the ground truth and each observer saw them, and the job's own downtime.

Pure: events in, numbers out (summary.json's "dependability", report.md's
table, bench/availability.py). The definitions, as README's "Dependability
numbers" states them:

- Each observer's words are up or down (UP, DOWN below); a failure is a
  change from an up word to a down one, and each is followed by a repair
  (the next up word) unless the run ends first.
- An observer is timed from its first up word (what it says while the lab
  boots is no outage) to the end of the service: the truth's last word when
  that is a clean stop (the worker's own end, when the job is done), else the
  run's end. A clean stop (STOPPED, the supervisor's `done`) that is an
  observer's last word ends its time there; one the worker comes back from
  (a `stop` fault, then `start`) was an outage like any other.
- MTTF = up time / failures, MTTR = down time / failures, availability =
  up / (up + down) = MTTF / (MTTF + MTTR); no failure: no MTTF or MTTR, and
  availability 1.
- The job's downtime: the spans in which no item was acknowledged while
  items remained, longer than JOB_STALL_MIN_S or 3 inter-item times at the
  lab's rate, whichever is more. Each span runs from the first supervisor
  event that shows the count at a value to the last that shows it there (a
  `progress` every half second, and a `crash`, `state` or `connected` when
  they happen), so it errs short by up to half a second.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labctl import runlog, states

# What each observer's words mean for the service. A word that is not down
# is up: a gray fault (DEGRADED, ONEWAY, SLOW) or a clock fault is service at
# reduced quality, not an outage. UNKNOWN (nothing seen yet) is neither: it
# leaves the clock where it was.
DOWN: dict[str, frozenset[str]] = {
    states.TRUTH: frozenset({states.CRASHED, states.OOM, states.RESTARTING, states.PAUSED, states.SIGSTOPPED,
                             states.PARTITIONED, states.STOPPED}),
    states.MONITOR: frozenset({states.CRASHED, states.PAUSED, states.PARTITIONED, states.STOPPED}),
    states.HEARTBEAT_ONLY: frozenset({states.DEAD}),
    states.SUPERVISOR: frozenset({states.CONNECTING, states.RECONNECTING, states.TIMED_OUT, states.DONE}),
}
UP: dict[str, frozenset[str]] = {who: frozenset(states.SAYS[who]) - DOWN[who] - {states.UNKNOWN} for who in DOWN}
# A clean end: as an observer's last word, the end of its time, not an outage.
ENDS = frozenset({states.STOPPED, states.DONE})
OBSERVERS = (states.TRUTH, states.MONITOR, states.HEARTBEAT_ONLY, states.SUPERVISOR)
# The job's stalls shorter than this are not downtime: the supervisor's
# progress events come every half second, so a shorter one cannot be told.
JOB_STALL_MIN_S = 0.5
JOB_STALL_ITEMS = 3  # ...nor one shorter than this many inter-item times at the lab's rate


@dataclass
class Numbers:
    failures: int = 0
    up_s: float = 0.0
    down_s: float = 0.0

    @property
    def mttf_s(self) -> float | None:
        return self.up_s / self.failures if self.failures else None

    @property
    def mttr_s(self) -> float | None:
        return self.down_s / self.failures if self.failures else None

    @property
    def availability(self) -> float | None:
        total = self.up_s + self.down_s
        return self.up_s / total if total > 0 else None

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {"failures": self.failures, "up_s": r(self.up_s), "down_s": r(self.down_s), "mttf_s": r(self.mttf_s),
                "mttr_s": r(self.mttr_s), "availability": None if self.availability is None
                else round(self.availability, 4)}


def numbers(seen: runlog.Seen, up: frozenset[str], down: frozenset[str], end: float) -> Numbers:
    """Failures and up and down time of one observer's (ts, word) changes, up to `end`."""
    n = Numbers()
    # The monitor repeats its verdict every tick: only changes count.
    seen = [(t, s) for i, (t, s) in enumerate(seen) if t <= end and (i == 0 or s != seen[i - 1][1])]
    if seen and seen[-1][1] in ENDS:
        end = seen.pop()[0]
    state: str | None = None  # "up", "down", or None before the first up word
    since = 0.0  # the time the clock last moved to
    for ts, word in seen:
        now = "up" if word in up else "down" if word in down else None
        if now is None or (state is None and now != "up"):
            continue
        if state is not None:
            _add(n, state, ts - since)
        if state == "up" and now == "down":
            n.failures += 1
        state, since = now, ts
    if state is not None and end > since:
        _add(n, state, end - since)
    return n


def _add(n: Numbers, state: str, dt: float) -> None:
    if state == "up":
        n.up_s += dt
    else:
        n.down_s += dt


def service_end(truth: runlog.Seen, run_end: float) -> float:
    """The worker's own clean end, when the truth's last word is one; else the run's end."""
    return truth[-1][0] if truth and truth[-1][1] == states.STOPPED else run_end


def job_downtime(events: list[runlog.Event], rate: float) -> dict[str, Any] | None:
    """The job's stalls: no item acknowledged for longer than the threshold while items remained."""
    total = next((e.get("total") for e in events if e["source"] == "supervisor" and e["kind"] == "start"), None)
    samples = [(float(e["ts"]), int(e["acked"])) for e in events
               if e["source"] == "supervisor" and isinstance(e.get("acked"), int)]
    if total is None or not samples:
        return None
    threshold = max(JOB_STALL_MIN_S, JOB_STALL_ITEMS / rate if rate > 0 else 0.0)
    spans: list[float] = []
    since, acked = samples[0]
    last = since  # the last event that showed the count at `acked`
    for ts, a in [*samples[1:], (float("inf"), total)]:
        if a > acked:  # the inf sentinel closes a stall that lasted to the end: the job never finished
            if acked < total and last - since > threshold:
                spans.append(last - since)
            since, acked = ts, a
        last = ts
    return {"downtime_s": round(sum(spans), 3), "stalls": len(spans),
            "longest_s": round(max(spans), 3) if spans else None, "threshold_s": round(threshold, 3)}


def of_run(events: list[runlog.Event], rate: float, run_end: float) -> dict[str, Any]:
    """A worker lab's numbers: summary.json's "dependability"."""
    truth = runlog.truth_timeline(events)
    end = service_end(truth, run_end)
    observers = {who: numbers(truth if who == states.TRUTH else runlog.observed(events, who),
                              UP[who], DOWN[who], end).to_json() for who in OBSERVERS}
    return {"observers": observers, "job": job_downtime(events, rate), "end": end}


def of_holders(events: list[runlog.Event], holders: tuple[str, ...], run_end: float) -> dict[str, Any]:
    """A lease lab's numbers: the ground truth of each holder (it has no monitor, supervisor or job)."""
    observers = {}
    for h in holders:
        truth = runlog.truth_timeline(events, service=h)
        observers[f"truth {h}"] = numbers(truth, UP[states.TRUTH], DOWN[states.TRUTH],
                                          service_end(truth, run_end)).to_json()
    return {"observers": observers, "job": None, "end": run_end}


def fmt(x: float | None, unit: str = " s") -> str:
    return "-" if x is None else f"{x:.2f}{unit}"


def report_lines(dep: dict[str, Any]) -> list[str]:
    """report.md's "## Dependability" section."""
    lines = ["", "## Dependability", "",
             "A failure is a change from an up word to a down one (labctl/dependability.py has the mapping); "
             "MTTF = up time / failures, MTTR = down time / failures, availability = MTTF / (MTTF + MTTR).", "",
             "| observer | failures | up | down | MTTF | MTTR | availability |", "|---|---|---|---|---|---|---|"]
    for who, n in dep.get("observers", {}).items():
        a = n.get("availability")
        lines.append(f"| {who} | {n['failures']} | {fmt(n['up_s'])} | {fmt(n['down_s'])} | {fmt(n['mttf_s'])} | "
                     f"{fmt(n['mttr_s'])} | {'-' if a is None else f'{a:.3f}'} |")
    job = dep.get("job")
    if job:
        lines += ["", f"The job's own downtime: {job['downtime_s']:.2f} s in {job['stalls']} stall(s) "
                      f"(longest {fmt(job['longest_s'])}): no item acknowledged for more than "
                      f"{job['threshold_s']:.2f} s while items remained."]
    return lines
