#!/usr/bin/env python3
"""Deliberate bugs: the unit suite (`pytest -m "not docker"`) must fail on each.

For every mutant: a fresh copy of the checkout (tracked files and new,
not-ignored ones, as they are in the work tree; no build/ dir, so the test
session's `make` rebuilds the worker from the mutated source), one small
textual patch, and `pytest -m "not docker" -x` in the copy. A mutant is
"killed" when a test *fails*; it "survived" when the suite passes. Anything
else is a script error, never a kill: a patch anchor that is missing or not
unique, a copy whose suite errors out (a build failure, a collection error,
a fixture that breaks) or times out. The unmutated copy runs first: a test
that fails there would "kill" every mutant and prove nothing.

Exit 0 when every mutant was killed; 1 when one survived; 2 on a script error.

    .venv/bin/python scripts/mutants.py [--only NAME...] [--keep] [--no-baseline]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE_TIMEOUT_S = 1200  # the whole unit suite takes about 60 s on the 2-core machine; -x stops sooner


@dataclass(frozen=True)
class Patch:
    path: str
    old: str  # must occur exactly once in the file
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    patches: tuple[Patch, ...]


# Anchors are kept small (one expression or statement) so they survive
# unrelated edits to the same files.
MUTANTS = (
    Mutant("worker-squares-7-wrongly", "the worker answers 7 with 7,50 (both the fast path and the general one)", (
        Patch("images/worker/worker.c", "bitflip_maybe((int64_t)(v * v))",
              "bitflip_maybe((int64_t)(v * v + (v == 7)))"),
        Patch("images/worker/worker.c", "fmt_i64(o + n, bitflip_maybe(v * v))",
              "fmt_i64(o + n, bitflip_maybe(v * v + (v == 7)))"),
    )),
    Mutant("worker-fatal-handler-leaves-lock", "the fatal-signal handler no longer removes the lock file", (
        Patch("images/worker/worker.c", "unlink(g_lock_path);", "(void)0;"),
    )),
    Mutant("monitor-never-says-paused", "the monitor calls a pause (lock held, both beats stale) PARTITIONED", (
        Patch("images/monitor/monitor.py",
              "verdict = PARTITIONED if fresh and younger and alive_for_ms >= self.silent_after_ms else PAUSED",
              "verdict = PARTITIONED if fresh and younger and alive_for_ms >= self.silent_after_ms else PARTITIONED"),
        # And its fast path (50 ms beats): a pause called there is a partition too.
        Patch("images/monitor/monitor.py", "        if not fresh:\n            return PAUSED\n",
              "        if not fresh:\n            return PARTITIONED\n"),
    )),
    Mutant("supervisor-writes-a-result-twice", "the supervisor writes item 1's result row twice", (
        Patch("images/supervisor/supervisor.py", "self.files[key].write(data)",
              "self.files[key].write(data + (data.split(b'\\n', 1)[0] + b'\\n' "
              "if key == 'results' and data.startswith(b'1,') else b''))"),
    )),
    Mutant("checker-ignores-a-missing-item", "the oracle overlooks one lost item (the first)", (
        Patch("labctl/oracle.py", "lost = sorted(set(want_idx) - set(seen))",
              "lost = sorted(set(want_idx) - set(seen))[1:]"),
    )),
)


class ScriptError(Exception):
    pass


def source_files() -> list[str]:
    """The work tree as a developer has it: tracked files that still exist,
    and new files git does not ignore (build/, .venv/, runs/ are ignored)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return sorted({f for f in out.decode().split("\0") if f and (ROOT / f).is_file()})


def copy_tree(files: list[str], dest: Path) -> None:
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)
    # The copy must build its own worker; a stale binary would hide a mutant.
    assert not (dest / "images" / "worker" / "build").exists()


def patched(m: Mutant, tree: Path) -> dict[Path, str]:
    """The mutated text of each file m patches; a missing or ambiguous anchor is a script error."""
    texts: dict[Path, str] = {}
    for p in m.patches:
        path = tree / p.path
        if path not in texts:
            if not path.exists():
                raise ScriptError(f"{m.name}: {p.path} does not exist")
            texts[path] = path.read_text()
        n = texts[path].count(p.old)
        if n != 1:
            raise ScriptError(f"{m.name}: anchor {p.old!r} found {n} times in {p.path} (want exactly 1)")
        texts[path] = texts[path].replace(p.old, p.new)
    return texts


def apply(m: Mutant, tree: Path) -> None:
    for path, text in patched(m, tree).items():
        path.write_text(text)
        # make decides by time: the mutated source must be newer than any build.
        now = time.time()
        os.utime(path, (now, now))


