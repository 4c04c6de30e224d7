"""Live labs, for a lecture: a lab that runs until stopped and takes faults
given by hand, a view that attaches to labs already running, and what
`labctl status` says of each lab now.

`labctl up SCENARIO --live` plays the scenario's timeline, then keeps the job
streaming at a pace a class can follow until Ctrl-C or `labctl down --lab
ID` (which asks the `up` that owns the lab to stop it, through a file in a
per-user state directory, and waits for it). The job is then stopped (its outputs
are consistent up to its last checkpoint), the run judged: what was acked
exactly once, and every fault given by hand with `labctl fault` judged
against the ground truth like a scripted one.
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl import journal, labels, observe, rundir, runlog, states
from labctl.engine import Engine
from labctl.scenario import Scenario

# A pace a class can follow, and enough work for a long lecture.
LIVE_RATE = 50.0
LIVE_HOURS = 8
OWNER = "live.json"  # <state>/<lab>/live.json: the `up` process that runs the lab live
STOP = "stop-requested"  # <state>/<lab>/stop-requested: `labctl down` asks that process to stop
STOP_WAIT_S = 90  # how long `down` waits for the owner to stop, judge and remove its lab
# The monitor's verdict a fault given by hand should bring, judged as a scripted step's window.
EXPECT = {"pause": states.PAUSED, "sigstop": states.PAUSED, "partition": states.PARTITIONED,
          "crash": states.CRASHED, "kill": states.CRASHED, "stop": states.STOPPED}


def make_live(sc: Scenario) -> Scenario:
    """The scenario as a live lab runs it: a job long enough to outlast the
    lecture, at a pace a class can follow; the timeline as written."""
    live = copy.deepcopy(sc)
    lab = live.lab
    if lab.kind == "worker" and lab.program == "supervisor":
        lab.rate = min(lab.rate, LIVE_RATE) if lab.rate > 0 else LIVE_RATE
        lab.items = int(lab.rate * 3600 * LIVE_HOURS)
        lab.give_up_s = max(lab.give_up_s, 3600)
    live.duration_s = 3600 * LIVE_HOURS + 60
    return live


# ----------------------------------------------------------------------- the owner and the stop request


def state_dir(lab_id: str) -> Path:
    """Where a live lab's owner and stop request live: a per-user directory
    (LABCTL_STATE, default ~/.local/state/labctl/live), not the runs
    directory, which is relative to where `labctl up` ran: a `labctl down`
    from any other directory must still find the lab's owner."""
    base = os.environ.get("LABCTL_STATE") or str(Path.home() / ".local" / "state" / "labctl")
    return Path(base) / "live" / lab_id


def claim(lab_id: str) -> None:
    """Marks the lab as run live by this process, so that `down` asks it to stop."""
    d = state_dir(lab_id)
    d.mkdir(parents=True, exist_ok=True)
    (d / STOP).unlink(missing_ok=True)
    (d / OWNER).write_text(json.dumps({"pid": os.getpid(), "since": time.time(),
                                       "runs": str(rundir.lab_dir(lab_id))}) + "\n")


def release(lab_id: str) -> None:
    for name in (OWNER, STOP):
        (state_dir(lab_id) / name).unlink(missing_ok=True)


