"""Fixtures: the worker binaries (rebuilt when their sources change) and the engine."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from helpers import SAN_ENV, WORKER, WORKER_DIR, WORKER_SAN, Labs, Procs, SecondEngine, labctl, labelled, wait_until


def pytest_configure(config) -> None:
    # A shell without job control starts a background job (`make test &`,
    # some CI runners) with SIGINT ignored, and every child inherits that:
    # the tests that press Ctrl-C on labctl would then see it ignored. Back
    # to Python's own handler here, so the programs the tests start get the
    # default again.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


# ------------------------------------------------------------------ a second dockerd, in its own network namespace


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def _our_processes(root: Path) -> list[int]:
    """What the second dockerd started (its containerd, shims), by their
    command lines naming our directories: ended by pid, nothing else."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if str(root).encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def _stop(proc: subprocess.Popen | None, root: Path) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()  # dockerd stops its containers and its containerd
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pid in _our_processes(root):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines() if str(root) in ln.split()[1]]
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


@pytest.fixture(scope="module")
def second_engine():
    """A second dockerd that has never seen the lab's images, in a network
    namespace of its own (no network at all: it can pull nothing)."""
    from labctl.errors import LabError

    if os.geteuid() != 0:
        pytest.skip("a second dockerd needs root (ip netns, dockerd)")
    missing = [t for t in ("ip", "nsenter", "dockerd") if not shutil.which(t)]
    if missing or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        pytest.skip(f"a second dockerd needs `ip netns`, nsenter and dockerd (missing: {missing or ['ip netns']})")
    root = Path(tempfile.mkdtemp(prefix="le", dir="/tmp"))  # short: a socket path stays under 108 bytes
    ns = f"labctl-e2-{uuid.uuid4().hex[:8]}"
    proc = None
    netns_added = False
    try:
        _run("ip", "netns", "add", ns)
        netns_added = True
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        (root / "empty.json").write_text("{}")  # /etc/docker/daemon.json sets a data-root of its own
        sock = root / "d.sock"
        t0 = time.monotonic()
        with open(root / "dockerd.log", "wb") as log:
            # nsenter --net, not `ip netns exec` (which remounts /sys: "Devices cgroup isn't mounted").
            proc = subprocess.Popen(
                ["nsenter", f"--net=/var/run/netns/{ns}", "dockerd", "--config-file", str(root / "empty.json"),
                 "--host", f"unix://{sock}", "--data-root", str(root / "data"), "--exec-root", str(root / "x"),
                 "--pidfile", str(root / "dockerd.pid")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        e2 = SecondEngine(f"unix://{sock}", 0.0)

        def up():
            if proc.poll() is not None:
                raise AssertionError("the second dockerd exited: " + (root / "dockerd.log").read_text()[-2000:])
            try:
                e2.open().close()
                return True
            except LabError:
                return False

        wait_until(up, 60, 0.2, "the second dockerd to answer")
        e2.start_s = time.monotonic() - t0
        yield e2
    finally:
        _stop(proc, root)
        if netns_added:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
