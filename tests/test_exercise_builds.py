"""The exercises' programs made from the lab's own (images/exercises/,
labctl.grade.reference): run as the exercise sheet runs them, without
arguments, each does what the sheet asks. Local processes only, no engine.

Also the worker options the thin builds and the grader's stand-in workers
rest on: --idle, --heartbeat-stdout, --plain-lock and --record.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import MONITOR, ROOT, SUPERVISOR, WORKER, wait_until
from labctl.grade import reference

EXERCISES = ROOT / "images" / "exercises"
BUILT = EXERCISES / "build"
GENERATE = ROOT / "images" / "supervisor" / "generate_data.py"
SPECIALS = [-10, 0, 999, -25]


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    # -Werror: the thin builds must stay as warning-free as the worker itself.
    subprocess.run(["make", "-s", "-C", str(EXERCISES)], check=True)


def start(procs, argv, cwd: Path, **kw) -> subprocess.Popen:
    return procs.popen([str(a) for a in argv], cwd=cwd, stdin=kw.pop("stdin", subprocess.DEVNULL),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


# ------------------------------------------------------------------ the reference submission


def test_reference_files_stand_alone_and_compile_as_the_grader_compiles(tmp_path):
    out = reference.build(tmp_path / "ref")
    assert sorted(p.name for p in out.iterdir()) == sorted(reference.SOURCES)
    for name in ("worker.c", "naive_worker.c", "robust_worker.c", "hardcore_worker.c"):
        text = (out / name).read_text()
        assert '#include "../' not in text, f"{name} still includes a file the sandbox will not have"
        # The sandbox's flags (sandbox.CFLAGS): a student's file must build there warning-free.
        p = subprocess.run(["gcc", "-std=gnu11", "-O1", "-g", "-Wall", "-o", str(tmp_path / name[:-2]),
                            str(out / name), "-lm", "-lpthread"], capture_output=True, text=True)
        assert p.returncode == 0 and not p.stderr, (name, p.stderr)
    # The Python programs are the lab's files themselves, not copies kept in git.
    assert (out / "supervisor.py").read_bytes() == SUPERVISOR.read_bytes()
    assert (out / "monitor.py").read_bytes() == MONITOR.read_bytes()


def test_worker_source_sets_defaults_that_the_command_line_overrides(tmp_path):
    src = tmp_path / "standin.c"
    src.write_bytes(reference.worker_source(["--lock", "a b.lock", "--plain-lock"], "test"))
    subprocess.run(["gcc", "-std=gnu11", "-O1", "-Wall", "-Werror", "-o", str(tmp_path / "standin"), str(src),
                    "-lpthread"], check=True)
    p = subprocess.run([str(tmp_path / "standin")], input=b"3\n", capture_output=True, cwd=tmp_path, timeout=10)
    assert p.returncode == 0 and p.stdout == b"3,9\n" and b"lock a b.lock" in p.stderr
    p = subprocess.run([str(tmp_path / "standin"), "--lock", "other.lock"], input=b"", capture_output=True,
                       cwd=tmp_path, timeout=10)
    assert p.returncode == 0 and b"lock other.lock" in p.stderr


# ------------------------------------------------------------------ exercise 1


def test_generate_data_without_arguments_is_exercise_1s_generator(tmp_path):
    p = subprocess.run([sys.executable, str(GENERATE)], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "Generated 104 readings in input.dat" in p.stdout, p
    values = [int(x) for x in (tmp_path / "input.dat").read_text().split()]
    assert len(values) == 104 and values[-4:] == SPECIALS
    assert all(1 <= v <= 100 for v in values[:100]) and len(set(values[:100])) > 10
    # A fresh seed each run: the sheet asks for random readings.
    subprocess.run([sys.executable, str(GENERATE)], cwd=tmp_path, capture_output=True, check=True, timeout=30)
    assert [int(x) for x in (tmp_path / "input.dat").read_text().split()][:100] != values[:100]


# ------------------------------------------------------------------ exercise 2


def test_exercise_2_worker_locks_with_its_pid_and_beats_once_a_second(procs, tmp_path):
    p = start(procs, [BUILT / "worker"], tmp_path)
    wait_until(lambda: pid_in(tmp_path / "worker.lock") == p.pid, 5, what="worker.lock with the worker's PID")
    t0 = time.monotonic()
    lines = [p.stdout.readline() for _ in range(3)]
    took = time.monotonic() - t0
    assert all(ln.startswith(b"Heartbeat ") for ln in lines), lines
    assert 1.2 < took < 4, f"three beats took {took:.2f} s, expected about two to three"
    assert (tmp_path / "worker.heartbeat").exists()
    p.send_signal(signal.SIGTERM)
    assert p.wait(5) == 0
    assert not (tmp_path / "worker.lock").exists()


def test_heartbeat_stdout_needs_idle_mode():
    p = subprocess.run([str(WORKER), "--heartbeat-stdout"], input=b"", capture_output=True, timeout=10)
    assert p.returncode == 64 and b"needs --idle" in p.stderr


def monitor_lines(p: subprocess.Popen, n: int) -> list[str]:
    return [p.stdout.readline().decode() for _ in range(n)]


def first_line_with(p: subprocess.Popen, word: str, within: int) -> str:
    """The first of the monitor's next `within` lines (one a second) that holds word."""
    seen = []
    for _ in range(within):
        seen.append(p.stdout.readline().decode())
        if word in seen[-1]:
            return seen[-1]
    raise AssertionError(f"no {word!r} in {seen}")


