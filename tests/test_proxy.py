"""The fault-injecting proxy (images/proxy/proxy.py), run as a real process on loopback.

The "worker" here is a listening socket the test opens on the upstream port:
the proxy sees it in /proc/net/tcp as the real one would be seen in the lab's
shared network namespace. Timing assertions are generous (a loaded 2-core
machine); random toxics run with --seed and statistical bounds far from the
expected value's noise.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from helpers import ROOT, free_port, free_udp_port, wait_until

PROXY = ROOT / "images" / "proxy" / "proxy.py"


class Proxy:
    """A running proxy: its ports, its events (read by a thread), its control client."""

    def __init__(self, procs, tmp_path, seed: int = 1, extra: tuple[str, ...] = ()):
        self.port, self.up_port = free_port(), free_port()
        self.udp_port, self.mon_port = free_udp_port(), free_udp_port()
        self.control = str(tmp_path / "proxy.sock")
        self.p = procs.popen(
            [sys.executable, str(PROXY), "--listen", f"127.0.0.1:{self.port}",
             "--upstream", f"127.0.0.1:{self.up_port}", "--udp-listen", f"127.0.0.1:{self.udp_port}",
             "--udp-upstream", f"127.0.0.1:{self.mon_port}", "--control", self.control, "--seed", str(seed),
             *extra],
            stdout=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_event("start")

    def _read(self) -> None:
        for line in self.p.stdout:
            self.events.append(json.loads(line))

    def wait_event(self, kind: str, timeout: float = 5.0, after: int = 0, **match) -> dict:
        def seen():
            for e in self.events[after:]:
                if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()):
                    return e
            return None
        return wait_until(seen, timeout, what=f"proxy event {kind} {match}")

    def ctl(self, req) -> dict:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.control)
            s.sendall((req if isinstance(req, str) else json.dumps(req)).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                assert chunk, "control socket closed without a reply"
                buf += chunk
        return json.loads(buf)

    def set(self, **req) -> dict:
        rep = self.ctl({"op": "set", **req})
        assert rep["ok"], rep
        return rep

    def clear(self, tid: str) -> None:
        assert self.ctl({"op": "clear", "id": tid})["ok"]


class Upstream:
    """A listening socket on the upstream port: what the proxy takes for the worker."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind((host, port))
        self.s.listen(16)
        self.s.settimeout(5)

    def accept(self) -> socket.socket:
        c, _ = self.s.accept()
        c.settimeout(5)
        return c

    def close(self) -> None:
        self.s.close()


@pytest.fixture
def proxy(procs, tmp_path):
    return Proxy(procs, tmp_path)


@pytest.fixture
def pair(proxy, procs):
    """(proxy, client socket, upstream-side socket) of one connection through the proxy."""
    up = procs.add(Upstream(proxy.up_port))
    proxy.wait_event("listening")
    c = procs.add(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
    s = procs.add(up.accept())
    return proxy, c, s


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(65536, n - len(buf)))
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


def reset_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


# ---------------------------------------------------------------- the transparent path


def test_passes_a_stream_both_ways_byte_for_byte(pair):
    _, c, s = pair
    up_data, down_data = random.randbytes(3_000_000), random.randbytes(2_000_000)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("up", recv_exactly(s, len(up_data))))
    t.start()
    threading.Thread(target=lambda: s.sendall(down_data), daemon=True).start()
    sender = threading.Thread(target=lambda: c.sendall(up_data))
    sender.start()
    got_down = recv_exactly(c, len(down_data))
    t.join(20)
    sender.join(20)
    assert got.get("up") == up_data
    assert got_down == down_data


