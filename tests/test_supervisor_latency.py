"""The supervisor's response times: the percentile and sampling helper, the
per-second `latency` event and the slow-responses warning, and the time a
timeout actually waited.

The end-to-end tests run the real supervisor against a fake worker on
loopback: a small TCP server in this file that answers each request line the
way the real worker does (`n,n*n`), but can hold an answer back for a while
or stop answering altogether. No Docker, no C worker.
"""
from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
from itertools import pairwise

import pytest

from harness import start_supervisor
from helpers import SUPERVISOR, load_program

sup = load_program("supervisor", SUPERVISOR)


# ------------------------------------------------------------------ percentile and sampling


def test_percentile_by_nearest_rank_on_hand_computed_samples():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert sup.percentile(values, 50) == 50.0  # rank ceil(50) = 50
    assert sup.percentile(values, 99) == 99.0  # rank ceil(99) = 99
    assert sup.percentile(values, 100) == 100.0
    assert sup.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # rank ceil(2) = 2
    assert sup.percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0  # rank ceil(3.96) = 4
    assert sup.percentile([7.0], 50) == sup.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        sup.percentile([], 50)


def test_summary_counts_batches_and_reports_ms_to_one_decimal():
    lat = sup.Latencies()
    lat.add(0.001, 98)  # 98 responses of one read, each 1 ms
    lat.add(0.2)
    lat.add(0.50004)
    # Sorted: 98 x 1 ms, 200 ms, 500.04 ms. p50 = the 50th = 1 ms; p99 = the 99th = 200 ms.
    assert lat.summary() == {"n": 100, "p50_ms": 1.0, "p99_ms": 200.0, "max_ms": 500.0}
    lat.reset()
    assert lat.n == 0 and lat.samples == [] and lat.max == 0.0


def test_the_cap_keeps_an_even_spread_of_single_adds():
    lat = sup.Latencies(cap=10)
    for i in range(100):
        lat.add(float(i))
    assert lat.n == 100 and lat.max == 99.0
    assert 5 < len(lat.samples) <= 10
    # Every k-th response from the first: evenly spread over the whole period.
    assert lat.samples == [float(i) for i in range(0, 100, lat.stride)]
    assert lat.stride == 16


