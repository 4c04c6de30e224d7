"""Leases and fencing (images/lease/): the lease service, the store and the
holders, run as real processes on loopback.

The zombie story end to end: holder a holds the lease and is frozen by
SIGSTOP between its read and its write (its --think-ms window); b takes the
lease with the next token and writes; a wakes and writes with its old token.
With fencing off the store's log shows the token going down (the lost
update); with fencing on the store rejects the write and says why.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from helpers import ROOT, free_port, wait_until

LEASE_DIR = ROOT / "images" / "lease"
SERVICE = LEASE_DIR / "lease_service.py"
STORE = LEASE_DIR / "store.py"
HOLDER = LEASE_DIR / "holder.py"


class Prog:
    """A running program: its events (read by a thread from stdout), stderr in a file."""

    def __init__(self, procs, tmp_path, name: str, cmd: list[str]):
        self.name = name
        self.stderr_path = tmp_path / f"{name}.stderr"
        err = procs.open(self.stderr_path, "w")
        self.p = procs.popen([sys.executable, *map(str, cmd)], stdout=subprocess.PIPE, stderr=err, text=True)
        self.events: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.p.stdout:
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    self.events.append({"kind": "not JSON", "line": line})
        except (ValueError, OSError):  # the pipe closed at teardown
            pass

    def kinds(self, kind: str, **match) -> list[dict]:
        return [e for e in list(self.events) if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, kind: str, timeout: float = 5.0, after: int = 0, **match) -> dict:
        def seen():
            for e in list(self.events)[after:]:
                if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()):
                    return e
            return None
        return wait_until(seen, timeout, 0.005, what=f"{self.name} event {kind} {match}; exit status "
                          f"{self.p.poll()}; its last events {self.events[-5:]}; stderr: "
                          f"{self.stderr_path.read_text()[-500:] if self.stderr_path.exists() else ''}")

    def stderr(self) -> str:
        return self.stderr_path.read_text()


class Client:
    """A JSON-lines client: one request line, one reply line."""

    def __init__(self, port: int):
        deadline = time.monotonic() + 5
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.f = self.sock.makefile("rwb")

    def raw(self, line: bytes) -> dict:
        self.f.write(line + b"\n")
        self.f.flush()
        reply = self.f.readline()
        assert reply.endswith(b"\n"), f"no reply line to {line!r}: {reply!r}"
        return json.loads(reply)

    def __call__(self, **req) -> dict:
        return self.raw(json.dumps(req).encode())

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def start_listening(procs, tmp_path, name: str, cmd: list, *extra) -> tuple[Prog, int]:
    """Starts a server on a free port; if the port was taken in the meantime (the
    program exits having said so), again on another one."""
    for _ in range(3):
        port = free_port()
        prog = Prog(procs, tmp_path, name, [*cmd, "--listen", f"127.0.0.1:{port}", *extra])
        wait_until(lambda prog=prog: prog.kinds("start") or (prog.p.poll() is not None and prog.kinds("log")), 10,
                   what=f"{name} to start (or to say why not)")
        if prog.kinds("start"):
            return prog, port
        assert any("cannot" in e.get("message", "") for e in prog.kinds("log")), (prog.events, prog.stderr())
    raise AssertionError(f"{name}: no free port in 3 tries: {prog.events}")


def start_service(procs, tmp_path, *extra: str) -> tuple[Prog, int]:
    return start_listening(procs, tmp_path, "lease", [SERVICE], *extra)


def start_store(procs, tmp_path, fencing: str) -> tuple[Prog, int]:
    return start_listening(procs, tmp_path, "store", [STORE], "--fencing", fencing, "--log", tmp_path / "store.log")


def store_log(tmp_path) -> list[dict]:
    p = tmp_path / "store.log"
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


def token_decreases(rows: list[dict]) -> list[tuple[dict, int]]:
    """Accepted writes whose token is below one accepted before them: (row, the highest before it)."""
    out, highest = [], None
    for r in rows:
        if highest is not None and r["token"] < highest:
            out.append((r, highest))
        highest = r["token"] if highest is None else max(highest, r["token"])
    return out


# --------------------------------------------------------------------------- the lease service


def test_token_only_grows_and_a_renewal_keeps_it(procs, tmp_path):
    svc, port = start_service(procs, tmp_path)
    c = procs.add(Client(port))
    r = c(op="acquire", client="a", ttl_ms=2000)
    assert r == {"ok": True, "token": 33, "expires_in_ms": 2000, "renewal": False}
    r = c(op="acquire", client="a", ttl_ms=2000)
    assert r["ok"] and r["token"] == 33 and r["renewal"] is True
    r = c(op="acquire", client="b", ttl_ms=2000)
    assert r["ok"] is False and r["holder"] == "a" and 0 < r["expires_in_ms"] <= 2000, r
    assert c(op="status")["holder"] == "a" and c(op="status")["token"] == 33
    assert c(op="release", client="b", token=33)["ok"] is False  # not b's to release
    assert c(op="release", client="a", token=32)["ok"] is False  # not that token
    assert c(op="release", client="a", token=33) == {"ok": True}
    assert c(op="status")["holder"] is None
    assert c(op="acquire", client="b", ttl_ms=2000)["token"] == 34
    assert c(op="release", client="b", token=34)["ok"]
    assert c(op="acquire", client="b", ttl_ms=2000)["token"] == 35  # a new grant, even to the same client
    # Garbage gets a clear error, and the service lives on.
    assert "not JSON" in c.raw(b"{nope")["error"]
    assert "ttl_ms" in c(op="acquire", client="a", ttl_ms="soon")["error"]
    assert "unknown op" in c(op="steal", client="a")["error"]
    assert c(op="status")["next_token"] == 36
    granted = svc.wait_event("granted", token=35)
    assert granted["renewal"] is False and granted["ttl_ms"] == 2000 and granted["source"] == "lease"
    assert [(e["client"], e["token"], e["renewal"]) for e in svc.kinds("granted")] == [
        ("a", 33, False), ("a", 33, True), ("b", 34, False), ("b", 35, False)]
    assert [e["holder"] for e in svc.kinds("refused")] == ["a"]
    assert [(e["client"], e["token"]) for e in svc.kinds("released")] == [("a", 33), ("b", 34)]


def test_an_expired_lease_goes_to_the_other_client_with_the_next_token(procs, tmp_path):
    svc, port = start_service(procs, tmp_path, "--first-token", "7")
    c = procs.add(Client(port))
    assert c(op="acquire", client="a", ttl_ms=200)["token"] == 7
    assert c(op="acquire", client="b", ttl_ms=200)["ok"] is False
    t0 = time.monotonic()
    # Noticed by the service's own timer, with no request to prompt it.
    e = svc.wait_event("expired", timeout=2)
    assert (e["client"], e["token"]) == ("a", 7)
    assert 0.1 <= time.monotonic() - t0 <= 1.0
    assert c(op="status")["holder"] is None
    r = c(op="acquire", client="b", ttl_ms=1000)
    assert r["ok"] and r["token"] == 8 and r["renewal"] is False
    # a's late renewal is refused: b holds it now.
    r = c(op="acquire", client="a", ttl_ms=200)
    assert r["ok"] is False and r["holder"] == "b"
    assert c(op="release", client="a", token=7)["ok"] is False


# --------------------------------------------------------------------------- the store


def test_store_with_fencing_rejects_a_lower_token_and_says_why(procs, tmp_path):
    store, port = start_store(procs, tmp_path, "on")
    c = procs.add(Client(port))
    assert c(op="read", key="counter") == {"ok": True, "key": "counter", "value": None, "found": False}
    assert c(op="write", client="b", token=34, key="counter", value=5)["ok"]
    assert c(op="write", client="b", token=34, key="counter", value=6)["ok"]  # the same token again: fine
    r = c(op="write", client="a", token=33, key="counter", value=1)
    assert r["ok"] is False and r["error"] == "fenced: token 33 < 34", r
    assert c(op="read", key="counter")["value"] == 6
    assert c(op="write", client="c", token=40, key="counter", value=7)["ok"]
    assert c(op="write", client="b", token=34, key="counter", value=8)["error"] == "fenced: token 34 < 40"
    assert "token" in c(op="write", client="a", key="counter", value=1)["error"]
    fenced = store.wait_event("fenced", client="a")
    assert (fenced["token"], fenced["highest"]) == (33, 34)
    wait_until(lambda: "FENCED a write from a: token 33 < 34" in store.stderr(), 2, what="the store's log line")
    rows = store_log(tmp_path)
    assert [(r["client"], r["token"], r["value"], r["highest"]) for r in rows] == [
        ("b", 34, 5, 34), ("b", 34, 6, 34), ("c", 40, 7, 40)]
    assert token_decreases(rows) == []
    assert len(store.kinds("accepted")) == 3


def test_store_without_fencing_accepts_a_lower_token(procs, tmp_path):
    store, port = start_store(procs, tmp_path, "off")
    c = procs.add(Client(port))
    assert c(op="write", client="b", token=34, key="counter", value=5)["ok"]
    assert c(op="write", client="a", token=33, key="counter", value=1)["ok"]
    assert c(op="read", key="counter")["value"] == 1
    store.wait_event("accepted", client="a", token=33, stale=True)
    assert store.kinds("fenced") == []
    rows = store_log(tmp_path)
    assert [(r["client"], r["token"], r["highest"]) for r in rows] == [("b", 34, 34), ("a", 33, 34)]
    assert [(r["client"], r["token"]) for r, _ in token_decreases(rows)] == [("a", 33)]


# --------------------------------------------------------------------------- holders


def start_holder(procs, tmp_path, name: str, lease_port: int, store_port: int, *extra: str) -> Prog:
    return Prog(procs, tmp_path, f"holder-{name}", [
        HOLDER, "--client", name, "--lease", f"127.0.0.1:{lease_port}", "--store", f"127.0.0.1:{store_port}",
        *extra])


def test_holder_survives_absent_peers_then_works_and_stops_cleanly(procs, tmp_path):
    lease_port, store_port = free_port(), free_port()
    a = start_holder(procs, tmp_path, "a", lease_port, store_port, "--ttl-ms", "600", "--work-ms", "50")
    a.wait_event("log", peer="lease service", level="warn")
    time.sleep(0.4)
    assert a.p.poll() is None, a.stderr()
    # The peers come up on the ports it keeps trying.
    Prog(procs, tmp_path, "lease", [SERVICE, "--listen", f"127.0.0.1:{lease_port}"]).wait_event("start")
    store = Prog(procs, tmp_path, "store", [STORE, "--listen", f"127.0.0.1:{store_port}", "--fencing", "on",
                                            "--log", tmp_path / "store.log"])
    store.wait_event("start")
    assert a.wait_event("acquired", timeout=5)["token"] == 33
    a.wait_event("believes", holds=True, token=33)
    wait_until(lambda: len(a.kinds("wrote", ok=True)) >= 3, 5, what="three writes")
    a.p.send_signal(signal.SIGTERM)
    assert a.p.wait(5) == 0, a.stderr()
    assert a.wait_event("stop")["writes"] >= 3
    assert a.wait_event("released")["ok"] is True
    values = [r["value"] for r in store_log(tmp_path)]
    assert values == list(range(1, len(values) + 1))  # one holder: no update lost
    assert "Traceback" not in a.stderr()
    assert a.kinds("not JSON") == []


@pytest.mark.parametrize("fencing", ["off", "on"])
def test_zombie_holder_paused_past_its_lease(procs, tmp_path, fencing):
    svc, lease_port = start_service(procs, tmp_path)
    store, store_port = start_store(procs, tmp_path, fencing)
    a = start_holder(procs, tmp_path, "a", lease_port, store_port, "--ttl-ms", "1000", "--think-ms", "500")
    a.wait_event("believes", holds=True, token=33)
    b = start_holder(procs, tmp_path, "b", lease_port, store_port, "--ttl-ms", "1000", "--work-ms", "50")
    svc.wait_event("refused", client="b", holder="a")
    assert b.kinds("acquired") == []
    # Freeze a inside its think window: it has checked its lease and read the counter.
    n = len(a.events)
    read = a.wait_event("read", after=n, token=33)
    a.p.send_signal(signal.SIGSTOP)
    paused_at = time.monotonic()
    assert b.wait_event("acquired", timeout=2.5)["token"] == 34
    wait_until(lambda: b.kinds("wrote", ok=True, token=34), 2, what="b's first write")
    time.sleep(max(0.0, 2.5 - (time.monotonic() - paused_at)))
    expired = svc.kinds("expired", client="a")
    assert expired and expired[0]["token"] == 33
    n = len(a.events)
    a.p.send_signal(signal.SIGCONT)
    # a wakes in its think window and writes with its old token, without checking again.
    wrote = a.wait_event("wrote", after=n, timeout=3)
    assert wrote["token"] == 33 and wrote["value"] == read["value"] + 1
    lost = a.wait_event("lost", after=n, timeout=3)
    a.wait_event("believes", after=n, holds=False)
    time.sleep(0.3)  # b writes on
    rows = store_log(tmp_path)
    assert rows and rows[0]["token"] == 33 and any(r["token"] == 34 for r in rows)
    if fencing == "off":
        assert wrote["ok"] is True and wrote["error"] is None
        assert lost["reason"] == "refused" and lost["holder"] == "b"
        assert store.kinds("fenced") == []
        decreases = token_decreases(rows)
        assert len(decreases) == 1, decreases
        zombie, highest = decreases[0]
        assert (zombie["client"], zombie["token"], highest, zombie["highest"]) == ("a", 33, 34, 34)
        assert zombie["value"] == read["value"] + 1
        # The lost update: the zombie's write set the counter back below what b had written.
        before = rows[rows.index(zombie) - 1]
        assert before["client"] == "b" and zombie["value"] <= before["value"], (before, zombie)
        assert [r["value"] for r in rows] != list(range(1, len(rows) + 1))
    else:
        assert wrote["ok"] is False and wrote["error"] == "fenced: token 33 < 34"
        assert lost["reason"] == "fenced"
        fenced = store.wait_event("fenced", client="a")
        assert (fenced["token"], fenced["highest"]) == (33, 34)
        assert "FENCED a write from a: token 33 < 34" in store.stderr()
        assert token_decreases(rows) == []
        assert all(r["token"] == r["highest"] for r in rows)
        # No update lost: every accepted write added one to the one before it.
        assert [r["value"] for r in rows] == list(range(1, len(rows) + 1))
    assert a.p.poll() is None and b.p.poll() is None
    for h in (a, b):
        h.p.send_signal(signal.SIGTERM)
        assert h.p.wait(5) == 0, h.stderr()
        assert "Traceback" not in h.stderr()
