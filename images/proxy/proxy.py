#!/usr/bin/env python3
"""Proxy: a transparent TCP and UDP relay in the worker's network namespace,
with Toxiproxy-like faults ("toxics") switched on and off while it runs.

The worker container shares this container's network namespace: the proxy
owns the lab address (and the DNS name "worker"), the worker listens on
127.0.0.1:7100 behind it and sends its UDP heartbeats to 127.0.0.1:7101.

With no toxic on it is a plain pass-through, and it must stay one:

* its TCP listener is open only while something listens on the upstream port
  (seen in /proc/net/tcp and /proc/net/tcp6, polled every 20 ms; the worker
  is never probed by a connection). A dead worker's clients get "connection
  refused", as they would from the worker itself;
* an upstream EOF becomes a downstream shutdown(SHUT_WR), an upstream reset a
  downstream reset (SO_LINGER 0), and the reverse likewise; a failed upstream
  connect after an accept resets the client;
* no timeouts of its own: a frozen worker's kernel still accepts and buffers,
  and the proxy keeps forwarding.

Toxics (TCP per direction, `up` = client -> worker, `down` = worker -> client):
latency, bandwidth, blackhole, slice, reset; UDP: loss, delay, duplicate,
reorder. They are set and cleared through a unix stream socket (--control),
one JSON object per line, one JSON reply line each; `proxy.py ctl --control
PATH JSON` is the client (exit 0 ok, 1 refused, 2 unreachable).

One selectors loop, and the healthy path off it: while no TCP toxic is on,
each connection is relayed by its own thread (a Relay: poll(2) on its two
sockets, bytes moved socket -> kernel pipe -> socket by splice(2), never
through Python), which hands the connection back to the loop as soon as a
toxic is switched on (what the kernel pipes hold joins the loop's queues)
or the connection ends (EOF, reset); the loop hands it over again once the
toxics are off and its queues are empty. Standard library only: the image
builds offline. Events as JSON lines on stdout (docs/events.md, `## proxy`).
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import heapq
import itertools
import json
import math
import os
import random
import re
import select
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections import deque

READ_SIZE = 64 * 1024
PENDING_CAP = 1024 * 1024  # bytes queued towards one side before its source is no longer read
POLL_S = 0.020  # /proc/net/tcp poll period
STATS_S = 1.0
RESOLVE_EVERY_S = 3.0
MAX_LINE = 64 * 1024  # control request line
BW_PIECE_S = 0.020  # bandwidth releases bytes in pieces of this much time
LINGER0 = struct.pack("ii", 1, 0)
# The healthy path's relay threads need splice(2) (Linux, Python >= 3.10);
# without it every connection stays on the selectors loop.
FAST = hasattr(os, "splice") and hasattr(os, "pipe2")
SPLICE_MAX = 1 << 20  # bytes asked of one splice: the kernel pipe's size bounds it
KPIPE_SIZE = 256 * 1024  # kernel pipe size asked for (F_SETPIPE_SZ; the default 64 KiB if refused)
EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE = 0, 1, 2, 64

# --------------------------------------------------------------------------- events


class Events:
    """One JSON object per line on stdout: ts (Unix seconds), source, kind, fields."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream

    def emit(self, kind: str, **fields) -> None:
        rec = {"ts": round(time.time(), 6), "source": "proxy", "kind": kind, **fields}
        try:
            self.stream.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # a gone reader must not stop the relay

    def log(self, level: str, message: str, **fields) -> None:
        self.emit("log", level=level, message=message, **fields)


# --------------------------------------------------------------------------- toxics: validation

TCP_TOXICS = ("latency", "bandwidth", "blackhole", "slice", "reset")
UDP_TOXICS = ("loss", "delay", "duplicate", "reorder")
MAX_MS = 600_000
# toxic -> {param: (kind, min, max, default or REQUIRED)}
REQUIRED = object()
PARAMS: dict[str, dict[str, tuple]] = {
    "latency": {"latency": ("num", 0, MAX_MS, REQUIRED), "jitter": ("num", 0, MAX_MS, 0)},
    "bandwidth": {"rate": ("num", 0.001, 10_000_000, REQUIRED)},  # KB/s, 1 KB = 1000 bytes
    "blackhole": {},
    "slice": {"size": ("int", 1, READ_SIZE, REQUIRED), "delay_ms": ("num", 0, MAX_MS, 0)},
    "reset": {},
    "loss": {"p": ("num", 0, 1, REQUIRED)},
    "delay": {"delay": ("num", 0, MAX_MS, REQUIRED), "jitter": ("num", 0, MAX_MS, 0)},
    "duplicate": {"p": ("num", 0, 1, REQUIRED)},
    "reorder": {"p": ("num", 0, 1, REQUIRED)},
}
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
OPS = ("set", "clear", "clear_all", "list")


class BadRequest(Exception):
    pass


def _number(key: str, v, kind: str, lo: float, hi: float):
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not math.isfinite(v)):
        raise BadRequest(f"{key}: must be {'an integer' if kind == 'int' else 'a number'}, got {json.dumps(v)}")
    if kind == "int" and isinstance(v, float):
        if not v.is_integer():
            raise BadRequest(f"{key}: must be an integer, got {v}")
        v = int(v)
    if not lo <= v <= hi:
        raise BadRequest(f"{key}: must be from {lo:g} to {hi:g}, got {v}")
    return v


