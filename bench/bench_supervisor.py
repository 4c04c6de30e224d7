#!/usr/bin/env python3
"""End-to-end items/s: supervisor -> worker over loopback.

One run, three rows, side by side:

* clean input, the worker batching its output;
* mixed input (the same data with 2 % negative readings and 1 % malformed
  lines), the same worker: bad lines must be about as cheap as good ones;
* clean input, the worker with --flush-every-line (the exercise's behaviour)
  as the baseline.

The time is the supervisor's own job duration from its summary.json (input
loading and the final fsync included, interpreter start-up excluded). The CPU
seconds of each process say which side is the bottleneck. Each run's outputs
are checked against labctl's oracle, so a fast wrong answer cannot pass.

    python bench/bench_supervisor.py [--items 1000000] [--window 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "images" / "worker" / "build" / "worker"
SUPERVISOR = ROOT / "images" / "supervisor" / "supervisor.py"
NEGATIVE = 0.02
MALFORMED = 0.01
# Lines the worker rejects: words, a trailing letter, a float, a double sign,
# blanks, hex, a number beyond int64.
BAD_LINES = (b"abc", b"12x", b"1.5", b"--3", b"", b"   ", b"0x10", b"99999999999999999999999")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mixed(values: list[int], seed: int) -> bytes:
    """The same readings with NEGATIVE of them negated and MALFORMED replaced by garbage."""
    rng = random.Random(seed)
    lines = []
    for v in values:
        r = rng.random()
        if r < NEGATIVE:
            lines.append(b"-%d" % rng.randint(1, 100))
        elif r < NEGATIVE + MALFORMED:
            lines.append(rng.choice(BAD_LINES))
        else:
            lines.append(b"%d" % v)
    return b"\n".join(lines) + b"\n"


def reap(pid: int, timeout: float) -> tuple[int | None, float]:
    """(exit code, CPU seconds) of a child, or (None, 0.0) if it is still running after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        wpid, status, ru = os.wait4(pid, os.WNOHANG if timeout > 0 else 0)
        if wpid == pid:
            return os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime
        if time.monotonic() >= deadline:
            return None, 0.0
        time.sleep(0.01)  # polling a child's exit, with a deadline


def run(tmp: Path, inp: Path, window: int, flush: bool, tag: str) -> dict:
    port = free_port()
    lock = tmp / f"{tag}.lock"
    worker = subprocess.Popen(
        [str(WORKER), "--listen", f"127.0.0.1:{port}", "--lock", str(lock), "--bug-trigger", "none"]
        + (["--flush-every-line"] if flush else []),
        stderr=subprocess.DEVNULL,
    )
    worker_cpu = 0.0
    try:
        deadline = time.monotonic() + 5
        while not lock.exists():  # lock taken, listening a moment later; a refused connect is retried
            if time.monotonic() > deadline:
                raise SystemExit("worker did not start")
            time.sleep(0.01)
        out = tmp / f"out-{tag}"
        sup = subprocess.Popen(
            [sys.executable, str(SUPERVISOR), "--worker", f"127.0.0.1:{port}", "--input", str(inp),
             "--output", str(out), "--window", str(window), "--give-up-s", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        code, sup_cpu = reap(sup.pid, 0)
        sup.returncode = code
        if code != 0:
            raise SystemExit(f"{tag}: supervisor exited {code}")
        # The worker exits by itself once the supervisor closes the job.
        wcode, worker_cpu = reap(worker.pid, 5)
        if wcode is not None:
            worker.returncode = wcode
        summary = json.loads((out / "summary.json").read_text())
        return {**summary, "supervisor_cpu_s": sup_cpu, "worker_cpu_s": worker_cpu, "out": out}
    finally:
        if worker.returncode is None:
            worker.kill()
            worker.wait()


def check(row: dict, inp: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from labctl import oracle

    problems = oracle.compare(row["out"], inp, None)
    if problems:
        raise SystemExit(f"wrong outputs for {inp.name}: {problems[:3]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--window", type=int, default=1024)
    args = ap.parse_args()
    # make decides: a binary older than worker.c would measure yesterday's worker.
    subprocess.run(["make", "-s", "-C", str(WORKER.parent.parent), "all"], check=True)
    sys.path.insert(0, str(SUPERVISOR.parent))
    import generate_data

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        values = generate_data.generate(args.items, 1)
        clean_in, mixed_in = tmp / "clean.dat", tmp / "mixed.dat"
        generate_data.write(str(clean_in), values)
        mixed_in.write_bytes(mixed(values, 2))
        mixed_name = f"mixed ({NEGATIVE:.0%} neg, {MALFORMED:.0%} bad)"
        rows = [
            ("clean", "batched", run(tmp, clean_in, args.window, False, "clean")),
            (mixed_name, "batched", run(tmp, mixed_in, args.window, False, "mixed")),
            ("clean", "--flush-every-line", run(tmp, clean_in, args.window, True, "flushed")),
        ]
        check(rows[0][2], clean_in)
        check(rows[1][2], mixed_in)
        check(rows[2][2], clean_in)
    print(f"supervisor -> worker over loopback, {args.items:,} items, window {args.window} ({os.cpu_count()} cores)")
    print(f"{'input':<26}{'worker mode':<21}{'seconds':>9}{'items/s':>12}{'corrupted':>11}{'rejected':>10}"
          f"{'sup CPU s':>11}{'worker CPU s':>14}")
    for inp, mode, s in rows:
        print(f"{inp:<26}{mode:<21}{s['duration_s']:>9.3f}{s['read'] / s['duration_s']:>12,.0f}{s['corrupted']:>11,}"
              f"{s['rejected']:>10,}{s['supervisor_cpu_s']:>11.2f}{s['worker_cpu_s']:>14.2f}")
    clean, mix, flushed = (r[2] for r in rows)
    print(f"mixed / clean (batched): {clean['duration_s'] / mix['duration_s']:.2f} of the clean rate")
    print(f"batched / flush-every-line: {flushed['duration_s'] / clean['duration_s']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