def test_listener_exists_only_while_upstream_listens(proxy, procs):
    assert refused(proxy.port)  # nothing upstream yet: refused, like the worker itself
    up = Upstream(proxy.up_port)
    proxy.wait_event("listening")
    c = procs.add(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
    up.accept().close()
    n = len(proxy.events)
    up.close()
    t0 = time.monotonic()
    wait_until(lambda: refused(proxy.port), 2, interval=0.005, what="connect refused")
    assert time.monotonic() - t0 < 0.2
    e = proxy.wait_event("not_listening", after=n)
    assert str(proxy.up_port) in e["reason"]
    up = procs.add(Upstream(proxy.up_port))
    wait_until(lambda: not refused(proxy.port), 2, interval=0.005, what="listener reopened")
    proxy.wait_event("listening", after=n)
    c.close()


def test_upstream_eof_becomes_downstream_eof_half_open(pair):
    _, c, s = pair
    s.sendall(b"last words")
    s.shutdown(socket.SHUT_WR)
    assert recv_exactly(c, 10) == b"last words"
    assert c.recv(10) == b""  # EOF, not a reset
    c.sendall(b"still heard")  # the other direction stays open
    assert recv_exactly(s, 11) == b"still heard"
    c.shutdown(socket.SHUT_WR)
    assert s.recv(10) == b""


def test_upstream_reset_becomes_downstream_reset(pair):
    _, c, s = pair
    s.sendall(b"x")
    assert c.recv(1) == b"x"
    reset_close(s)
    with pytest.raises(ConnectionResetError):
        c.recv(10)


def test_client_reset_becomes_upstream_reset_and_eof_becomes_eof(proxy, procs):
    up = procs.add(Upstream(proxy.up_port))
    proxy.wait_event("listening")
    c = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    s = procs.add(up.accept())
    reset_close(c)
    with pytest.raises(ConnectionResetError):
        s.recv(10)
    c2 = procs.add(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
    s2 = procs.add(up.accept())
    c2.shutdown(socket.SHUT_WR)
    assert s2.recv(10) == b""


def test_failed_upstream_connect_resets_the_client(proxy, procs):
    # Listening on the port, but on another address: /proc says LISTEN, a connect to 127.0.0.1 is refused.
    procs.add(Upstream(proxy.up_port, host="127.0.0.2"))
    proxy.wait_event("listening")
    c = procs.add(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
    with pytest.raises(ConnectionResetError):
        c.recv(10)
    proxy.wait_event("log", level="warn")


def test_sigterm_exits_zero_promptly_and_removes_the_control_socket(proxy):
    assert os.path.exists(proxy.control)
    proxy.p.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert proxy.p.wait(5) == 0
    assert time.monotonic() - t0 < 1.0
    assert not os.path.exists(proxy.control)


def test_plain_compose_lingers_then_exits_after_the_workers_clean_stop(procs, tmp_path):
    """`docker compose up` returns once every service has exited: the proxy
    leaves after relaying the worker's "stopped" beat, once nothing listens."""
    px = Proxy(procs, tmp_path, extra=("--linger-after-stop-s", "0.3"))
    up = procs.add(Upstream(px.up_port))
    px.wait_event("listening")
    out = procs.add(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    out.sendto(b"inc-1 42 17 1000 1796000000000 stopped\n", ("127.0.0.1", px.udp_port))
    time.sleep(0.6)  # past the linger: still here while the worker listens
    assert px.p.poll() is None
    up.close()
    t0 = time.monotonic()
    assert px.p.wait(3) == 0
    assert time.monotonic() - t0 < 1.5
    assert px.wait_event("stop")["reason"] == "the worker stopped cleanly"


def test_with_no_worker_for_the_gone_linger_it_exits_and_by_default_it_stays(procs, tmp_path):
    px = Proxy(procs, tmp_path, extra=("--linger-after-gone-s", "0.5"))
    assert px.p.wait(3) == 0
    assert px.wait_event("stop")["reason"] == "nothing listened upstream for 0.5 s"
    stays = Proxy(procs, tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path)
    time.sleep(1.0)  # the default is never: a second later it still runs
    assert stays.p.poll() is None


# ---------------------------------------------------------------- TCP toxics


def echo_times(c, s, n: int) -> list[float]:
    """Round trips of n numbered requests echoed by the upstream side, checked in order."""
    times = []
    for i in range(n):
        t0 = time.monotonic()
        c.sendall(b"%04d" % i)
        s.sendall(recv_exactly(s, 4))
        assert recv_exactly(c, 4) == b"%04d" % i
        times.append(time.monotonic() - t0)
    return times


def test_latency_with_jitter_delays_in_order(pair):
    proxy, c, s = pair
    base = echo_times(c, s, 5)
    assert max(base) < 0.15
    proxy.set(id="lat", toxic="latency", direction="down", latency=300, jitter=100)
    proxy.wait_event("toxic", id="lat", on=True, latency=300, jitter=100)
    times = echo_times(c, s, 12)
    assert min(times) >= 0.19, times
    assert max(times) < 1.0, times
    assert 0.22 < sum(times) / len(times) < 0.6, times
    assert max(times) - min(times) > 0.02, times  # jitter: not all the same
    # a burst: order kept although each chunk draws its own delay
    for i in range(20):
        s.sendall(b"%04d" % i)
        time.sleep(0.01)
    assert recv_exactly(c, 80) == b"".join(b"%04d" % i for i in range(20))
    proxy.clear("lat")
    proxy.wait_event("toxic", id="lat", on=False)
    assert max(echo_times(c, s, 5)) < 0.15


def test_bandwidth_caps_throughput(pair):
    proxy, c, s = pair
    proxy.set(id="bw", toxic="bandwidth", direction="down", rate=100)  # 100 KB/s
    data = random.randbytes(200_000)
    t0 = time.monotonic()
    threading.Thread(target=lambda: s.sendall(data), daemon=True).start()
    assert recv_exactly(c, len(data)) == data
    took = time.monotonic() - t0
    assert 1.6 < took < 4.0, took  # 2 s at 100 KB/s
    stats = proxy.wait_event("stats")
    assert stats["toxics"] == ["bw"]
    proxy.clear("bw")
    t0 = time.monotonic()
    threading.Thread(target=lambda: s.sendall(data), daemon=True).start()
    assert recv_exactly(c, len(data)) == data
    assert time.monotonic() - t0 < 1.0


def test_blackhole_drops_bytes_and_keeps_the_connection(pair):
    proxy, c, s = pair
    proxy.set(id="bh", toxic="blackhole", direction="up")
    c.sendall(b"into the void")
    s.settimeout(0.5)
    with pytest.raises(TimeoutError):
        s.recv(100)
    s.settimeout(5)
    s.sendall(b"down still works")
    assert recv_exactly(c, 16) == b"down still works"
    st = proxy.wait_event("stats")
    assert st["up_dropped"] == 13
    proxy.clear("bh")
    c.sendall(b"heard")
    assert recv_exactly(s, 5) == b"heard"


def test_toxics_take_over_a_relayed_connection_and_hand_it_back(proxy, procs):
    """With no toxic on, a connection is relayed off the loop (a relay thread):
    a toxic switched on mid-stream still takes effect at once, bytes it held
    are released when it is switched off, and the connection then goes on
    relaying, its bytes counted throughout."""

    def pipes() -> int:
        fds = f"/proc/{proxy.p.pid}/fd"
        n = 0
        for fd in os.listdir(fds):
            try:
                n += os.readlink(f"{fds}/{fd}").startswith("pipe:")
            except OSError:
                pass
        return n

    up = procs.add(Upstream(proxy.up_port))
    proxy.wait_event("listening")
    base = pipes()
    c = procs.add(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
    s = procs.add(up.accept())
    big = os.urandom(300_000)
    threading.Thread(target=lambda: c.sendall(big), daemon=True).start()
    assert recv_exactly(s, len(big)) == big
    # the relay's two kernel pipes (splice(2)) and the pipe that wakes it
    assert pipes() == base + 6, "the connection is not on a relay thread"
    s.sendall(b"fast down")
    assert recv_exactly(c, 9) == b"fast down"
    # switched on mid-stream: held back, then released when switched off
    proxy.set(id="lat", toxic="latency", direction="up", latency=60_000)
    c.sendall(b"held")
    s.settimeout(0.5)
    with pytest.raises(TimeoutError):
        s.recv(100)
    s.settimeout(5)
    s.sendall(b"down unaffected")
    assert recv_exactly(c, 15) == b"down unaffected"
    t0 = time.monotonic()
    proxy.clear("lat")
    assert recv_exactly(s, 4) == b"held"
    assert time.monotonic() - t0 < 2.0
    # the healthy path again, then a blackhole on it: dropped, counted
    c.sendall(b"again")
    assert recv_exactly(s, 5) == b"again"
    proxy.set(id="bh", toxic="blackhole", direction="down")
    s.sendall(b"lost")
    c.settimeout(0.5)
    with pytest.raises(TimeoutError):
        c.recv(100)
    c.settimeout(5)
    st = proxy.wait_event("stats", down_dropped=4)
    assert st["toxics"] == ["bh"]
    proxy.clear("bh")
    s.sendall(b"back")
    assert recv_exactly(c, 4) == b"back"
    # EOF after the hand-backs is still mirrored
    s.shutdown(socket.SHUT_WR)
    assert c.recv(100) == b""
    c.sendall(b"half open")
    assert recv_exactly(s, 9) == b"half open"
    totals = wait_until(lambda: (t := proxy.ctl({"op": "list"})["totals"]).get("up_bytes", 0)
                        >= len(big) + 4 + 5 + 9 and t, 5, what="totals")
    assert totals["up_bytes"] == len(big) + 4 + 5 + 9
    assert totals["down_bytes"] == 9 + 15 + 4
    assert totals["down_dropped"] == 4


def test_slice_delivers_small_pieces(pair):
    proxy, c, s = pair
    proxy.set(id="sl", toxic="slice", direction="down", size=10, delay_ms=20)
    t0 = time.monotonic()
    s.sendall(bytes(range(200)))
    reads = []
    while sum(map(len, reads)) < 200:
        chunk = c.recv(4096)
        assert chunk
        reads.append(chunk)
    assert b"".join(reads) == bytes(range(200))
    assert time.monotonic() - t0 >= 0.3  # 19 gaps of 20 ms
    assert len(reads) >= 8 and max(map(len, reads)) <= 30, [len(r) for r in reads]


def test_reset_resets_existing_and_new_connections(proxy, procs):
    up = procs.add(Upstream(proxy.up_port))
    proxy.wait_event("listening")
    c = procs.add(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
    s = procs.add(up.accept())
    proxy.set(id="rst", toxic="reset")
    with pytest.raises(ConnectionResetError):
        c.recv(10)
    with pytest.raises(ConnectionResetError):
        s.recv(10)
    # A new connection is reset right after the accept: as it completes, or at the first read.
    with pytest.raises(ConnectionResetError):
        c2 = procs.add(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
        c2.recv(10)
    proxy.clear("rst")
    c3 = procs.add(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
    s3 = procs.add(up.accept())  # the reset connection never reached upstream: this is c3's
    c3.sendall(b"ok")
    assert recv_exactly(s3, 2) == b"ok"


# ---------------------------------------------------------------- UDP


class Monitor:
    """The UDP receiver the proxy relays to; a thread records (arrival time, datagram)."""

    def __init__(self, port: int):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.s.bind(("127.0.0.1", port))
        self.s.settimeout(0.2)
        self.got: list[tuple[float, bytes]] = []
        self.running = True
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while self.running:
            try:
                d = self.s.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.got.append((time.monotonic(), d))

    def close(self) -> None:
        self.running = False
        self.t.join(2)
        self.s.close()


@pytest.fixture
def udp(proxy, procs):
    mon = procs.add(Monitor(proxy.mon_port))
    out = procs.add(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    def send(n: int, gap: float = 0.0, every: int = 20) -> dict[bytes, float]:
        sent = {}
        for i in range(n):
            d = b"%06d" % i
            sent[d] = time.monotonic()
            out.sendto(d, ("127.0.0.1", proxy.udp_port))
            if gap:
                time.sleep(gap)
            elif i % every == every - 1:
                time.sleep(0.002)  # pace: the test measures the toxic, not a full socket buffer
        return sent

    def settle(expect_at_least: int = 0, quiet: float = 0.5) -> list[tuple[float, bytes]]:
        wait_until(lambda: len(mon.got) >= expect_at_least, 10, what=f"{expect_at_least} datagrams")
        n = -1
        while n != len(mon.got):
            n = len(mon.got)
            time.sleep(quiet)
        return list(mon.got)

    return proxy, send, settle


def test_udp_passes_every_datagram_in_order(udp):
    _, send, settle = udp
    send(500)
    got = settle(500)
    assert [d for _, d in got] == [b"%06d" % i for i in range(500)]


def test_udp_loss(udp):
    proxy, send, settle = udp
    proxy.set(id="loss", toxic="loss", p=0.5)
    send(2000)
    got = settle(1)
    assert 800 <= len(got) <= 1200, len(got)  # 1000 +- 9 sigma
    assert len({d for _, d in got}) == len(got)


def test_udp_delay_with_jitter(udp):
    proxy, send, settle = udp
    proxy.set(id="dl", toxic="delay", delay=200, jitter=50)
    sent = send(20, gap=0.01)
    got = settle(20)
    lags = [t - sent[d] for t, d in got]
    assert len(got) == 20
    assert min(lags) >= 0.145 and max(lags) < 0.6, lags
    assert max(lags) - min(lags) > 0.01, lags


def test_udp_duplicate(udp):
    proxy, send, settle = udp
    proxy.set(id="dup", toxic="duplicate", p=1)
    send(100)
    got = settle(200)
    assert sorted(d for _, d in got) == sorted([b"%06d" % i for i in range(100)] * 2)
    proxy.set(id="dup", toxic="duplicate", p=0.5)  # the same id: replaced
    send(2000)
    assert 2600 <= len(settle(2200)) - 200 <= 3400


def test_udp_reorder_swaps_pairs_and_releases_a_lone_one(udp):
    proxy, send, settle = udp
    proxy.set(id="ro", toxic="reorder", p=1)
    sent = send(20, gap=0.02)
    got = settle(20)
    assert [int(d) for _, d in got] == [j for i in range(0, 20, 2) for j in (i + 1, i)]
    # the last of a pair: held, then released after about 2 intervals (40 ms) with no next one
    n = len(got)
    sent = send(1)
    got = settle(n + 1)
    assert got[-1][0] - sent[b"000000"] < 0.5


def test_udp_stats_events_count_drops(udp):
    proxy, send, settle = udp
    proxy.set(id="loss", toxic="loss", p=1)
    send(50)
    time.sleep(1.2)
    assert settle(0) == []
    dropped = sum(e["udp_dropped"] for e in proxy.events if e["kind"] == "stats")
    assert dropped == 50


# ---------------------------------------------------------------- control


@pytest.mark.parametrize("req, key", [
    ("{not json", "json:"),
    ("[1, 2]", "request:"),
    ({"id": "x"}, "op:"),
    ({"op": "explode"}, "op:"),
    ({"op": "set", "toxic": "latency", "direction": "down", "latency": 1}, "id:"),
    ({"op": "set", "id": "bad id!", "toxic": "latency", "direction": "down", "latency": 1}, "id:"),
    ({"op": "set", "id": "a", "direction": "down"}, "toxic:"),
    ({"op": "set", "id": "a", "toxic": "gremlins"}, "toxic:"),
    ({"op": "set", "id": "a", "toxic": "latency", "latency": 1}, "direction:"),
    ({"op": "set", "id": "a", "toxic": "latency", "direction": "sideways", "latency": 1}, "direction:"),
    ({"op": "set", "id": "a", "toxic": "latency", "direction": "down"}, "latency:"),
    ({"op": "set", "id": "a", "toxic": "latency", "direction": "down", "latency": "400"}, "latency:"),
    ({"op": "set", "id": "a", "toxic": "latency", "direction": "down", "latency": -1}, "latency:"),
    ({"op": "set", "id": "a", "toxic": "latency", "direction": "down", "latency": True}, "latency:"),
    ({"op": "set", "id": "a", "toxic": "latency", "direction": "down", "latency": 1, "jitter": 1e9}, "jitter:"),
    ({"op": "set", "id": "a", "toxic": "latency", "direction": "down", "latency": 1, "colour": 1}, "colour:"),
    ({"op": "set", "id": "a", "toxic": "bandwidth", "direction": "up", "rate": 0}, "rate:"),
    ({"op": "set", "id": "a", "toxic": "slice", "direction": "up", "size": 2.5}, "size:"),
    ({"op": "set", "id": "a", "toxic": "reset", "direction": "up"}, "direction:"),
    ({"op": "set", "id": "a", "toxic": "loss", "p": 1.5}, "p:"),
    ({"op": "set", "id": "a", "toxic": "loss", "direction": "up", "p": 0.1}, "direction:"),
    ({"op": "set", "id": "a", "toxic": "delay", "jitter": 3}, "delay:"),
    ({"op": "clear", "id": "nothing-here"}, "id:"),
    ({"op": "clear"}, "id:"),
    ({"op": "list", "verbose": True}, "verbose:"),
])
def test_control_rejects_bad_requests_naming_the_key(proxy, req, key):
    rep = proxy.ctl(req)
    assert rep["ok"] is False
    assert rep["error"].startswith(key), rep
    assert proxy.ctl({"op": "list"})["toxics"] == []  # nothing was set


def test_control_set_list_clear(proxy):
    proxy.set(id="a", toxic="latency", direction="up", latency=5)
    proxy.set(id="b", toxic="loss", p=0.25)
    rep = proxy.ctl({"op": "list"})
    assert rep["ok"] and {t["id"] for t in rep["toxics"]} == {"a", "b"}
    assert {"id": "b", "toxic": "loss", "direction": "udp", "p": 0.25} in rep["toxics"]
    assert proxy.ctl({"op": "clear", "id": "a"}) == {"ok": True, "cleared": ["a"]}
    assert proxy.ctl({"op": "clear_all"}) == {"ok": True, "cleared": ["b"]}
    assert proxy.ctl({"op": "list"})["toxics"] == []
    kinds = [(e["id"], e["on"]) for e in proxy.events if e["kind"] == "toxic"]
    assert kinds == [("a", True), ("b", True), ("a", False), ("b", False)]
    assert all(e["source"] == "proxy" and isinstance(e["ts"], float) for e in proxy.events)


def test_ctl_client_exit_codes(proxy, tmp_path):
    def ctl(control, req):
        return subprocess.run([sys.executable, str(PROXY), "ctl", "--control", control, req],
                              capture_output=True, text=True, timeout=30)

    ok = ctl(proxy.control, '{"op":"set","id":"x","toxic":"blackhole","direction":"down"}')
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    bad = ctl(proxy.control, '{"op":"set","id":"x","toxic":"blackhole","direction":"down","size":3}')
    assert bad.returncode == 1 and "size" in json.loads(bad.stdout)["error"]
    gone = ctl(str(tmp_path / "nobody.sock"), '{"op":"list"}')
    assert gone.returncode == 2 and "cannot reach" in gone.stderr


def test_listen_probe_netlink_and_proc_agree():
    from helpers import load_program

    mod = load_program("proxy_under_test", PROXY)
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        port = lst.getsockname()[1]
        assert not mod.upstream_listening(port) and not mod.upstream_listening(port, diag=False)
        lst.listen()
        assert mod.upstream_listening(port) and mod.upstream_listening(port, diag=False)