def validate(req) -> dict:
    """A control request, checked key by key; BadRequest names the bad key."""
    if not isinstance(req, dict):
        raise BadRequest("request: must be a JSON object")
    op = req.get("op")
    if op is None:
        raise BadRequest("op: missing (one of " + ", ".join(OPS) + ")")
    if op not in OPS:
        raise BadRequest(f"op: unknown op {json.dumps(op)} (one of {', '.join(OPS)})")
    allowed = {"op"}
    if op == "clear":
        allowed.add("id")
    if op in ("clear_all", "list"):
        extra = sorted(set(req) - allowed)
        if extra:
            raise BadRequest(f"{extra[0]}: unknown key for op {op}")
        return {"op": op}
    if "id" not in req:
        raise BadRequest("id: missing")
    tid = req["id"]
    if not isinstance(tid, str) or not ID_RE.match(tid):
        raise BadRequest("id: must be a string of 1 to 128 letters, digits, '.', '_', ':' or '-', "
                         f"got {json.dumps(tid)}")
    if op == "clear":
        extra = sorted(set(req) - {"op", "id"})
        if extra:
            raise BadRequest(f"{extra[0]}: unknown key for op clear")
        return {"op": "clear", "id": tid}
    toxic = req.get("toxic")
    if toxic is None:
        raise BadRequest("toxic: missing")
    if toxic not in PARAMS:
        raise BadRequest(f"toxic: unknown toxic {json.dumps(toxic)} (one of {', '.join(PARAMS)})")
    spec = PARAMS[toxic]
    out = {"op": "set", "id": tid, "toxic": toxic}
    if toxic in TCP_TOXICS:
        d = req.get("direction")
        if toxic == "reset":
            if d not in (None, "both"):
                raise BadRequest("direction: reset acts on both directions: omit it or say \"both\", "
                                 f"got {json.dumps(d)}")
            out["direction"] = "both"
        elif d is None:
            raise BadRequest("direction: missing (up = client to worker, down = worker to client)")
        elif d not in ("up", "down"):
            raise BadRequest(f"direction: must be \"up\" or \"down\", got {json.dumps(d)}")
        else:
            out["direction"] = d
    elif "direction" in req:
        raise BadRequest("direction: UDP toxics have no direction (worker to monitor only)")
    else:
        out["direction"] = "udp"
    for key in req:
        if key not in ("op", "id", "toxic", "direction") and key not in spec:
            raise BadRequest(f"{key}: unknown key for toxic {toxic}" +
                             (f" (its keys: {', '.join(spec)})" if spec else " (it takes no parameters)"))
    params = {}
    for key, (kind, lo, hi, default) in spec.items():
        if key not in req:
            if default is REQUIRED:
                raise BadRequest(f"{key}: missing for toxic {toxic}")
            params[key] = default
        else:
            params[key] = _number(key, req[key], kind, lo, hi)
    out["params"] = params
    return out


class Toxics:
    """The toxics on, by id, and what they add up to per direction."""

    def __init__(self):
        self.by_id: dict[str, dict] = {}
        self.tcp = {"up": None, "down": None}  # direction -> TcpEffect or None (fast path)
        self.reset = False
        self.udp: dict | None = None

    def recompute(self) -> None:
        self.reset = any(t["toxic"] == "reset" for t in self.by_id.values())
        for d in ("up", "down"):
            ts = [t for t in self.by_id.values() if t["direction"] == d]
            self.tcp[d] = TcpEffect(ts) if ts else None
        us = [t for t in self.by_id.values() if t["direction"] == "udp"]
        if not us:
            self.udp = None
            return
        eff = {"loss": 0.0, "delay": 0.0, "jitter": 0.0, "duplicate": 0.0, "reorder": 0.0}
        keep = 1.0
        for t in us:
            p = t["params"]
            if t["toxic"] == "loss":
                keep *= 1 - p["p"]
            elif t["toxic"] == "delay":
                eff["delay"] += p["delay"]
                eff["jitter"] += p["jitter"]
            else:
                eff[t["toxic"]] = max(eff[t["toxic"]], p["p"])
        eff["loss"] = 1 - keep
        self.udp = eff


class TcpEffect:
    """Several toxics on one direction: latencies and jitters add up, the
    lowest bandwidth and the smallest slice win, any blackhole drops."""

    def __init__(self, toxics: list[dict]):
        self.latency = self.jitter = 0.0
        self.rate = None  # bytes/s
        self.blackhole = False
        self.slice = None  # (size, delay_s)
        for t in toxics:
            p = t["params"]
            if t["toxic"] == "latency":
                self.latency += p["latency"] / 1000
                self.jitter += p["jitter"] / 1000
            elif t["toxic"] == "bandwidth":
                r = p["rate"] * 1000
                self.rate = r if self.rate is None else min(self.rate, r)
            elif t["toxic"] == "blackhole":
                self.blackhole = True
            elif t["toxic"] == "slice":
                s = (p["size"], p["delay_ms"] / 1000)
                self.slice = s if self.slice is None or s[0] < self.slice[0] else self.slice


# --------------------------------------------------------------------------- TCP


