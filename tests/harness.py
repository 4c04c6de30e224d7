"""Local stand-ins for the lab: a "platform" that restarts the worker, a monitor
and a supervisor as real processes on loopback, an oracle, and a UDP relay
that can be cut to simulate a partition of the heartbeat path."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from labctl import oracle

from helpers import MONITOR, SUPERVISOR, WORKER, free_port, free_udp_port, wait_until

def assert_exactly_once(outdir: Path, input_path: Path, trigger: int | None = 999) -> None:
    """The outputs against labctl's oracle, which reads the input on its own."""
    problems = oracle.compare(outdir, input_path, trigger)
    assert not problems, problems


class Platform:
    """Keeps one worker running, restarting it when it exits (Docker's restart
    policy, played by the test)."""

    def __init__(self, tmp: Path, udp_port: int | None = None, heartbeat_ms: int = 100, extra=()):
        self.tmp = tmp
        self.port = free_port()
        self.lock = tmp / "cworker.lock"
        self.hb = tmp / "worker.heartbeat"
        self.udp_port = udp_port
        self.heartbeat_ms = heartbeat_ms
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.exits: list[int] = []
        self.exit_times: list[float] = []
        self.log = open(tmp / "worker.log", "ab")
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
        while not self._stop.is_set():
            self.proc = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self.log)
            self._started.set()
            rc = self.proc.wait()
            self.exits.append(rc)
            self.exit_times.append(time.time())
            # Docker waits 100 ms and then starts a container (hundreds of ms
            # more); a restart faster than a tick would hide the crash.
            self._stop.wait(0.4)

    def start(self):
        self._t.start()
        self._started.wait(5)
        wait_until(lambda: self.lock.exists(), 5, what="the worker's lock file")
        return self

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        self._stop.set()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._t.join(10)
        self.log.close()


class EventReader:
    """Reads a process's JSON-lines stdout in a thread, keeping every event."""

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


def start_monitor(tmp: Path, udp_port: int, interval_ms=100, timeout_ms=1000) -> tuple[subprocess.Popen, EventReader]:
    p = subprocess.Popen([sys.executable, str(MONITOR), "--udp-port", str(udp_port), "--bind", "127.0.0.1",
                          "--heartbeat-file", str(tmp / "worker.heartbeat"), "--lock", str(tmp / "cworker.lock"),
                          "--interval-ms", str(interval_ms), "--timeout-ms", str(timeout_ms)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p, EventReader(p)


def start_supervisor(tmp: Path, port: int, input_path: Path, *extra: str) -> tuple[subprocess.Popen, EventReader]:
    p = subprocess.Popen([sys.executable, str(SUPERVISOR), "--worker", f"127.0.0.1:{port}", "--input", str(input_path),
                          "--output", str(tmp / "out"), "--worker-lock", str(tmp / "cworker.lock"),
                          "--give-up-s", "60", *extra],
                         stdout=subprocess.PIPE, stderr=open(tmp / "supervisor.log", "ab"), text=True)
    return p, EventReader(p)


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
            except socket.timeout:
                continue
            if not self.cut.is_set():
                out.sendto(data, self.to)
        out.close()

    def close(self):
        self._stop.set()
        self._t.join()
        self.sock.close()


def stop(proc: subprocess.Popen):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