def test_exercise_2_monitor_running_paused_crashed_and_stale(procs, tmp_path):
    shutil.copy(MONITOR, tmp_path / "monitor.py")
    w = start(procs, [BUILT / "worker"], tmp_path)
    wait_until(lambda: pid_in(tmp_path / "worker.lock") == w.pid, 5, what="the worker's lock")
    # No arguments: the exercise's monitor, one line a second.
    m = start(procs, [sys.executable, "monitor.py"], tmp_path)
    assert "running: worker pid" in monitor_lines(m, 1)[0]
    os.kill(w.pid, signal.SIGSTOP)
    first_line_with(m, "paused:", 3)
    os.kill(w.pid, signal.SIGKILL)
    os.kill(w.pid, signal.SIGCONT)
    w.wait(5)
    line = first_line_with(m, "crashed:", 3)
    assert "stale lock" in line and str(w.pid) in line
    m.terminate()
    assert m.wait(5) == 0
    # A lock left by a process this monitor never saw: a stale lock, not a running worker.
    m = start(procs, [sys.executable, "monitor.py"], tmp_path)
    assert monitor_lines(m, 1)[0].split(": ", 2)[1] == "stale lock"


def test_exercise_2_monitor_rereads_an_empty_lock_before_calling_it_stale(procs, tmp_path):
    (tmp_path / "worker.lock").write_text("")
    m = start(procs, [sys.executable, str(MONITOR), "--pidfile", str(tmp_path / "worker.lock"), "--interval-ms",
                      "100", "--timeout-ms", "500"], tmp_path)
    verdicts = [ln.split(": ", 2)[1] for ln in monitor_lines(m, 4)]
    assert verdicts == ["waiting", "waiting", "stale lock", "stale lock"], verdicts


# ------------------------------------------------------------------ exercise 3


def test_exercise_3_naive_worker_segfaults_and_leaves_its_lock(tmp_path):
    p = subprocess.run([str(BUILT / "naive_worker")], input=b"5\n999\n7\n", capture_output=True, cwd=tmp_path,
                       timeout=10)
    assert p.returncode == -signal.SIGSEGV
    assert (tmp_path / "naive.lock").read_text().strip().isdigit()


def test_exercise_3_robust_worker_removes_its_lock_reports_and_still_dies_by_sigsegv(tmp_path):
    p = subprocess.run([str(BUILT / "robust_worker")], input=b"5\n999\n7\n", capture_output=True, cwd=tmp_path,
                       timeout=10)
    assert p.returncode == -signal.SIGSEGV and p.stdout == b"5,25\n"
    assert b"fatal signal, lock file removed" in p.stderr
    assert not (tmp_path / "robust.lock").exists()


# ------------------------------------------------------------------ the flight recorder


def records(path: Path) -> list[tuple[int, str, str]]:
    """(pid, event, detail) per record."""
    out = []
    for line in path.read_text().splitlines():
        _ms, pid, rest = line.split(" ", 2)
        event, _, detail = rest.partition(" ")
        out.append((int(pid), event, detail))
    return out


def test_record_keeps_lines_signals_and_exits(procs, tmp_path):
    rec = tmp_path / "rec"
    p = subprocess.run([str(WORKER), "--record", str(rec), "--plain-lock"], input=b"5\n\nabc\n999\n7\n",
                       capture_output=True, cwd=tmp_path, timeout=10)
    assert p.returncode == -signal.SIGSEGV
    w = start(procs, [WORKER, "--record", rec], tmp_path, stdin=subprocess.PIPE)
    w.stdin.write(b"1\n")
    w.stdin.flush()
    assert w.stdout.readline() == b"1,1\n"
    w.send_signal(signal.SIGTERM)
    assert w.wait(5) == 0
    got = records(rec)
    first = got[0][0]
    assert got == [(first, "start", "robust"), (first, "line", "5"), (first, "line", ""), (first, "line", "abc"),
                   (first, "line", "999"), (first, "signal", "SEGV"),
                   (w.pid, "start", "robust"), (w.pid, "line", "1"), (w.pid, "signal", "TERM"), (w.pid, "exit", "0")]


