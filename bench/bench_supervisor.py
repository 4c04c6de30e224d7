#!/usr/bin/env python3
"""End-to-end items/s: supervisor -> worker over loopback.

One run, two rows: the worker batching its output, and the same worker with
--flush-every-line (the exercise's behaviour) as the baseline. The time is the
supervisor's own job duration from its summary.json (input loading and the
final fsync included, interpreter start-up excluded).

    python bench/bench_supervisor.py [--items 1000000] [--window 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "images" / "worker" / "build" / "worker"
SUPERVISOR = ROOT / "images" / "supervisor" / "supervisor.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp: Path, items: int, window: int, flush: bool, tag: str) -> dict:
    port = free_port()
    lock = tmp / f"{tag}.lock"
    worker = subprocess.Popen(
        [str(WORKER), "--listen", f"127.0.0.1:{port}", "--lock", str(lock), "--bug-trigger", "none"]
        + (["--flush-every-line"] if flush else []),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while not lock.exists():  # lock taken, listening a moment later; a refused connect is retried
            if time.monotonic() > deadline:
                raise SystemExit("worker did not start")
            time.sleep(0.01)
        out = tmp / f"out-{tag}"
        subprocess.run(
            [sys.executable, str(SUPERVISOR), "--worker", f"127.0.0.1:{port}", "--input", str(tmp / "input.dat"),
             "--output", str(out), "--window", str(window), "--give-up-s", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
        )
        return json.loads((out / "summary.json").read_text())
    finally:
        worker.kill()
        worker.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--window", type=int, default=1024)
    args = ap.parse_args()
    if not WORKER.exists():
        subprocess.run(["make", "-s", "-C", str(WORKER.parent.parent), "all"], check=True)
    sys.path.insert(0, str(SUPERVISOR.parent))
    import generate_data

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        generate_data.write(str(tmp / "input.dat"), generate_data.generate(args.items, 1))
        batched = run(tmp, args.items, args.window, False, "batched")
        flushed = run(tmp, args.items, args.window, True, "flushed")
    print(f"supervisor -> worker over loopback, {args.items:,} items, window {args.window} ({os.cpu_count()} cores)")
    print(f"{'worker mode':<28}{'seconds':>10}{'items/s':>14}")
    for name, s in (("batched", batched), ("--flush-every-line", flushed)):
        print(f"{name:<28}{s['duration_s']:>10.3f}{s['read'] / s['duration_s']:>14,.0f}")
    print(f"batched / flush-every-line: {flushed['duration_s'] / batched['duration_s']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