def reset_close(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    except OSError:
        pass
    sock.close()


class Pipe:
    """One direction of a connection: bytes from src, queued with their release times, to dst."""

    __slots__ = ("conn", "src", "dst", "direction", "q", "pending", "eof", "done", "blocked",
                 "last", "bw_next", "timer_at")

    def __init__(self, conn: Conn, src: socket.socket, dst: socket.socket, direction: str):
        self.conn, self.src, self.dst, self.direction = conn, src, dst, direction
        self.q: deque[list] = deque()  # [release monotonic, memoryview]
        self.pending = 0
        self.eof = False  # src said EOF: shut dst's write side once the queue is out
        self.done = False  # dst's write side is shut
        self.blocked = False  # dst's buffer is full: wait for EVENT_WRITE
        self.last = 0.0  # release time of the last queued piece: order is kept
        self.bw_next = 0.0  # bandwidth: when the next byte may go
        self.timer_at = math.inf

    def want_read(self) -> bool:
        return not self.eof and self.pending < PENDING_CAP

    def readable(self) -> None:
        proxy = self.conn.proxy
        try:
            data = self.src.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # ECONNRESET, ETIMEDOUT...: the source's end was abrupt, so is ours
            self.conn.reset(f"{self.direction}: {errno.errorcode.get(e.errno, e)} from source")
            return
        if not data:
            self.eof = True
            self.flush()
            return
        eff = proxy.toxics.tcp[self.direction]
        if eff is None and not self.q:  # the healthy path: straight through
            try:
                n = self.dst.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.conn.write_failed(self)
                return
            proxy.count(self.direction + "_bytes", n)
            if n < len(data):
                self.q.append([0.0, memoryview(data)[n:]])
                self.pending += len(data) - n
                self.blocked = True
                self.conn.update()
            return
        self.feed(data, eff)
        self.flush()

    def feed(self, data: bytes, eff: TcpEffect | None) -> None:
        proxy = self.conn.proxy
        now = time.monotonic()
        if eff is None:
            self._queue(max(now, self.last), memoryview(data))
            return
        if eff.blackhole:
            proxy.count(self.direction + "_dropped", len(data))
            return
        t = now
        if eff.latency or eff.jitter:
            t = now + max(0.0, eff.latency + proxy.rng.uniform(-eff.jitter, eff.jitter))
        t = max(t, self.last)
        if t > now:
            proxy.count("delayed_bytes", len(data))
        mv = memoryview(data)
        pieces = [mv]
        gap = 0.0
        if eff.slice:
            size, gap = eff.slice
            pieces = [mv[i:i + size] for i in range(0, len(mv), size)]
            if gap:
                proxy.count("delayed_bytes", len(data))
        for i, piece in enumerate(pieces):
            if i:
                t += gap
            if eff.rate:
                step = max(1, int(eff.rate * BW_PIECE_S))
                for j in range(0, len(piece), step):
                    part = piece[j:j + step]
                    if self.bw_next < now:
                        self.bw_next = now
                    t = max(t, self.bw_next)
                    self.bw_next = t + len(part) / eff.rate
                    self._queue(t, part)
            else:
                self._queue(t, piece)

    def _queue(self, t: float, piece: memoryview) -> None:
        self.q.append([t, piece])
        self.pending += len(piece)
        self.last = t

    def flush(self) -> None:
        """Send what is due; arm a timer for the rest; shut dst once src's EOF is reached."""
        conn, proxy = self.conn, self.conn.proxy
        if conn.closed:
            return
        now = time.monotonic()
        self.blocked = False
        q = self.q
        while q:
            item = q[0]
            if item[0] > now:
                if item[0] < self.timer_at:
                    self.timer_at = item[0]
                    proxy.at(item[0], self._timer)
                break
            buf = item[1]
            try:
                n = self.dst.send(buf)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                conn.write_failed(self)
                return
            proxy.count(self.direction + "_bytes", n)
            self.pending -= n
            if n < len(buf):
                item[1] = buf[n:]
                self.blocked = True
                break
            q.popleft()
        if not q and self.eof and not self.done:
            self.done = True
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        conn.update()
        if self.done:
            conn.maybe_done()

    def _timer(self) -> None:
        self.timer_at = math.inf
        self.flush()

    def rebase(self, now: float) -> None:
        """A toxic of this direction was cleared: what it held back is due now."""
        for item in self.q:
            if item[0] > now:
                item[0] = now
        self.last = min(self.last, now)
        self.bw_next = 0.0


class Relay(threading.Thread):
    """The healthy path of one connection, both directions, off the loop.

    Bytes go src -> kernel pipe -> dst by splice(2), the sockets non-blocking,
    poll(2) waiting on both and on the connection's wake pipe. The thread
    touches only its sockets, its pipes and its own counters; it ends when
    the loop asks (stop(): a toxic went on, the proxy stops) or, by itself,
    on a source's EOF, an error or a hang-up, which the loop then handles
    (handback). Bytes still in a kernel pipe are the loop's to send."""

    def __init__(self, conn: Conn):
        super().__init__(daemon=True, name="relay")
        self.conn = conn
        self.n = [0, 0]  # bytes written to dst: up, down (only this thread writes them)
        self.seen = [0, 0]  # of which counted in the proxy's stats (only the loop writes them)
        self.inpipe = [0, 0]  # bytes in each kernel pipe
        self.eof = [False, False]  # src said EOF
        self.error: str | None = None  # why the connection must be reset
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        try:
            os.write(self.conn.wake[1], b"x")
        except OSError:
            pass
        self.join()
        try:
            while os.read(self.conn.wake[0], 4096):
                pass
        except OSError:
            pass

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # a bug must not kill the connection silently: the loop resets it
            self.error = self.error or f"relay: {e!r}"
        if not self.stopping:
            proxy = self.conn.proxy
            proxy.handback.append(self)
            try:
                os.write(proxy.notify[1], b"x")
            except OSError:
                pass

    def _run(self) -> None:
        conn = self.conn
        cf, uf = conn.client.fileno(), conn.upstream.fileno()
        assert conn.kpipes is not None
        (ur, uw), (dr, dw) = conn.kpipes
        wake = conn.wake[0]
        IN, OUT = select.POLLIN, select.POLLOUT
        BAD = select.POLLERR | select.POLLHUP | select.POLLNVAL
        NB = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE
        splice = os.splice
        n, inpipe = self.n, self.inpipe
        po = select.poll()
        po.register(wake, IN)
        cmask = umask = IN
        po.register(cf, cmask)
        po.register(uf, umask)
        up_in = down_in = 0  # bytes in the up / down kernel pipe
        while True:
            cev = uev = 0
            for fd, ev in po.poll():
                if fd == cf:
                    cev = ev
                elif fd == uf:
                    uev = ev
                else:
                    return  # wake: the loop takes over
            if (cev | uev) & BAD:
                return  # an error or a hang-up: the loop sorts it out
            # up: client -> upstream
            if cev & IN:
                try:
                    k = splice(cf, uw, SPLICE_MAX, flags=NB)
                except BlockingIOError:
                    k = -1
                except OSError as e:
                    self.error = f"up: {errno.errorcode.get(e.errno, e)} from source"
                    return
                if k == 0:
                    self.eof[0] = True
                    return
                if k > 0:
                    up_in += k
                    inpipe[0] = up_in
                    uev |= OUT
            if up_in and uev & OUT:
                try:
                    k = splice(ur, uf, up_in, flags=NB)
                except BlockingIOError:
                    k = 0
                except OSError:
                    self.error = "up: write failed"
                    return
                up_in -= k
                inpipe[0] = up_in
                n[0] += k
            # down: upstream -> client
            if uev & IN:
                try:
                    k = splice(uf, dw, SPLICE_MAX, flags=NB)
                except BlockingIOError:
                    k = -1
                except OSError as e:
                    self.error = f"down: {errno.errorcode.get(e.errno, e)} from source"
                    return
                if k == 0:
                    self.eof[1] = True
                    return
                if k > 0:
                    down_in += k
                    inpipe[1] = down_in
                    cev |= OUT
            if down_in and cev & OUT:
                try:
                    k = splice(dr, cf, down_in, flags=NB)
                except BlockingIOError:
                    k = 0
                except OSError:
                    self.error = "down: write failed"
                    return
                down_in -= k
                inpipe[1] = down_in
                n[1] += k
            # A full kernel pipe stops its source's reads; bytes in it wait for dst's room.
            m = (0 if up_in else IN) | (OUT if down_in else 0)
            if m != cmask:
                cmask = m
                po.modify(cf, m)
            m = (0 if down_in else IN) | (OUT if up_in else 0)
            if m != umask:
                umask = m
                po.modify(uf, m)


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, KPIPE_SIZE)
    except (OSError, AttributeError):
        pass
    return r, w


