"""The C worker, driven as a real binary: contract, lock, signals, heartbeats."""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import BUILD, WORKER, WORKER_DIR, connect_when_ready, free_port, free_udp_port, wait_until

# (input line, expected response line). Results go to stdout, errors to
# stderr in stdin mode; in listen mode both come back on the socket, in order.
CASES = [
    (b"1", b"1,1"),
    (b"42", b"42,1764"),
    (b"0", b"0,0"),
    (b"-0", b"0,0"),
    (b"007", b"7,49"),
    (b"  12  ", b"12,144"),
    (b"\t+5\t", b"5,25"),
    (b"8\r", b"8,64"),
    (b"3037000499", b"3037000499,9223372030926249001"),
    (b"-10", b"ERROR: Corrupted data -10"),
    (b"-25", b"ERROR: Corrupted data -25"),
    (b"3037000500", b"ERROR: Out of range: 3037000500"),
    (b"99999999999999999999999", b"ERROR: Out of range: 99999999999999999999999"),
    (b"", b"ERROR: Malformed input: "),
    (b"abc", b"ERROR: Malformed input: abc"),
    (b"0x10", b"ERROR: Malformed input: 0x10"),
    (b"12abc", b"ERROR: Malformed input: 12abc"),
    (b"1e3", b"ERROR: Malformed input: 1e3"),
    (b"1 2", b"ERROR: Malformed input: 1 2"),
    (b"--5", b"ERROR: Malformed input: --5"),
    (b"+", b"ERROR: Malformed input: +"),
    (b"4\x005", b"ERROR: Malformed input: 4\\x005"),
    (b"\xff\xfe", b"ERROR: Malformed input: \\xff\\xfe"),
    (b"5\r\r", b"ERROR: Malformed input: 5\\r"),
    (b"x" * 200, b"ERROR: Malformed input: " + b"x" * 64 + b"..."),
]


def run_stdin(worker_bin, data: bytes, *args: str, lock: Path, timeout: float = 30):
    binary, env = worker_bin
    return subprocess.run(
        [str(binary), "--lock", str(lock), *args],
        input=data,
        capture_output=True,
        timeout=timeout,
        env=env,
    )


def error_lines(stderr: bytes) -> list[bytes]:
    return [ln for ln in stderr.splitlines() if ln.startswith(b"ERROR:")]


def test_stdin_contract_case_by_case(worker_bin, tmp_path):
    lock = tmp_path / "w.lock"
    for line, want in CASES:
        p = run_stdin(worker_bin, line + b"\n", lock=lock)
        assert p.returncode == 0, (line, p.stderr)
        if want.startswith(b"ERROR:"):
            assert p.stdout == b"", line
            assert error_lines(p.stderr) == [want], line
        else:
            assert p.stdout == want + b"\n", line
            assert error_lines(p.stderr) == [], line
        assert not lock.exists(), "a clean exit removes the lock file"


def test_stdin_mixed_stream_keeps_order_and_counts(worker_bin, tmp_path):
    data = b"".join(line + b"\n" for line, _ in CASES)
    p = run_stdin(worker_bin, data, lock=tmp_path / "w.lock")
    assert p.returncode == 0
    assert p.stdout.splitlines() == [w for _, w in CASES if not w.startswith(b"ERROR:")]
    assert error_lines(p.stderr) == [w for _, w in CASES if w.startswith(b"ERROR:")]
    assert f"after {len(CASES)} lines".encode() in p.stderr


def test_last_line_without_newline_and_crlf(worker_bin, tmp_path):
    p = run_stdin(worker_bin, b"3\r\n4\r\n5", lock=tmp_path / "w.lock")
    assert p.stdout == b"3,9\n4,16\n5,25\n"


def test_empty_input_exits_zero(worker_bin, tmp_path):
    p = run_stdin(worker_bin, b"", lock=tmp_path / "w.lock")
    assert p.returncode == 0 and p.stdout == b""


