"""Fixtures: the worker binaries (rebuilt when their sources change) and the engine."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import SAN_ENV, WORKER, WORKER_DIR, WORKER_SAN, labctl


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
