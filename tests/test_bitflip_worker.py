"""The worker's bitflip fault (issue 15), driven as a real binary: SIGUSR1 on,
SIGUSR2 off, p from --bitflip-control, lines well-formed, the count logged."""
from __future__ import annotations

import re
import signal
import socket
import time

from test_worker import ask, recv_lines, start_listen, start_stdin_worker

from helpers import connect_when_ready, wait_until

FLIPPED = re.compile(rb"bitflip: (\d+) result\(s\) flipped while on \(p ([0-9.]+)\)")
LINE = re.compile(rb"^(\d+),(\d+)$")


def wrong(lines: list[bytes]) -> list[tuple[int, int]]:
    """(n, square) of each answer whose square is not n*n; every line must be well-formed."""
    out = []
    for line in lines:
        m = LINE.match(line)
        assert m, f"not a well-formed result: {line!r}"
        n, sq = int(m.group(1)), int(m.group(2))
        assert 0 <= sq < 2**63
        if sq != n * n:
            assert bin(sq ^ n * n).count("1") == 1, f"more than one bit differs: {line!r}"
            out.append((n, sq))
    return out


def test_off_by_default_and_usr1_flips_every_result_at_p_1(worker_bin, tmp_path, procs):
    control = tmp_path / "bitflip"
    control.write_text("1")
    p = start_stdin_worker(procs, worker_bin, tmp_path / "w.lock", "--bitflip-control", str(control))
    assert ask(p, b"7") == b"7,49\n"
    p.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    got = [ask(p, str(n).encode()).rstrip(b"\n") for n in range(1, 41)]
    assert len(wrong(got)) == 40  # p 1: every one, in the fast path and in handle_line alike
    assert len(wrong([ask(p, b"0012").rstrip(b"\n")])) == 1
    p.send_signal(signal.SIGUSR2)
    time.sleep(0.2)
    assert [ask(p, str(n).encode()) for n in (3, 4)] == [b"3,9\n", b"4,16\n"]
    p.stdin.close()
    assert p.wait(timeout=10) == 0
    err = p.stderr.read()
    assert FLIPPED.findall(err) == [(b"41", b"1.0000")], err


def test_p_from_the_control_file_and_the_count_at_exit(worker_bin, tmp_path, procs):
    control = tmp_path / "bitflip"
    control.write_text("0.25\n")
    proc, port, _ = start_listen(procs, worker_bin, tmp_path, "--bitflip-control", str(control),
                                 "--bug-trigger", "none")
    s = connect_when_ready(port)
    s.sendall(b"1\n")
    assert recv_lines(s, 1) == [b"1,1"]
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    n = 4000
    s.sendall(b"".join(b"%d\n" % i for i in range(n)))
    got = recv_lines(s, n)
    assert len(got) == n
    flipped = len(wrong(got))
    assert 0.18 * n < flipped < 0.32 * n
    s.shutdown(socket.SHUT_WR)
    s.close()
    assert proc.wait(timeout=10) == 0  # still on at exit: the count is logged then
    assert FLIPPED.findall(proc.stderr.read()) == [(str(flipped).encode(), b"0.2500")]


def test_without_a_control_file_p_is_the_default_and_a_restart_clears_it(worker_bin, tmp_path, procs):
    lock = tmp_path / "w.lock"
    p = start_stdin_worker(procs, worker_bin, lock, "--bitflip-control", str(tmp_path / "absent"),
                           "--bug-trigger", "none")
    assert ask(p, b"2") == b"2,4\n"
    p.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    got = [ask(p, str(n).encode()).rstrip(b"\n") for n in range(2000)]
    assert 40 < len(wrong(got)) < 170  # 0.05 of 2000 is 100
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    lock.unlink(missing_ok=True)
    q = start_stdin_worker(procs, worker_bin, lock)
    assert not wrong([ask(q, str(n).encode()).rstrip(b"\n") for n in range(500)])
    q.send_signal(signal.SIGUSR2)  # off when it never was on: nothing happens, nothing is logged
    assert ask(q, b"5") == b"5,25\n"
    q.stdin.close()
    assert q.wait(timeout=10) == 0
    assert b"bitflip" not in q.stderr.read()


def test_naive_mode_survives_the_switch_signals(worker_bin, tmp_path, procs):
    p = start_stdin_worker(procs, worker_bin, tmp_path / "w.lock", "--mode", "naive")
    wait_until(lambda: (tmp_path / "w.lock").exists(), 5, what="the naive worker's pidfile")
    p.send_signal(signal.SIGUSR2)
    p.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    assert LINE.match(ask(p, b"9").rstrip(b"\n"))
    p.stdin.close()
    assert p.wait(timeout=10) == 0
