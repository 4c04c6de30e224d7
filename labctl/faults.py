"""Faults and their journal.

Every fault is journaled with its inverse *before* it is applied, and its
outcome is appended in `finally:`, so a labctl that dies mid-fault leaves a
record that `labctl down` (or `recover`) reads to revert it.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from labctl import labels as L
from labctl.engine import Engine, wait_for
from labctl.errors import ExitCode, LabError
from labctl.scenario import FAULTS

_journal_lock = threading.Lock()


def runs_root() -> Path:
    return Path(os.environ.get("LABCTL_RUNS", "runs")).resolve()


def journal_path(lab_id: str) -> Path:
    return runs_root() / lab_id / "journal.jsonl"


def append(lab_id: str, record: dict) -> dict:
    path = journal_path(lab_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"ts": round(time.time(), 6), "source": "labctl", "kind": "fault", "lab": lab_id, **record}
    line = json.dumps(rec, separators=(",", ":")) + "\n"
    with _journal_lock, open(path, "a+b") as f:
        # A labctl killed mid-write leaves a cut line: start a fresh one.
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())
    return rec


def read_journal(lab_id: str) -> list[dict]:
    try:
        lines = journal_path(lab_id).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for ln in lines:
        try:
            out.append(json.loads(ln))
        except ValueError:
            continue  # a line cut by a kill -9: the ones before it still count
    return out


def pending(lab_id: str) -> list[dict]:
    """Faults applied (or maybe applied) whose inverse has not been recorded, newest first."""
    open_faults: dict[str, dict] = {}
    for r in read_journal(lab_id):
        if r.get("kind") != "fault":
            continue
        if r.get("phase") == "intent" and r.get("inverse"):
            open_faults[r["id"]] = r
        elif r.get("phase") in ("reverted", "failed"):
            open_faults.pop(r.get("of") or r.get("id"), None)
    return sorted(open_faults.values(), key=lambda r: r["ts"], reverse=True)


@dataclass
class Target:
    lab_id: str
    service: str

    @property
    def container(self) -> str:
        return L.container_name(self.lab_id, self.service)

    @property
    def network(self) -> str:
        return L.network_name(self.lab_id)


def _do(engine: Engine, fault: str, t: Target) -> None:
    if fault == "crash":
        # -1: every process this user may signal but PID 1 (tini) and the shell:
        # the program dies by SIGKILL, tini exits 137, the restart policy acts.
        before = engine.inspect(t.container)
        if before is None or before.status != "running":
            raise LabError(ExitCode.ENGINE_ERROR, f"cannot crash {t.container}: it is not running",
                           "`labctl status` shows the lab's containers")
        try:
            engine.exec(t.container, ["sh", "-c", "kill -KILL -1"])
        except LabError:
            pass  # the container can die under the exec itself; what counts is below

        def died():
            st = engine.inspect(t.container)
            return st is None or st.pid != before.pid or st.restart_count != before.restart_count \
                or st.status != "running"

        wait_for(died, 10, 0.05, f"{t.container} to die after kill -KILL",
                 seen=lambda: str(engine.inspect(t.container)))
    elif fault == "kill":
        engine.kill(t.container, "SIGKILL")
    elif fault == "pause":
        engine.pause(t.container)
    elif fault == "unpause":
        engine.unpause(t.container)
    elif fault in ("sigstop", "sigcont"):
        sig = "STOP" if fault == "sigstop" else "CONT"
        # -1: every process this user may signal but PID 1 (tini) and the
        # shell itself: the program and nothing else, as in the exercise.
        code, out = engine.exec(t.container, ["sh", "-c", f"kill -{sig} -1"])
        if code != 0:
            raise LabError(ExitCode.ENGINE_ERROR, f"kill -{sig} in {t.container} failed: {out.strip()[:200]}")
    elif fault == "partition":
        engine.disconnect(t.network, t.container)
    elif fault == "heal":
        engine.reconnect(t.network, t.container, aliases=[t.service])
    elif fault == "stop":
        engine.stop(t.container, timeout=10)
    elif fault == "start":
        engine.start(t.container)
    else:
        raise LabError(ExitCode.USAGE, f"unknown fault {fault!r}", "pick one of " + ", ".join(FAULTS))


def apply(engine: Engine, lab_id: str, fault: str, service: str = "worker", step: int | None = None) -> dict:
    """Journals the fault and its inverse, applies it, journals the outcome."""
    t = Target(lab_id, service)
    inverse = FAULTS[fault][0]
    fid = f"{int(time.time() * 1e6):x}-{fault}"
    intent = append(lab_id, {"id": fid, "phase": "intent", "fault": fault, "target": service, "inverse": inverse,
                             "step": step})
    outcome = "failed"
    try:
        _do(engine, fault, t)
        outcome = "applied"
    finally:
        append(lab_id, {"id": fid, "phase": outcome, "fault": fault, "target": service, "inverse": inverse,
                        "step": step})
    return intent


def revert(engine: Engine, lab_id: str, intent: dict) -> None:
    """Applies a journaled fault's inverse; 'already reverted' and 'gone' are fine."""
    inverse = intent.get("inverse")
    if not inverse:
        return
    outcome = "revert-failed"
    try:
        try:
            _do(engine, inverse, Target(lab_id, intent["target"]))
        except Exception as e:
            # Gone, or already undone (unpaused, reconnected, started): reverted.
            text = str(e).lower()
            if not any(k in text for k in ("no such container", "not found", "not paused", "already",
                                           "is not running", "is already in progress")):
                raise
        outcome = "reverted"
    finally:
        append(lab_id, {"id": f"{intent['id']}-revert", "of": intent["id"], "phase": outcome, "fault": inverse,
                        "target": intent["target"], "step": intent.get("step")})


def revert_pending(engine: Engine, lab_id: str) -> int:
    n = 0
    for intent in pending(lab_id):
        revert(engine, lab_id, intent)
        n += 1
    return n
