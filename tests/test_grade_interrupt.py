"""Ctrl-C during `labctl grade`: the submissions graded before it keep their
reports, the ones in flight and in the queue are dropped (no score, no half
report, no picture), nothing labelled with grading is left on the engine,
and the user sees one line, not a traceback per thread."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from helpers import LABCTL, ROOT, stop_process
from labctl import labels

FIXTURES = ROOT / "tests" / "fixtures" / "submissions"
# The first grades in seconds (a worker alone); the next two take minutes.
QUICK, SLOW = "ex4-atoi", ("good-student", "ex4-sup-never-sigterm")


def grading_left(engine) -> set[str]:
    f = labels.grade_filters()
    return {c.name for c in engine.containers(f)} | set(engine.volumes(f))


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_ctrl_c_keeps_what_was_graded_and_leaves_nothing_behind(engine, built, procs, tmp_path):
    assert not grading_left(engine), "a grading run from before is still on the engine"
    out = tmp_path / "grades"
    p = procs.popen([*LABCTL, "grade", *(str(FIXTURES / n) for n in (QUICK, *SLOW)), "--jobs", "1",
                     "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    first_done = threading.Event()

    def read_stderr() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            lines.append(line)
            if line.startswith(f"labctl grade: {QUICK}:"):
                first_done.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert first_done.wait(240), f"{QUICK} was never graded: {''.join(lines)[-2000:]}"
    # The next submission is in flight: wait until its sandbox runs, then interrupt.
    deadline = time.monotonic() + 60
    while not any(c.name.startswith("labctl-grade-") for c in engine.containers(labels.grade_filters())):
        assert time.monotonic() < deadline and p.poll() is None, "the second submission never started"
        time.sleep(0.2)  # polling the engine for a container that is about to appear
    time.sleep(3)  # well into its tests
    p.send_signal(signal.SIGINT)
    try:
        code = p.wait(120)
    finally:
        stop_process(p)
    reader.join(10)
    err = "".join(lines)
    assert code == 130, err
    assert "Traceback" not in err and "Exception in thread" not in err and "GRADER ERROR" not in err, err
    last = [ln for ln in lines if ln.startswith("labctl: error:")]
    assert last == [f"labctl: error: grading interrupted: 1 of 3 submission(s) graded, their reports are in "
                    f"{out}; grade the others again (nothing was left on the engine)\n"], err
    # No line about a submission after the interrupt: an interrupted one is not scored.
    assert not [ln for ln in lines if any(ln.startswith(f"labctl grade: {n}:") for n in SLOW)], err
    # One submission graded: its folder alone (the class files come with two or more).
    assert [x.name for x in out.iterdir()] == [QUICK]
    assert (out / QUICK / "results.json").is_file() and (out / QUICK / "feedback.md").is_file()
    assert not grading_left(engine)