def test_long_lines_are_read_whole(worker_bin, tmp_path):
    padded = b" " * 5000 + b"6" + b" " * 5000  # valid: blanks around a number
    huge = b"7" * (10 * 1024 * 1024)  # 10 MB: one line, one error, not many numbers
    p = run_stdin(worker_bin, padded + b"\n" + huge + b"\n8\n", lock=tmp_path / "w.lock", timeout=60)
    assert p.returncode == 0
    assert p.stdout == b"6,36\n8,64\n"
    errs = error_lines(p.stderr)
    assert len(errs) == 1
    assert errs[0].startswith(b"ERROR: Malformed input: line of 10485760 bytes: 7777")


def test_bug_trigger_option(worker_bin, tmp_path):
    p = run_stdin(worker_bin, b"999\n5\n", "--bug-trigger", "none", lock=tmp_path / "w.lock")
    assert p.returncode == 0 and p.stdout == b"999,998001\n5,25\n"
    p = run_stdin(worker_bin, b"999\n5\n", "--bug-trigger", "5", lock=tmp_path / "w.lock")
    assert p.returncode == -signal.SIGSEGV
    assert p.stdout == b"999,998001\n", "the answer computed before the crash is delivered"
    assert not (tmp_path / "w.lock").exists()


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--bogus"], b"unknown option '--bogus'"),
        (["--heartbeat-ms", "abc"], b"--heartbeat-ms wants"),
        (["--bug-trigger", "x"], b"--bug-trigger wants"),
        (["--lock"], b"--lock needs a value"),
        (["--listen", "nonsense"], b"--listen wants HOST:PORT"),
    ],
)
def test_bad_arguments_exit_64_with_a_message(tmp_path, args, msg):
    p = subprocess.run([str(WORKER), "--lock", str(tmp_path / "w.lock"), *args], input=b"", capture_output=True,
                       timeout=10)
    assert p.returncode == 64
    assert msg in p.stderr


def readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args, str(WORKER)], capture_output=True, text=True,
                          check=True).stdout


def test_release_build_is_hardened():
    """The binary that meets the input is PIE with full RELRO, stack canaries
    and fortified libc calls (the Makefile's HARDEN flags)."""
    assert shutil.which("readelf"), "readelf (binutils) is missing; scripts/host-deps.sh installs it"
    assert re.search(r"^\s*Type:\s+DYN\b", readelf("-h"), re.M), "not PIE: a fixed-address EXEC"
    segments = readelf("-l")
    assert re.search(r"^\s*INTERP\b", segments, re.M), "a DYN without INTERP is a library, not a PIE"
    assert re.search(r"^\s*GNU_RELRO\b", segments, re.M), "no RELRO segment"
    dynamic = readelf("-d")
    now = re.search(r"\(FLAGS\)\s+.*\bBIND_NOW\b", dynamic) or re.search(r"\(FLAGS_1\)\s+Flags:.*\bNOW\b", dynamic)
    assert now, "RELRO only partial: no BIND_NOW, so the GOT stays writable"
    symbols = readelf("-s")
    assert re.search(r"\b__stack_chk_fail\b", symbols), "no stack protector"
    assert re.search(r"\b__(?!stack_)\w+_chk\b", symbols), "no fortified libc call (_FORTIFY_SOURCE)"


# ---------------------------------------------------------------- listen mode