def test_record_notes_a_refused_lock(tmp_path):
    (tmp_path / "cworker.lock").write_text("1\n")
    p = subprocess.run([str(WORKER), "--mode", "naive", "--record", "rec"], input=b"", capture_output=True,
                       cwd=tmp_path, timeout=10)
    assert p.returncode == 75
    assert [e for _, e, _ in records(tmp_path / "rec")] == ["start", "lock-refused", "exit"]


# ------------------------------------------------------------------ exercise 4's supervisor


def supervisor_dir(tmp_path: Path, worker_args: list[str] | None = None) -> Path:
    """A directory as the sheet lays it out: supervisor.py, generateData.py and
    ./hardcore_worker (the lab's worker, or a script running it with options)."""
    shutil.copy(SUPERVISOR, tmp_path / "supervisor.py")
    shutil.copy(GENERATE, tmp_path / "generateData.py")
    hw = tmp_path / "hardcore_worker"
    if worker_args:
        hw.write_text(f"#!/bin/sh\nexec {WORKER} {' '.join(worker_args)}\n")
        hw.chmod(0o755)
    else:
        shutil.copy(WORKER, hw)
    return tmp_path


def run_supervisor(d: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "supervisor.py"], cwd=d, capture_output=True, text=True, timeout=timeout)


def test_exercise_4_supervisor_generates_restarts_once_and_stops_with_sigterm(tmp_path):
    d = supervisor_dir(tmp_path, ["--record", "rec", "--flush-every-line"])
    p = run_supervisor(d)
    assert p.returncode == 0, p.stderr
    assert "input.dat not found: running generateData.py" in p.stderr
    values = (d / "input.dat").read_text().splitlines()
    recs = records(d / "rec")
    pids = list(dict.fromkeys(pid for pid, _, _ in recs))
    assert len(pids) == 2, "one crash (999), so exactly one restart"
    fed = [detail for _, e, detail in recs if e == "line"]
    assert fed == values, "every line fed once, in order; the 999 once (it was skipped after the crash)"
    assert [e for pid, e, _ in recs if pid == pids[0]][-1] == "signal"  # the SIGSEGV
    assert [(e, x) for pid, e, x in recs if pid == pids[1]][-2:] == [("signal", "TERM"), ("exit", "0")]
    for v in values[:100]:
        assert f"{v} -> {v},{int(v) ** 2}" in p.stderr
    assert "CRITICAL - worker crashed" in p.stderr and not (d / "cworker.lock").exists()


def test_exercise_4_supervisor_clears_a_stale_lock_before_the_restart(tmp_path):
    # The naive worker leaves its lock when it dies and refuses to start while one exists.
    d = supervisor_dir(tmp_path, ["--mode", "naive", "--plain-lock", "--record", "rec", "--flush-every-line"])
    (d / "input.dat").write_text("4\n999\n5\n")
    p = run_supervisor(d)
    assert p.returncode == 0, p.stderr
    assert "a stale lock, removed" in p.stderr
    assert [e for _, e, _ in records(d / "rec")].count("lock-refused") == 0