@dataclass
class Outcome:
    code: int
    failed: list[str]  # tests that failed (an assertion, not an error)
    errors: list[str]  # tests that errored (setup, collection)
    nodeids: list[str]  # pytest's ids of the failed tests, from its short summary
    tail: str
    seconds: float


def run_pytest(tree: Path, label: str, *select: str) -> Outcome:
    junit = tree / ".mutants-junit.xml"
    junit.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("LABCTL_RUNS", None)
    cmd = [sys.executable, "-m", "pytest", "-m", "not docker", "-x", "-q", "-rfE", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *select]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ScriptError(f"{label}: the suite did not finish within {SUITE_TIMEOUT_S} s") from None
    failed, errors = [], []
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            if case.find("failure") is not None:
                failed.append(name)
            if case.find("error") is not None:
                errors.append(name)
    nodeids = [ln[len("FAILED "):].split(" - ", 1)[0] for ln in p.stdout.splitlines() if ln.startswith("FAILED ")]
    tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-25:])
    return Outcome(p.returncode, failed, errors, nodeids, tail, time.monotonic() - t0)


def judge(m: Mutant, o: Outcome, base: Path) -> tuple[str, str]:
    """killed (a test failed, and passes unmutated), survived, or broken (anything else: not a kill)."""
    if o.code == 0:
        return "survived", "survived  (the unit suite passed)"
    if o.code == 1 and o.failed and not o.errors and o.nodeids:
        killer = o.nodeids[0]
        again = run_pytest(base, f"{m.name}: the killing test unmutated", killer)
        if again.code == 0:
            return "killed", f"killed    by {killer}"
        return "broken", (f"BROKEN    {killer} fails without the mutant too (exit {again.code}): it proves "
                          f"nothing\n{again.tail}")
    # Exit 2/3/4/5, or errors: a build failure, a collection error, a broken fixture.
    return "broken", f"BROKEN    (pytest exit {o.code}, errors {o.errors or '-'}): not a kill\n{o.tail}"


def check_imports_from_copy(tree: Path) -> None:
    """The venv holds labctl as an editable install of the real checkout: the
    copy's tests must import the copy's labctl, or a labctl mutant is never run."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    p = subprocess.run([sys.executable, "-c", "import labctl, sys; sys.stdout.write(labctl.__file__)"], cwd=tree,
                       env=env, capture_output=True, text=True)
    if p.returncode != 0 or not Path(p.stdout).resolve().is_relative_to(tree.resolve()):
        raise ScriptError(f"the copy imports labctl from {p.stdout or p.stderr!r}, not from {tree}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run (faster, less sure)")
    args = ap.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        print(f"mutants: error: no mutant named {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="labctl-mutants-"))
    results: list[tuple[str, str]] = []
    status = 0
    try:
        files = source_files()
        pristine = scratch / "pristine"
        copy_tree(files, pristine)
        check_imports_from_copy(pristine)
        # Every anchor is checked before anything runs: a stale anchor is a script error, found in seconds.
        for m in mutants:
            patched(m, pristine)
        # The unmutated copy: the whole suite must pass there, and so must each
        # test that kills a mutant (else a flaky or broken test, or a file
        # caught mid-edit, would pass for a kill).
        base = scratch / "baseline"
        shutil.copytree(pristine, base)
        if not args.no_baseline:
            o = run_pytest(base, "baseline")
            if o.code != 0:
                raise ScriptError(f"the unmutated suite does not pass (exit {o.code}; failed {o.nodeids or o.failed}, "
                                  f"errors {o.errors}); fix it first:\n{o.tail}")
            print(f"{'baseline (no mutant)':36s}  passed  [{o.seconds:.0f} s]", flush=True)
        for m in mutants:
            tree = scratch / m.name
            shutil.copytree(pristine, tree)
            apply(m, tree)
            o = run_pytest(tree, m.name)
            verdict, line = judge(m, o, base)
            results.append((m.name, verdict))
            status = max(status, {"killed": 0, "survived": 1, "broken": 2}[verdict])
            print(f"{m.name:36s}  {line}  [{o.seconds:.0f} s; {m.what}]", flush=True)
            if not args.keep:
                shutil.rmtree(tree, ignore_errors=True)
    except ScriptError as e:
        print(f"mutants: error: {e}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"scratch copies kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    killed = sum(1 for _, r in results if r == "killed")
    print(f"{killed} of {len(results)} mutants killed" + ("" if status == 0 else
          ("; a mutant survived: the suite misses that bug" if status == 1 else "; script error (see above)")))
    return status


if __name__ == "__main__":
    sys.exit(main())