def owner(lab_id: str) -> int | None:
    """The pid of the live `up` that owns the lab, if it still runs."""
    try:
        pid = int(json.loads((state_dir(lab_id) / OWNER).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # someone else's process: it runs
    return pid


def runs_of(lab_id: str) -> str | None:
    """Where the live lab's `up` writes its run (its runs directory, wherever it ran)."""
    try:
        return str(json.loads((state_dir(lab_id) / OWNER).read_text())["runs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_requested(lab_id: str) -> bool:
    return (state_dir(lab_id) / STOP).exists()


def request_stop(lab_id: str, timeout: float = STOP_WAIT_S, poll: float = 0.2) -> bool:
    """Asks the lab's live owner to stop it, judge it and remove it; True once
    it has (the owner gone), False if there was none or it did not in time."""
    pid = owner(lab_id)
    if pid is None:
        return False
    (state_dir(lab_id) / STOP).write_text(f"{time.time()}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if owner(lab_id) is None:
            return True
        time.sleep(poll)  # polling another process's exit: nothing to wait on but its pid
    return False


# ----------------------------------------------------------------------- faults given by hand


@dataclass
class HandFault:
    start: float
    end: float
    fault: str
    target: str


def hand_faults(events: list[runlog.Event], run_end: float) -> list[HandFault]:
    """The faults given with `labctl fault` (no scenario step) that took, each
    to its undoing (or the run's end), oldest first."""
    recs = [e for e in events if e.get("source") == "labctl" and e.get("kind") == "fault"]
    intents = {str(e["id"]): e for e in recs if e.get("phase") == journal.INTENT and e.get("step") is None}
    out = []
    for e in recs:
        fid = str(e.get("id"))
        if e.get("phase") != journal.APPLIED or fid not in intents:
            continue
        start = float(e.get("from_ts") or intents[fid]["ts"])
        end = next((float(r["ts"]) for r in recs if r.get("of") == fid and r.get("phase") == journal.REVERTED),
                   run_end)
        out.append(HandFault(start, end, str(intents[fid]["fault"]), str(intents[fid].get("target", "worker"))))
    return sorted(out, key=lambda h: h.start)


# ----------------------------------------------------------------------- watching labs already running


def lab_kind(engine: Engine, lab_id: str) -> str:
    """worker or lease, by the lab's containers."""
    names = {c.labels.get(labels.SERVICE) for c in engine.containers(labels.filters(lab_id))}
    return "lease" if names & set(labels.LEASE_SERVICES) else "worker"


def scenario_of(engine: Engine, lab_id: str) -> str:
    for c in engine.containers(labels.filters(lab_id)):
        if c.labels.get(labels.SCENARIO):
            return str(c.labels[labels.SCENARIO])
    return "?"


class Watcher:
    """The live state of labs already running, for `labctl watch`: each
    service's log followed from its start, the truth polled; stopping the
    watcher leaves the labs as they are."""

    def __init__(self, engine: Engine, lab_ids: list[str]):
        from labctl import lease  # the lease lab's Live

        self.engine = engine
        self.stop = threading.Event()
        self.lives: list[observe.Live] = []
        self.kinds: dict[str, str] = {}
        for lid in lab_ids:
            kind = lab_kind(engine, lid)
            self.kinds[lid] = kind
            live_cls = lease.LeaseLive if kind == "lease" else observe.Live
            lv = live_cls(lid, scenario_of(engine, lid))
            lv.phase = "running (watched)"
            started = [float(e["ts"]) for e in journal.read(lid)[:1]]
            lv.started = min(started, default=time.time())
            self.lives.append(lv)

    def start(self) -> None:
        for lv in self.lives:
            kind = self.kinds[lv.lab_id]
            for svc in labels.KIND_SERVICES[kind]:
                threading.Thread(target=observe.follow, args=(self.engine.clone(), lv.lab_id, svc, lv, self.stop),
                                 daemon=True).start()

    def poll(self) -> None:
        from labctl import lease

        for lv in self.lives:
            if isinstance(lv, lease.LeaseLive):
                lease.poll_holders(self.engine, lv.lab_id, lv)
            else:
                observe.poll_truth(self.engine, lv.lab_id, lv)

    def close(self) -> None:
        self.stop.set()


# ----------------------------------------------------------------------- status: each lab now


def last_monitor_tick(engine: Engine, lab_id: str) -> dict[str, Any] | None:
    """The monitor's newest tick, from the end of its log."""
    text = engine.logs_text(labels.container_name(lab_id, "monitor"), tail=50)
    for line in reversed(text.splitlines()):
        ev = observe.parse_log_line("monitor", line) if line[:1].isdigit() else _json(line)
        if ev and ev.get("source") == "monitor" and ev.get("kind") in ("tick", "verdict"):
            return ev
    return None


def _json(line: str) -> dict[str, Any] | None:
    try:
        v = json.loads(line)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def now_of(engine: Engine, lab_id: str) -> dict[str, str]:
    """What the lab's truth and its monitor say now (a lease lab: who holds the lease)."""
    if lab_kind(engine, lab_id) == "lease":
        from labctl import lease

        ll = lease.LeaseLive(lab_id, "")
        lease.poll_holders(engine, lab_id, ll)
        return {"truth": ", ".join(f"{h} {s}" for h, s in ll.holder_truth.items()), "monitor": "-",
                "heartbeat_only": "-", "live": "yes" if owner(lab_id) else "no"}
    lv = observe.Live(lab_id, "")
    observe.poll_truth(engine, lab_id, lv)
    tick = last_monitor_tick(engine, lab_id) or {}
    return {"truth": lv.truth, "monitor": str(tick.get("verdict", "-")),
            "heartbeat_only": str(runlog.heartbeat_only_of(tick) or "-") if tick else "-",
            "live": "yes" if owner(lab_id) else "no"}


def run_dir_live(summary: dict[str, Any]) -> bool:
    return bool(summary.get("live"))


def checkpoint(outdir: Path) -> dict[str, Any] | None:
    """The supervisor's checkpoint: how far its outputs are valid."""
    try:
        ck = json.loads((outdir / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return None
    return ck if isinstance(ck, dict) else None
