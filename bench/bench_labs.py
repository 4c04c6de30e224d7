#!/usr/bin/env python3
"""Many labs at once on one machine: wall time, memory per lab, pass count.

Each size runs `labctl up SCENARIO SCENARIO ...` (one lab per copy, side
by side, as a class's lab server would) with the runs written to a
temporary directory; a lab passes when the checker's verdict.json says
ok. While a run goes, the engine is polled (`docker stats`) for the memory
of every container labelled with labctl, for its peak; labctl's own peak
resident memory comes from the kernel once it ended. The first row, one
lab, is the baseline the others are read against.

    python bench/bench_labs.py [--sizes 1,10,30] [--repeat 3] [--scenario scenario-pause] [--keep-failures DIR]

`--repeat` runs the largest size that many times in a row (the issue asks
for 30 at once to pass three times running). Exits 1 if any lab failed or
anything labelled was left on the engine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from labctl import labels

ROOT = Path(__file__).resolve().parent.parent
LABCTL = [sys.executable, "-m", "labctl"]
POLL_S = 0.5
MANAGED = f"{labels.MANAGED}=true"
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def mem_bytes(text: str) -> float:
    """'12.5MiB / 256MiB' -> bytes used."""
    used = text.split("/")[0].strip()
    for unit in sorted(UNITS, key=len, reverse=True):
        if used.endswith(unit):
            return float(used[: -len(unit)]) * UNITS[unit]
    return 0.0


def labelled_ids() -> list[str]:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label={MANAGED}"], capture_output=True, text=True)
    return out.stdout.split()


def left_behind(lab_ids: list[str]) -> int:
    """What this run's labs left: the engine may hold other labctl labs (other work on the machine)."""
    n = 0
    for lab_id in lab_ids:
        for kind in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
            out = subprocess.run(["docker", *kind, "--filter", f"label={labels.LAB}={lab_id}"],
                                 capture_output=True, text=True)
            n += len(out.stdout.split())
    return n


class MemoryPeak(threading.Thread):
    """The peak, over the run, of the summed memory of labctl's containers."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.before = set(labelled_ids())  # other work's labs, not this run's
        self.stop = threading.Event()
        self.peak = 0.0
        self.peak_containers = 0

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            ids = [i for i in labelled_ids() if i not in self.before]
            if not ids:
                continue
            out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", *ids],
                                 capture_output=True, text=True)
            total = sum(mem_bytes(line) for line in out.stdout.splitlines())
            if total > self.peak:
                self.peak, self.peak_containers = total, len(ids)


@dataclass
class Row:
    labs: int
    wall_s: float
    passed: int
    exit_code: int
    peak_mem: float
    labctl_rss: float
    left: int
    failures: list[str]

    def show(self, base: Row | None) -> str:
        per_lab = self.peak_mem / self.labs / 2**20
        slower = f"{self.wall_s / base.wall_s:.2f}x" if base else "baseline"
        return (f"| {self.labs} | {self.wall_s:.0f} s | {slower} | {self.passed}/{self.labs} | "
                f"{self.peak_mem / 2**20:.0f} MiB | {per_lab:.0f} MiB | {self.labctl_rss / 2**20 / self.labs:.1f} MiB "
                f"| {self.left} | {self.exit_code} |")


def run_once(scenario: str, labs: int, keep: Path | None = None) -> Row:
    with tempfile.TemporaryDirectory(prefix="labctl-bench-labs-") as tmp:
        env = {**os.environ, "LABCTL_RUNS": tmp, "PYTHONUNBUFFERED": "1"}
        mem = MemoryPeak()
        mem.start()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.monotonic()
        p = subprocess.run([*LABCTL, "up", *([scenario] * labs)], capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.monotonic() - t0
        mem.stop.set()
        mem.join(30)
        rss = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) * 1024
        verdicts = sorted(Path(tmp).rglob("verdict.json"))
        failures = []
        for v in verdicts:
            doc = json.loads(v.read_text())
            if not doc.get("ok"):
                bad = [c.get("name", "?") for c in doc.get("checks", []) if not c.get("ok")]
                failures.append(f"{v.parent.parent.name}: {doc.get('error') or ', '.join(bad)}")
                if keep is not None:  # the failed run's files, for `labctl report` / the timeline
                    shutil.copytree(v.parent, keep / v.parent.parent.name / v.parent.name)
        passed = sum(1 for v in verdicts if json.loads(v.read_text()).get("ok"))
        if len(verdicts) < labs:
            said = [ln.strip() for ln in (p.stderr + p.stdout).splitlines() if "error" in ln.lower()]
            failures.append(f"{labs - len(verdicts)} lab(s) without a verdict; labctl said: "
                            + (" | ".join(dict.fromkeys(said))[:800] or (p.stderr or p.stdout)[-400:]))
        lab_ids = sorted(d.name for d in Path(tmp).iterdir() if d.is_dir())
        return Row(labs, wall, passed, p.returncode, mem.peak, rss, left_behind(lab_ids), failures)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,10,30", help="comma-separated numbers of labs at once")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the largest size, in a row")
    ap.add_argument("--scenario", default="scenario-pause")
    ap.add_argument("--keep-failures", type=Path, help="copy the run directory of every failed lab here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    plan = sizes[:-1] + [sizes[-1]] * args.repeat
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"scenario {args.scenario}", flush=True)
    print("| labs at once | wall time | vs 1 lab | passed | peak container memory | per lab | labctl RSS per lab "
          "| left behind | exit |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    base: Row | None = None
    bad = False
    for n in plan:
        row = run_once(args.scenario, n, args.keep_failures)
        print(row.show(base), flush=True)
        base = base or row
        for f in row.failures:
            print(f"    failed: {f}", flush=True)
        bad |= bool(row.failures) or row.passed < n or row.left > 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
