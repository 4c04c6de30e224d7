"""Pure logic of the supervisor, monitor and data tools, and the monitor's exit
as a process (with the real worker): no engine."""
from __future__ import annotations

import logging
import math
import sys

import pytest

from helpers import MONITOR, ROOT, SUPERVISOR, free_udp_port, load_program

sup = load_program("supervisor", SUPERVISOR)
mon = load_program("monitor", MONITOR)
gen = load_program("generate_data", ROOT / "images" / "supervisor" / "generate_data.py")
proc = load_program("process_data", ROOT / "images" / "supervisor" / "process_data.py")


# ------------------------------------------------------------------ phi accrual


@pytest.mark.parametrize(
    "elapsed, mean, std, want",
    [
        (200, 200, 100, 0.30103),  # at the mean: 1 - F = 1/2
        (300, 200, 100, 0.79955),  # one sigma late: 1 - F = 0.158655
        (500, 200, 100, 2.86966),  # three sigma: 1 - F = 0.0013499
        (100, 200, 100, 0.07447),  # early: 1 - F = 0.841345
        (200 + 5.612 * 100, 200, 100, 8.0),  # the default threshold, ~760 ms at 200 ms beats
    ],
)
def test_phi_against_hand_computed_values(elapsed, mean, std, want):
    assert mon.phi_of(elapsed, mean, std) == pytest.approx(want, abs=2e-3)


def test_phi_is_capped_and_monotonic():
    values = [mon.phi_of(t, 200, 100) for t in range(0, 20000, 250)]
    assert values == sorted(values)
    assert values[-1] == mon.PHI_CAP and math.isfinite(values[-1])


def test_phi_detector_floors_sigma_for_a_regular_sender():
    d = mon.PhiAccrual()
    for i in range(20):
        d.heartbeat(i * 200.0)
    assert d.phi(19 * 200.0 + 200) == pytest.approx(0.30103, abs=1e-4)  # sigma 0 floored to 100
    assert d.phi(19 * 200.0 + 1000) > 8
    assert mon.PhiAccrual().phi(1e6) == 0.0  # no history, no suspicion


# ------------------------------------------------------------------ the classifier


WALL0_MS = 1_700_000_000_000.0  # the wall clock at now = 0; it advances with now


def obs(now, lock="held", inc="a", net_age=100.0, file_age=100.0, stopped=False, beat_inc=None, net_beat=None):
    """An observation at monotonic `now`: the lock held by `inc`, the file's
    beat `file_age` ms old (None: no file), written by `beat_inc` (default inc)."""
    wall = WALL0_MS + now * 1000
    beat = None if file_age is None else mon.Beat(beat_inc or inc or "a", 1, 1, 0, int(wall - file_age), stopped)
    return mon.Observation(now, wall, mon.LockState(lock, 1, inc), net_age, beat, net_beat, file_age_ms=file_age)


def test_classification_table_of_the_readme():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)  # silent after 1800 ms
    assert c.classify(obs(0.0, lock="absent")) == ("UNKNOWN", "ALIVE")
    assert c.classify(obs(1.0)) == ("HEALTHY", "ALIVE")
    assert c.classify(obs(20.0, net_age=1900, file_age=1900)) == ("PAUSED", "DEAD")
    assert c.classify(obs(20.5, net_age=10, file_age=10)) == ("HEALTHY", "ALIVE")
    assert c.classify(obs(22.4, net_age=1900, file_age=150)) == ("PARTITIONED", "DEAD")
    assert c.classify(obs(22.6, lock="free", net_age=1900, file_age=1900)) == ("CRASHED", "DEAD")
    assert c.classify(obs(22.8, lock="absent", net_age=100)) == ("CRASHED", "ALIVE")
    # A new incarnation: RESTARTED for a while, then HEALTHY.
    assert c.classify(obs(23.0, inc="b", net_age=3000)) == ("RESTARTED", "DEAD")
    assert c.classify(obs(23.5, inc="b", net_age=50)) == ("RESTARTED", "ALIVE")
    assert c.classify(obs(24.5, inc="b", net_age=50)) == ("HEALTHY", "ALIVE")
    # A clean exit leaves a "stopped" beat of the same incarnation.
    assert c.classify(obs(30.0, lock="absent", inc="b", stopped=True)) == ("STOPPED", "ALIVE")


