#!/usr/bin/env python3
"""Store: a key-value store that can fence off writes from a lease's zombie holder.

Every write carries the writer's lease token. With --fencing on the store
remembers the highest token it has accepted and rejects a write with a lower
one: the holder that wrote it lost its lease while it was paused, and someone
with a newer token has written since (DDIA chapter 8, "fencing tokens"). With
--fencing off it accepts everything, and the zombie's write silently undoes
the newer holder's work: the lost update.

Protocol: TCP, one JSON object per line, one JSON reply line each.

    {"op":"write","client":"a","token":34,"key":"counter","value":7}
        -> {"ok":true,"highest":34}
        -> {"ok":false,"error":"fenced: token 33 < 34","highest":34}  (fencing on only)
    {"op":"read","key":"counter"}
        -> {"ok":true,"key":"counter","value":7,"found":true}  (value null, found false if never written)
    anything else -> {"ok":false,"error":"..."}

Every accepted write is appended to --log PATH as one JSON line: ts, client,
token, key, value, highest (the highest token accepted so far, this write's
included: a row whose token is below its highest is a write that fencing
would have rejected), fencing. The values live in memory only; the log is
for the checker.

One thread, one selectors loop. Standard library only. Events as JSON lines
on stdout (docs/events.md, `## store`); a fenced write also gets a plain line
on stderr; --events PATH also appends the events to a file.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time

TICK_S = 0.1
MAX_LINE = 64 * 1024
SEND_TIMEOUT_S = 1.0  # a client that reads nothing for this long is dropped


class Events:
    """One JSON object per line on stdout (and --events PATH): ts, source, kind, fields."""

    def __init__(self, path: str | None, source: str = "store"):
        self.source = source
        self.file = open(path, "a", buffering=1, encoding="utf-8") if path else None

    def emit(self, kind: str, **fields) -> None:
        line = json.dumps({"ts": round(time.time(), 6), "source": self.source, "kind": kind, **fields},
                          separators=(",", ":")) + "\n"
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # a gone reader must not stop the store
        if self.file:
            self.file.write(line)


class BadRequest(Exception):
    pass


def _str(req: dict, key: str) -> str:
    v = req.get(key)
    if not isinstance(v, str) or not v or len(v) > 128:
        raise BadRequest(f"{key}: must be a non-empty string of at most 128 characters")
    return v


def _token(req: dict) -> int:
    v = req.get("token")
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
        raise BadRequest(f"token: must be a non-negative integer, got {json.dumps(v)}")
    return v


class Store:
    """The values, the highest token accepted, and the rule that guards them."""

    def __init__(self, fencing: bool, log_path: str | None, events: Events):
        self.fencing = fencing
        self.events = events
        self.data: dict[str, object] = {}
        self.highest: int | None = None
        self.log = open(log_path, "a", buffering=1, encoding="utf-8") if log_path else None
        self.accepted = self.fenced = 0

    def handle(self, req) -> dict:
        if not isinstance(req, dict):
            raise BadRequest("request: must be a JSON object")
        op = req.get("op")
        if op == "read":
            key = _str(req, "key")
            return {"ok": True, "key": key, "value": self.data.get(key), "found": key in self.data}
        if op == "write":
            if "value" not in req:
                raise BadRequest("value: missing")
            return self.write(_str(req, "client"), _token(req), _str(req, "key"), req["value"])
        raise BadRequest(f"op: unknown op {json.dumps(op)} (one of write, read)")

    def write(self, client: str, token: int, key: str, value) -> dict:
        if self.fencing and self.highest is not None and token < self.highest:
            self.fenced += 1
            self.events.emit("fenced", client=client, token=token, highest=self.highest, key=key, value=value)
            print(f"store: FENCED a write from {client}: token {token} < {self.highest}, the highest accepted "
                  f"(key {key!r}, value {json.dumps(value)}): its lease is gone, a newer holder has written",
                  file=sys.stderr, flush=True)
            return {"ok": False, "error": f"fenced: token {token} < {self.highest}", "highest": self.highest}
        stale = self.highest is not None and token < self.highest
        self.highest = token if self.highest is None else max(self.highest, token)
        self.data[key] = value
        self.accepted += 1
        if self.log:
            self.log.write(json.dumps({"ts": round(time.time(), 6), "client": client, "token": token, "key": key,
                                       "value": value, "highest": self.highest, "fencing": self.fencing},
                                      separators=(",", ":")) + "\n")
        self.events.emit("accepted", client=client, token=token, key=key, value=value, highest=self.highest,
                         stale=stale)
        return {"ok": True, "highest": self.highest}


class Server:
    """A line server: every request line gets one reply line from handle(obj)."""

    def __init__(self, listen: tuple[str, int], handle, on_tick, events: Events):
        self.handle, self.on_tick, self.events = handle, on_tick, events
        self.sel = selectors.DefaultSelector()
        self.lsock = socket.create_server(listen, reuse_port=False)
        self.lsock.setblocking(False)
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.bufs: dict[socket.socket, bytes] = {}
        self.stopping = False

    def address(self) -> str:
        host, port = self.lsock.getsockname()[:2]
        return f"{host}:{port}"

    def close_conn(self, conn: socket.socket) -> None:
        self.sel.unregister(conn)
        self.bufs.pop(conn, None)
        conn.close()

    def reply(self, conn: socket.socket, obj: dict) -> bool:
        try:
            conn.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
            return True
        except OSError:
            self.close_conn(conn)
            return False

    def readable(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.close_conn(conn)
            return
        buf = self.bufs[conn] + data
        *lines, rest = buf.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                try:
                    req = json.loads(line)
                except ValueError as e:
                    raise BadRequest(f"request: not JSON ({e})") from None
                rep = self.handle(req)
            except BadRequest as e:
                rep = {"ok": False, "error": str(e)}
            if not self.reply(conn, rep):
                return
        if len(rest) > MAX_LINE:
            self.reply(conn, {"ok": False, "error": f"request: line longer than {MAX_LINE} bytes"})
            if conn in self.bufs:
                self.close_conn(conn)
            return
        self.bufs[conn] = rest

    def run(self) -> int:
        while not self.stopping:
            for key, _ in self.sel.select(TICK_S):
                if key.fileobj is self.lsock:
                    try:
                        conn, _addr = self.lsock.accept()
                    except OSError:
                        continue
                    conn.setblocking(True)
                    conn.settimeout(SEND_TIMEOUT_S)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.bufs[conn] = b""
                    self.sel.register(conn, selectors.EVENT_READ, None)
                elif key.fileobj in self.bufs:
                    self.readable(key.fileobj)
            self.on_tick()
        return 0


def hostport(s: str) -> tuple[str, int]:
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", type=hostport, default=("0.0.0.0", 7301), help="HOST:PORT (default 0.0.0.0:7301)")
    ap.add_argument("--fencing", choices=("on", "off"), default="on",
                    help="on: reject a token below the highest accepted (default); off: accept every write")
    ap.add_argument("--log", help="append every accepted write to this file (JSON lines)")
    ap.add_argument("--events", help="also append events (JSON lines) to this file")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    events = Events(args.events)
    try:
        store = Store(args.fencing == "on", args.log, events)
        server = Server(args.listen, store.handle, lambda: None, events)
    except OSError as e:
        events.emit("log", level="error", message=f"cannot start: {e}")
        return 64

    def on_term(signum, _frame):
        server.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    events.emit("start", listen=server.address(), fencing=args.fencing, log=args.log, pid=os.getpid())
    rc = server.run()
    events.emit("stop", reason="SIGTERM", accepted=store.accepted, fenced=store.fenced, highest=store.highest)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
