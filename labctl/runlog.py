"""Reading a run's events: what each observer said when, the ground truth,
the fault windows, exit codes and restarts. The checker and the picture
read a run through here and nowhere else (docs/events.md is the schema)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labctl import faults, journal, labels, states
from labctl.errors import ExitCode, LabError

Event = dict[str, Any]
Seen = list[tuple[float, str]]  # (ts, what an observer said), in order

# The monitor's field for the heartbeat-only verdict, then its old name (runs before the rename).
HEARTBEAT_ONLY_FIELDS = ("heartbeat_only", "naive")


def read_events(path: Path) -> list[Event]:
    out = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise LabError(ExitCode.NOT_FOUND, f"{path} is missing",
                       "is this a run directory? `labctl runs` lists them") from None
    for n, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            ev = json.loads(ln)
        except ValueError:
            raise LabError(ExitCode.FAILED, f"{path}: line {n} is not JSON") from None
        if not isinstance(ev, dict) or not {"ts", "source", "kind"} <= ev.keys():
            raise LabError(ExitCode.FAILED, f"{path}: line {n} lacks ts, source or kind")
        out.append(ev)
    return out


def heartbeat_only_of(ev: Event) -> str | None:
    """A monitor event's heartbeat-only verdict, under its name or its old one."""
    return next((ev[k] for k in HEARTBEAT_ONLY_FIELDS if k in ev), None)


def _fault_records(events: list[Event]) -> list[Event]:
    return [e for e in events if e.get("source") == "labctl" and e.get("kind") == "fault"]


def fault_windows(events: list[Event], run_end: float) -> dict[int, tuple[float, float]]:
    """Step -> (start, end): from the intent (a `docker stop` takes effect while
    the call runs) of a fault that was applied, or from the start of the try
    that took, after the engine refused the first (`from_ts`), to the end of
    its revert."""
    intent: dict[int, float] = {}
    applied: set[int] = set()
    reverted: dict[int, float] = {}
    for e in _fault_records(events):
        step, phase = e.get("step"), e.get("phase")
        if step is None:
            continue
        if phase == journal.INTENT:
            intent.setdefault(step, e["ts"])
        elif phase == journal.APPLIED:
            applied.add(step)
            if e.get("from_ts") and step in intent:
                intent[step] = max(intent[step], float(e["from_ts"]))
        elif phase == journal.REVERTED:
            reverted.setdefault(step, e["ts"])
    return {s: (t, reverted.get(s, run_end)) for s, t in intent.items() if s in applied}


def fault_names(events: list[Event]) -> dict[int, str]:
    """Step -> the fault it applied, with its settings, from the intents."""
    return {e["step"]: " ".join([e["fault"], *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in (e.get("params") or {}).items())])
            for e in _fault_records(events) if e.get("phase") == journal.INTENT and e.get("step") is not None}


def every_fault_window(events: list[Event], run_end: float) -> list[tuple[float, float, str]]:
    """(start, end, name) of every journaled fault that was applied, a step
    or not (one given live with `labctl fault` has none), oldest first; the
    windows as fault_windows() times them. An inverse given on its own (an
    `unpause` by hand) ends a fault and is none itself. For the picture: the
    checker judges the scenario's steps, through fault_windows()."""
    inverses = {f.inverse for f in faults.FAULTS.values() if f.inverse}
    intent: dict[str, tuple[float, str]] = {}
    applied: set[str] = set()
    reverted: dict[str, float] = {}
    for e in _fault_records(events):
        fid, phase = str(e.get("id")), e.get("phase")
        if phase == journal.INTENT and e.get("fault") not in inverses:
            intent.setdefault(fid, (float(e["ts"]), _fault_name(e)))
        elif phase == journal.APPLIED and fid in intent:
            applied.add(fid)
            if e.get("from_ts"):
                ts, name = intent[fid]
                intent[fid] = (max(ts, float(e["from_ts"])), name)
        elif phase == journal.REVERTED and e.get("of"):
            reverted.setdefault(str(e["of"]), float(e["ts"]))
    return sorted((t, reverted.get(fid, run_end), name) for fid, (t, name) in intent.items() if fid in applied)


def _fault_name(e: Event) -> str:
    return " ".join([str(e["fault"]), *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in (e.get("params") or {}).items())])


def observed(events: list[Event], who: str) -> Seen:
    """What one observer (states.OBSERVERS) said, and when."""
    if who == states.MONITOR:
        return [(e["ts"], e["verdict"]) for e in _monitor(events) if "verdict" in e]
    if who == states.HEARTBEAT_ONLY:
        return [(e["ts"], v) for e in _monitor(events) if (v := heartbeat_only_of(e)) is not None]
    if who == states.SUPERVISOR:
        return [(e["ts"], e["state"]) for e in events if e["source"] == "supervisor" and e["kind"] == "state"]
    if who == states.TRUTH:
        return truth_timeline(events)
    if who == states.PHI:
        return [(e["ts"], states.DEAD if e["phi_suspect"] else states.ALIVE) for e in _monitor(events)
                if "phi_suspect" in e]
    if who == states.SENDER_CLOCK:
        return [(e["ts"], e["sender_clock"]) for e in _monitor(events) if "sender_clock" in e]
    raise ValueError(who)


def latencies(events: list[Event]) -> list[tuple[float, float, float]]:
    """(ts, p50_ms, p99_ms) of the supervisor's round trips, one a second."""
    return [(e["ts"], float(e["p50_ms"]), float(e["p99_ms"])) for e in events
            if e["source"] == "supervisor" and e["kind"] == "latency"]


