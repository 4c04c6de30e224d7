#!/usr/bin/env python3
"""Worker throughput: lines/s through a pipe, batched vs flush-every-line.

All figures come from the same binary in the same run, with the start-up
time (the same pipeline on empty input) subtracted. A plain `cat` of the file
through the same pipes is the practical ceiling. The mixed row is the clean
input with 2 % negative readings and 1 % malformed lines, whose error lines
go to stderr (here /dev/null): bad lines should cost about what good ones do.

    python bench/bench_worker.py [--lines 10000000] [--repeat 3] [--worker PATH]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "images" / "worker" / "build" / "worker"


def make_input(path: Path, lines: int, negative: float = 0.0, malformed: float = 0.0) -> None:
    rng = random.Random(42)

    def line() -> str:
        r = rng.random()
        if r < negative:
            return f"-{rng.randint(1, 100)}\n"
        if r < negative + malformed:
            return rng.choice(("abc\n", "12x\n", "\n", "1e3\n"))
        return f"{rng.randint(1, 100)}\n"

    with path.open("w") as f:
        chunk = 100_000
        for start in range(0, lines, chunk):
            f.write("".join(line() for _ in range(min(chunk, lines - start))))


def timed(cmd: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", cmd], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--flush-lines", type=int, default=None,
                    help="lines for the flush-every-line run (default: same as --lines)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker", type=Path, default=WORKER, help="the binary to measure (default: the build's)")
    args = ap.parse_args()
    if args.worker == WORKER:
        subprocess.run(["make", "-s", "-C", str(WORKER.parent.parent), "all"], check=True)
    flush_lines = args.flush_lines or args.lines
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data, mixed, small, empty = tmp / "in.txt", tmp / "mixed.txt", tmp / "small.txt", tmp / "empty.txt"
        make_input(data, args.lines)
        make_input(mixed, args.lines, negative=0.02, malformed=0.01)
        make_input(small, flush_lines)
        empty.write_text("")
        lock = tmp / "bench.lock"
        w = f"{args.worker} --lock {lock} --bug-trigger none 2>/dev/null"
        startup = timed(f"cat {empty} | {w} | cat > /dev/null", args.repeat)
        ceiling = timed(f"cat {data} | cat | cat > /dev/null", args.repeat)
        batched = timed(f"cat {data} | {w} | cat > /dev/null", args.repeat) - startup
        batched_mixed = timed(f"cat {mixed} | {w} | cat > /dev/null", args.repeat) - startup
        flushed = timed(f"cat {small} | {w} --flush-every-line | cat > /dev/null", 1) - startup
    rate_b = args.lines / batched
    rate_m = args.lines / batched_mixed
    rate_f = flush_lines / flushed
    rate_c = args.lines / ceiling
    print(f"worker throughput, {args.lines:,} lines through a pipe ({os.cpu_count()} cores), start-up "
          f"{startup * 1000:.1f} ms subtracted")
    print(f"{'run':<28}{'lines':>14}{'seconds':>10}{'M lines/s':>12}")
    print(f"{'cat | cat (ceiling)':<28}{args.lines:>14,}{ceiling:>10.3f}{rate_c / 1e6:>12.1f}")
    print(f"{'worker, batched':<28}{args.lines:>14,}{batched:>10.3f}{rate_b / 1e6:>12.1f}")
    print(f"{'  same, 3 % bad lines':<28}{args.lines:>14,}{batched_mixed:>10.3f}{rate_m / 1e6:>12.1f}"
          f"   ({rate_m / rate_b:.0%} of clean)")
    print(f"{'worker --flush-every-line':<28}{flush_lines:>14,}{flushed:>10.3f}{rate_f / 1e6:>12.2f}")
    print(f"batched / flush-every-line: {rate_b / rate_f:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
