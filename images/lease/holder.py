#!/usr/bin/env python3
"""Holder: a worker that competes for the lease and works while it believes it holds it.

DDIA chapter 8's zombie, on purpose. The loop:

* every --renew-ms (default a third of --ttl-ms) it asks the lease service
  for the lease, or to renew it: {"op":"acquire","client":NAME,"ttl_ms":TTL};
* it believes it holds the lease until the time it SENT its last granted
  request plus the ttl, on its own monotonic clock. It never asks the service
  before a write: that is the realistic bug;
* while it believes so, every --work-ms it does a read-modify-write of the
  key "counter" on the store:

      if lease_valid():                # the check ...
          value = read("counter")
          sleep(--think-ms)            # ... a pause that lands here (SIGSTOP,
                                       # docker pause, a GC) outlives the lease
          write(value + 1, token)      # ... and the write is not checked again

  CLOCK_MONOTONIC keeps counting while a process is frozen, so a check made
  after the pause would catch it; the classic bug checks before. A store
  with fencing on rejects the late write (its token is lower than the next
  holder's); with fencing off the write undoes the next holder's work.

A refused renewal or a fenced write ends the belief (`lost`). Connection
errors are retried with a backoff (100 ms doubling to 1 s), never fatal.
SIGTERM or SIGINT: stop (within a request's timeout; a write not yet
sent is dropped), release the lease if held, exit 0.

Standard library only. Events as JSON lines on stdout (docs/events.md,
`## holder`), each with `client`; --events PATH also appends them to a file.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time

KEY = "counter"
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 1.0
MAX_REPLY = 64 * 1024


class Events:
    """One JSON object per line on stdout (and --events PATH): ts, source, kind, client, fields."""

    def __init__(self, path: str | None, client: str, source: str = "holder"):
        self.source, self.client = source, client
        self.file = open(path, "a", buffering=1, encoding="utf-8") if path else None

    def emit(self, kind: str, **fields) -> None:
        line = json.dumps({"ts": round(time.time(), 6), "source": self.source, "kind": kind,
                           "client": self.client, **fields}, separators=(",", ":")) + "\n"
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass
        if self.file:
            self.file.write(line)


class Unavailable(Exception):
    """No reply: the peer is down, unreachable, too slow, or talks nonsense; or we are backing off."""


class Conn:
    """A JSON-lines request/reply client: one connection, reopened after any error,
    with a backoff between failed attempts. Tells the events once per outage."""

    def __init__(self, name: str, addr: tuple[str, int], timeout_s: float, events: Events):
        self.name, self.addr, self.timeout_s, self.events = name, addr, timeout_s, events
        self.sock: socket.socket | None = None
        self.buf = b""
        self.backoff_s = BACKOFF_MIN_S
        self.retry_at = 0.0
        self.down_since: float | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _fail(self, err: str) -> Unavailable:
        self.close()
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            self.events.emit("log", level="warn", message=f"{self.name} at {self.addr[0]}:{self.addr[1]}: {err}; "
                             "retrying with a backoff", peer=self.name)
        self.retry_at = now + self.backoff_s
        self.backoff_s = min(BACKOFF_MAX_S, self.backoff_s * 2)
        return Unavailable(f"{self.name}: {err}")

    def request(self, req: dict) -> dict:
        if self.sock is None and time.monotonic() < self.retry_at:
            raise Unavailable(f"{self.name}: backing off")
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.addr, timeout=self.timeout_s)
                if self.sock.getsockname() == self.sock.getpeername():
                    # TCP's simultaneous open on loopback: a retried connect to a port nobody
                    # listens on can pick that same port as its source and reach itself.
                    raise self._fail("connected to itself (nothing listens there)")
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(json.dumps(req, separators=(",", ":")).encode() + b"\n")
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise self._fail("connection closed")
                self.buf += chunk
                if len(self.buf) > MAX_REPLY:
                    raise self._fail("reply line too long")
        except TimeoutError:
            raise self._fail(f"no reply within {self.timeout_s * 1000:.0f} ms") from None
        except OSError as e:
            raise self._fail(e.strerror or str(e)) from None
        line, _, self.buf = self.buf.partition(b"\n")
        try:
            rep = json.loads(line)
        except ValueError:
            raise self._fail(f"reply is not JSON: {line[:100]!r}") from None
        if not isinstance(rep, dict):
            raise self._fail(f"reply is not an object: {line[:100]!r}")
        self.backoff_s = BACKOFF_MIN_S
        if self.down_since is not None:
            self.events.emit("log", level="info", message=f"{self.name} reachable again after "
                             f"{(time.monotonic() - self.down_since) * 1000:.0f} ms", peer=self.name)
            self.down_since = None
        return rep


class Holder:
    def __init__(self, args: argparse.Namespace, events: Events):
        self.args, self.events = args, events
        self.client = args.client
        self.ttl_s = args.ttl_ms / 1000
        self.renew_s = (args.renew_ms if args.renew_ms is not None else args.ttl_ms / 3) / 1000
        self.work_s = args.work_ms / 1000
        self.think_s = args.think_ms / 1000
        timeout_s = args.timeout_ms / 1000
        self.lease = Conn("lease service", args.lease, timeout_s, events)
        self.store = Conn("store", args.store, timeout_s, events)
        self.token: int | None = None
        self.valid_until = 0.0  # on this process's monotonic clock
        self.believed = False
        self.next_acquire = 0.0
        self.next_work = 0.0
        self.writes = self.fenced = 0
        self.stopping: str | None = None  # set by SIGTERM/SIGINT: the name of the signal

    # ------------------------------------------------------------------ belief

    def lease_valid(self) -> bool:
        """What the holder believes: its own clock against its last grant. It asks no one."""
        return self.token is not None and time.monotonic() < self.valid_until

    def update_belief(self, reason: str) -> None:
        holds = self.lease_valid()
        if holds != self.believed:
            self.believed = holds
            self.events.emit("believes", holds=holds, token=self.token, reason=reason,
                             valid_for_ms=round((self.valid_until - time.monotonic()) * 1000) if holds else 0)

    def lose(self, reason: str, **fields) -> None:
        self.events.emit("lost", token=self.token, reason=reason, **fields)
        self.token, self.valid_until = None, 0.0
        self.update_belief(reason)

    # ------------------------------------------------------------------ lease

    def acquire(self) -> None:
        sent = time.monotonic()  # the lease runs from no later than this
        try:
            rep = self.lease.request({"op": "acquire", "client": self.client, "ttl_ms": self.args.ttl_ms})
        except Unavailable:
            self.next_acquire = max(self.lease.retry_at, time.monotonic() + BACKOFF_MIN_S)
            return
        self.next_acquire = sent + self.renew_s
        if rep.get("ok") and isinstance(rep.get("token"), int):
            renewal = bool(rep.get("renewal")) and rep["token"] == self.token
            self.token, self.valid_until = rep["token"], sent + self.ttl_s
            if not renewal:
                self.events.emit("acquired", token=self.token, ttl_ms=self.args.ttl_ms)
            self.update_belief("renewed" if renewal else "granted")
        elif "holder" in rep:
            if self.token is not None:
                self.lose("refused", holder=rep.get("holder"), expires_in_ms=rep.get("expires_in_ms"))
        else:
            self.events.emit("log", level="error", message=f"lease service: {rep.get('error', rep)}")

    def release(self) -> None:
        if self.token is None or not self.lease_valid():
            return
        self.lease.close()
        self.lease.retry_at = 0.0
        try:
            rep = self.lease.request({"op": "release", "client": self.client, "token": self.token})
            self.events.emit("released", token=self.token, ok=bool(rep.get("ok")), error=rep.get("error"))
        except Unavailable as e:
            self.events.emit("released", token=self.token, ok=False, error=str(e))

    # ------------------------------------------------------------------ work

    def work(self) -> None:
        """One read-modify-write: check, read, think, write. The write does not check again."""
        if not self.lease_valid():
            return
        token = self.token
        try:
            rep = self.store.request({"op": "read", "key": KEY})
        except Unavailable:
            self.next_work = max(self.next_work, self.store.retry_at)
            return
        value = rep.get("value")
        value = value if isinstance(value, int) and not isinstance(value, bool) else 0
        self.events.emit("read", token=token, value=value, think_ms=self.args.think_ms)
        if self.think_s:
            self.nap(self.think_s)  # the window: a pause that lands here outlives the lease
            if self.stopping:
                return
        try:
            rep = self.store.request({"op": "write", "client": self.client, "token": token, "key": KEY,
                                      "value": value + 1})
        except Unavailable as e:
            self.events.emit("wrote", token=token, value=value + 1, ok=False, error=str(e))
            return
        ok = bool(rep.get("ok"))
        error = None if ok else str(rep.get("error", rep))
        self.writes += ok
        self.events.emit("wrote", token=token, value=value + 1, ok=ok, error=error)
        if not ok and error.startswith("fenced"):
            self.fenced += 1
            if self.token == token:
                self.lose("fenced", error=error)

    # ------------------------------------------------------------------ loop

    def nap(self, seconds: float) -> None:
        """Sleep until a deadline on the monotonic clock, or a stop. A process frozen
        past the deadline wakes up and goes straight on."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def run(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            if now >= self.next_acquire:
                self.acquire()
            self.update_belief("expired by my clock")
            if self.believed and time.monotonic() >= self.next_work:
                self.next_work = time.monotonic() + self.work_s
                self.work()
            now = time.monotonic()
            wake = self.next_acquire
            if self.believed:
                wake = min(wake, self.next_work, self.valid_until)
            self.nap(min(max(0.0, wake - now), 0.1))


