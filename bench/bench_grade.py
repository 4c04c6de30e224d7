#!/usr/bin/env python3
"""A class of 60 through `labctl grade --jobs N`: wall time, and not one false result.

The class is made in a temporary directory from submissions whose every
result is known: the lab's own programs (the reference, which
`python -m labctl.grade.reference DIR` writes; it fails nothing),
tests/fixtures/submissions/good-student and the wrong fixtures (each fails
exactly the tests its expect.json names), plus two hostile ones, so the mix
is a class's: mostly sensible students, a few broken ones. Each copy is
renamed student-01..60, in a shuffled order (seeded), and its expectation
is its source's.

The same class is graded once per --jobs value, with the same --seed, by
the `labctl grade` command an instructor runs. Every submission's
results.json is then compared with its expectation, as Gradescope would
read it: a false result is a test whose status differs from the expected
one (a test of a file the student did not submit must say "not
submitted"), or any grader error. While a run goes, the engine is polled
for the run's containers (sandboxes and compilers), for their peak.

    python bench/bench_grade.py [--jobs 2,3] [--students 60] [--seed 20261205] [--keep DIR]

It prints one row per --jobs value, and exits 1 on any false result (each
is listed), on a labctl grade exit other than 1 (the class has failing
students; 10 is a grader error) or on anything left on the engine.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from labctl import labels
from labctl.engine import Engine
from labctl.grade.catalog import TestDef
from labctl.grade.runner import plan

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "submissions"
LABCTL = [sys.executable, "-m", "labctl"]
SEED = 20261205
# The class: how many copies of each source. The wrong fixtures are each
# one mistake students make; of the hostile ones only two come, since a
# class is mostly sensible students.
FULL = {"reference": 15, "good-student": 15}
HOSTILE = ("hostile-endless-loop", "hostile-snoop")
POLL_S = 0.5
# The tests labctl grade runs (those of the catalog that have a check).
PLANNED: list[TestDef] = plan("all").tests


@dataclass
class Source:
    name: str
    path: Path
    fail: frozenset[str]


@dataclass
class Student:
    name: str
    source: Source
    files: frozenset[str]


@dataclass
class RunStats:
    jobs: int
    wall_s: float
    exit_code: int
    peak_containers: int
    left_behind: int
    times: list[float] = field(default_factory=list)
    false: list[str] = field(default_factory=list)  # "student-07 (ex4-atoi) 4.9: expected failed, got passed"
    grader_errors: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # students without a results.json


def sources(tmp: Path) -> list[Source]:
    ref = tmp / "sources" / "reference"
    subprocess.run([sys.executable, "-m", "labctl.grade.reference", str(ref)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    out = [Source("reference", ref, frozenset())]
    for d in sorted(FIXTURES.iterdir()):
        spec_file = d / "expect.json"
        if not d.is_dir() or not spec_file.exists():
            continue
        spec = json.loads(spec_file.read_text())
        if "archive" in spec or (d.name.startswith("hostile-") and d.name not in HOSTILE):
            continue
        out.append(Source(d.name, d, frozenset(spec["fail"])))
    return out


def make_class(tmp: Path, n: int, seed: int) -> list[Student]:
    """n students: FULL's copies of the complete answers, then the wrong
    fixtures and the hostile ones in turn until there are 60 (or n), in a
    seeded order, the first n renamed student-NN."""
    srcs = sources(tmp)
    by_name = {s.name: s for s in srcs}
    wrong = [s for s in srcs if s.name not in FULL]
    missing = [h for h in HOSTILE if h not in by_name]
    if missing:
        raise SystemExit(f"bench_grade: fixtures missing: {missing}")
    mix = [by_name[k] for k, count in FULL.items() for _ in range(count)]
    i = 0
    while len(mix) < max(n, 60):
        mix.append(wrong[i % len(wrong)])
        i += 1
    random.Random(seed).shuffle(mix)
    mix = mix[:n]  # a smaller class is a sample of the same mix
    students = []
    for k, src in enumerate(mix, 1):
        dest = tmp / "class" / f"student-{k:02d}"
        dest.mkdir(parents=True)
        for f in src.path.iterdir():
            if f.is_file() and f.name != "expect.json":  # a README.md is listed as another file and ignored
                shutil.copyfile(f, dest / f.name)
        students.append(Student(dest.name, src, frozenset(p.name for p in dest.iterdir())))
    return students


def expected(student: Student) -> dict[str, str]:
    """Test number -> expected status: tests of files not submitted fail as "not submitted"."""
    return {t.number: "failed" if (t.number in student.source.fail or not set(t.files) <= student.files)
            else "passed" for t in PLANNED}


def judge(student: Student, doc: dict, stats: RunStats) -> None:
    who = f"{student.name} ({student.source.name})"
    if doc["extra_data"].get("grader_error"):
        stats.grader_errors.append(f"{who}: {doc['extra_data']['grader_error']}")
    want = expected(student)
    got = {t["number"]: t for t in doc["tests"]}
    for number, status in want.items():
        t = got.get(number)
        if t is None:
            stats.false.append(f"{who} {number}: missing from results.json")
            continue
        if t["extra_data"].get("grader_error"):
            stats.grader_errors.append(f"{who} {number}: {t['output'][:200]}")
        unsubmitted = not set(next(c.files for c in PLANNED if c.number == number)) <= student.files
        if t["status"] != status or (unsubmitted and "not submitted" not in t["output"]):
            seen = t["output"].split("**Seen:**", 1)[-1].strip().splitlines()[:4]
            stats.false.append(f"{who} {number}: expected {status}, got {t['status']}: {' / '.join(seen)[:300]}")
    stats.times.append(float(doc.get("execution_time") or 0.0))


class Watcher(threading.Thread):
    """Polls the engine for this run's containers (found by the students'
    names, under a grading run id not seen before the start) for their peak."""

    def __init__(self, engine: Engine, names: set[str]):
        super().__init__(daemon=True, name="watch-engine")
        self.engine = engine
        self.names = names
        self.before = self.run_ids()
        self.run_id: str | None = None
        self.peak = 0
        self.stop = threading.Event()

    def listed(self) -> list[dict]:
        return self.engine.api.containers(all=True, filters=labels.grade_filters())

    def run_ids(self) -> set[str]:
        return {c["Labels"].get(labels.GRADE, "") for c in self.listed()}

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            try:
                ours = [c for c in self.listed() if c["Labels"].get(labels.SUBMISSION) in self.names
                        and c["Labels"].get(labels.GRADE) not in self.before]
            except Exception:  # a poll that fails is a poll missed, not a result
                continue
            if ours and self.run_id is None:
                self.run_id = ours[0]["Labels"][labels.GRADE]
            self.peak = max(self.peak, sum(1 for c in ours if c["Labels"].get(labels.GRADE) == self.run_id))

    def left_behind(self) -> int:
        if self.run_id is None:
            return 0
        f = labels.grade_filters(self.run_id)
        return len(self.engine.api.containers(all=True, filters=f)) + len(self.engine.volumes(f))


def grade(students: list[Student], tmp: Path, jobs: int, seed: int) -> RunStats:
    out = tmp / f"out-jobs{jobs}"
    log = tmp / f"grade-jobs{jobs}.log"
    engine = Engine.open()
    watcher = Watcher(engine, {s.name for s in students})
    watcher.start()
    cmd = [*LABCTL, "grade", *(str(tmp / "class" / s.name) for s in students), "--jobs", str(jobs),
           "--out", str(out), "--seed", str(seed)]
    t0 = time.monotonic()
    with log.open("wb") as f:
        code = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t0
    watcher.stop.set()
    watcher.join()
    stats = RunStats(jobs, wall, code, watcher.peak, watcher.left_behind())
    engine.close()
    for s in students:
        path = out / s.name / "results.json"
        if not path.exists():
            stats.missing.append(s.name)
            continue
        judge(s, json.loads(path.read_text()), stats)
    if code not in (0, 1, 10):
        print(f"labctl grade --jobs {jobs} exited {code}; its log: {log}", file=sys.stderr)
        print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    return stats


def false_count(st: RunStats) -> int:
    return len(st.false) + len(st.missing) + len(st.grader_errors)


def table(rows: list[RunStats], n: int) -> str:
    head = ["jobs", "wall time", "submissions/min", "false results", "grader errors", "peak engine containers",
            "mean s per submission", "sum of their times", "left behind", "exit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for st in rows:
        mean = sum(st.times) / len(st.times) if st.times else 0.0
        cells = [str(st.jobs), f"{st.wall_s / 60:.1f} min ({st.wall_s:.0f} s)", f"{n / (st.wall_s / 60):.2f}",
                 str(false_count(st)), str(len(st.grader_errors)), str(st.peak_containers), f"{mean:.1f}",
                 f"{sum(st.times) / 60:.1f} min", str(st.left_behind), str(st.exit_code)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", default="2,3", help="comma-separated --jobs values, one run each (default 2,3)")
    ap.add_argument("--students", type=int, default=60)
    ap.add_argument("--seed", type=int, default=SEED, help="labctl grade's --seed and the class's order")
    ap.add_argument("--keep", type=Path, help="make the class and the reports here, and keep them")
    args = ap.parse_args()
    jobs = [int(j) for j in args.jobs.split(",")]
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="bench-grade-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        students = make_class(tmp, args.students, args.seed)
        mix: dict[str, int] = {}
        for s in students:
            mix[s.source.name] = mix.get(s.source.name, 0) + 1
        print(f"{len(students)} submissions: " + ", ".join(f"{k} x{v}" for k, v in mix.items()))
        print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"seed {args.seed}")
        rows = []
        for j in jobs:
            st = grade(students, tmp, j, args.seed)
            rows.append(st)
            print(f"--jobs {j}: {st.wall_s:.0f} s, {false_count(st)} false result(s), exit {st.exit_code}, "
                  f"load average now {os.getloadavg()[0]:.2f}", flush=True)
        print()
        print(table(rows, len(students)))
        bad = False
        for st in rows:
            for what, items in (("false results", st.false), ("grader errors", st.grader_errors),
                                ("without results.json", st.missing)):
                if items:
                    bad = True
                    print(f"\n--jobs {st.jobs}, {what}:")
                    print("\n".join(f"  {x}" for x in items))
            if st.exit_code != 1:  # the class has failing students: 1, unless the grader broke (10)
                bad = True
                print(f"\n--jobs {st.jobs}: labctl grade exited {st.exit_code}, expected 1")
            if st.left_behind:
                bad = True
                print(f"\n--jobs {st.jobs}: {st.left_behind} container(s)/volume(s) left on the engine")
        return 1 if bad else 0
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
