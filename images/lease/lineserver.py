"""What the lease lab's two servers share (lease_service.py, store.py): a
JSON-lines TCP server (one reply line per request line), their events on
stdout, HOST:PORT parsing. Standard library only; copied beside them."""
from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time

TICK_S = 0.1  # how often a server's on_tick runs (the lease service's expiry timer)
MAX_LINE = 64 * 1024
SEND_TIMEOUT_S = 1.0  # a client that reads nothing for this long is dropped


class Events:
    """One JSON object per line on stdout (and --events PATH): ts, source, kind, fields."""

    def __init__(self, path: str | None, source: str):
        self.source = source
        self.file = open(path, "a", buffering=1, encoding="utf-8") if path else None

    def emit(self, kind: str, **fields) -> None:
        line = json.dumps({"ts": round(time.time(), 6), "source": self.source, "kind": kind, **fields},
                          separators=(",", ":")) + "\n"
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # a gone reader must not stop the service
        if self.file:
            self.file.write(line)


class BadRequest(Exception):
    pass


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
