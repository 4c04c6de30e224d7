"""The checker: judges a run from its files alone, like a test.

A run directory holds `scenario.yaml`, `events.jsonl`, `summary.json` and
`lab/` (the volume: `input.dat`, `out/`). The checker verifies that every
valid item appears exactly once with the right square, that every negative
reading was reported and every malformed line rejected, that the poison item
was dead-lettered and no stale lock was left, and that each observer's
conclusions match the scenario's expectations and the ground truth, with the
detection latency of every fault. It writes its verdict to `verdict.json`
and its findings to `report.md`; `summary.json` stays as the lab wrote it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labctl import oracle, report, rundir, runlog, scenario, states
from labctl.errors import ExitCode, LabError
from labctl.runlog import Event, Seen
from labctl.scenario import Job, LabParams, Scenario

# Which monitor verdicts agree with which ground truth.
AGREES = {
    states.RUNNING: {states.HEALTHY, states.RESTARTED},
    states.CRASHED: {states.CRASHED, states.RESTARTED},
    states.OOM: {states.CRASHED, states.RESTARTED},
    states.PAUSED: {states.PAUSED},
    states.SIGSTOPPED: {states.PAUSED},
    states.PARTITIONED: {states.PARTITIONED},
    states.STOPPED: {states.STOPPED},
    # Gray: alive, so anything but a death or a silence is right; SLOW is the
    # verdict that sees it. One way cut to the monitor is a partition to it.
    states.DEGRADED: {states.HEALTHY, states.SLOW, states.RESTARTED},
    states.ONEWAY: {states.HEALTHY, states.SLOW, states.PARTITIONED},
    # Its clock is off, nothing else: a monitor that times what it receives sees it alive.
    states.SKEWED: {states.HEALTHY, states.RESTARTED},
}
# Each truth the monitor should detect, and the verdict that detects it.
DETECTABLE = {states.CRASHED: states.CRASHED, states.OOM: states.CRASHED, states.PAUSED: states.PAUSED,
              states.SIGSTOPPED: states.PAUSED, states.PARTITIONED: states.PARTITIONED, states.STOPPED: states.STOPPED}
# Truths only silence tells, so only the timeout can detect them.
SILENT = (states.PAUSED, states.SIGSTOPPED, states.PARTITIONED)
# The supervisor's states that show it noticed something wrong.
NOTICED = {states.TIMED_OUT, states.RECONNECTING, states.ISOLATING}
SLACK_S = 0.5  # log and scheduling noise between containers on a loaded 2-core machine
GRAY = (states.DEGRADED, states.ONEWAY)
SLOW_BEATS = 25  # the monitor's RECENT_BEATS: the beats SLOW is judged over
SLOW_WINDOW_S = 5.0  # the monitor's RECENT_MS: and at least this long a window of them
SLOW_HOLD_S = 1.0  # the monitor's SLOW_HOLD_S
# After a fault by hand ends, what it brought may last this long past the timeout (a restart, a reconnect).
HAND_SETTLE_S = 3.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Latency:
    at: float
    truth: str
    want: str
    monitor_s: float | None
    heartbeat_only_s: float | None
    supervisor_s: float | None
    lasted_s: float = 0.0


@dataclass
class Verdict:
    run_dir: Path
    scenario: str
    checks: list[Check] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    error: str | None = None
    # Silent data corruption (scenario-bitflip): injected, detected, undetected, coverage; None without any.
    corruption: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "scenario": self.scenario, "error": self.error,
                "checks": [asdict(c) for c in self.checks], "latencies": [asdict(lat) for lat in self.latencies],
                **({"corruption": self.corruption} if self.corruption else {})}


@dataclass
class Run:
    """What the judging reads of one run, read once."""
    sc: Scenario
    events: list[Event]
    lab_dir: Path
    end: float
    # When the lab started: what people read is seconds since then, never a Unix time.
    start: float = 0.0
    # Run live (labctl/live.py): the job was stopped, not finished; judged up to its checkpoint.
    live: bool = False

    @property
    def lab(self) -> LabParams:
        return self.sc.lab

    @property
    def interval(self) -> float:
        return self.lab.interval_ms / 1000

    @property
    def timeout(self) -> float:
        return self.lab.timeout_ms / 1000

    @property
    def supervisor_timeout(self) -> float:
        return (self.lab.supervisor_timeout_ms or self.lab.timeout_ms) / 1000

    def seen(self, who: str) -> Seen:
        return runlog.observed(self.events, who)


# ----------------------------------------------------------------------- judging


def judge(sc: Scenario, events: list[Event], lab_dir: Path, run_end: float,
          run_start: float | None = None, live: bool = False) -> tuple[list[Check], list[Latency]]:
    if sc.lab.kind == "lease":
        from labctl import lease  # it builds on this module's Check

        return lease.judge(sc, events, run_end, run_start), []
    start = run_start if run_start is not None else (float(events[0]["ts"]) if events else 0.0)
    run = Run(sc, events, lab_dir, run_end, start, live)
    checks = judge_windows(run) + judge_hand_faults(run) + judge_sees(run) + judge_never(run)
    latencies = detection_latencies(run)
    if sc.lab.worker_mode == "robust" and sc.lab.program == "supervisor":
        checks += judge_latencies(run, latencies)
        checks.append(agreement(run.seen(states.MONITOR), run.seen(states.TRUTH), run.interval, run.timeout,
                                run.lab.heartbeat_ms / 1000, t0=run.start))
    checks += judge_job(run)
    return checks, latencies


def judge_windows(run: Run) -> list[Check]:
    """The scenario's windows: each observer's conclusion while the fault holds."""
    checks = []
    windows = runlog.fault_windows(run.events, run.end)
    for w in run.sc.expect.windows:
        step = run.sc.timeline[w.step - 1]
        if w.step not in windows:
            checks.append(Check(f"step {w.step} ({step.do})", False, "the fault was never applied"))
            continue
        within = (w.within_ms or run.lab.timeout_ms + SLACK_S * 1000) / 1000
        for who in states.OBSERVERS:
            want = getattr(w, who)
            if want:
                checks.append(_window_check(run, f"step {w.step} {step.do}: {who} says {want}", who, want,
                                            windows[w.step], within))
        for who, allowed in w.holds.items():
            checks.append(_holds_check(run, f"step {w.step} {step.do}: {who} says only {', '.join(allowed)}",
                                       who, allowed, windows[w.step], within))
        for who, (least, most) in w.flaps.items():
            checks.append(_flaps_check(run, who, least, most, windows[w.step], f"step {w.step} {step.do}"))
        if w.p99_ms_min is not None:
            checks.append(_p99_check(run, f"step {w.step} {step.do}: supervisor's p99 round trip reaches "
                                          f"{w.p99_ms_min:g} ms", w.p99_ms_min, windows[w.step]))
    return checks


def _holds_check(run: Run, name: str, who: str, allowed: list[str], window: tuple[float, float],
                 within: float) -> Check:
    """Nothing but `allowed` from `within` after the start to the end of the
    window (what was said before then stands until the next word)."""
    start, end = window
    seen = run.seen(who)
    if who == states.TRUTH:
        # The window runs from the fault's intent to its revert; the truth
        # turns at the fault's `applied` record, a moment after the intent,
        # and back at the revert: judged strictly between its own turns.
        said = [(t, v) for t, v in seen if start < t < end]
    else:
        said = [(t, v) for t, v in seen if start + within < t <= end]
        at = runlog.state_at(seen, start + within)
        if at is not None:
            said.insert(0, (start + within, at))
    bad = [(t, v) for t, v in said if v not in allowed]
    if not said:
        return Check(name, False, "it said nothing in the window")
    if bad:
        t, v = bad[0]
        return Check(name, False, f"said {v} {t - start:.2f} s into the window ({len(bad)} time(s) in all)")
    return Check(name, True, f"{len(said)} word(s), all {' or '.join(sorted({v for _, v in said}))}")


def _flaps_check(run: Run, who: str, least: int | None, most: int | None, window: tuple[float, float],
                 step: str) -> Check:
    start, end = window
    seen = run.seen(who)
    prev = runlog.state_at(seen, start)
    turns = 0
    for t, v in seen:
        if start < t <= end:
            turns += v == states.DEAD and prev != states.DEAD
            prev = v
    want = " and ".join(w for w in (f"at least {least}" if least is not None else "",
                                    f"at most {most}" if most is not None else "") if w)
    ok = (least is None or turns >= least) and (most is None or turns <= most)
    return Check(f"{step}: {who} turns DEAD {want} time(s)", ok, f"{turns} time(s)")


def _p99_check(run: Run, name: str, least_ms: float, window: tuple[float, float]) -> Check:
    start, end = window
    p99 = [p for t, _, p in runlog.latencies(run.events) if start <= t <= end + 1.0]
    if not p99:
        return Check(name, False, "no latency reported in the window")
    top = max(p99)
    return Check(name, top >= least_ms, f"highest p99 {top:.1f} ms in the window")


def _window_check(run: Run, name: str, who: str, want: str, window: tuple[float, float], within: float) -> Check:
    start, end = window
    seen = run.seen(who)
    in_win = [(t, v) for t, v in seen if start <= t <= end]
    if who == states.TRUTH:
        before = runlog.state_at(seen, start + 0.001)
        in_win = ([(start, before)] if before else []) + in_win
    hit = next((t for t, v in in_win if v == want), None)
    if hit is None:
        got = sorted({v for _, v in in_win}) or ["nothing"]
        return Check(name, False, f"never in the window; saw {', '.join(got)}")
    if who in (states.MONITOR, states.HEARTBEAT_ONLY, states.SENDER_CLOCK) and hit - start > within:
        return Check(name, False, f"after {hit - start:.2f} s, later than {within:.2f} s")
    return Check(name, True, f"after {max(hit - start, 0):.2f} s")


def judge_sees(run: Run) -> list[Check]:
    checks = []
    for who, wants in run.sc.expect.sees.items():
        values = {v for _, v in run.seen(who)}
        for want in wants:
            checks.append(Check(f"{who} says {want} at some point", want in values,
                                "seen" if want in values else f"never; saw {', '.join(sorted(values)) or 'nothing'}"))
    return checks


def judge_never(run: Run) -> list[Check]:
    """What the scenario says must never be said, outside the faults given by
    hand (a live lab's): those bring what the scenario did not plan for."""
    from labctl import live

    by_hand = [(h.start, h.end + run.timeout + HAND_SETTLE_S) for h in live.hand_faults(run.events, run.end)]
    checks = []
    for who, bad in run.sc.expect.never.items():
        values = [(t, v) for t, v in run.seen(who) if not any(a <= t <= b for a, b in by_hand)]
        for b in bad:
            hits = [t for t, v in values if v == b]
            checks.append(Check(f"{who} never says {b}" + (" (outside faults by hand)" if by_hand else ""),
                                not hits, "never" if not hits else f"{len(hits)} time(s)"))
    return checks


def first_at_or_after(seen: Seen, t: float, want: set[str], until: float) -> float | None:
    return next((ts for ts, v in seen if t <= ts <= until and v in want), None)


def detection_latencies(run: Run) -> list[Latency]:
    """From each change of the truth the monitor should see to each observer's first matching conclusion."""
    truth = run.seen(states.TRUTH)
    mon, hb, sup = (run.seen(who) for who in (states.MONITOR, states.HEARTBEAT_ONLY, states.SUPERVISOR))
    out = []
    for i, (t, state) in enumerate(truth):
        if state not in DETECTABLE:
            continue
        until = truth[i + 1][0] if i + 1 < len(truth) else run.end
        want = DETECTABLE[state]
        # A restart faster than a tick shows as RESTARTED: the crash is still seen.
        accept = {want, states.RESTARTED} if state in (states.CRASHED, states.OOM) else {want}
        m = first_at_or_after(mon, t - 0.05, accept, until + run.interval + SLACK_S)
        n = first_at_or_after(hb, t - 0.05, {states.DEAD}, until + run.interval + SLACK_S)
        s = first_at_or_after(sup, t - 0.05, NOTICED, until + run.supervisor_timeout + SLACK_S)
        out.append(Latency(t, state, want, _since(m, t), _since(n, t), _since(s, t), until - t))
    return out


def _since(ts: float | None, t: float) -> float | None:
    return None if ts is None else max(0.0, ts - t)


def judge_latencies(run: Run, latencies: list[Latency]) -> list[Check]:
    """The monitor detects each fault within its limit: a crash at its next ticks
    (a free lock is a fact), a clean stop at its next tick, silence after the timeout."""
    checks = []
    for lat in latencies:
        if lat.truth == states.CRASHED:
            limit = 2 * run.interval + SLACK_S
        elif lat.truth == states.STOPPED:
            limit = run.interval + SLACK_S
        else:
            limit = run.timeout + SLACK_S
        if lat.monitor_s is None and lat.at + limit > run.end:
            continue  # the run ended before the monitor could have ticked
        if lat.monitor_s is None and lat.truth in SILENT and lat.lasted_s < run.timeout:
            continue  # silence shorter than the timeout is, by design, not yet a failure
        ok = lat.monitor_s is not None and lat.monitor_s <= limit
        checks.append(Check(f"monitor saw {lat.truth.lower()} at +{lat.at - run.start:.1f} s as {lat.want}", ok,
                            "never" if lat.monitor_s is None else f"after {lat.monitor_s:.2f} s (limit {limit:.2f} s)"))
    return checks


def agreement(mon: Seen, truth: Seen, interval: float, timeout: float, beat: float | None = None,
              t0: float | None = None) -> Check:
    """No monitor verdict contradicts the truth once detection has had its time.
    t0, the lab's start, makes the time named seconds since it."""
    grace = timeout + interval + SLACK_S
    # SLOW judges a window of recent beats (the monitor's RECENT_BEATS and
    # RECENT_MS, then its SLOW_HOLD_S): after a gray fault it lingers that
    # long, by design.
    slow_lag = max(SLOW_BEATS * (beat or interval), SLOW_WINDOW_S) + SLOW_HOLD_S + SLACK_S
    bad = []
    for ts, verdict in mon:
        if verdict == states.UNKNOWN:
            continue
        state = runlog.state_at(truth, ts)
        if state is None:
            continue
        changed = max((t for t, _ in truth if t <= ts), default=None)
        if changed is not None and ts - changed < grace:
            continue
        if verdict == states.SLOW and changed is not None and ts - changed < slow_lag and \
                runlog.state_at(truth, changed - 1e-6) in GRAY:
            continue
        if verdict not in AGREES.get(state, {verdict}):
            # The monitor may be ahead of the engine: the crash handler (or a
            # clean exit) frees the lock before the process is reaped and the
            # engine says "die", and the monitor probes the lock every 25 ms.
            # Under load (30 labs on two cores) the reaping can take seconds.
            lead = grace if verdict in (states.STOPPED, states.CRASHED) else SLACK_S
            ahead = {s for t, s in truth if ts < t <= ts + lead}
            if not any(verdict in AGREES.get(s, set()) for s in ahead):
                bad.append((ts, verdict, state))
    if not bad:
        return Check("no monitor verdict contradicts the truth", True, f"{len(mon)} verdicts checked")
    t, v, s = bad[0]
    return Check("no monitor verdict contradicts the truth", False,
                 f"{len(bad)} tick(s) disagree; first: {v} while the worker was {s} "
                 + (f"(at {t:.1f})" if t0 is None else f"(at +{t - t0:.1f} s)"))


def judge_job(run: Run) -> list[Check]:
    """The job and its outputs, the exit codes, the restarts and the logs."""
    job = run.sc.expect.job
    sup_codes = runlog.exit_codes(run.events, "supervisor")
    sup_exit = sup_codes[-1] if sup_codes else None
    checks = judge_outputs(run, sup_exit) if run.lab.program == "supervisor" else []
    if run.live:
        # Stopped, not finished: its exit codes and its last words are the stop's,
        # not the job's (judge_live_outputs judged what it did).
        return checks + judge_restarts(job, runlog.policy_restarts(run.events))
    if job.exit_code is not None:
        checks.append(Check(f"{run.lab.program} exits {job.exit_code}", sup_exit == job.exit_code,
                            f"got {sup_exit}"))
    checks += judge_restarts(job, runlog.policy_restarts(run.events))
    codes = runlog.exit_codes(run.events, "worker")
    for code in job.worker_exit_codes:
        checks.append(Check(f"worker exits with {code}", code in codes, f"exit codes seen: {codes}"))
    logs = runlog.log_text(run.events)
    for text in job.log_contains:
        checks.append(Check(f"the log says {text!r}", text in logs, "found" if text in logs else "not found"))
    return checks


def judge_hand_faults(run: Run) -> list[Check]:
    """Each fault given by hand (`labctl fault` on a live or kept lab) judged
    like a scripted step: the monitor's verdict within its time."""
    from labctl import live

    checks = []
    within = run.timeout + SLACK_S
    for h in live.hand_faults(run.events, run.end):
        want = live.EXPECT.get(h.fault)
        if want is None or h.target != "worker":
            continue
        name = f"{h.fault} {h.target} by hand at +{h.start - run.start:.1f} s: monitor says {want}"
        checks.append(_window_check(run, name, states.MONITOR, want, (h.start, h.end), within))
    return checks


def judge_live_outputs(run: Run) -> list[Check]:
    """A live lab's job, stopped: what it acked, exactly once up to its checkpoint."""
    from labctl import live

    outdir = run.lab_dir / "out"
    ck = live.checkpoint(outdir)
    acked = int(ck["progress"]["next"]) if ck else 0
    checks = [Check("the job ran live until stopped", acked > 0,
                    f"{acked:,} items acked when it was stopped" if ck else "no checkpoint on the volume")]
    if ck and run.sc.expect.job.exactly_once:
        trigger = None if run.lab.bug_trigger == "none" else int(run.lab.bug_trigger)
        problems = oracle.compare(outdir, run.lab_dir / "input.dat", trigger, upto=acked, sizes=ck.get("sizes"))
        checks.append(Check(f"every item acked ({acked:,}) exactly once, squares right", not problems,
                            "; ".join(problems[:3]) if problems else "matches the oracle up to the checkpoint"))
    return checks


def judge_outputs(run: Run, sup_exit: int | None) -> list[Check]:
    """The supervisor's job: completed (or not) as expected, exactly once against the oracle."""
    if run.live:
        return judge_live_outputs(run)
    job, lab = run.sc.expect.job, run.lab
    outdir = run.lab_dir / "out"
    summary = _job_summary(outdir / "summary.json")
    done = summary is not None and sup_exit == 0
    checks = [Check("the job completes" if job.completes else "the job does not complete",
                    done == job.completes, f"supervisor exit code {sup_exit}")]
    if job.exactly_once and job.completes:
        trigger = None if lab.bug_trigger == "none" else int(lab.bug_trigger)
        problems = oracle.compare(outdir, run.lab_dir / "input.dat", trigger)
        checks.append(Check("every valid item exactly once, squares right; negatives reported, "
                            "malformed rejected, poison dead-lettered", not problems,
                            "; ".join(problems[:3]) if problems else "matches the oracle"))
    for key in ("dead_lettered", "corrupted"):
        want = getattr(job, key)
        if want is not None:
            got = (summary or {}).get(key)
            checks.append(Check(f"{key.replace('_', '-')}: {want}", got == want, f"got {got}"))
    checks += judge_corruption(run, summary)
    if lab.worker_mode == "robust" and job.completes:
        stale = (run.lab_dir / "cworker.lock").exists()
        checks.append(Check("no stale lock left", not stale,
                            "lock file still on the volume" if stale else "the lock file is gone"))
    return checks


def corruption(events: list[Event], lab_dir: Path) -> dict[str, Any] | None:
    """The bitflip fault's numbers: results the worker corrupted (its own
    count, its `bitflip` events), those the supervisor detected (its
    summary's corrupt_results), those the oracle finds wrong in results.csv,
    and the coverage, detected / injected. None when nothing was injected or detected."""
    injected = sum(int(e.get("flipped", 0)) for e in events if e.get("source") == "worker"
                   and e.get("kind") == "bitflip")
    detected = int((_job_summary(lab_dir / "out" / "summary.json") or {}).get("corrupt_results") or 0)
    if not injected and not detected:
        return None
    wrong = oracle.wrong_squares(lab_dir / "out") if (lab_dir / "out" / "results.csv").exists() else []
    return {"injected": injected, "detected": detected, "undetected": len(wrong), "undetected_items": wrong[:10],
            "coverage": round(detected / injected, 4) if injected else None}


def judge_corruption(run: Run, summary: dict[str, Any] | None) -> list[Check]:
    """scenario-bitflip's expectations: the corruption the oracle finds, and
    the share of the injected flips the supervisor detected."""
    job = run.sc.expect.job
    if job.undetected_corruption_min is None and job.undetected_corruption_max is None \
            and job.detection_coverage_min is None:
        return []
    c = corruption(run.events, run.lab_dir) or {"injected": 0, "detected": 0, "undetected": 0,
                                                   "undetected_items": [], "coverage": None}
    said = f"undetected corruption: {c['undetected']} results" + (
        f", first items {c['undetected_items']}" if c["undetected"] else "") + f" ({c['injected']} injected)"
    checks = []
    if job.undetected_corruption_min is not None:
        checks.append(Check(f"the oracle finds at least {job.undetected_corruption_min} corrupt result(s)",
                            c["undetected"] >= job.undetected_corruption_min, said))
        if job.completes and not job.exactly_once:
            trigger = None if run.lab.bug_trigger == "none" else int(run.lab.bug_trigger)
            problems = oracle.compare(run.lab_dir / "out", run.lab_dir / "input.dat", trigger, squares=False)
            checks.append(Check("apart from the wrong squares, every valid item exactly once", not problems,
                                "; ".join(problems[:3]) if problems else "matches the oracle"))
    if job.undetected_corruption_max is not None:
        checks.append(Check(f"the oracle finds at most {job.undetected_corruption_max} corrupt result(s)",
                            c["undetected"] <= job.undetected_corruption_max, said))
    if job.detection_coverage_min is not None:
        cov = c["coverage"]
        checks.append(Check(f"detection coverage at least {job.detection_coverage_min:g}",
                            cov is not None and cov >= job.detection_coverage_min,
                            f"{c['detected']} detected / {c['injected']} injected" + (
                                f" = {cov:g}" if cov is not None else ": nothing injected")))
    return checks


def _job_summary(path: Path) -> dict[str, Any] | None:
    """The supervisor's own summary on the volume (not the run's summary.json)."""
    return json.loads(path.read_text()) if path.exists() else None


def judge_restarts(job: Job, restarts: int) -> list[Check]:
    checks = []
    if job.min_worker_restarts is not None:
        checks.append(Check(f"worker restarted by policy at least {job.min_worker_restarts}x",
                            restarts >= job.min_worker_restarts, f"{restarts} restart(s)"))
    if job.max_worker_restarts is not None:
        checks.append(Check(f"worker restarted by policy at most {job.max_worker_restarts}x",
                            restarts <= job.max_worker_restarts, f"{restarts} restart(s)"))
    return checks


# ----------------------------------------------------------------------- a run directory


def check_run(run_dir: Path) -> Verdict:
    """Judges a run directory from its files alone; writes verdict.json and report.md."""
    run_dir = Path(run_dir)
    sc_path = run_dir / rundir.SCENARIO
    if not sc_path.exists():
        raise LabError(ExitCode.NOT_FOUND, f"{run_dir} holds no {rundir.SCENARIO}",
                       "is this a run directory? `labctl runs` lists them")
    sc = scenario.load(sc_path)
    events = runlog.read_events(run_dir / rundir.EVENTS)
    summary = rundir.read_summary(run_dir)
    run_end = summary.get("ended") or (events[-1]["ts"] if events else 0)
    run_start = summary.get("started") or (events[0]["ts"] if events else 0)
    v = Verdict(run_dir, sc.name, error=summary.get("error"))
    v.checks, v.latencies = judge(sc, events, run_dir / rundir.VOLUME, run_end, run_start,
                                  live=bool(summary.get("live")))
    if sc.lab.kind != "lease":
        v.corruption = corruption(events, run_dir / rundir.VOLUME)
    rundir.write_json(run_dir / rundir.VERDICT, v.to_json())
    report.write(run_dir, sc, v, summary, events)
    return v
