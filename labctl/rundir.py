"""Where runs live and what a run directory holds.

`runs/<lab>/journal.jsonl` is a lab's fault journal; `runs/<lab>/<utc-time>/`
is one run. The lab writes `summary.json` (what happened), the checker writes
`verdict.json` (what it concluded): each file has one writer.
"""
from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCENARIO = "scenario.yaml"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"  # written by the lab
VERDICT = "verdict.json"  # written by the checker
REPORT = "report.md"
TIMELINE = "timeline.png"
VOLUME = "lab"  # the lab's volume, copied off after the run
JOURNAL = "journal.jsonl"


def runs_root() -> Path:
    return Path(os.environ.get("LABCTL_RUNS", "runs")).resolve()


def lab_dir(lab_id: str) -> Path:
    return runs_root() / lab_id


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def new_run_dir(lab_id: str) -> Path:
    return lab_dir(lab_id) / utc_stamp()


def run_dirs() -> list[Path]:
    """Every run under the root, newest first (the names are UTC times)."""
    return sorted((p for p in runs_root().glob("*/2*") if p.is_dir()), key=lambda p: p.name, reverse=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def read_summary(run_dir: Path) -> dict[str, Any]:
    return _read_json(Path(run_dir) / SUMMARY)


def read_verdict(run_dir: Path) -> dict[str, Any]:
    """The checker's findings; a run from before verdict.json kept them in summary.json."""
    found = _read_json(Path(run_dir) / VERDICT)
    if found:
        return found
    old = read_summary(run_dir)
    return {k: old[k] for k in ("ok", "checks", "latencies") if k in old}


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")
