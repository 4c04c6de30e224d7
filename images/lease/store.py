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
import signal
import sys
import time

from lineserver import BadRequest, Events, Server, hostport  # beside this file


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
    events = Events(args.events, "store")
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