class Conn:
    def __init__(self, proxy: Proxy, client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.client, self.upstream = client, upstream
        self.up = Pipe(self, client, upstream, "up")
        self.down = Pipe(self, upstream, client, "down")
        self.connected = False
        self.closed = False
        self.masks = {client: 0, upstream: 0}
        self.fast: Relay | None = None  # the relay thread while on the healthy path
        self.fast_ok = FAST  # cleared once a relay ends by itself (the connection is ending)
        self.kpipes: tuple[tuple[int, int], tuple[int, int]] | None = None
        self.wake: tuple[int, int] = (-1, -1)

    # -- the healthy path, off the loop

    def maybe_fast(self) -> None:
        """Hand the connection to a relay thread if nothing but plain relaying is left to do."""
        if not self.fast_ok or self.fast is not None or self.closed or not self.connected:
            return
        up, down, toxics = self.up, self.down, self.proxy.toxics
        if up.q or down.q or up.eof or down.eof or toxics.reset or toxics.tcp["up"] or toxics.tcp["down"]:
            return
        try:
            if self.kpipes is None:
                self.kpipes = (_pipe(), _pipe())
                self.wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:  # EMFILE...: this connection stays on the loop
            self.fast_ok = False
            self.proxy.events.log("warn", f"relay thread: no pipe ({e}): the connection stays on the loop")
            return
        self._set(self.client, 0)
        self._set(self.upstream, 0)
        up.blocked = down.blocked = False
        self.fast = r = Relay(self)
        try:
            r.start()
        except RuntimeError as e:  # can't start new thread
            self.fast, self.fast_ok = None, False
            self.proxy.events.log("warn", f"relay thread: {e}: the connection stays on the loop")
            self.update()

    def harvest(self, r: Relay) -> None:
        """Count what the relay has written since last asked."""
        for i, d in ((0, "up_bytes"), (1, "down_bytes")):
            k = r.n[i] - r.seen[i]
            if k:
                r.seen[i] += k
                self.proxy.count(d, k)

    def take_back(self) -> None:
        """The loop takes the connection back from its relay thread (stopped now if still running)."""
        r = self.fast
        if r is None:
            return
        self.fast = None
        if r.is_alive():
            r.stop()
        else:
            r.join()
            self.fast_ok = False  # it ended by itself: EOF, error or hang-up
        self.harvest(r)
        now = time.monotonic()
        assert self.kpipes is not None
        for i, p in enumerate((self.up, self.down)):
            rfd = self.kpipes[i][0]
            if r.inpipe[i]:
                chunks = []
                try:
                    while True:
                        b = os.read(rfd, SPLICE_MAX)
                        if not b:
                            break
                        chunks.append(b)
                except BlockingIOError:
                    pass
                data = b"".join(chunks)
                if data:
                    p.q.append([now, memoryview(data)])
                    p.pending += len(data)
                    p.last = max(p.last, now)
            if r.eof[i]:
                p.eof = True
        if r.error:
            self.reset(r.error)
            return
        for p in (self.up, self.down):
            if not self.closed:
                p.flush()  # what the pipes held goes now; an EOF becomes a shutdown once it is out
        self.update()

    def update(self) -> None:
        """(Re)register both sockets for what their pipes want now."""
        if self.closed or self.fast is not None:
            return
        if not self.connected:
            self._set(self.client, 0)
            self._set(self.upstream, selectors.EVENT_WRITE)
            return
        R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
        self._set(self.client, (R if self.up.want_read() else 0) | (W if self.down.blocked else 0))
        self._set(self.upstream, (R if self.down.want_read() else 0) | (W if self.up.blocked else 0))

    def _set(self, sock: socket.socket, mask: int) -> None:
        old = self.masks[sock]
        if mask == old:
            return
        sel = self.proxy.sel
        if not old:
            sel.register(sock, mask, (self.event, sock))
        elif not mask:
            sel.unregister(sock)
        else:
            sel.modify(sock, mask, (self.event, sock))
        self.masks[sock] = mask

    def event(self, sock: socket.socket, mask: int) -> None:
        if self.closed or self.fast is not None:
            return
        if not self.connected:
            err = self.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.proxy.connect_failed(self, err)
                return
            self.connected = True
            self.update()
            self.maybe_fast()
            return
        up, down = (self.up, self.down) if sock is self.client else (self.down, self.up)
        # up: the pipe this socket feeds; down: the pipe that writes to it
        if mask & selectors.EVENT_WRITE:
            down.flush()
        if mask & selectors.EVENT_READ and not self.closed:
            up.readable()
        self.maybe_fast()

    def write_failed(self, pipe: Pipe) -> None:
        """dst refused our bytes (reset, or its read side is gone): the source learns it by a reset."""
        self.reset(f"{pipe.direction}: write failed")

    def reset(self, why: str) -> None:
        self.proxy.count("resets")
        self.close(reset=True)

    def maybe_done(self) -> None:
        if self.up.done and self.down.done:
            self.close(reset=False)

    def close(self, reset: bool) -> None:
        if self.closed:
            return
        self.closed = True
        r, self.fast = self.fast, None
        if r is not None:  # its sockets are closed below: the thread ends first
            r.stop()
            self.harvest(r)
        for s in (self.client, self.upstream):
            if self.masks[s]:
                self.proxy.sel.unregister(s)
                self.masks[s] = 0
            if reset:
                reset_close(s)
            else:
                s.close()
        if self.kpipes is not None:
            for fd in (*self.kpipes[0], *self.kpipes[1], *self.wake):
                os.close(fd)
            self.kpipes = None
        self.proxy.conns.discard(self)


NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, NLMSG_ERROR, NLMSG_DONE = 4, 20, 2, 3
TCPF_LISTEN = 1 << 10


def listening_ports_diag() -> set[int] | None:
    """Ports with a TCP socket in LISTEN in this network namespace, by netlink sock_diag.

    Asked for LISTEN only, the kernel walks its listening table alone: tens of
    microseconds, where reading /proc/net/tcp walks every socket hash bucket
    (milliseconds on a big host). None if netlink is not available."""
    ports: set[int] = set()
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as s:
            s.settimeout(1.0)
            for seq, fam in enumerate((socket.AF_INET, socket.AF_INET6), 1):
                req = struct.pack("=BBBBI", fam, socket.IPPROTO_TCP, 0, 0, TCPF_LISTEN) + bytes(48)
                s.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, 0x301, seq, 0) + req)
                done = False
                while not done:
                    buf = s.recv(65536)
                    off = 0
                    while off + 16 <= len(buf):
                        length, kind = struct.unpack_from("=IH", buf, off)
                        if kind == NLMSG_DONE:
                            done = True
                            break
                        if kind == NLMSG_ERROR:
                            return None
                        if kind == SOCK_DIAG_BY_FAMILY:
                            ports.add(struct.unpack_from("!H", buf, off + 20)[0])
                        off += (length + 3) & ~3
                        if length < 16:
                            return None
    except OSError:
        return None
    return ports