def hostport(s: str) -> tuple[str, int]:
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host.strip("[]"), int(port)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--client", required=True, help="this holder's name (the lease's client, the store's writer)")
    ap.add_argument("--lease", type=hostport, default=("lease", 7300), help="the lease service (default lease:7300)")
    ap.add_argument("--store", type=hostport, default=("store", 7301), help="the store (default store:7301)")
    ap.add_argument("--ttl-ms", type=int, default=2000, help="the lease's time to live (default 2000)")
    ap.add_argument("--renew-ms", type=int, default=None, help="acquire or renew this often (default ttl/3)")
    ap.add_argument("--work-ms", type=int, default=100, help="a read-modify-write this often (default 100)")
    ap.add_argument("--think-ms", type=int, default=0,
                    help="sleep between the read and the write: where a pause becomes a zombie write (default 0)")
    ap.add_argument("--timeout-ms", type=int, default=1000, help="wait this long for a reply (default 1000)")
    ap.add_argument("--events", help="also append events (JSON lines) to this file")
    args = ap.parse_args(argv)
    for name in ("ttl_ms", "work_ms", "timeout_ms") + (("renew_ms",) if args.renew_ms is not None else ()):
        if not 1 <= getattr(args, name) <= 600_000:
            ap.error(f"--{name.replace('_', '-')}: must be from 1 to 600000")
    if not 0 <= args.think_ms <= 600_000:
        ap.error("--think-ms: must be from 0 to 600000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    events = Events(args.events, args.client)
    holder = Holder(args, events)

    def on_term(signum, _frame):
        holder.stopping = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    events.emit("start", lease=f"{args.lease[0]}:{args.lease[1]}", store=f"{args.store[0]}:{args.store[1]}",
                ttl_ms=args.ttl_ms, renew_ms=round(holder.renew_s * 1000), work_ms=args.work_ms,
                think_ms=args.think_ms, pid=os.getpid())
    holder.run()
    holder.release()
    events.emit("stop", reason=holder.stopping, token=holder.token, writes=holder.writes, fenced=holder.fenced)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