def start_listen(procs, worker_bin, tmp_path, *extra: str):
    """A worker in listen mode, registered with `procs`: stopped and its pipe closed at teardown."""
    binary, env = worker_bin
    port = free_port()
    lock = tmp_path / "w.lock"
    proc = procs.popen(
        [str(binary), "--listen", f"127.0.0.1:{port}", "--lock", str(lock), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    return proc, port, lock


def recv_lines(sock: socket.socket, n: int, timeout: float = 10) -> list[bytes]:
    sock.settimeout(timeout)
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.splitlines()


def test_listen_one_response_per_line_in_order(worker_bin, tmp_path, procs):
    proc, port, lock = start_listen(procs, worker_bin, tmp_path)
    try:
        s = connect_when_ready(port)
        s.sendall(b"".join(line + b"\n" for line, _ in CASES))
        got = recv_lines(s, len(CASES))
        assert got == [w for _, w in CASES]
        s.shutdown(socket.SHUT_WR)
        assert s.recv(10) == b""  # nothing more: the worker closes after EOF
        s.close()
        assert proc.wait(timeout=10) == 0
        assert not lock.exists()
    finally:
        proc.kill()
        proc.wait()


def test_listen_lone_request_answered_at_once(worker_bin, tmp_path, procs):
    proc, port, _ = start_listen(procs, worker_bin, tmp_path)
    try:
        s = connect_when_ready(port)
        for n in (3, 4, -1):
            t0 = time.monotonic()
            s.sendall(f"{n}\n".encode())
            line = recv_lines(s, 1, timeout=2)
            assert time.monotonic() - t0 < 1.0
            # Parenthesised on purpose: `assert a == b if c else d` asserts
            # nothing at all when c is false.
            want = [f"{n},{n*n}".encode()] if n >= 0 else [f"ERROR: Corrupted data {n}".encode()]
            assert line == want, n
        s.close()
    finally:
        proc.kill()
        proc.wait()


def test_listen_new_connection_replaces_old_and_reset_keeps_serving(worker_bin, tmp_path, procs):
    proc, port, _ = start_listen(procs, worker_bin, tmp_path)
    try:
        a = connect_when_ready(port)
        a.sendall(b"2\n")
        assert recv_lines(a, 1) == [b"2,4"]
        b = socket.create_connection(("127.0.0.1", port))
        b.sendall(b"3\n")
        assert recv_lines(b, 1) == [b"3,9"]
        # A client that vanishes with a reset (a supervisor giving up on a
        # timed-out connection) must not end the worker.
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        b.close()
        c = connect_when_ready(port)
        c.sendall(b"4\n")
        assert recv_lines(c, 1) == [b"4,16"]
        assert proc.poll() is None
        c.close()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_listen_bad_lines_answered_each_but_logged_in_summary(worker_bin, tmp_path, procs):
    """Every bad line gets its response on the socket, in order; the log gets
    the first of a burst and then summaries, whose counts add up exactly."""
    proc, port, lock = start_listen(procs, worker_bin, tmp_path, "--bug-trigger", "none")
    try:
        s = connect_when_ready(port)
        lines = [b"-%d" % i if i % 3 == 0 else b"x%d" % i if i % 7 == 0 else b"%d" % i for i in range(1, 3001)]
        want = [b"ERROR: Corrupted data " + ln if ln.startswith(b"-")
                else b"ERROR: Malformed input: " + ln if ln.startswith(b"x")
                else b"%d,%d" % (int(ln), int(ln) ** 2) for ln in lines]
        s.sendall(b"".join(ln + b"\n" for ln in lines))
        assert recv_lines(s, len(lines)) == want
        s.close()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    err = proc.stderr.read()
    bad = sum(1 for w in want if w.startswith(b"ERROR:"))
    assert not error_lines(err), "no per-line ERROR output on stderr in listen mode"
    firsts = re.findall(rb": warn: bad input: ERROR: ", err)
    summaries = [int(n) for n in re.findall(rb": warn: (\d+) more bad input lines in the last ", err)]
    assert firsts, err[-2000:]
    assert len(firsts) + sum(summaries) == bad, err[-2000:]
    assert len(firsts) + len(summaries) <= 10, f"a log line per bad line, or nearly: {err[-2000:]!r}"


def test_listen_large_batch_roundtrip(worker_bin, tmp_path, procs):
    proc, port, _ = start_listen(procs, worker_bin, tmp_path, "--bug-trigger", "none")
    try:
        s = connect_when_ready(port)
        n = 200_000
        payload = b"".join(b"%d\n" % (i % 1000) for i in range(n))
        # Write from a thread so neither side's buffers can deadlock us; keep
        # its failure, which a thread would otherwise only print.
        failed: list[BaseException] = []

        def send():
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                failed.append(e)

        t = threading.Thread(target=send)
        t.start()
        got = recv_lines(s, n, timeout=60)
        t.join()
        assert failed == []
        assert len(got) == n
        assert got[1234] == b"234,54756"
        assert got[999] == b"999,998001"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- lock and signals


def start_stdin_worker(procs, worker_bin, lock: Path, *extra: str, stdout=subprocess.PIPE):
    """A worker in stdin mode, registered with `procs`: stopped and its pipes closed at teardown."""
    binary, env = worker_bin
    return procs.popen(
        [str(binary), "--lock", str(lock), *extra],
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
    )


def lock_is_held(lock: Path) -> bool:
    """The monitor's probe: a momentary shared flock."""
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def ask(proc: subprocess.Popen, line: bytes) -> bytes:
    proc.stdin.write(line + b"\n")
    proc.stdin.flush()
    return proc.stdout.readline()


def test_lock_file_holds_pid_and_incarnation_and_is_flocked(worker_bin, tmp_path, procs):
    lock = tmp_path / "w.lock"
    p = start_stdin_worker(procs, worker_bin, lock)
    try:
        assert ask(p, b"2") == b"2,4\n"  # started and serving
        pid, incarnation = lock.read_text().split()
        assert int(pid) == p.pid
        assert re.fullmatch(r"[0-9a-f]{16}", incarnation), incarnation
        assert lock_is_held(lock)
    finally:
        p.stdin.close()
        assert p.wait(timeout=10) == 0
    assert not lock.exists()


def test_sigterm_finishes_removes_lock_and_exits_zero(worker_bin, tmp_path, procs):
    lock = tmp_path / "w.lock"
    p = start_stdin_worker(procs, worker_bin, lock)
    assert ask(p, b"3") == b"3,9\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    assert not lock.exists()
    assert b"stop requested" in p.stderr.read()


def test_sigterm_at_any_moment_is_never_lost(worker_bin, tmp_path, procs):
    """A stop that lands between the loop's check of the flag and its wait
    must still end the worker; once it hung forever in an untimed poll.
    The signal is sent at the very moment the worker goes back to waiting
    (just after it answered), many times over, to hit that window."""
    for i in range(150):
        lock = tmp_path / f"w{i}.lock"
        p = start_stdin_worker(procs, worker_bin, lock)
        try:
            assert ask(p, b"3") == b"3,9\n"
            p.send_signal(signal.SIGTERM)
            try:
                code = p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pytest.fail(f"run {i}: SIGTERM was lost; the worker still waits for input")
            assert code == 0, (i, p.stderr.read())
            assert not lock.exists()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                f.close()


def test_sigterm_during_a_flood_of_input_stops_at_once(worker_bin, tmp_path, procs):
    """With input always ready the wait never has to block, and a stop that
    only a blocking wait delivers stayed pending until the input ran out. A
    regular file is always ready, and flushing every line keeps the worker
    busy with it for seconds: SIGTERM must end it at once, not at EOF."""
    lock = tmp_path / "w.lock"
    data = tmp_path / "flood.dat"
    data.write_bytes(b"7\n" * 6_000_000)
    exe, env = worker_bin
    with open(data, "rb") as stdin:
        p = procs.popen([str(exe), "--lock", str(lock), "--flush-every-line"], stdin=stdin,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lock.exists, 5, what="the worker's lock")
        p.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = p.wait(timeout=30)
        took = time.monotonic() - t0
        err = p.stderr.read()
        assert code == 0 and not lock.exists(), err[-500:]
        assert b"exiting with 0 after 6000000 lines" not in err, "it stopped only when the input ran out"
        assert took < 0.5, f"stopped {took:.2f} s after SIGTERM"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()


def test_segfault_removes_lock_and_dies_by_signal_11(worker_bin, tmp_path, procs):
    lock = tmp_path / "w.lock"
    p = start_stdin_worker(procs, worker_bin, lock)
    assert ask(p, b"5") == b"5,25\n"
    p.stdin.write(b"999\n")
    p.stdin.flush()
    assert p.wait(timeout=10) == -signal.SIGSEGV
    assert not lock.exists()
    err = p.stderr.read()
    assert b"lock file removed" in err
    assert b"AddressSanitizer" not in err and b"runtime error" not in err


def test_crash_delivers_results_computed_before_it(worker_bin, tmp_path):
    """Output is batched; a crash must not lose the answers already in the
    batch, nor send half a line or a line twice."""
    lock = tmp_path / "w.lock"
    p = run_stdin(worker_bin, b"2\n3\n999\n4\n", lock=lock)
    assert p.returncode == -signal.SIGSEGV
    assert p.stdout == b"2,4\n3,9\n"
    assert not lock.exists()
    assert b"AddressSanitizer" not in p.stderr and b"runtime error" not in p.stderr
    # Error lines pending for stderr are delivered too, once each.
    p = run_stdin(worker_bin, b"2\n-3\nabc\n999\n", lock=lock)
    assert p.returncode == -signal.SIGSEGV
    assert p.stdout == b"2,4\n"
    assert error_lines(p.stderr) == [b"ERROR: Corrupted data -3", b"ERROR: Malformed input: abc"]
    # More than one batch before the crash: some went out on the way, the
    # rest from the handler, each line exactly once.
    values = [i for i in range(1, 30_001) if i != 999]
    p = run_stdin(worker_bin, b"".join(b"%d\n" % i for i in values) + b"999\n", lock=lock)
    assert p.returncode == -signal.SIGSEGV
    assert p.stdout == b"".join(b"%d,%d\n" % (i, i * i) for i in values)
    assert not lock.exists()


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the peer sent before its side closed (EOF or reset)."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk


def test_listen_crash_delivers_responses_computed_before_it(worker_bin, tmp_path, procs):
    proc, port, lock = start_listen(procs, worker_bin, tmp_path)
    try:
        s = connect_when_ready(port)
        s.sendall(b"2\n3\n999\n")  # one write: the answers sit in the batch when 999 hits
        assert read_until_closed(s) == b"2,4\n3,9\n"
        assert proc.wait(timeout=10) == -signal.SIGSEGV
        assert not lock.exists()
        s.close()
        # A bad line's response is owed just the same, and a long batch too.
        proc, port, lock = start_listen(procs, worker_bin, tmp_path)
        s = connect_when_ready(port)
        values = [i for i in range(1, 20_001) if i != 999]
        s.sendall(b"-7\n" + b"".join(b"%d\n" % i for i in values) + b"999\n")
        want = b"ERROR: Corrupted data -7\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in values)
        assert read_until_closed(s) == want
        assert proc.wait(timeout=10) == -signal.SIGSEGV
        assert not lock.exists()
        s.close()
    finally:
        proc.kill()
        proc.wait()
    err = proc.stderr.read()
    assert b"lock file removed" in err
    assert b"AddressSanitizer" not in err and b"runtime error" not in err


def test_sigkill_leaves_stale_lock_that_next_start_recovers(worker_bin, tmp_path, procs):
    lock = tmp_path / "w.lock"
    p = start_stdin_worker(procs, worker_bin, lock)
    assert ask(p, b"6") == b"6,36\n"
    p.kill()
    p.wait()
    assert lock.exists(), "SIGKILL cannot run a handler: the file stays"
    assert not lock_is_held(lock), "but the kernel released the flock"
    q = run_stdin(worker_bin, b"7\n", lock=lock)
    assert q.returncode == 0 and q.stdout == b"7,49\n"
    assert f"recovered stale lock of pid {p.pid}".encode() in q.stderr


def test_second_worker_on_a_live_lock_exits_75(worker_bin, tmp_path, procs):
    lock = tmp_path / "w.lock"
    p = start_stdin_worker(procs, worker_bin, lock)
    try:
        assert ask(p, b"1") == b"1,1\n"
        q = run_stdin(worker_bin, b"2\n", lock=lock)
        assert q.returncode == 75
        assert f"held by live process {p.pid}".encode() in q.stderr
        assert q.stdout == b""
        assert lock.exists() and lock_is_held(lock), "the refused start must not touch the live lock"
    finally:
        p.stdin.close()
        code = p.wait(timeout=10)
    assert code == 0, "the first worker is untouched by the refused second one"


def test_start_survives_the_monitors_momentary_probe(worker_bin, tmp_path):
    """A shared lock held for a moment (the monitor's probe) is not a live worker."""
    lock = tmp_path / "w.lock"
    lock.write_text("12345 deadbeefdeadbeef\n")
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    releaser = threading.Timer(0.03, lambda: (fcntl.flock(fd, fcntl.LOCK_UN), os.close(fd)))
    releaser.start()
    q = run_stdin(worker_bin, b"9\n", lock=lock)
    releaser.join()
    assert q.returncode == 0 and q.stdout == b"9,81\n"
    assert b"recovered stale lock of pid 12345, incarnation deadbeefdeadbeef: it died holding" in q.stderr


def test_garbage_in_a_stale_lock_file_is_recovered(worker_bin, tmp_path):
    lock = tmp_path / "w.lock"
    lock.write_bytes(b"\x00\xffnot a pid\n" * 10)
    q = run_stdin(worker_bin, b"9\n", lock=lock)
    assert q.returncode == 0 and q.stdout == b"9,81\n"
    assert b"recovered stale lock of pid unknown, incarnation unknown" in q.stderr


def test_naive_worker_leaves_its_lock_and_cannot_restart(tmp_path):
    lock = tmp_path / "w.lock"
    p = subprocess.run([str(WORKER), "--naive", "--lock", str(lock)], input=b"4\n999\n", capture_output=True,
                       timeout=10)
    assert p.returncode == -signal.SIGSEGV
    assert lock.exists(), "no handler: the naive worker leaves its lock behind"
    q = subprocess.run([str(WORKER), "--naive", "--lock", str(lock)], input=b"4\n", capture_output=True, timeout=10)
    assert q.returncode == 75
    assert b"exists" in q.stderr and b"refusing to start" in q.stderr
    # The robust worker recovers the very same stale file.
    r = subprocess.run([str(WORKER), "--lock", str(lock)], input=b"4\n", capture_output=True, timeout=10)
    assert r.returncode == 0 and r.stdout == b"4,16\n"


# ---------------------------------------------------------------- heartbeats


def read_beat(path: Path):
    try:
        inc, pid, seq, processed, ms = path.read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    return inc, int(pid), int(seq), int(processed), int(ms)


class UdpSink:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_udp_port()))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.beats: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(512)
            except TimeoutError:
                continue
            self.beats.append((time.monotonic(), data.decode().split()))

    def count_between(self, t0: float, t1: float) -> int:
        return sum(1 for t, _ in self.beats if t0 <= t < t1)

    def close(self):
        self._stop.set()
        self._t.join()
        self.sock.close()