def upstream_listening(port: int, paths=("/proc/net/tcp", "/proc/net/tcp6"), diag: bool = True) -> bool:
    """Is a socket in state LISTEN (0A) bound to this port, in this network namespace?

    sock_diag first (cheap); /proc/net/tcp{,6} where netlink is refused."""
    if diag:
        ports = listening_ports_diag()
        if ports is not None:
            return port in ports
    tail = f":{port:04X}"
    for path in paths:
        try:
            with open(path, "rb") as f:
                text = f.read().decode("ascii", "replace")
        except OSError:
            continue
        for line in text.splitlines()[1:]:
            fields = line.split(None, 4)
            if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(tail):
                return True
    return False


# --------------------------------------------------------------------------- UDP


class Resolver(threading.Thread):
    """Resolves the UDP upstream off the loop (a partitioned container's DNS can hang for seconds).

    Until the name first resolves, a fresh lookup starts every RETRY_S (at
    most MAX_PENDING at once) and the first to answer wins: when the proxy
    and the monitor start together, the monitor's name is not on the
    network yet, and Docker 20.10's resolver leaves that first query
    unanswered, so glibc would wait its 5 s out while every heartbeat is
    dropped. Once resolved, it is looked up again every RESOLVE_EVERY_S and
    after a failed send (woken by `wake`)."""

    RETRY_S = 0.1
    MAX_PENDING = 4

    def __init__(self, host: str, port: int, events: Events):
        super().__init__(daemon=True, name="resolver")
        self.host, self.port, self.events = host, port, events
        self.addr = None
        self.wake = threading.Event()
        self.last_error = None
        self.answered = threading.Event()
        self.pending = 0
        self.lock = threading.Lock()

    def lookup(self) -> None:
        try:
            info = socket.getaddrinfo(self.host, self.port, socket.AF_INET, socket.SOCK_DGRAM)
            self.addr = info[0][4]
            self.last_error = None
            self.answered.set()
        except OSError as e:
            if str(e) != self.last_error:
                self.last_error = str(e)
                self.events.log("warn", f"cannot resolve {self.host}:{self.port}: {e}")
        finally:
            with self.lock:
                self.pending -= 1

    def start_lookup(self) -> None:
        with self.lock:
            if self.pending >= self.MAX_PENDING:
                return
            self.pending += 1
        threading.Thread(target=self.lookup, daemon=True, name="lookup").start()

    def run(self) -> None:
        while True:
            self.answered.clear()
            self.start_lookup()
            if self.addr is None:
                self.answered.wait(self.RETRY_S)
                continue
            self.wake.wait(RESOLVE_EVERY_S)
            self.wake.clear()