def _monitor(events: list[Event]) -> list[Event]:
    return [e for e in events if e["source"] == "monitor" and e["kind"] in ("tick", "verdict")]


def log_text(events: list[Event]) -> str:
    return "\n".join(str(e.get("message", "")) for e in events if e.get("kind") == "log")


def exit_codes(events: list[Event], service: str) -> list[int]:
    return [e["exit_code"] for e in events if e["source"] == "engine" and e.get("action") == "die"
            and e.get("service") == service and "exit_code" in e]


def policy_restarts(events: list[Event]) -> int:
    """Worker starts after the first, less those labctl did by hand (`start`)."""
    starts = sum(1 for e in events if e["source"] == "engine" and e.get("action") == "start"
                 and e.get("service") == "worker")
    manual = sum(1 for e in _fault_records(events)
                 if e.get("phase") in (journal.APPLIED, journal.REVERTED) and e.get("target") == "worker"
                 and _starts_container(e))
    return max(0, starts - 1 - manual)


def _starts_container(e: Event) -> bool:
    f = _fault(e)
    return f is not None and f.starts_container


def _fault(e: Event) -> faults.Fault | None:
    return faults.FAULTS.get(str(e.get("fault")))


# ----------------------------------------------------------------------- ground truth


class _Truth:
    """The worker's state as it changes, one event at a time."""

    def __init__(self) -> None:
        self.state: str | None = None
        self.partitioned = False
        self.oom = False  # the engine said "oom": the next death is the OOM killer's
        # The journaled faults in force, by id: (the fault, the truth it made), oldest first.
        self.active: dict[str, tuple[faults.Fault, str]] = {}
        self.changes: Seen = []

    def put(self, ts: float, state: str) -> None:
        if state != self.state:
            self.state = state
            self.changes.append((ts, state))

    def current(self) -> str:
        """What a running worker is now: cut off, or under the newest fault in force, or plainly running."""
        if self.partitioned:
            return states.PARTITIONED
        return next(reversed(self.active.values()))[1] if self.active else states.RUNNING

    def container(self, ts: float, e: Event) -> None:
        action = e.get("action")
        if action == "start":
            # A restarted process has shed what acted on the old one (a
            # signal, a duty cycle); the proxy's rules, toxics and network,
            # outside it, hold on.
            self.active = {k: v for k, v in self.active.items() if v[0].survives_restart}
            self.put(ts, self.current())
        elif action == "oom":
            self.oom = True
        elif action == "die":
            # The engine reports the OOM kill just before the death it causes.
            died = states.OOM if self.oom or e.get("oom_killed") else states.CRASHED
            self.oom = False
            self.put(ts, states.STOPPED if e.get("exit_code") == 0 else died)
        elif action == "pause":
            self.put(ts, states.PAUSED)
        elif action == "unpause":
            self.put(ts, self.current())

    def network(self, ts: float, e: Event) -> None:
        action = e.get("action")
        alive = (states.RUNNING, states.PAUSED, states.SIGSTOPPED, states.DEGRADED, states.ONEWAY, states.SKEWED)
        if action == "disconnect" and self.state in alive:
            self.partitioned = True
            self.put(ts, states.PARTITIONED)
        elif action == "connect" and self.partitioned:
            self.partitioned = False
            self.put(ts, self.current())

    def journaled(self, ts: float, e: Event) -> None:
        """A fault the engine cannot see, in force from its application to
        its undoing (the revert names it, `of`); an inverse applied on its
        own (a sigcont by hand) ends every fault it undoes."""
        f = _fault(e)
        if f is None or f.journal_truth is None:
            return
        if e.get("phase") == journal.APPLIED and f.inverse:
            self.active[str(e.get("id"))] = (f, f.journal_truth)
            self.put(ts, f.journal_truth)
            return
        ended = [str(e["of"])] if e.get("of") else [k for k, (g, _) in self.active.items() if g.inverse == f.name]
        if not any(k in self.active for k in ended):
            return
        for k in ended:
            self.active.pop(k, None)
        if self.state not in (states.CRASHED, states.OOM, states.STOPPED, states.PAUSED):
            self.put(ts, self.current())


def truth_timeline(events: list[Event], service: str = "worker") -> Seen:
    """(ts, state) changes of the worker as the engine and labctl's journal saw them.

    The engine cannot see SIGSTOP (the process is frozen by a signal, not by
    the engine), so that one comes from labctl's own journal."""
    truth = _Truth()
    # The network the worker is on is its namespace owner's (the proxy's).
    net_owner = labels.NETNS_OWNER.get(service, service)
    for e in events:
        src, kind = e["source"], e["kind"]
        who = e.get("service", e.get("target"))
        if not (who == service or src == "engine" and kind == "network" and who == net_owner):
            continue
        if src == "engine" and kind == "container":
            truth.container(e["ts"], e)
        elif src == "engine" and kind == "network":
            truth.network(e["ts"], e)
        elif src == "labctl" and kind == "fault" and e.get("phase") in (journal.APPLIED, journal.REVERTED):
            truth.journaled(e["ts"], e)
    return truth.changes


def state_at(timeline: Seen, ts: float) -> str | None:
    cur = None
    for t, s in timeline:
        if t > ts:
            break
        cur = s
    return cur
