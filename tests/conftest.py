"""Fixtures: the worker binaries (rebuilt when their sources change) and the engine."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import SAN_ENV, WORKER, WORKER_DIR, WORKER_SAN, Labs, Procs, labctl, labelled


@pytest.fixture(scope="session", autouse=True)
def _built() -> None:
    # make decides from the sources' times: a stale binary is rebuilt.
    subprocess.run(["make", "-s", "-C", str(WORKER_DIR), "all", "sanitize"], check=True)


@pytest.fixture(params=["release", "sanitize"])
def worker_bin(request) -> tuple[Path, dict]:
    """Both builds: the contract must hold under ASan and UBSan too."""
    if request.param == "release":
        return WORKER, dict(os.environ)
    return WORKER_SAN, {**os.environ, **SAN_ENV}


@pytest.fixture(scope="session")
def engine():
    from labctl.engine import Engine

    eng = Engine.open()
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def built(engine):
    """The images, built (or found up to date) once per session."""
    p = labctl("build", timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr
    return True


@pytest.fixture
def procs():
    """A registry for what the test starts: every process is stopped (SIGCONT,
    SIGTERM, SIGKILL) and every file closed at teardown, also on failure."""
    p = Procs()
    yield p
    p.close()


@pytest.fixture
def labs(engine, procs, tmp_path):
    """Lab ids for a docker test, and a scratch LABCTL_RUNS (labs.runs).

    At teardown, after the test's own processes are stopped (a labctl still
    running would race the teardown), every id handed out and every lab
    named in the runs dir is taken down with `labctl down --lab ID`, which
    also reverts its journaled faults, and nothing labelled with any of
    those ids may be left."""
    reg = Labs(tmp_path / "runs")
    reg.runs.mkdir()
    yield reg
    procs.close()
    left = {}
    for lab_id in reg.all():
        # A lab with nothing labelled and no journal has nothing to take down or revert.
        if labelled(engine, lab_id) == ([], [], []) and not (reg.runs / lab_id / "journal.jsonl").exists():
            continue
        d = labctl("down", "--lab", lab_id, runs=reg.runs, timeout=180)
        if labelled(engine, lab_id) != ([], [], []):
            left[lab_id] = (labelled(engine, lab_id), d.stdout[-500:] + d.stderr[-500:])
    assert not left, f"labs left behind after teardown: {left}"