def test_silence_just_under_the_threshold_is_still_healthy():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    c.classify(obs(0.0))
    assert c.classify(obs(10.0, net_age=1799, file_age=1799))[0] == "HEALTHY"
    assert c.classify(obs(10.2, net_age=1801, file_age=1801))[0] == "PAUSED"


def test_beat_and_lock_parsers():
    assert mon.parse_beat(b"abc 12 3 40 1700000000000\n") == mon.Beat("abc", 12, 3, 40, 1700000000000, False)
    assert mon.parse_beat(b"abc 12 3 40 1700000000000 stopped\n").stopped
    for bad in (b"", b"abc 12 3", b"abc x 3 4 5", b"\xff\xfe 1 2 3 4"):
        assert mon.parse_beat(bad) is None
    assert mon.parse_lock_content(b"123 deadbeef\n") == (123, "deadbeef")
    assert mon.parse_lock_content(b"\x00garbage") == (None, None)
    assert mon.parse_lock_content(b"") == (None, None)


def test_probe_lock_states(tmp_path):
    import fcntl
    import os

    p = tmp_path / "l"
    assert mon.probe_lock(str(p)).state == "absent"
    p.write_text("42 cafe\n")
    assert mon.probe_lock(str(p)) == mon.LockState("free", 42, "cafe")
    fd = os.open(p, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert mon.probe_lock(str(p)).state == "held"
    finally:
        os.close(fd)


# ------------------------------------------------------------------ responses


@pytest.mark.parametrize(
    "line, want",
    [
        (b"5,25", ("result", (5, 25))),
        (b"0,0", ("result", (0, 0))),
        (b"3037000499,9223372030926249001", ("result", (3037000499, 9223372030926249001))),
        (b"ERROR: Corrupted data -10", ("corrupted", -10)),
        (b"ERROR: Malformed input: abc", ("rejected", "Malformed input: abc")),
        (b"ERROR: Out of range: 99999999999", ("rejected", "Out of range: 99999999999")),
    ],
)
def test_parse_response(line, want):
    assert sup.parse_response(line) == want


@pytest.mark.parametrize(
    "line",
    [b"", b"5", b"5,", b",25", b"5,24", b"a,b", b"5,25,625", b"ERROR: Corrupted data x", b"ERROR: who knows",
     b"-5,25", b"5 ,25"],
)
def test_parse_response_rejects_garbage(line):
    with pytest.raises(sup.ProtocolError):
        sup.parse_response(line)


def test_answers_catches_a_response_for_another_item():
    assert sup.answers(b"7", "result", (7, 49))
    assert sup.answers(b" +7\r", "result", (7, 49))
    assert not sup.answers(b"8", "result", (7, 49))
    assert sup.answers(b"-10", "corrupted", -10)
    assert not sup.answers(b"abc", "result", (7, 49))
    assert sup.answers(b"abc", "rejected", "Malformed input: abc")


def test_absorb_rejects_a_duplicate_response(tmp_path):
    """A stale duplicate ahead of the real answer shifts everything: it must be caught."""
    out = sup.Outputs(tmp_path, "digest", fresh=True)
    s = sup.Supervisor(sup.Config(("x", 1), tmp_path / "in", tmp_path), [b"1", b"2", b"3"], out,
                       sup.Events("supervisor", None, stream=open("/dev/null", "w")))
    s.absorb([b"1,1"])
    with pytest.raises(sup.ProtocolError):
        s.absorb([b"1,1", b"2,4"])  # the answer to item 1 again
    assert s.p.next == 1
    s.absorb([b"2,4", b"3,9"])
    out.checkpoint()
    assert (tmp_path / "results.csv").read_text() == "index,n,square\n1,1,1\n2,2,4\n3,3,9\n"


def test_load_items(tmp_path):
    f = tmp_path / "in"
    f.write_bytes(b"1\r\n2\n\n3")
    assert sup.load_items(f) == [b"1\r", b"2", b"", b"3"]
    f.write_bytes(b"")
    assert sup.load_items(f) == []
    f.write_bytes(b"\n")
    assert sup.load_items(f) == [b""]


def test_checkpoint_of_another_input_is_refused(tmp_path):
    sup.Outputs(tmp_path, "one", fresh=False).close()
    with pytest.raises(sup.CheckpointMismatch, match="another input"):
        sup.Outputs(tmp_path, "two", fresh=False)


# ------------------------------------------------------------------ the exercise's data tools


def test_generate_is_reproducible_and_has_the_faults():
    a = gen.generate(1000, 7)
    assert a == gen.generate(1000, 7) and a != gen.generate(1000, 8)
    assert len(a) == 1000
    for special in (-10, 0, 999, -25):
        assert a.count(special) == 1
    assert all(1 <= v <= 100 for v in a if v not in (-10, 0, 999, -25))
    assert gen.generate(2, 1) in ([-10, 0], [0, -10])
    with pytest.raises(ValueError):
        gen.generate(-1, 1)


def test_process_data_warns_skips_and_stops_on_zero(caplog):
    log = logging.getLogger("t")
    with caplog.at_level(logging.INFO, logger="t"):
        code, results = proc.process(["3\n", "-10\n", "abc\n", "4\n", "0\n", "5\n"], log)
    assert code == proc.EXIT_SENSOR_DEAD
    assert results == [(3, 9), (4, 16)]
    levels = [r.levelname for r in caplog.records]
    assert levels == ["INFO", "WARNING", "WARNING", "INFO", "CRITICAL"]


def test_process_data_cli_log_format(tmp_path):
    import subprocess

    f = tmp_path / "input.dat"
    f.write_text("2\n-25\n")
    p = subprocess.run([sys.executable, str(ROOT / "images" / "supervisor" / "process_data.py"), str(f)],
                       capture_output=True, text=True)
    assert p.returncode == 0
    lines = p.stderr.splitlines()
    assert " - INFO - line 1: 2 -> 4" in lines[0]
    assert " - WARNING - line 2: corrupted data -25; skipping" in lines[1]
    assert lines[0][:4].isdigit() and lines[0][4] == "-"  # starts with a timestamp


def test_lookup_gives_up_waiting_and_never_blocks_a_retry(monkeypatch):
    import socket as s
    import threading
    import time

    release = threading.Event()
    calls = []
    real = s.getaddrinfo

    def slow(host, port, **kw):
        calls.append(host)
        if len(calls) == 1:
            release.wait(5)  # the first lookup hangs, as Docker's DNS does for a stopped container
        return real("127.0.0.1", port, **kw)

    monkeypatch.setattr(sup.socket, "getaddrinfo", slow)
    lk = sup.Lookup()
    t0 = time.monotonic()
    with pytest.raises(OSError, match="takes too long"):
        lk.addresses("worker", 7000)
    assert time.monotonic() - t0 < 1.5
    got = lk.addresses("worker", 7000)  # a fresh lookup, not the hung one
    assert got and got[0][4][0] == "127.0.0.1" and len(calls) == 2
    release.set()


def test_a_thawing_worker_is_not_called_partitioned():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    c.classify(obs(0.0))
    assert c.classify(obs(5.0, net_age=1900, file_age=1900))[0] == "PAUSED"
    # Thawed: the volume beat is fresh, the network beat not yet in.
    assert c.classify(obs(5.2, net_age=2100, file_age=5))[0] == "PAUSED"
    assert c.classify(obs(5.4, net_age=20, file_age=20))[0] == "HEALTHY"
    # On a loaded machine the network beat can lag the volume's by several ticks.
    c.classify(obs(6.0, net_age=1900, file_age=1900))
    for t in (6.2, 6.4, 6.6, 7.0):
        assert c.classify(obs(t, net_age=2100 + (t - 6.2) * 1000, file_age=5))[0] == "PAUSED"
    assert c.classify(obs(7.2, net_age=20, file_age=20))[0] == "HEALTHY"
    # A real partition after a pause is still called, once the volume has
    # been alive for a whole silence window (1.8 s) with the network silent.
    c.classify(obs(9.0, net_age=1900, file_age=1900))
    assert c.classify(obs(9.2, net_age=2100, file_age=5))[0] == "PAUSED"
    assert c.classify(obs(10.8, net_age=3700, file_age=10))[0] == "PAUSED"
    assert c.classify(obs(11.0, net_age=3900, file_age=10))[0] == "PARTITIONED"


def test_a_freezing_worker_whose_network_beat_stopped_first_is_not_called_partitioned():
    # Seen with 30 labs at once: at the freeze, the last network beat was a
    # beat older than the last volume beat, so the network crossed the
    # threshold while the volume beat was still inside the window.
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    for t in (0.0, 1.0, 2.0, 3.0):
        c.classify(obs(t, net_age=50, file_age=50))
    assert c.classify(obs(4.8, net_age=1944, file_age=1691))[0] == "PAUSED"
    assert c.classify(obs(5.0, net_age=2146, file_age=1892))[0] == "PAUSED"


def test_a_partition_of_a_healthy_worker_is_called_as_soon_as_the_network_is_silent():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    for t in (0.0, 1.0, 2.0, 3.0):
        assert c.classify(obs(t, net_age=50, file_age=50))[0] == "HEALTHY"
    assert c.classify(obs(4.8, net_age=1790, file_age=50))[0] == "HEALTHY"
    assert c.classify(obs(5.0, net_age=1990, file_age=50))[0] == "PARTITIONED"
    # A slow beat (one a second): the volume beat can be a second old, and the
    # partition is still called within a tick of the threshold.
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    for t in (0.0, 1.0, 2.0, 3.0):
        c.classify(obs(t, net_age=50, file_age=500))
    assert c.classify(obs(4.8, net_age=1810, file_age=990))[0] == "PAUSED"
    assert c.classify(obs(5.0, net_age=2010, file_age=190))[0] == "PARTITIONED"


# ------------------------------------------------------------------ bad lines at the speed of good ones


def supervisor_for(tmp_path, items):
    out = sup.Outputs(tmp_path, "digest", fresh=True)
    return sup.Supervisor(sup.Config(("x", 1), tmp_path / "in", tmp_path), items, out,
                          sup.Events("supervisor", None, stream=open("/dev/null", "w"))), out


def test_absorb_records_a_mixed_batch_in_order_in_each_file(tmp_path):
    items = [b"1", b"-5", b"abc", b"2", b" 3", b"-7", b"4"]
    responses = [b"1,1", b"ERROR: Corrupted data -5", b"ERROR: Malformed input: abc", b"2,4", b"3,9",
                 b"ERROR: Corrupted data -7", b"4,16"]
    s, out = supervisor_for(tmp_path, items)
    s.absorb(responses[:3])
    s.absorb(responses[3:])
    out.checkpoint()
    assert (tmp_path / "results.csv").read_text() == "index,n,square\n1,1,1\n4,2,4\n5,3,9\n7,4,16\n"
    assert (tmp_path / "corrupted.csv").read_text() == "index,value\n2,-5\n6,-7\n"
    assert (tmp_path / "rejected.csv").read_text() == "index,reason\n3,Malformed input: abc\n"
    assert s.p.next == 7 and s.p.counts == {"processed": 4, "corrupted": 2, "rejected": 1, "dead_lettered": 0,
                                            "corrupt_results": 0}


def test_absorb_keeps_what_was_validated_before_a_misaligned_response(tmp_path):
    items = [b"1", b"-5", b"2", b"3", b"4"]
    s, out = supervisor_for(tmp_path, items)
    with pytest.raises(sup.ProtocolError):
        # Item 4's answer is missing: "4,16" answers item 4's slot.
        s.absorb([b"1,1", b"ERROR: Corrupted data -5", b"2,4", b"4,16"])
    assert s.p.next == 3 and s.p.counts["processed"] == 2 and s.p.counts["corrupted"] == 1
    s.absorb([b"3,9", b"4,16"])
    out.checkpoint()
    assert (tmp_path / "results.csv").read_text() == "index,n,square\n1,1,1\n3,2,4\n4,3,9\n5,4,16\n"
    assert (tmp_path / "corrupted.csv").read_text() == "index,value\n2,-5\n"


def test_bad_lines_are_logged_first_one_by_one_then_summed_up(tmp_path, caplog, monkeypatch):
    n = 1000
    items = [b"-%d" % (i + 1) if i % 3 == 0 else b"%d" % i for i in range(n)]
    responses = [b"ERROR: Corrupted data %s" % it if it.startswith(b"-") else b"%s,%d" % (it, int(it) ** 2)
                 for it in items]
    s, out = supervisor_for(tmp_path, items)
    clock = [100.0]
    monkeypatch.setattr(sup.time, "monotonic", lambda: clock[0])
    s.corrupted_log.last_summary = clock[0]
    with caplog.at_level(logging.WARNING, logger="supervisor"):
        for k in range(0, n, 100):
            s.absorb(responses[k:k + 100])
            clock[0] += 0.25  # ten batches over 2.5 s
        s.corrupted_log.flush(clock[0], force=True)
    msgs = [r.getMessage() for r in caplog.records]
    one_by_one = [m for m in msgs if m.startswith("item ")]
    assert one_by_one[:2] == ["item 1: corrupted data -1 (a hardware fault); reported, skipped",
                              "item 4: corrupted data -4 (a hardware fault); reported, skipped"]
    assert len(one_by_one) == sup.BadLineLog.FIRST_N
    summaries = [m for m in msgs if " more corrupted readings " in m]
    assert 2 <= len(summaries) <= 4, msgs  # about one a second, plus the last
    held = sum(int(m.split()[0]) for m in summaries)
    corrupted = sum(1 for i in items if i.startswith(b"-"))
    assert held + sup.BadLineLog.FIRST_N == corrupted
    assert summaries[-1].endswith("the last: item 1000: corrupted data -1000 (a hardware fault); reported, skipped")
    out.checkpoint()
    assert len((tmp_path / "corrupted.csv").read_text().splitlines()) == corrupted + 1


# ------------------------------------------------------------------ STOPPED whenever the worker stops
# (compose waits for the monitor, which exits only after STOPPED: a missed
# stop hung `docker compose up`)


def healthy_then_crashed(c):
    """Incarnation "a" seen healthy, then it crashes: lock gone, its last beat not "stopped"."""
    assert c.classify(obs(0.0))[0] == "HEALTHY"
    assert c.classify(obs(1.0))[0] == "HEALTHY"
    assert c.classify(obs(1.2, lock="absent", inc=None, beat_inc="a", file_age=150))[0] == "CRASHED"
    assert c.classify(obs(1.4, lock="absent", inc=None, beat_inc="a", file_age=350))[0] == "CRASHED"


def test_crash_then_restart_then_clean_stop_is_stopped():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    healthy_then_crashed(c)
    assert c.classify(obs(1.6, inc="b", net_age=50, file_age=20))[0] == "RESTARTED"
    assert c.classify(obs(1.8, inc="b", net_age=50, file_age=20))[0] == "RESTARTED"
    # The job ends: b's last beat says "stopped", its lock is gone.
    assert c.classify(obs(2.0, lock="absent", inc=None, beat_inc="b", file_age=30, stopped=True))[0] == "STOPPED"
    assert c.classify(obs(2.2, lock="absent", inc=None, beat_inc="b", file_age=230, stopped=True))[0] == "STOPPED"


def test_crash_then_a_restart_never_seen_that_stops_cleanly_is_stopped():
    """The restarted worker did the rest of the job and left between two ticks."""
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    healthy_then_crashed(c)
    # b started after the last tick that saw the lock held (t = 1.0) and stopped.
    v = c.classify(obs(1.6, lock="absent", inc=None, beat_inc="b", file_age=40, stopped=True))
    assert v[0] == "STOPPED"
    # The lock file left by a dying process's open (free, not absent) says the same.
    c2 = mon.Classifier(interval_ms=200, timeout_ms=2000)
    healthy_then_crashed(c2)
    assert c2.classify(obs(1.6, lock="free", inc="b", file_age=40, stopped=True))[0] == "STOPPED"


def test_a_stopped_beat_from_before_the_last_held_tick_does_not_hide_a_crash():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    assert c.classify(obs(0.0))[0] == "HEALTHY"
    assert c.classify(obs(1.0, lock="absent", inc=None, beat_inc="a", file_age=50, stopped=True))[0] == "STOPPED"
    # b starts and is seen, then dies before its first beat: the file still
    # holds a's "stopped" beat, written before b was seen holding the lock.
    assert c.classify(obs(3.0, inc="b", net_age=50, file_age=2050, beat_inc="a", stopped=True))[0] == "RESTARTED"
    assert c.classify(obs(3.2, lock="absent", inc=None, beat_inc="a", file_age=2250, stopped=True))[0] == "CRASHED"


def test_stopped_while_unknown_is_stopped():
    """The worker ran its whole job between the monitor's first two ticks."""
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    assert c.classify(obs(0.0, lock="absent", inc=None, file_age=None))[0] == "UNKNOWN"
    assert c.classify(obs(0.2, lock="absent", inc=None, beat_inc="z", file_age=60, stopped=True))[0] == "STOPPED"


def test_a_stopped_beat_an_earlier_run_left_on_the_volume_is_not_a_stop():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    old = dict(lock="absent", inc=None, beat_inc="old", stopped=True)
    assert c.classify(obs(0.0, file_age=60_000, **old))[0] == "UNKNOWN"
    assert c.classify(obs(0.2, file_age=60_200, **old))[0] == "UNKNOWN"
    assert c.classify(obs(0.4, inc="new", net_age=50, file_age=10))[0] == "HEALTHY"


def test_a_stopped_beat_over_udp_counts_when_the_file_has_none():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    healthy_then_crashed(c)
    udp = mon.Beat("b", 2, 9, 10, int(WALL0_MS + 1500), True)
    assert c.classify(obs(1.6, lock="absent", inc=None, beat_inc="a", file_age=550, net_beat=udp))[0] == "STOPPED"


def test_monitor_process_exits_after_its_linger_when_the_restarted_worker_stops(tmp_path):
    """The real worker (stdin mode) crashes on 999, a new one does the rest of
    the job within a few ms and exits 0: the monitor goes CRASHED, then
    STOPPED, and exits after --linger-after-stop-s."""
    import json
    import signal
    import subprocess
    import threading
    import time

    from helpers import WORKER, free_udp_port, wait_until

    interval_s, linger_s = 0.1, 0.5
    udp = free_udp_port()
    lock, hb = tmp_path / "cworker.lock", tmp_path / "worker.heartbeat"
    worker_cmd = [str(WORKER), "--lock", str(lock), "--heartbeat-file", str(hb), "--heartbeat-ms", "50",
                  "--heartbeat-udp", f"127.0.0.1:{udp}", "--bug-trigger", "999"]
    started = []
    try:
        monitor = subprocess.Popen(
            [sys.executable, str(MONITOR), "--udp-port", str(udp), "--bind", "127.0.0.1", "--heartbeat-file", str(hb),
             "--lock", str(lock), "--interval-ms", str(int(interval_s * 1000)), "--timeout-ms", "1000",
             "--linger-after-stop-s", str(linger_s)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started.append(monitor)
        events: list[dict] = []
        reader = threading.Thread(target=lambda: events.extend(json.loads(line) for line in monitor.stdout),
                                  daemon=True)
        reader.start()

        def verdicts():
            return [e["verdict"] for e in list(events) if e["kind"] == "verdict"]

        first = subprocess.Popen(worker_cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        started.append(first)
        wait_until(lambda: "HEALTHY" in verdicts(), 10, what="HEALTHY")
        first.stdin.write(b"1\n999\n")
        first.stdin.flush()
        assert first.wait(5) == -signal.SIGSEGV
        wait_until(lambda: verdicts()[-1] == "CRASHED", 5, what="CRASHED")
        # "Docker" restarts it; the rest of the job takes a few ms, far less than a tick.
        second = subprocess.run(worker_cmd, input=b"2\n3\n", capture_output=True, timeout=10)
        assert second.returncode == 0 and second.stdout == b"2,4\n3,9\n"
        stopped_at = time.monotonic()
        rc = monitor.wait(linger_s + 10 * interval_s)  # TimeoutExpired: it never left
        took = time.monotonic() - stopped_at
        reader.join(5)
        assert rc == 0
        assert linger_s - interval_s <= took <= linger_s + 5 * interval_s, f"left {took:.2f} s after the worker stopped"
        seq = verdicts()
        assert seq.index("CRASHED") < len(seq) - 1 and seq[-1] == "STOPPED", seq
        assert events[-1]["kind"] == "stop" and events[-1]["verdict"] == "STOPPED"
    finally:
        for p in reversed(started):
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()


def test_monitor_process_leaves_after_its_crash_linger_when_no_worker_comes_back(tmp_path):
    """A worker that crashed for good (its restarts used up) must not keep the
    monitor, and so `docker compose up`, waiting forever: after
    --linger-after-crash-s of CRASHED with no new worker it exits."""
    import json
    import signal
    import subprocess
    import threading
    import time

    from helpers import WORKER, free_udp_port, wait_until

    interval_s, linger_s = 0.1, 0.5
    udp = free_udp_port()
    lock, hb = tmp_path / "cworker.lock", tmp_path / "worker.heartbeat"
    started = []
    try:
        monitor = subprocess.Popen(
            [sys.executable, str(MONITOR), "--udp-port", str(udp), "--bind", "127.0.0.1", "--heartbeat-file", str(hb),
             "--lock", str(lock), "--interval-ms", str(int(interval_s * 1000)), "--timeout-ms", "1000",
             "--linger-after-stop-s", "5", "--linger-after-crash-s", str(linger_s)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started.append(monitor)
        events: list[dict] = []
        reader = threading.Thread(target=lambda: events.extend(json.loads(line) for line in monitor.stdout),
                                  daemon=True)
        reader.start()
        worker = subprocess.Popen([str(WORKER), "--lock", str(lock), "--heartbeat-file", str(hb), "--heartbeat-ms",
                                   "50", "--heartbeat-udp", f"127.0.0.1:{udp}"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(worker)
        wait_until(lambda: any(e.get("verdict") == "HEALTHY" for e in list(events)), 10, what="HEALTHY")
        worker.kill()
        assert worker.wait(5) == -signal.SIGKILL
        crashed = wait_until(lambda: next((e for e in list(events) if e.get("verdict") == "CRASHED"), None), 5,
                             what="CRASHED")
        seen_at = time.monotonic()
        rc = monitor.wait(linger_s + 20 * interval_s)  # TimeoutExpired: it never left
        took = time.monotonic() - seen_at
        reader.join(5)
        assert rc == 0 and crashed["kind"] in ("tick", "verdict")
        assert took <= linger_s + 5 * interval_s, f"left {took:.2f} s after CRASHED"
        assert events[-1]["kind"] == "stop" and events[-1]["verdict"] == "CRASHED", events[-3:]
    finally:
        for p in reversed(started):
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()


def test_a_late_tick_holds_the_verdict_and_says_so(tmp_path):
    """A monitor that came to its tick more than an interval late was starved
    itself: it does not change its verdict on that tick (at most 2 in a row)."""
    args = mon.build_parser().parse_args(["--udp-port", str(free_udp_port()), "--bind", "127.0.0.1",
                                          "--interval-ms", "200", "--timeout-ms", "1000",
                                          "--lock", str(tmp_path / "w.lock"), "--heartbeat-file", str(tmp_path / "hb")])
    m = mon.Monitor(args)
    emitted: list[tuple[str, dict]] = []
    m.events.emit = lambda kind, **f: emitted.append((kind, f))
    try:
        m.verdict, m.heartbeat_only = "HEALTHY", "ALIVE"
        assert m.judge_late("PAUSED", "DEAD", late_ms=150) == ("PAUSED", "DEAD")  # on time: judged
        m.verdict, m.heartbeat_only = "HEALTHY", "ALIVE"
        # The monitor's verdict of silence is held; the naive heartbeat-only detector's is not.
        assert m.judge_late("PAUSED", "DEAD", late_ms=900) == ("HEALTHY", "DEAD")
        assert m.judge_late("PARTITIONED", "DEAD", late_ms=900) == ("HEALTHY", "DEAD")
        assert m.judge_late("PAUSED", "DEAD", late_ms=900) == ("PAUSED", "DEAD")  # starved for good: judged
        assert [k for k, _ in emitted] == ["late", "late"]
        assert emitted[0][1] == {"late_ms": 900, "held": "HEALTHY", "would_be": "PAUSED"}
        # What a late tick sees as well as any (a free lock, a new incarnation) is not held.
        m.verdict, m.heartbeat_only, m.held = "HEALTHY", "ALIVE", 0
        assert m.judge_late("CRASHED", "DEAD", late_ms=900) == ("CRASHED", "DEAD")
        assert m.judge_late("RESTARTED", "ALIVE", late_ms=900) == ("RESTARTED", "ALIVE")
        # No change, nothing held; and the first verdict of all is never held.
        assert m.judge_late("HEALTHY", "ALIVE", late_ms=900) == ("HEALTHY", "ALIVE")
        m.verdict = ""
        assert m.judge_late("PAUSED", "DEAD", late_ms=900) == ("PAUSED", "DEAD")
        assert len(emitted) == 2  # the CRASHED beside a DEAD is no longer held
    finally:
        m.sock.close()


def test_the_monitor_reports_how_late_each_tick_came(tmp_path):
    args = mon.build_parser().parse_args(["--udp-port", str(free_udp_port()), "--bind", "127.0.0.1",
                                          "--lock", str(tmp_path / "w.lock"), "--heartbeat-file", str(tmp_path / "hb")])
    m = mon.Monitor(args)
    emitted: list[tuple[str, dict]] = []
    m.events.emit = lambda kind, **f: emitted.append((kind, f))
    try:
        m.tick(1234.4)
    finally:
        m.sock.close()
    assert [f["late_ms"] for k, f in emitted if k == "tick"] == [1234]