class Udp:
    def __init__(self, proxy: Proxy, listen: tuple[str, int], upstream: tuple[str, int]):
        self.proxy = proxy
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:
            pass
        self.sock.bind(listen)
        self.sock.setblocking(False)
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.out.setblocking(False)
        self.resolver = Resolver(upstream[0], upstream[1], proxy.events)
        self.resolver.start()
        self.held: bytes | None = None
        self.held_gen = 0
        self.last_arrival = None
        self.interval = 0.2  # mean gap between datagrams (EWMA), for reorder's "2 intervals at most"
        proxy.sel.register(self.sock, selectors.EVENT_READ, (self.readable, self.sock))

    def readable(self, _sock, _mask) -> None:
        for _ in range(64):
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the socket
            self.arrived(data)

    def arrived(self, data: bytes) -> None:
        proxy = self.proxy
        now = time.monotonic()
        if data.rstrip().endswith(b" stopped"):
            proxy.worker_stopped_at = now
        if self.last_arrival is not None:
            gap = min(max(now - self.last_arrival, 0.001), 5.0)
            self.interval += (gap - self.interval) / 8
        self.last_arrival = now
        eff = proxy.toxics.udp
        if eff is None:
            if self.held is not None:
                self.release_held()
            self.send(data)
            return
        rng = proxy.rng
        if eff["loss"] and rng.random() < eff["loss"]:
            proxy.count("udp_dropped")
            return
        if self.held is None and eff["reorder"] and rng.random() < eff["reorder"]:
            self.held = data
            self.held_gen += 1
            gen = self.held_gen
            proxy.count("udp_reordered")
            proxy.at(now + 2 * self.interval, lambda: self.held_gen == gen and self.release_held())
            return
        self.emit(data, eff)
        if self.held is not None:
            self.release_held()

    def release_held(self) -> None:
        data, self.held = self.held, None
        self.held_gen += 1
        eff = self.proxy.toxics.udp
        if eff is None:
            self.send(data)
        else:
            self.emit(data, eff)

    def emit(self, data: bytes, eff: dict) -> None:
        proxy = self.proxy
        copies = 2 if eff["duplicate"] and proxy.rng.random() < eff["duplicate"] else 1
        if copies == 2:
            proxy.count("udp_duplicated")
        for _ in range(copies):
            d = eff["delay"] + (proxy.rng.uniform(-eff["jitter"], eff["jitter"]) if eff["jitter"] else 0.0)
            if d > 0:
                proxy.count("udp_delayed")
                proxy.at(time.monotonic() + d / 1000, lambda data=data: self.send(data))
            else:
                self.send(data)

    def send(self, data: bytes) -> None:
        addr = self.resolver.addr
        if addr is None:
            self.proxy.count("udp_send_errors")
            self.resolver.wake.set()
            return
        try:
            self.out.sendto(data, addr)
            self.proxy.count("udp_forwarded")
        except OSError:  # ENETUNREACH while disconnected, EAGAIN, a stale address...
            self.proxy.count("udp_send_errors")
            self.resolver.wake.set()

    def close(self) -> None:
        self.sock.close()
        self.out.close()


# --------------------------------------------------------------------------- control


class Control:
    def __init__(self, proxy: Proxy, path: str):
        self.proxy, self.path = proxy, path
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a previous run's socket
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.clients: dict[socket.socket, bytearray] = {}
        proxy.sel.register(self.sock, selectors.EVENT_READ, (self.accept, self.sock))

    def accept(self, _sock, _mask) -> None:
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        c.setblocking(False)
        self.clients[c] = bytearray()
        self.proxy.sel.register(c, selectors.EVENT_READ, (self.readable, c))

    def readable(self, c: socket.socket, _mask) -> None:
        try:
            data = c.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(c)
            return
        buf = self.clients[c]
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            if line.strip():
                self.reply(c, self.proxy.handle(line))
        if len(buf) > MAX_LINE:
            self.reply(c, {"ok": False, "error": f"request: longer than {MAX_LINE} bytes"})
            self.drop(c)

    def reply(self, c: socket.socket, rep: dict) -> None:
        try:
            c.setblocking(True)
            c.settimeout(1.0)  # a client that reads nothing must not wedge the relay
            c.sendall(json.dumps(rep, separators=(",", ":")).encode() + b"\n")
            c.setblocking(False)
        except OSError:
            self.drop(c)

    def drop(self, c: socket.socket) -> None:
        if c in self.clients:
            del self.clients[c]
            try:
                self.proxy.sel.unregister(c)
            except (KeyError, ValueError):
                pass
            c.close()

    def close(self) -> None:
        for c in list(self.clients):
            self.drop(c)
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


# --------------------------------------------------------------------------- the proxy


def addr(hp: tuple[str, int]) -> str:
    return f"{hp[0]}:{hp[1]}"


