#!/usr/bin/env python3
"""Soak: long runs in real labs, not part of every CI pass.

1. healthy: a 10-minute job with no fault; every one of the monitor's
   verdicts must be HEALTHY (zero false verdicts).
2. faults: a 1,000,000-item job through 20 random faults (crash, pause,
   sigstop, partition, stop), with every result exactly once.

Both run as generated scenarios through `labctl up`, so the checker judges
them like any other run. Figures are printed side by side at the end.

    python bench/soak.py [--minutes 10] [--items 1000000] [--faults 20] [--seed 1]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ["crash", "pause", "sigstop", "partition", "stop"]


def healthy_scenario(minutes: float) -> dict:
    rate = 250
    return {
        "name": "soak-healthy",
        "lesson": "A long healthy run: the detector must never cry wolf.",
        "lab": {"items": int(rate * minutes * 60), "rate": rate, "bug_trigger": "none"},
        "duration_s": minutes * 60 + 120,
        "expect": {"never": {"monitor": ["CRASHED", "PAUSED", "PARTITIONED", "RESTARTED"], "heartbeat_only": ["DEAD"]},
                   "job": {"completes": True, "exactly_once": True, "max_worker_restarts": 0}},
    }


def faults_scenario(items: int, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    steps, t = [], 4.0
    for _ in range(n):
        do = rng.choice(FAULTS)
        step = {"at": round(t, 1), "do": do, "target": "worker"}
        if do != "crash":
            step["for"] = round(rng.uniform(1.0, 4.0), 1)
        steps.append(step)
        t += step.get("for", 0) + rng.uniform(3.0, 6.0)
    rate = items / (t + 10)  # the job outlasts the last fault
    return {
        "name": "soak-faults",
        "lesson": f"{items:,} items through {n} random faults: exactly once, whatever happens.",
        "lab": {"items": items, "rate": round(rate, 1), "bug_trigger": "none", "restart_limit": 100,
                "window": 1024, "give_up_s": 120},
        "timeline": steps,
        "duration_s": t + 600,
        "expect": {"job": {"completes": True, "exactly_once": True}},
    }


def run(sc: dict, runs: Path) -> tuple[int, float, Path | None]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir=runs) as f:
        yaml.safe_dump(sc, f, sort_keys=False)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "labctl", "up", f.name], cwd=ROOT,
                       env={**os.environ, "LABCTL_RUNS": str(runs)}, capture_output=True, text=True)
    took = time.monotonic() - t0
    dirs = sorted(runs.glob(f"{sc['name'].removeprefix('scenario-')[:30]}-*/2*"))
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-2000:])
    return p.returncode, took, dirs[-1] if dirs else None


def figures(run_dir: Path) -> dict:
    events = [json.loads(ln) for ln in (run_dir / "events.jsonl").read_text().splitlines()]
    done = next((e["ts"] for e in events if e["source"] == "supervisor" and e["kind"] == "done"), float("inf"))
    # Up to the job's end: then the worker exits 0 and is rightly STOPPED.
    ticks = [e for e in events if e["source"] == "monitor" and e["kind"] == "tick" and e["ts"] < done]
    healthy_from = next((i for i, e in enumerate(ticks) if e["verdict"] == "HEALTHY"), 0)
    meta = json.loads((run_dir / "summary.json").read_text())
    verdict = json.loads((run_dir / "verdict.json").read_text())
    job = meta.get("job") or {}
    return {
        "ok": verdict.get("ok"),
        "ticks": len(ticks) - healthy_from,
        "non_healthy": sum(1 for e in ticks[healthy_from:] if e["verdict"] != "HEALTHY"),
        "heartbeat_only_dead": sum(1 for e in ticks[healthy_from:]
                                   if e.get("heartbeat_only", e.get("naive")) == "DEAD"),
        "max_net_gap_ms": max((e.get("net_age_ms") or 0 for e in ticks[healthy_from:]), default=0),
        "max_phi": max((e.get("phi") or 0 for e in ticks[healthy_from:]), default=0),
        "items": job.get("read"), "processed": job.get("processed"), "crashes_seen": job.get("worker_crashes"),
        "timeouts": job.get("timeouts"), "reconnects": job.get("reconnects"),
        "restarts": meta.get("worker_restarts"),
        "failed_checks": [c["name"] for c in verdict.get("checks", []) if not c["ok"]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--faults", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=("healthy", "faults"))
    args = ap.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="labctl-soak-"))
    rows = []
    if args.only in (None, "healthy"):
        code, took, rd = run(healthy_scenario(args.minutes), runs)
        rows.append(("healthy", code, took, figures(rd) if rd else {}))
    if args.only in (None, "faults"):
        code, took, rd = run(faults_scenario(args.items, args.faults, args.seed), runs)
        rows.append(("faults", code, took, figures(rd) if rd else {}))
    print(f"soak runs under {runs}")
    print(f"{'run':<9}{'exit':>5}{'minutes':>9}{'ticks':>8}{'non-HEALTHY':>13}{'hb-only DEAD':>12}"
          f"{'max gap ms':>12}{'max phi':>9}{'items':>10}{'restarts':>10}{'timeouts':>10}  failed checks")
    for name, code, took, f in rows:
        print(f"{name:<9}{code:>5}{took / 60:>9.1f}{f.get('ticks', 0):>8}{f.get('non_healthy', 0):>13}"
              f"{f.get('heartbeat_only_dead', 0):>12}{f.get('max_net_gap_ms', 0):>12}{f.get('max_phi', 0):>9.1f}"
              f"{f.get('items') or 0:>10}{f.get('restarts') or 0:>10}{f.get('timeouts') or 0:>10}  "
              f"{', '.join(f.get('failed_checks', [])) or 'none'}")
    return 0 if all(code == 0 for _, code, _, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
