"""Local stand-ins for the lab: a "platform" that restarts the worker, a monitor
and a supervisor as real processes on loopback, an oracle, and a UDP relay
that can be cut to simulate a partition of the heartbeat path."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import MONITOR, SUPERVISOR, WORKER, Procs, free_port, free_udp_port, stop_process, wait_until
from labctl import oracle


def assert_exactly_once(outdir: Path, input_path: Path, trigger: int | None = 999) -> None:
    """The outputs against labctl's oracle, which reads the input on its own."""
    problems = oracle.compare(outdir, input_path, trigger)
    assert not problems, problems


class Platform:
    """Keeps one worker running, restarting it when it exits, as Docker's
    restart policy does (played by the test).

    restart="on-failure" is the lab's policy (compose.yaml): a worker that
    exits 0 at the end of its job stays down. "always" also restarts after a
    clean exit, for a test that runs a second supervisor after the first one
    went away (the worker exits 0 when its client closes the connection).

    Register it with the `procs` fixture before start(), so it is stopped at
    teardown even if start() fails."""

    def __init__(self, tmp: Path, udp_port: int | None = None, heartbeat_ms: int = 100, extra=(),
                 restart: str = "on-failure"):
        assert restart in ("on-failure", "always"), restart
        self.tmp = tmp
        self.port = free_port()
        self.lock = tmp / "cworker.lock"
        self.hb = tmp / "worker.heartbeat"
        self.udp_port = udp_port
        self.heartbeat_ms = heartbeat_ms
        self.extra = list(extra)
        self.restart = restart
        self.proc: subprocess.Popen | None = None
        self.start_times: list[float] = []  # time.time() just before each worker's Popen
        self.exits: list[int] = []
        self.exit_times: list[float] = []
        # Whether the lock file was still there when each worker had exited,
        # looked at before any restart: a deterministic view of what its
        # exit left behind.
        self.lock_left: list[bool] = []
        self.log = open(tmp / "worker.log", "ab")
        # Held while deciding to start a worker and while stop() decides not
        # to: without it, stop() could terminate one worker while the thread
        # starts the next, which nobody would then stop.
        self._mu = threading.Lock()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def cmd(self) -> list[str]:
        c = [str(WORKER), "--listen", f"127.0.0.1:{self.port}", "--lock", str(self.lock),
             "--heartbeat-file", str(self.hb), "--heartbeat-ms", str(self.heartbeat_ms), *self.extra]
        if self.udp_port:
            c += ["--heartbeat-udp", f"127.0.0.1:{self.udp_port}"]
        return c

    def _run(self):
        while True:
            with self._mu:
                if self._stop.is_set():
                    return
                self.start_times.append(time.time())
                self.proc = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=self.log)
            self._started.set()
            rc = self.proc.wait()
            self.exit_times.append(time.time())
            self.lock_left.append(self.lock.exists())
            self.exits.append(rc)
            if rc == 0 and self.restart == "on-failure":
                return
            # Docker waits 100 ms and then starts a container (hundreds of ms
            # more); a restart faster than a tick would hide the crash.
            self._stop.wait(0.4)

    def start(self):
        self._t.start()
        assert self._started.wait(5), "the platform did not start a worker"
        wait_until(lambda: self.lock.exists(), 5, what="the worker's lock file")
        return self

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop_restarting(self) -> None:
        """From now on a worker that exits stays down."""
        with self._mu:
            self._stop.set()

    def running(self) -> bool:
        return self._t.is_alive()

    def stop(self):
        self.stop_restarting()
        if self.proc is not None:
            stop_process(self.proc)
        if self._t.ident is not None:
            self._t.join(10)
            assert not self._t.is_alive(), "the platform thread outlived its worker"
        self.log.close()

    close = stop


class EventReader:
    """Reads a process's JSON-lines stdout in a thread, keeping every event.
    It owns the process: close() stops it, then joins the reader."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.events: list[dict] = []
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def of(self, kind: str) -> list[dict]:
        return [e for e in list(self.events) if e["kind"] == kind]

    def first(self, kind: str, **match) -> dict | None:
        for e in list(self.events):
            if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()):
                return e
        return None

    def close(self) -> None:
        stop_process(self.proc)
        # The pipe reaches EOF once the process is gone; join before closing
        # it so the thread never reads from a closed file.
        self._t.join(10)
        assert not self._t.is_alive(), "the event reader did not see EOF"
        self.proc.stdout.close()


def start_monitor(procs: Procs, tmp: Path, udp_port: int, interval_ms=100,
                  timeout_ms=1000) -> tuple[subprocess.Popen, EventReader]:
    """A monitor process, registered with procs (stopped and its log closed at teardown)."""
    log = procs.open(tmp / "monitor.log", "ab")  # a pipe nobody reads could fill and block it
    p = subprocess.Popen([sys.executable, str(MONITOR), "--udp-port", str(udp_port), "--bind", "127.0.0.1",
                          "--heartbeat-file", str(tmp / "worker.heartbeat"), "--lock", str(tmp / "cworker.lock"),
                          "--interval-ms", str(interval_ms), "--timeout-ms", str(timeout_ms)],
                         stdout=subprocess.PIPE, stderr=log, text=True)
    return p, procs.add(EventReader(p))


def start_supervisor(procs: Procs, tmp: Path, port: int, input_path: Path,
                     *extra: str) -> tuple[subprocess.Popen, EventReader]:
    """A supervisor process, registered with procs (stopped and its log closed at teardown)."""
    log = procs.open(tmp / "supervisor.log", "ab")
    p = subprocess.Popen([sys.executable, str(SUPERVISOR), "--worker", f"127.0.0.1:{port}", "--input", str(input_path),
                          "--output", str(tmp / "out"), "--worker-lock", str(tmp / "cworker.lock"),
                          "--give-up-s", "60", *extra],
                         stdout=subprocess.PIPE, stderr=log, text=True)
    return p, procs.add(EventReader(p))


class UdpRelay:
    """Forwards datagrams from one loopback port to another until cut."""

    def __init__(self, to_port: int):
        self.port = free_udp_port()
        self.to = ("127.0.0.1", to_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.05)
        self.cut = threading.Event()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(512)
            except TimeoutError:
                continue
            if not self.cut.is_set():
                out.sendto(data, self.to)
        out.close()

    def close(self):
        self._stop.set()
        if self._t.is_alive():
            self._t.join(5)
        self.sock.close()
