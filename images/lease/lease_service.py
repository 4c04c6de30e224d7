#!/usr/bin/env python3
"""Lease service: one time-bounded lease, with a fencing token that only grows.

DDIA chapter 8: a lease is a lock with a timeout. Whoever holds it may act
until it expires; then the service may grant it to someone else. The token
numbers the grants (33, 34, ...): a store that remembers the highest token it
has seen can refuse a write from a holder whose lease has long gone (a
"zombie" that was paused and does not know it).

Protocol: TCP, one JSON object per line, one JSON reply line each.

    {"op":"acquire","client":"a","ttl_ms":2000}
        -> {"ok":true,"token":34,"expires_in_ms":2000,"renewal":false}
           when the lease is free or expired (a new token), or already held
           by this client (a renewal: the same token, a fresh ttl);
        -> {"ok":false,"error":"held by b","holder":"b","expires_in_ms":812}
    {"op":"release","client":"a","token":34}
        -> {"ok":true} | {"ok":false,"error":"..."} (not the holder, or an old token)
    {"op":"status"}
        -> {"ok":true,"holder":"a"|null,"token":34|null,"expires_in_ms":...|null,"next_token":35}
    anything else -> {"ok":false,"error":"..."}

Time is the service's own monotonic clock; nothing is persisted (a restart
starts again at --first-token). Expiry is noticed at the next request or by a
timer every 100 ms, whichever comes first.

One thread, one selectors loop. Standard library only. Events as JSON lines
on stdout (docs/events.md, `## lease`); --events PATH also appends them to a file.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from lineserver import BadRequest, Events, Server, hostport  # beside this file

MAX_TTL_MS = 600_000





def _client(req: dict) -> str:
    c = req.get("client")
    if not isinstance(c, str) or not c or len(c) > 128:
        raise BadRequest("client: must be a non-empty string of at most 128 characters")
    return c


def _int(req: dict, key: str, lo: int, hi: int) -> int:
    v = req.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"{key}: must be an integer, got {json.dumps(v)}")
    if not lo <= v <= hi:
        raise BadRequest(f"{key}: must be from {lo} to {hi}, got {v}")
    return v


class Lease:
    """The lease's state and rules; `now` is a monotonic time in seconds. Pure but for events."""

    def __init__(self, first_token: int, events: Events):
        self.events = events
        self.next_token = first_token
        self.holder: str | None = None
        self.token: int | None = None
        self.ttl_ms = 0
        self.expires_at = 0.0

    def _left_ms(self, now: float) -> int:
        return max(0, round((self.expires_at - now) * 1000))

    def check_expiry(self, now: float) -> None:
        if self.holder is not None and now >= self.expires_at:
            self.events.emit("expired", client=self.holder, token=self.token, ttl_ms=self.ttl_ms,
                             late_ms=round((now - self.expires_at) * 1000, 1))
            self.holder = self.token = None

    def handle(self, req, now: float) -> dict:
        if not isinstance(req, dict):
            raise BadRequest("request: must be a JSON object")
        op = req.get("op")
        self.check_expiry(now)
        if op == "acquire":
            return self.acquire(_client(req), _int(req, "ttl_ms", 1, MAX_TTL_MS), now)
        if op == "release":
            return self.release(_client(req), _int(req, "token", 0, 2**63), now)
        if op == "status":
            held = self.holder is not None
            return {"ok": True, "holder": self.holder, "token": self.token,
                    "expires_in_ms": self._left_ms(now) if held else None, "next_token": self.next_token}
        raise BadRequest(f"op: unknown op {json.dumps(op)} (one of acquire, release, status)")

    def acquire(self, client: str, ttl_ms: int, now: float) -> dict:
        if self.holder is not None and self.holder != client:
            left = self._left_ms(now)
            self.events.emit("refused", client=client, holder=self.holder, token=self.token, expires_in_ms=left)
            return {"ok": False, "error": f"held by {self.holder}", "holder": self.holder, "expires_in_ms": left}
        renewal = self.holder == client
        if not renewal:
            self.holder, self.token = client, self.next_token
            self.next_token += 1
        self.ttl_ms = ttl_ms
        self.expires_at = now + ttl_ms / 1000
        self.events.emit("granted", client=client, token=self.token, ttl_ms=ttl_ms, renewal=renewal)
        return {"ok": True, "token": self.token, "expires_in_ms": ttl_ms, "renewal": renewal}

    def release(self, client: str, token: int, now: float) -> dict:
        if self.holder != client or self.token != token:
            why = ("the lease is free" if self.holder is None
                   else f"held by {self.holder}" if self.holder != client else f"token {token} is not {self.token}")
            return {"ok": False, "error": f"not released: {why}"}
        self.events.emit("released", client=client, token=token, expires_in_ms=self._left_ms(now))
        self.holder = self.token = None
        return {"ok": True}


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", type=hostport, default=("0.0.0.0", 7300), help="HOST:PORT (default 0.0.0.0:7300)")
    ap.add_argument("--first-token", type=int, default=33, help="the first grant's token (default 33)")
    ap.add_argument("--events", help="also append events (JSON lines) to this file")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    events = Events(args.events, "lease")
    lease = Lease(args.first_token, events)
    try:
        server = Server(args.listen, lambda req: lease.handle(req, time.monotonic()),
                        lambda: lease.check_expiry(time.monotonic()), events)
    except OSError as e:
        events.emit("log", level="error", message=f"cannot listen on {args.listen[0]}:{args.listen[1]}: {e}")
        return 64

    def on_term(signum, _frame):
        server.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    events.emit("start", listen=server.address(), first_token=args.first_token, pid=os.getpid())
    rc = server.run()
    events.emit("stop", reason="SIGTERM", holder=lease.holder, token=lease.token, next_token=lease.next_token)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