def test_heartbeats_file_and_udp_rate_progress_and_sigstop(worker_bin, tmp_path, procs):
    lock = tmp_path / "w.lock"
    hb = tmp_path / "worker.heartbeat"
    sink = UdpSink()
    p = start_stdin_worker(procs, worker_bin, lock, "--heartbeat-ms", "100", "--heartbeat-file", str(hb),
                           "--heartbeat-udp", f"localhost:{sink.port}")
    try:
        wait_until(lambda: read_beat(hb), 5, what="first heartbeat file")
        # Idle, waiting for input: beats keep coming at about the set rate.
        t0 = time.monotonic()
        first = read_beat(hb)
        wait_until(lambda: time.monotonic() - t0 >= 1.0, 2)
        idle = sink.count_between(t0, t0 + 1.0)
        assert 7 <= idle <= 13, f"{idle} UDP beats in 1 s at 100 ms"
        later = read_beat(hb)
        assert 7 <= later[2] - first[2] <= 13
        assert later[0] == first[0] and later[1] == p.pid
        assert abs(later[4] - time.time() * 1000) < 1000

        # Working: the processed count advances with the lines answered.
        for i in range(5):
            assert ask(p, str(i).encode()) == f"{i},{i*i}\n".encode()
        wait_until(lambda: read_beat(hb)[3] == 5, 2, what="processed count 5 in the heartbeat")
        wait_until(lambda: any(b[1][3] == "5" for b in sink.beats), 2, what="processed 5 over UDP")
        assert all(b[1][0] == first[0] for b in sink.beats)
        seqs = [int(b[1][2]) for b in sink.beats]
        assert seqs == sorted(seqs)

        # Frozen: nothing beats; thawed: beats resume, same incarnation.
        p.send_signal(signal.SIGSTOP)
        time.sleep(0.15)  # let an in-flight beat land before measuring silence
        s0 = time.monotonic()
        frozen_seq = read_beat(hb)[2]
        wait_until(lambda: time.monotonic() - s0 >= 0.8, 2)
        assert sink.count_between(s0, s0 + 0.8) == 0
        assert read_beat(hb)[2] == frozen_seq
        p.send_signal(signal.SIGCONT)
        wait_until(lambda: read_beat(hb)[2] > frozen_seq, 2, what="beats after SIGCONT")
        c0 = time.monotonic()
        wait_until(lambda: sink.count_between(c0, time.monotonic()) >= 3, 2, what="UDP beats after SIGCONT")
    finally:
        p.stdin.close()
        code = p.wait(timeout=10)
        sink.close()
    assert code == 0