def hostport(s: str) -> tuple[str, int]:
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class Proxy:
    def __init__(self, args, events: Events):
        self.args, self.events = args, events
        self.sel = selectors.DefaultSelector()
        self.rng = random.Random(args.seed)
        self.toxics = Toxics()
        self.conns: set[Conn] = set()
        self.timers: list = []
        self.seq = itertools.count()
        self.listener: socket.socket | None = None
        self.stats: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.stopping = False
        self.stop_reason = "SIGTERM"
        self.worker_stopped_at: float | None = None  # when its "stopped" heartbeat passed
        self.gone_since: float | None = time.monotonic()  # since when nothing listens upstream
        self.listen = args.listen
        self.upstream = args.upstream
        up = socket.getaddrinfo(self.upstream[0], self.upstream[1], socket.AF_UNSPEC, socket.SOCK_STREAM)[0]
        self.up_family, self.up_addr = up[0], up[4]
        # Relay threads that ended by themselves, and the pipe that wakes the loop for them.
        self.handback: deque[Relay] = deque()
        self.notify = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self.notify[0], selectors.EVENT_READ, (self.on_handback, self.notify[0]))
        self.udp = Udp(self, args.udp_listen, args.udp_upstream) if args.udp_listen else None
        self.control = Control(self, args.control) if args.control else None

    def on_handback(self, _fd, _mask) -> None:
        try:
            while os.read(self.notify[0], 4096):
                pass
        except OSError:
            pass
        while self.handback:
            r = self.handback.popleft()
            if r.conn.fast is r:
                r.conn.take_back()

    def harvest(self) -> None:
        for c in self.conns:
            if c.fast is not None:
                c.harvest(c.fast)

    # -- timers and counters

    def at(self, when: float, fn) -> None:
        heapq.heappush(self.timers, (when, next(self.seq), fn))

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    # -- listener, kept open only while the upstream listens

    def poll_upstream(self) -> None:
        want = upstream_listening(self.upstream[1])
        now = time.monotonic()
        self.gone_since = None if want else (self.gone_since or now)
        a = self.args
        if a.linger_after_stop_s and self.worker_stopped_at is not None and not want \
                and now - self.worker_stopped_at >= a.linger_after_stop_s:
            self.stop_reason, self.stopping = "the worker stopped cleanly", True
        elif a.linger_after_gone_s and self.gone_since is not None and now - self.gone_since >= a.linger_after_gone_s:
            self.stop_reason, self.stopping = f"nothing listened upstream for {a.linger_after_gone_s:g} s", True
        if want and self.listener is None:
            self.open_listener()
        elif not want and self.listener is not None:
            self.close_listener(f"nothing listens on upstream port {self.upstream[1]}")

    def open_listener(self) -> None:
        host, port = self.listen
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(1024)
        except OSError as e:
            s.close()
            if not getattr(self, "_bind_error", None) == str(e):
                self._bind_error = str(e)
                self.events.log("error", f"cannot listen on {host}:{port}: {e}")
            return
        self._bind_error = None
        s.setblocking(False)
        self.listener = s
        self.sel.register(s, selectors.EVENT_READ, (self.accept, s))
        self.events.emit("listening", address=f"{host}:{port}",
                         reason=f"upstream port {self.upstream[1]} listening")

    def close_listener(self, reason: str) -> None:
        s, self.listener = self.listener, None
        if s is None:
            return
        self.sel.unregister(s)
        s.close()  # connections still in its backlog get a reset, as from a dead worker's
        self.events.emit("not_listening", address=addr(self.listen), reason=reason)

    def accept(self, _sock, _mask) -> None:
        for _ in range(64):
            if self.listener is None:
                return
            try:
                client, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE, ECONNABORTED...
                self.events.log("warn", f"accept: {e}")
                return
            if self.toxics.reset:
                self.count("resets")
                reset_close(client)
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = socket.socket(self.up_family, socket.SOCK_STREAM)
            up.setblocking(False)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(self, client, up)
            err = up.connect_ex(self.up_addr)
            self.conns.add(conn)
            self.count("connections")
            if err == 0:
                conn.connected = True
                conn.update()
                conn.maybe_fast()
            elif err in (errno.EINPROGRESS, errno.EAGAIN):
                conn.update()
            else:
                self.connect_failed(conn, err)

    def connect_failed(self, conn: Conn, err: int) -> None:
        """The worker died between our accept and our connect: the client sees a reset."""
        self.count("resets")
        self.events.log("warn", f"upstream connect failed ({errno.errorcode.get(err, err)}): client reset")
        conn.close(reset=True)

    # -- control

    def handle(self, line: bytes) -> dict:
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            return {"ok": False, "error": f"json: not a JSON object: {e}"}
        try:
            req = validate(req)
        except BadRequest as e:
            return {"ok": False, "error": str(e)}
        op = req["op"]
        if op == "list":
            return {"ok": True, "toxics": [self.describe(t) for t in self.toxics.by_id.values()],
                    "listening": self.listener is not None, "connections": len(self.conns),
                    "totals": dict(sorted(self.totals.items()))}
        if op == "clear":
            if req["id"] not in self.toxics.by_id:
                return {"ok": False, "error": f"id: no toxic {json.dumps(req['id'])} is on"}
            self.remove([req["id"]])
            return {"ok": True, "cleared": [req["id"]]}
        if op == "clear_all":
            ids = list(self.toxics.by_id)
            self.remove(ids)
            return {"ok": True, "cleared": ids}
        t = {"id": req["id"], "toxic": req["toxic"], "direction": req["direction"], "params": req["params"]}
        old = self.toxics.by_id.get(t["id"])
        self.toxics.by_id[t["id"]] = t
        self.toxics.recompute()
        if t["direction"] != "udp":  # the loop applies TCP toxics: it takes every connection back
            for c in list(self.conns):
                c.take_back()
        if old is not None:
            self.rebase([old])
        self.events.emit("toxic", **self.describe(t), on=True)
        if t["toxic"] == "reset":
            for c in list(self.conns):
                c.reset("reset toxic")
        return {"ok": True, **self.describe(t)}

    def remove(self, ids: list[str]) -> None:
        gone = [self.toxics.by_id.pop(i) for i in ids]
        self.toxics.recompute()
        self.rebase(gone)
        for t in gone:
            self.events.emit("toxic", **self.describe(t), on=False)

    def rebase(self, gone: list[dict]) -> None:
        dirs = {t["direction"] for t in gone}
        now = time.monotonic()
        for c in list(self.conns):
            for p in (c.up, c.down):
                if p.direction in dirs and not c.closed:
                    p.rebase(now)
                    p.flush()
            c.maybe_fast()  # back to the healthy path if the toxics are all off and nothing is held

    @staticmethod
    def describe(t: dict) -> dict:
        return {"id": t["id"], "toxic": t["toxic"], "direction": t["direction"], **t["params"]}

    # -- the loop

    def run(self) -> int:
        a = self.args
        self.events.emit("start", listen=addr(a.listen), upstream=addr(a.upstream),
                         udp=({"listen": addr(a.udp_listen), "upstream": addr(a.udp_upstream)}
                              if a.udp_listen else None),
                         control=a.control, pid=os.getpid())
        self.poll_upstream()
        if self.listener is None:
            self.events.emit("not_listening", address=addr(self.listen),
                             reason=f"nothing listens on upstream port {self.upstream[1]}")
        next_poll = time.monotonic() + POLL_S
        next_stats = time.monotonic() + STATS_S
        while not self.stopping:
            now = time.monotonic()
            timeout = min(next_poll, next_stats) - now
            if self.timers:
                timeout = min(timeout, self.timers[0][0] - now)
            for key, mask in self.sel.select(max(timeout, 0)):
                fn, sock = key.data
                fn(sock, mask)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                heapq.heappop(self.timers)[2]()
            if now >= next_poll:
                self.poll_upstream()
                next_poll = now + POLL_S
            if now >= next_stats:
                self.flush_stats()
                next_stats = now + STATS_S
        self.close()
        return EXIT_OK

    def flush_stats(self) -> None:
        self.harvest()
        s, self.stats = self.stats, {}
        for k, v in s.items():
            self.totals[k] = self.totals.get(k, 0) + v
        if self.toxics.by_id:
            self.events.emit("stats", toxics=sorted(self.toxics.by_id), open_connections=len(self.conns),
                             **{k: s.get(k, 0) for k in STAT_KEYS})

    def close(self) -> None:
        for c in list(self.conns):
            c.close(reset=False)
        if self.listener is not None:
            self.listener.close()
        if self.udp:
            self.udp.close()
        if self.control:
            self.control.close()
        self.sel.unregister(self.notify[0])
        for fd in self.notify:
            os.close(fd)
        self.events.emit("stop", reason=self.stop_reason)


