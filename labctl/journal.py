"""The fault journal: `runs/<lab>/journal.jsonl`, one record per line, fsynced.

Every fault is journaled with its inverse *before* it is applied, and its
outcome is appended in `finally:`, so a labctl that dies mid-fault leaves a
record that `labctl down` (or `recover`) reads to revert it. Phases, in order:
`intent`, then `retry` for each refused try that is tried again, then
`applied` or `failed`; a revert writes `reverted` or `revert-failed` with
`of`, the intent's id.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from labctl import rundir

INTENT = "intent"
RETRY = "retry"
APPLIED = "applied"
FAILED = "failed"
REVERTED = "reverted"
REVERT_FAILED = "revert-failed"

_lock = threading.Lock()


def path(lab_id: str) -> Path:
    return rundir.lab_dir(lab_id) / rundir.JOURNAL


def append(lab_id: str, record: dict[str, Any]) -> dict[str, Any]:
    p = path(lab_id)
    p.parent.mkdir(parents=True, exist_ok=True)
    rec = {"ts": round(time.time(), 6), "source": "labctl", "kind": "fault", "lab": lab_id, **record}
    line = json.dumps(rec, separators=(",", ":")) + "\n"
    with _lock, open(p, "a+b") as f:
        # A labctl killed mid-write leaves a cut line: start a fresh one.
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())
    return rec


def read(lab_id: str) -> list[dict[str, Any]]:
    try:
        lines = path(lab_id).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for ln in lines:
        try:
            out.append(json.loads(ln))
        except ValueError:
            continue  # a line cut by a kill -9: the ones before it still count
    return out


def pending(lab_id: str) -> list[dict[str, Any]]:
    """Faults applied (or maybe applied) whose inverse has not been recorded, newest first."""
    open_faults: dict[str, dict[str, Any]] = {}
    for r in read(lab_id):
        if r.get("kind") != "fault":
            continue
        if r.get("phase") == INTENT and r.get("inverse"):
            open_faults[r["id"]] = r
        elif r.get("phase") in (REVERTED, FAILED):
            open_faults.pop(str(r.get("of") or r.get("id")), None)
    return sorted(open_faults.values(), key=lambda r: r["ts"], reverse=True)


def last_outcome(lab_id: str) -> dict[str, Any] | None:
    """The newest applied or reverted record: the state a fault left behind."""
    return next((r for r in reversed(read(lab_id)) if r.get("phase") in (APPLIED, REVERTED)), None)