def test_slow_reader_does_not_stop_the_heartbeat(worker_bin, tmp_path, procs):
    """Output backs up (nobody reads stdout), yet the volume heartbeat goes on."""
    lock = tmp_path / "w.lock"
    hb = tmp_path / "worker.heartbeat"
    p = start_stdin_worker(procs, worker_bin, lock, "--heartbeat-ms", "100", "--heartbeat-file", str(hb))
    try:
        feeder = threading.Thread(target=lambda: _feed_quietly(p, b"12345\n" * 400_000), daemon=True)
        feeder.start()
        wait_until(lambda: (read_beat(hb) or (0, 0, 0, 0))[3] > 0, 5, what="work to start")
        s = read_beat(hb)
        time.sleep(1.0)  # a fixed observation window, not a wait for a condition
        e = read_beat(hb)
        assert e[2] - s[2] >= 6, f"only {e[2] - s[2]} beats in 1 s while stdout was blocked"
        assert e[3] < 400_000, "stdout should be backed up, not drained"
    finally:
        p.kill()
        p.wait()


def _feed_quietly(p, data):
    try:
        p.stdin.write(data)
        p.stdin.close()
    except (BrokenPipeError, ValueError):
        pass


def test_udp_peer_that_cannot_be_resolved_is_not_fatal(worker_bin, tmp_path, procs):
    hb = tmp_path / "worker.heartbeat"
    p = start_stdin_worker(procs, worker_bin, tmp_path / "w.lock", "--heartbeat-ms", "50", "--heartbeat-file", str(hb),
                           "--heartbeat-udp", "no-such-host.invalid:7001")
    try:
        wait_until(lambda: (read_beat(hb) or (0, 0, 0))[2] >= 5, 5, what="file beats despite a dead UDP peer")
        assert ask(p, b"11") == b"11,121\n"
    finally:
        p.stdin.close()
        assert p.wait(timeout=10) == 0
    assert p.stderr.read().count(b"not resolved") == 1, "logged once, not per beat"


