"""`labctl handout DIR`: the students' starting folder.

Without an engine: every sheet file is written and DIR is a submission the
grader takes; the README's grading table and each skeleton's contract list
the catalog's tests; the skeletons compile or run and do nothing of their
contract, judged both by their code and by the grader's own readers of
their output; a non-empty DIR is refused in one line. With the engine: the
handout graded as it is fails its tests, compiles, and breaks nothing.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from helpers import labctl
from labctl import cli, handout, scenario
from labctl.errors import ExitCode
from labctl.grade import ex1, ex2, reference
from labctl.grade.catalog import CATALOG, EXERCISE_FILES
from labctl.grade.catalog import tests_for as select  # a test_* name would be collected
from labctl.grade.sandbox import CFLAGS, RunResult
from labctl.grade.submission import load_submission

C_FILES = [f for f in handout.SKELETONS if f.endswith(".c")]
PY_FILES = [f for f in handout.SKELETONS if f.endswith(".py")]
# What any answer to the contracts would call; a skeleton's code (comments aside) calls none of it.
C_SOLUTION = re.compile(r"\b(open|fopen|flock|unlink|remove|getpid|sigaction|signal|raise|printf|fprintf|write|"
                        r"fgets|sleep)\s*\(|999")
PY_SOLUTION = re.compile(r"\b(logging|subprocess|Popen|os\.kill|open)\b|999")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("handout") / "alice"
    handout.write(d)
    return d


def c_code(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


def py_code(text: str) -> str:
    toks = tokenize.generate_tokens(io.StringIO(text).readline)
    return " ".join(t.string for t in toks if t.type not in (tokenize.COMMENT, tokenize.STRING))


def run(argv: list[str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, timeout=20)


def test_every_sheet_file_is_written_and_dir_is_a_submission(written):
    assert {p.name for p in written.iterdir()} == {*EXERCISE_FILES, handout.README}
    sub = load_submission(written)
    assert set(sub.files) == set(EXERCISE_FILES) and sub.other_files == [handout.README] and not sub.problems
    # The generator is the lab's own, as the reference submission has it.
    assert sub.files["generateData.py"] == reference.files()["generateData.py"]
    for name in (*handout.SKELETONS, handout.README):
        assert not re.search(r"@[A-Z]+@", (written / name).read_text()), f"{name}: a placeholder left"


def test_readme_grading_table_lists_every_test_with_its_points(written):
    text = (written / handout.README).read_text()
    for t in CATALOG:
        points = "info" if t.informational else f"{t.points:g}"
        name = re.escape(t.name.replace("|", "\\|").replace("*", "\\*"))
        assert re.search(rf"^\| {re.escape(t.number)} \| {name}( †)? \| {points} \|", text, re.M), t.number
    for ex in (1, 2, 3, 4):
        assert re.search(rf"^### Exercise {ex}: .*\(100 points\)$", text, re.M)
    assert f"labctl grade {written.name} --exercise 1" in text and f"grades/{written.name}/" in text
    assert "gcc " + " ".join(CFLAGS) in text
    known = {sc.name for sc in scenario.builtin()}
    assert {n for names in handout.WATCH.values() for n in names} <= known
    assert all(f"`{n}`" in text for n in known)


def test_each_skeleton_lists_its_tests(written):
    for name in handout.SKELETONS:
        text = (written / name).read_text()
        assert handout.tests_of(name), name
        for t in handout.tests_of(name):
            assert f"{t.number:<5} {t.name}" in text, (name, t.number)
        if name.endswith(".c"):
            assert text.index("*/") > text.index(f"{handout.tests_of(name)[-1].number:<5} "), name


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc on this host")
@pytest.mark.parametrize("name", C_FILES)
def test_c_skeleton_compiles_and_does_nothing(written, tmp_path, name):
    src = (written / name).read_text()
    assert not C_SOLUTION.search(c_code(src)), f"{name}: {C_SOLUTION.search(c_code(src))}"
    binary = tmp_path / "bin" / name.removesuffix(".c")
    binary.parent.mkdir()
    c = subprocess.run(["gcc", *CFLAGS, "-Wextra", "-Werror", str(written / name), "-o", str(binary)],
                       capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    work = tmp_path / "work"
    work.mkdir()
    r = run([str(binary)], work, b"7\n999\n8\n")
    # No lock (naive.lock, robust.lock, cworker.lock, worker.lock), no answer, no crash on 999.
    assert r.returncode == 0 and list(work.iterdir()) == [] and b"7,49" not in r.stdout, r


def test_python_skeletons_do_nothing_by_their_code(written):
    for name in PY_FILES:
        code = py_code((written / name).read_text())
        assert not PY_SOLUTION.search(code), f"{name}: {PY_SOLUTION.search(code)}"


def test_process_data_skeleton_would_fail_the_grader(written, tmp_path):
    readings = [12, 34, -5, 56, 0, 78, 999, -25]
    shutil.copy(written / "processData.py", tmp_path)
    (tmp_path / "input.dat").write_text("".join(f"{v}\n" for v in readings))
    p = run([sys.executable, "processData.py"], tmp_path)
    r = RunResult(exit_code=p.returncode, stdout=p.stdout, stderr=p.stderr)
    assert p.returncode == 0 and ex1.TRACEBACK not in r.stdout_text() + r.stderr_text()
    lines = ex1.log_lines(r)
    assert lines == [] and ex1.unmatched(lines, [12, 34, 56]) == [12, 34, 56]


def test_monitor_skeleton_says_no_verdict(written, tmp_path):
    shutil.copy(written / "monitor.py", tmp_path)
    (tmp_path / "worker.lock").write_text(f"{os.getpid()}\n")
    p = run([sys.executable, "monitor.py"], tmp_path)
    r = RunResult(exit_code=p.returncode, stdout=p.stdout, stderr=p.stderr)
    assert p.returncode == 0 and ex2.verdicts(r.stdout_lines()) == []


def test_supervisor_skeleton_starts_no_worker(written, tmp_path):
    shutil.copy(written / "supervisor.py", tmp_path)
    (tmp_path / "input.dat").write_text("1\n2\n")
    worker = tmp_path / "hardcore_worker"
    worker.write_text("#!/bin/sh\ntouch started\ncat\n")
    worker.chmod(0o755)
    p = run([sys.executable, "supervisor.py"], tmp_path)
    assert p.returncode == 0 and b"Traceback" not in p.stderr and not (tmp_path / "started").exists()


def test_non_empty_dir_refused_in_one_line(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "processData.py").write_text("my answer\n")
    assert cli.main(["handout", str(d)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"labctl: error: {d} is not empty") and "--force" in err
    assert [p.name for p in d.iterdir()] == ["processData.py"]
    assert (d / "processData.py").read_text() == "my answer\n"
    (tmp_path / "afile").write_text("x")
    assert cli.main(["handout", str(tmp_path / "afile")]) == ExitCode.USAGE
    assert capsys.readouterr().err.startswith("labctl: error: ")
    # --force writes the handout's files, and leaves the others alone.
    (d / "notes.txt").write_text("keep")
    assert cli.main(["handout", str(d), "--force"]) == ExitCode.OK
    assert (d / "processData.py").read_text() == handout.skeleton("processData.py")
    assert (d / "notes.txt").read_text() == "keep"


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_handout_graded_fails_without_grader_error(engine, built, tmp_path):
    d = tmp_path / "handout"
    handout.write(d)
    out = tmp_path / "grades"
    p = labctl("grade", str(d), "--exercise", "3", "--out", str(out), timeout=600)
    assert p.returncode == ExitCode.FAILED, p.stdout + p.stderr
    [path] = out.glob("*/results.json")
    assert "did not compile" not in path.read_text()
    tests = {t["number"]: t for t in json.loads(path.read_text())["tests"]}
    ex3 = select([3])
    assert set(tests) == {t.number for t in ex3}
    failed = {n for n, t in tests.items() if t["status"] == "failed"}
    assert failed == {t.number for t in ex3 if t.kind != "compile" and not t.informational}
    assert not any("grader error" in t["output"] for t in tests.values())
