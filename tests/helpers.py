"""Paths, ports, polling and program loaders shared by the tests.

Tests import from here (never from conftest.py or from each other); fixtures
live in conftest.py.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
WORKER_DIR = ROOT / "images" / "worker"
BUILD = WORKER_DIR / "build"
WORKER = BUILD / "worker"
WORKER_SAN = BUILD / "worker-sanitize"
SUPERVISOR = ROOT / "images" / "supervisor" / "supervisor.py"
MONITOR = ROOT / "images" / "monitor" / "monitor.py"
LABCTL = [sys.executable, "-m", "labctl"]

# Let the worker's own SIGSEGV handler run under ASan, and make any sanitizer
# finding fail the process loudly.
SAN_ENV = {
    "ASAN_OPTIONS": "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:handle_abort=0:"
    "allow_user_segv_handler=1:detect_leaks=1:abort_on_error=0:exitcode=86",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
}


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


def load_program(name: str, path: Path) -> ModuleType:
    """One of the containers' Python programs, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- labctl and the engine (integration)


def labctl(*args: str, env: dict | None = None, timeout: float = 300, runs: Path | None = None):
    e = {**os.environ, **(env or {})}
    if runs is not None:
        e["LABCTL_RUNS"] = str(runs)
    return subprocess.run([*LABCTL, *args], capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)


def labelled(engine, lab_id: str | None = None):
    from labctl import labels

    f = labels.filters(lab_id)
    return ([c.name for c in engine.containers(f)], [n for _, n in engine.networks(f)], engine.volumes(f))


def checker_verdict(run_dir: Path) -> dict:
    """The checker's findings on a run: verdict.json, the checker's own file
    (summary.json is what the lab wrote)."""
    return json.loads((run_dir / "verdict.json").read_text())


def assert_timeline_png(path: Path, columns: int, windows: int) -> None:
    """Opened and checked: size, lanes, and the fault windows' shading."""
    import numpy as np
    from PIL import Image

    img = Image.open(path)
    assert img.format == "PNG"
    w, h = img.size
    assert h >= 700 and w >= 600 * columns, img.size
    lanes = img.text["Lanes"].split("|")
    assert lanes == ["ground truth", "monitor", "heartbeat-only", "phi (accrual)", "sender clock", "supervisor",
                     "worker beats & items processed"]
    assert int(img.text["Columns"]) == columns and int(img.text["FaultWindows"]) == windows
    # The shade blended over white: (0x90,0xa4,0xae) at alpha .35 -> about (220, 228, 231).
    px = np.asarray(img.convert("RGB")).astype(int)
    shaded = int((np.abs(px - np.array([220, 228, 231])).max(axis=2) < 6).sum())
    # Even a short window covers tens of thousands of pixels; stray pixels of
    # a similar grey elsewhere stay in the hundreds.
    if windows:
        assert shaded > 5000, f"only {shaded} shaded pixels"
    else:
        assert shaded < 2000, f"{shaded} shaded pixels without a fault window"


# ---------------------------------------------------------------- teardown: nothing a test started outlives it


def stop_process(p: subprocess.Popen, grace: float = 5.0) -> None:
    """Stops a process the test started, whatever state it is in, and reaps it.

    SIGCONT first: a SIGSTOPped process would leave SIGTERM pending and only
    die of the SIGKILL after the grace period."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGCONT)
            p.terminate()
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class _Process:
    def __init__(self, p: subprocess.Popen):
        self.p = p

    def close(self) -> None:
        stop_process(self.p)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            if f is not None:
                f.close()


class Procs:
    """What a test started (processes, files, anything with close()), closed
    in reverse order at teardown, also when the test failed. The `procs`
    fixture in conftest.py yields one."""

    def __init__(self):
        self._things: list = []

    def add(self, thing):
        """Registers thing (a Popen, or anything with close()) and returns it."""
        self._things.append(_Process(thing) if isinstance(thing, subprocess.Popen) else thing)
        return thing

    def popen(self, cmd, **kw) -> subprocess.Popen:
        return self.add(subprocess.Popen(cmd, **kw))

    def open(self, path, mode: str = "r", **kw):
        return self.add(open(path, mode, **kw))

    def close(self) -> None:
        """Closes everything, newest first; one failure does not spare the rest.
        Safe to call twice."""
        errors = []
        while self._things:
            thing = self._things.pop()
            try:
                thing.close()
            except Exception as e:  # keep closing the others; report the first at the end
                errors.append(e)
        if errors:
            raise errors[0]


class Labs:
    """Lab ids handed to a docker test; the `labs` fixture in conftest.py
    tears down every one of them, and every lab named in the scratch runs
    directory, at teardown, and checks that nothing labelled is left."""

    def __init__(self, runs: Path):
        self.runs = runs
        self.ids: list[str] = []

    def new(self, stem: str) -> str:
        import uuid

        lab_id = f"t-{stem}-{uuid.uuid4().hex[:4]}"
        self.ids.append(lab_id)
        return lab_id

    def in_runs(self) -> list[str]:
        """The labs labctl created under this test's runs directory (named or not)."""
        if not self.runs.is_dir():
            return []
        return sorted(d.name for d in self.runs.iterdir() if d.is_dir() and not d.name.startswith("demo-"))

    def all(self) -> list[str]:
        return sorted(set(self.ids) | set(self.in_runs()))


@dataclass
class SecondEngine:
    """A second dockerd (the `second_engine` fixture): its URL and how long it took to answer."""
    url: str
    start_s: float

    def open(self):
        from labctl.engine import Connection, Engine

        return Engine.open(timeout=60, conn=Connection(self.url, self.url))


LONG_LAB = """name: scenario-{stem}-live
lesson: a long healthy job, for live faults
lab:
  items: 200000
  rate: 250
duration_s: 900
timeline: []
expect:
  job:
    completes: true
"""


def start_long_lab(engine, labs, procs, tmp_path: Path, stem: str) -> str:
    """A running lab whose job outlasts the test: its labctl in the background
    (procs stops it), the lab taken down by the labs fixture at teardown."""
    lab = labs.new(stem)
    sc = tmp_path / "long.yaml"
    sc.write_text(LONG_LAB.format(stem=stem))
    env = {**os.environ, "LABCTL_RUNS": str(labs.runs)}
    procs.popen([sys.executable, "-m", "labctl", "up", str(sc), "--lab", lab], env=env,
                stdout=(tmp_path / "up.log").open("w"), stderr=(tmp_path / "up.err").open("w"))
    wait_until(lambda: (st := engine.inspect(f"labctl-{lab}-supervisor")) and st.status == "running", 120,
               interval=0.2, what="the lab's supervisor running")
    return lab