def test_exercise_4_supervisor_survives_a_stderr_flood(tmp_path):
    d = supervisor_dir(tmp_path)
    (d / "input.dat").write_text("-5\n" * 200_000)
    p = run_supervisor(d, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "200000 corrupted" in p.stderr


def test_exercise_4_supervisor_isolates_when_a_dying_worker_lost_its_answers(tmp_path):
    # Batched answers die with a worker that has no handler to send them: the
    # supervisor cannot tell which line killed it, so it finds out one line at a time.
    d = supervisor_dir(tmp_path, ["--mode", "naive", "--plain-lock"])
    (d / "input.dat").write_text("5\nabc\n7\n999\n8\n")
    p = run_supervisor(d)
    assert p.returncode == 0, p.stderr
    assert "isolating" in p.stderr
    assert (d / "supervisor-output" / "dead-letter.csv").read_text().splitlines()[1:] == ["4,999,crashed the worker "
                                                                                           "1 times,1"]
    assert (d / "supervisor-output" / "results.csv").read_text().splitlines()[1:] == ["1,5,25", "3,7,49", "5,8,64"]


def test_exercise_4_supervisor_gives_up_on_a_worker_that_cannot_start(tmp_path):
    d = supervisor_dir(tmp_path, ["--mode", "naive"])
    (d / "input.dat").write_text("1\n")
    (d / "cworker.lock").write_text(f"{os.getpid()}\n")  # a live process's lock: left alone
    p = run_supervisor(d)
    assert p.returncode == 69, p.stderr
    assert "died 3 times in a row before answering a line" in p.stderr
    assert (d / "cworker.lock").exists()


def test_exercise_4_supervisor_blames_999_when_the_crash_handler_prints_an_error(tmp_path):
    """A worker's SIGSEGV handler that says so on stderr ("ERROR: segmentation
    fault...") must not count as the answer to 999: counted, it made the
    crash look like the next line's, and a correct worker lost 4.25."""
    shutil.copy(SUPERVISOR, tmp_path / "supervisor.py")
    (tmp_path / "hw.py").write_text(
        "import os, signal, sys\n"
        "for line in sys.stdin:\n"
        "    s = line.strip()\n"
        "    try:\n"
        "        n = int(s)\n"
        "    except ValueError:\n"
        "        print(f'ERROR: Malformed input: {s}', file=sys.stderr, flush=True)\n"
        "        continue\n"
        "    if n == 999:\n"
        "        print('ERROR: segmentation fault, lock removed', file=sys.stderr, flush=True)\n"
        "        os.kill(os.getpid(), signal.SIGSEGV)\n"
        "    print(f'{n},{n * n}', flush=True)\n")
    (tmp_path / "input.dat").write_text("".join(f"{n}\n" for n in [*range(1, 11), 999, "abc", *range(11, 21)]))
    p = subprocess.run([sys.executable, "supervisor.py", "--spawn", f"{sys.executable} hw.py", "--input",
                        "input.dat", "--output", "out", "--max-item-crashes", "1", "--fresh"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    dead = (tmp_path / "out" / "dead-letter.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:2] for row in dead] == [["11", "999"]], dead
    rejected = (tmp_path / "out" / "rejected.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rejected] == ["12"], rejected  # abc, answered in its own wording
    assert "segmentation fault, lock removed" in p.stderr, "the handler's message is logged, not lost"


# ------------------------------------------------------------------ the record's socket


def _build_private(tmp_path: Path, name: str, source: bytes, record_name: str) -> Path:
    """A grader program as Sandbox.build_private builds it (static, token built in), on the host."""
    from types import SimpleNamespace

    from labctl.grade import ex4_supervisor as sup
    from labctl.grade.sandbox import PRIVATE_CFLAGS

    ctx = SimpleNamespace(sandbox=SimpleNamespace(record_token=TOKEN))
    src = tmp_path / f"{name}.c"
    src.write_bytes(sup.with_token(ctx, source, record_name))
    out = tmp_path / name
    p = subprocess.run(["gcc", *PRIVATE_CFLAGS, "-Wall", "-Werror", "-o", str(out), str(src), "-lpthread"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out


TOKEN = "0123456789abcdef" * 2


def test_the_stand_in_records_to_the_drivers_socket_and_forgeries_are_set_aside(tmp_path):
    import socket

    from labctl.grade import driver
    from labctl.grade import ex4_supervisor as sup

    name = f"labctl-test-record-{os.getpid()}"
    standin = _build_private(tmp_path, "standin", reference.worker_source(
        ("--plain-lock", "--flush-every-line", "--record", "@" + name), "test stand-in"), name)
    launcher = _build_private(tmp_path, "record_exec", sup.RECORD_EXEC_SOURCE.encode(), name)
    rec = driver.Recorder(name, TOKEN)
    try:
        p = subprocess.run([str(standin)], input=b"3\n-4\n", capture_output=True, cwd=tmp_path, timeout=10)
        assert p.returncode == 0 and p.stdout == b"3,9\n", p
        # Options from the program under test are ignored: the record cannot be sent elsewhere.
        p = subprocess.run([str(standin), "--record", str(tmp_path / "leak"), "--mode", "naive"], input=b"",
                           capture_output=True, cwd=tmp_path, timeout=10)
        assert p.returncode == 0 and b"takes no options; 4 ignored" in p.stderr, p
        assert not (tmp_path / "leak").exists()
        p = subprocess.run([str(launcher), "/bin/true"], capture_output=True, timeout=10)
        assert p.returncode == 0, p
        # What a program of the student's could send: no token, or a wrong one.
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.connect("\0" + name)
            s.send(b"1 2 start robust\n")
            s.send(b"deadbeef 1 2 exit 0\n")
        got = rec.close()
    finally:
        rec.listener.close()
    import base64

    incs = sup.incarnations(base64.b64decode(got["record"]))
    assert got["record_forged"] == 2 and got["record_cut"] == 0
    assert [(i.lines, i.exit_code) for i in incs] == [(["3", "-4"], 0), ([], 0), ([], None)]
    assert incs[0].events[0] == "start" and incs[2].events == ["start"]
    assert incs[1].events == ["start", "eof", "exit"]  # the run given options: robust, recorded here
    assert TOKEN.encode() not in base64.b64decode(got["record"])
    assert b"start own" in base64.b64decode(got["record"])