STAT_KEYS = ("up_bytes", "down_bytes", "up_dropped", "down_dropped", "delayed_bytes", "connections", "resets",
             "udp_forwarded", "udp_dropped", "udp_delayed", "udp_duplicated", "udp_reordered", "udp_send_errors")


# --------------------------------------------------------------------------- the ctl client


def ctl(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="proxy.py ctl", description="Send one control request to a running proxy.")
    ap.add_argument("--control", required=True, help="the proxy's control socket")
    ap.add_argument("--timeout-s", type=float, default=5.0)
    ap.add_argument("request", help="one JSON object, e.g. '{\"op\":\"list\"}'")
    args = ap.parse_args(argv)
    line = args.request.replace("\n", " ").encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(args.timeout_s)
            s.connect(args.control)
            s.sendall(line)
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError as e:
        print(f"proxy.py ctl: cannot reach the proxy at {args.control}: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    reply = buf.split(b"\n", 1)[0].decode("utf-8", "replace")
    try:
        ok = json.loads(reply).get("ok") is True
    except (ValueError, AttributeError):
        print(f"proxy.py ctl: no reply from the proxy at {args.control}: {reply!r}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(reply, flush=True)
    return EXIT_OK if ok else EXIT_REFUSED


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Client mode: proxy.py ctl --control PATH JSON")
    ap.add_argument("--listen", type=hostport, default="0.0.0.0:7000", help="TCP address clients connect to")
    ap.add_argument("--upstream", type=hostport, default="127.0.0.1:7100", help="the worker's TCP address")
    ap.add_argument("--udp-listen", default="127.0.0.1:7101", help="where the worker's heartbeats arrive ('' = no UDP)")
    ap.add_argument("--udp-upstream", type=hostport, default="monitor:7001", help="where heartbeats go on to")
    ap.add_argument("--control", default="/run/proxy/control.sock", help="control socket ('' = none)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the toxics' random choices")
    # Plain `docker compose up` returns once every service has exited: the
    # proxy leaves as the monitor does, after the worker's clean stop (its
    # last heartbeat says "stopped") or once it has stayed gone (its restarts
    # used up). labctl removes the lab itself and keeps both at 0.
    ap.add_argument("--linger-after-stop-s", type=float, default=0,
                    help="exit this long after relaying the worker's 'stopped' heartbeat (default 0: never)")
    ap.add_argument("--linger-after-gone-s", type=float, default=0,
                    help="exit once nothing has listened upstream for this long (default 0: never)")
    args = ap.parse_args(argv)
    args.udp_listen = hostport(args.udp_listen) if args.udp_listen not in ("", "none") else None
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ctl"]:
        return ctl(argv[1:])
    args = parse_args(argv)
    events = Events()
    try:
        proxy = Proxy(args, events)
    except OSError as e:
        events.log("error", f"cannot start: {e}")
        return EXIT_USAGE

    def on_term(signum, _frame):
        proxy.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    return proxy.run()


if __name__ == "__main__":
    raise SystemExit(main())