# ---------------------------------------------------------------- fuzzing


def test_parser_fuzz_bounded_run(tmp_path):
    fuzz = BUILD / "fuzz_parse"
    # make decides: a fuzz target older than worker.c would fuzz yesterday's parser.
    subprocess.run(["make", "-s", "-C", str(WORKER_DIR), "fuzz"], check=True)
    corpus = tmp_path / "corpus"
    shutil.copytree(WORKER_DIR / "fuzz-corpus", corpus)
    p = subprocess.run([str(fuzz), "-runs=300000", "-max_len=128", "-seed=7", str(corpus)],
                       capture_output=True, timeout=240)
    assert p.returncode == 0, p.stderr[-2000:]
    assert b"Done 300000 runs" in p.stderr


def test_the_oom_bug_allocates_until_stopped_and_never_past_its_cap(tmp_path):
    """--bug-kind oom: the trigger allocates (and touches) memory until
    something stops it. In the lab the cgroup's OOM killer does; here an
    address-space limit makes malloc fail first, and the worker then aborts
    rather than go on (outside a container nothing else would stop it)."""
    import resource

    def small():
        resource.setrlimit(resource.RLIMIT_AS, (256 * 2**20, 256 * 2**20))

    p = subprocess.run([str(WORKER), "--lock", str(tmp_path / "w.lock"), "--bug-trigger", "7", "--bug-kind", "oom"],
                       input=b"5\n7\n9\n", capture_output=True, timeout=60, preexec_fn=small)
    assert p.returncode == -signal.SIGABRT, (p.returncode, p.stderr[-500:])
    assert b"5,25\n" in p.stdout and b"9,81" not in p.stdout
    q = subprocess.run([str(WORKER), "--lock", str(tmp_path / "w2.lock"), "--bug-kind", "leak"],
                       input=b"", capture_output=True, timeout=30)
    assert q.returncode == 64 and b"--bug-kind wants segv or oom, got 'leak'" in q.stderr
