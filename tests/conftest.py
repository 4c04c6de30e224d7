"""Shared fixtures: the worker binaries, free ports, and process helpers."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER_DIR = ROOT / "images" / "worker"
BUILD = WORKER_DIR / "build"
WORKER = BUILD / "worker"
WORKER_SAN = BUILD / "worker-sanitize"
SUPERVISOR = ROOT / "images" / "supervisor" / "supervisor.py"
MONITOR = ROOT / "images" / "monitor" / "monitor.py"

# Let the worker's own SIGSEGV handler run under ASan, and make any sanitizer
# finding fail the process loudly.
SAN_ENV = {
    "ASAN_OPTIONS": "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:handle_abort=0:"
    "allow_user_segv_handler=1:detect_leaks=1:abort_on_error=0:exitcode=86",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
}


@pytest.fixture(scope="session", autouse=True)
def _built() -> None:
    if not WORKER.exists() or not WORKER_SAN.exists():
        subprocess.run(["make", "-s", "-C", str(WORKER_DIR), "all", "sanitize"], check=True)


@pytest.fixture(params=["release", "sanitize"])
def worker_bin(request) -> tuple[Path, dict]:
    """Both builds: the contract must hold under ASan and UBSan too."""
    if request.param == "release":
        return WORKER, dict(os.environ)
    return WORKER_SAN, {**os.environ, **SAN_ENV}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Poll pred() until it returns a truthy value; on timeout say what was last seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last saw {last!r}")


def connect_when_ready(port: int, timeout: float = 5.0) -> socket.socket:
    def attempt():
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            return None

    return wait_until(attempt, timeout, what=f"port {port} to accept")


def python() -> str:
    return sys.executable


# ---------------------------------------------------------------- labctl and the engine (integration)

LABCTL = [sys.executable, "-m", "labctl"]


def labctl(*args: str, env: dict | None = None, timeout: float = 300, runs: Path | None = None):
    e = {**os.environ, **(env or {})}
    if runs is not None:
        e["LABCTL_RUNS"] = str(runs)
    return subprocess.run([*LABCTL, *args], capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)


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


def labelled(engine, lab_id: str | None = None):
    from labctl import labels as L

    f = L.filters(lab_id)
    return ([c.name for c in engine.containers(f)], [n for _, n in engine.networks(f)], engine.volumes(f))