def test_the_cap_keeps_an_even_spread_of_batches():
    lat = sup.Latencies(cap=8)
    lat.add(1.0, 30)
    lat.add(2.0, 30)
    # 60 responses, at most 8 samples: every 8th (0, 8, ..., 56), half of them
    # from each batch, as in the responses themselves.
    assert lat.stride == 8
    assert lat.samples == [1.0] * 4 + [2.0] * 4
    s = lat.summary()
    assert (s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"]) == (60, 1000.0, 2000.0, 2000.0)


def test_a_huge_batch_stays_within_the_cap_and_a_rare_tail_still_shows():
    lat = sup.Latencies()
    lat.add(0.001, 1_000_000)
    assert lat.n == 1_000_000 and len(lat.samples) <= sup.Latencies.CAP
    lat.add(0.4, 50_000)  # the slowest 4.8 %: p99 must land in it
    s = lat.summary()
    assert len(lat.samples) <= sup.Latencies.CAP
    assert s["p50_ms"] == 1.0 and s["p99_ms"] == 400.0 and s["max_ms"] == 400.0


def test_report_latency_emits_the_event_and_warns_once_past_a_quarter_of_the_timeout(tmp_path, caplog):
    out = sup.Outputs(tmp_path, "digest", fresh=True)
    stream = io.StringIO()
    s = sup.Supervisor(sup.Config(("x", 1), tmp_path / "in", tmp_path, timeout_s=2.0), [], out,
                       sup.Events("supervisor", None, stream=stream))
    with caplog.at_level(logging.WARNING, logger="supervisor"):
        s.latencies.add(0.010, 99)
        s.report_latency(10.0, inflight=3)  # p99 10 ms: no warning
        s.latencies.add(0.010, 90)
        s.latencies.add(0.600, 10)
        s.report_latency(11.0, inflight=7)  # p99 600 ms > 500 ms
        s.report_latency(12.0, inflight=0)  # no responses: no event
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [{k: e[k] for k in ("kind", "n", "p50_ms", "p99_ms", "max_ms", "inflight")} for e in events] == [
        {"kind": "latency", "n": 99, "p50_ms": 10.0, "p99_ms": 10.0, "max_ms": 10.0, "inflight": 3},
        {"kind": "latency", "n": 100, "p50_ms": 10.0, "p99_ms": 600.0, "max_ms": 600.0, "inflight": 7},
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "slow responses: p99 600.0 ms, p50 10.0 ms over 100 responses (timeout 2000 ms)"]
    assert s.latency_since == 12.0
    out.close()


# ------------------------------------------------------------------ end to end, against a fake worker


class FakeWorker:
    """Answers each request line with `n,n*n`, one line after another, like
    the real worker. behave(connection number, value) says what to do before
    answering: a delay in seconds, or None to stop answering on that
    connection (a pause, as far as the supervisor can tell)."""

    def __init__(self, behave):
        self.behave = behave
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so the accept loop sees `stop`
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.stop = threading.Event()
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, len(self.conns) - 1), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn: socket.socket, k: int):
        try:
            with conn.makefile("rb") as f:
                for line in f:
                    n = int(line)
                    delay = self.behave(k, n)
                    if delay is None:
                        while conn.recv(65536):  # read on, answer nothing, until the supervisor drops us
                            pass
                        return
                    if delay and self.stop.wait(delay):
                        return
                    conn.sendall(b"%d,%d\n" % (n, n * n))
        except OSError:
            return
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        for t in self.threads[:1]:
            t.join(5)
        self.listener.close()
        for c in list(self.conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(5)


def run_job(procs, tmp_path, worker: FakeWorker, items: int, *extra: str) -> tuple[list[dict], str]:
    inp = tmp_path / "input.dat"
    inp.write_text("".join(f"{i}\n" for i in range(1, items + 1)))
    p, ev = start_supervisor(procs, tmp_path, worker.port, inp, *extra)
    assert p.wait(60) == 0, (tmp_path / "supervisor.log").read_text()[-3000:]
    ev.close()
    return ev.events, (tmp_path / "supervisor.log").read_text()


SLOW_RE = re.compile(r"slow responses: p99 ([\d.]+) ms, p50 ([\d.]+) ms over (\d+) responses \(timeout (\d+) ms\)")


def test_latency_events_show_a_slow_answer_and_it_is_logged(procs, tmp_path):
    delay, items, slow_item = 0.8, 1500, 700
    worker = procs.add(FakeWorker(lambda k, n: delay if n == slow_item else 0.0))
    # 300 items/s: a 5 s job, the slow answer in its third second.
    events, log_text = run_job(procs, tmp_path, worker, items, "--rate", "300", "--timeout-ms", "2000")
    kinds = [e["kind"] for e in events]
    lat = [e for e in events if e["kind"] == "latency"]
    assert "timeout" not in kinds and "crash" not in kinds, kinds
    assert len(lat) >= 4, lat
    for e in lat:
        assert isinstance(e["n"], int) and e["n"] > 0 and isinstance(e["inflight"], int) and e["inflight"] >= 0
        for f in ("p50_ms", "p99_ms", "max_ms"):
            assert isinstance(e[f], float) and e[f] == round(e[f], 1), e
        assert e["p50_ms"] <= e["p99_ms"] <= e["max_ms"], e
    # Every response counted once, in exactly one second.
    assert sum(e["n"] for e in lat) == items
    # Once a second: only the last (partial) one may come sooner.
    gaps = [b["ts"] - a["ts"] for a, b in pairwise(lat)]
    assert all(g >= 0.9 for g in gaps[:-1]), gaps
    # The slow answer held back every item sent behind it: its second's p99 shows the delay...
    # (Its burst of answers may straddle the turn of a second: then two seconds show it.)
    slow = [e for e in lat if e["p99_ms"] >= delay * 1000 * 0.9]
    assert 1 <= len(slow) <= 2 and max(e["max_ms"] for e in slow) >= delay * 1000, lat
    # ... against quick seconds before it: the timeline shows the latency climb.
    before = lat[:lat.index(slow[0])]
    assert before and all(e["p99_ms"] < 200 for e in before), before
    # The final (partial) second comes before `done`.
    assert kinds.index("done") > max(i for i, k in enumerate(kinds) if k == "latency")
    # Logged once, for that second, with the event's figures.
    warned = SLOW_RE.findall(log_text)
    assert warned == [(f"{e['p99_ms']:.1f}", f"{e['p50_ms']:.1f}", str(e["n"]), "2000") for e in lat
                      if e["p99_ms"] > 500], log_text
    assert len(warned) >= 1


def test_a_timeout_says_how_long_it_waited_and_resent_items_count_from_their_resend(procs, tmp_path):
    timeout_ms, items, hang_at = 500, 800, 300
    # The first connection stops answering at item 300; the next answers everything.
    worker = procs.add(FakeWorker(lambda k, n: None if k == 0 and n == hang_at else 0.0))
    events, log_text = run_job(procs, tmp_path, worker, items, "--rate", "400", "--timeout-ms", str(timeout_ms))
    timeouts = [e for e in events if e["kind"] == "timeout"]
    assert len(timeouts) == 1, [e["kind"] for e in events]
    waited = timeouts[0]["waited_ms"]
    assert isinstance(waited, int) and timeout_ms <= waited < timeout_ms + 1000, timeouts
    assert re.search(rf"worker unreachable: no response in {timeout_ms} ms with \d+ items in flight "
                     rf"\(waited {waited} ms\)", log_text), log_text
    i_timeout = events.index(timeouts[0])
    lat = [e for e in events if e["kind"] == "latency"]
    before = [e for e in lat if events.index(e) < i_timeout]
    after = [e for e in lat if events.index(e) > i_timeout]
    assert before and after, [e["kind"] for e in events]
    # Items in flight at the timeout were answered only after the reconnect,
    # and once: each response counted once...
    assert sum(e["n"] for e in lat) == items
    # ... from its resend: none of them took as long as the timeout (plus backoff) they sat out.
    assert all(e["max_ms"] < timeout_ms for e in after), after
