"""The worker's scenario-crash-loop options, driven as a real binary:
--crash-every N segfaults between lines once N are answered (their answers
flushed first, the lock removed by the handler), --start-delay-ms waits
before the lock, and a SIGTERM in that wait ends it cleanly."""
from __future__ import annotations

import signal
import subprocess
import time

from test_worker import run_stdin


def test_crash_every_answers_n_lines_then_segfaults(worker_bin, tmp_path):
    lock = tmp_path / "w.lock"
    data = b"".join(b"%d\n" % i for i in range(1, 11))
    p = run_stdin(worker_bin, data, "--bug-trigger", "none", "--crash-every", "4", lock=lock)
    assert p.returncode == -signal.SIGSEGV, p.stderr
    assert p.stdout == b"1,1\n2,4\n3,9\n4,16\n", "the answers before the crash are flushed, none after"
    assert b"crashing on purpose after 4 lines (--crash-every)" in p.stderr
    assert not lock.exists(), "the SIGSEGV handler removed the lock"


def test_crash_every_needs_a_line_past_n_and_zero_means_never(worker_bin, tmp_path):
    lock = tmp_path / "w.lock"
    assert run_stdin(worker_bin, b"1\n2\n", "--crash-every", "2", lock=lock).returncode == 0
    assert run_stdin(worker_bin, b"1\n2\n3\n", "--crash-every", "0", lock=lock).returncode == 0
    bad = run_stdin(worker_bin, b"", "--crash-every", "-1", lock=lock)
    assert bad.returncode == 64 and b"--crash-every wants" in bad.stderr


def test_start_delay_waits_before_the_lock(worker_bin, tmp_path):
    lock = tmp_path / "w.lock"
    t0 = time.monotonic()
    p = run_stdin(worker_bin, b"3\n", "--start-delay-ms", "300", lock=lock)
    assert p.returncode == 0 and p.stdout == b"3,9\n"
    assert time.monotonic() - t0 >= 0.3
    assert b"starting slowly: 300 ms before taking the lock" in p.stderr
    assert run_stdin(worker_bin, b"", "--start-delay-ms", "600001", lock=lock).returncode == 64


def test_a_stop_during_the_start_delay_ends_it_cleanly(worker_bin, tmp_path):
    binary, env = worker_bin
    lock = tmp_path / "w.lock"
    p = subprocess.Popen([str(binary), "--lock", str(lock), "--start-delay-ms", "20000"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        assert time.monotonic() - t0 < 5, "the stop did not wait out the delay"
        assert not lock.exists(), "it never took the lock"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
