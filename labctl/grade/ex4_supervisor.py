"""Exercise 4, supervisor.py: the system tests 4.17-4.24, and 4.25 (the
student's worker under the lab's supervisor).

The student's supervisor runs as the sheet runs it, `python3 supervisor.py`
in the case directory, beside input.dat (or, for 4.22, a generateData.py)
and an executable ./hardcore_worker, the name the sheet gives the worker it
launches. For 4.17-4.22 and 4.24 that worker is the grader's stand-in: the
lab's worker in stdin mode, built with --record (labctl.grade.reference
makes the source), which reports every line it handles, every signal that
reaches it, its start (and a refused lock) and its exit, one message each,
so a worker that crashes still leaves all of it. The messages go to the
driver's record socket, each marked with the sandbox's token; the stand-in
is built away from the sandbox and installed exec-only
(Sandbox.build_private), so the student's code can run it but can neither
read the token nor forge, erase or replace anything of the record. Its lock
holds its PID alone, as the exercise's workers write it, and it answers
each line as it handles it. ./hardcore_worker is a two-line shell script
that execs it: the supervisor's child is the stand-in itself (same PID,
same exit status). For 4.21 the stand-in runs in naive mode: no handler,
so a crash leaves cworker.lock behind, and a pidfile lock that refuses to
start while any lock file exists. For 4.23 ./hardcore_worker execs the
student's own compiled worker, after the grader's launcher (built the
same way) has noted its start in the record. For
4.24 the stand-in is paced (each answer waits PACE_MS, as real work would),
so the job lasts long enough for `docker pause` to freeze the whole
sandbox, supervisor and worker together, in the middle of it: after the
thaw the supervisor's clock has jumped, and one that takes that for a
worker that stopped answering restarts a worker that never crashed.

For 4.25 the roles turn: the lab's own supervisor (images/supervisor/
supervisor.py, read from the repository at grading time) runs in --spawn
mode with the student's compiled worker as ./hardcore_worker (behind the
recording launcher of 4.23), and its outputs (results.csv, corrupted.csv,
rejected.csv, dead-letter.csv) are read back and judged on the host by
labctl.oracle against the input.

The supervisor's own output is judged only for 4.23 (the answers must show
in it); everything else is judged from the record and the exit status.
Every run is drawn (gradeplot.py) into the submission's folder: the
workers' lives from the record, the supervisor's restarts and signals, the
lines fed over time, the crash and pause windows shaded.
"""
from __future__ import annotations

import random
import re
import tempfile
import threading
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl import oracle, states
from labctl.errors import ExitCode, LabError
from labctl.grade import gradeplot, reference
from labctl.grade.gradeplot import Mark, Picture, Span, Window, shown
from labctl.grade.runner import Check, Context, Outcome
from labctl.grade.sandbox import CASE_DIR, RECORD_NAME, RunResult, RunSpec, Sandbox

SUPERVISOR, WORKER = "supervisor.py", "hardcore_worker.c"
INPUT, LOCK, GENERATOR = "input.dat", "cworker.lock", "generateData.py"
BUG = "999"  # the worker's bug trigger
STANDIN_BIN, PACED_BIN, NAIVE_BIN = "standin_worker", "paced_standin_worker", "naive_standin_worker"
RECORD_EXEC_BIN = "record_exec"
PACE_MS = 2
STANDIN_ARGS = ("--plain-lock", "--flush-every-line", "--record", "@" + RECORD_NAME)
NAIVE_ARGS = ("--mode", "naive")
ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
RUN_TIMEOUT_S = 20.0
FLOOD_LINES = 200_000
FLOOD_TIMEOUT_S = 60.0
# 4.24: a job of PAUSE_LINES lines at the paced worker's speed (about 5 s),
# frozen PAUSE_S by `docker pause` at a moment in PAUSE_AT_S: before the
# worker has handled half of it. The run's own clock runs on while frozen.
PAUSE_LINES = 2000
PAUSE_AT_S = (1.0, 1.5)
PAUSE_S = 3.0
PAUSE_TIMEOUT_S = RUN_TIMEOUT_S + PAUSE_S
GENERATED_MARK = ".generated"
# A reading and its square as a supervisor shows them, e.g. "42,1764"; not
# the tail of a timestamp ("10:00:05,025"), nor a piece of a longer number.
ANSWER_RE = re.compile(r"(?<![\d:.,-])(\d+)\s*,\s*(\d+)(?![\d.])")


# ------------------------------------------------------------------ the stand-in worker

_standins: weakref.WeakKeyDictionary[Sandbox, dict[str, str]] = weakref.WeakKeyDictionary()
_standins_lock = threading.Lock()


def paced_source() -> bytes:
    """The paced stand-in: the lab's worker whose every write to stdout (one
    answer per line, with --flush-every-line) waits PACE_MS first, as a worker
    with real work to do takes time, so that a job lasts long enough for a
    fault to land in the middle of it. What it records is unchanged."""
    prelude = ("/* The grader's paced stand-in: each answer waits PACE_MS before it is written. */\n"
               "#define _GNU_SOURCE\n#include <time.h>\n#include <unistd.h>\n"
               "static ssize_t grader_paced_write(int fd, const void *buf, size_t n)\n{\n"
               "    if (fd == STDOUT_FILENO) {\n"
               f"        struct timespec pace = {{0, {PACE_MS * 1_000_000}L}};\n"
               "        nanosleep(&pace, NULL);\n    }\n    return write(fd, buf, n);\n}\n"
               "#define write(fd, buf, n) grader_paced_write(fd, buf, n)\n")
    return prelude.encode() + reference.worker_source(STANDIN_ARGS, "the grader's paced stand-in hardcore_worker")


# The launcher of 4.23 and 4.25: notes a start of the student's own worker
# in the record, as the stand-in notes its own, then execs the worker, which
# keeps the PID (the supervisor's child is still the worker itself).
RECORD_EXEC_SOURCE = r"""
#define _GNU_SOURCE
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2)
        return 64;
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(RECORD_NAME);
    memcpy(sa.sun_path + 1, RECORD_NAME, len);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, salen) == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        char buf[160];
        int n = snprintf(buf, sizeof buf, "%s %lld %ld start own\n", WORKER_RECORD_TOKEN,
                         (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, (long)getpid());
        if (n > 0)
            send(fd, buf, (size_t)n, MSG_NOSIGNAL);
    }
    execv(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
"""


def with_token(ctx: Context, source: bytes, record_name: str = RECORD_NAME) -> bytes:
    """source, built to mark its records with this sandbox's token (sandbox.build_private)."""
    head = (f'#define WORKER_RECORD_TOKEN "{ctx.sandbox.record_token}"\n'
            f'#define RECORD_NAME "{record_name}"\n')
    return head.encode() + source


def private_binary(ctx: Context, name: str, source: bytes) -> str:
    """A grader program, built once per sandbox: run-only for the student."""
    with _standins_lock:
        found = _standins.get(ctx.sandbox, {}).get(name)
    if found:
        return found
    path = ctx.sandbox.build_private(name, with_token(ctx, source))
    with _standins_lock:
        _standins.setdefault(ctx.sandbox, {})[name] = path
    return path


def standin(ctx: Context, paced: bool = False, naive: bool = False) -> str:
    """The stand-in's binary (or the paced one's, or the naive one's) in this
    submission's sandbox. Each is a build of its own: a stand-in takes no
    command-line options (worker.c, WORKER_RECORD_TOKEN), so that nothing the
    supervisor passes can redirect its record or change its mode."""
    if paced:
        return private_binary(ctx, PACED_BIN, paced_source())
    if naive:
        return private_binary(ctx, NAIVE_BIN, reference.worker_source(
            (*STANDIN_ARGS, *NAIVE_ARGS), "the grader's naive stand-in hardcore_worker"))
    return private_binary(ctx, STANDIN_BIN,
                          reference.worker_source(STANDIN_ARGS, "the grader's stand-in hardcore_worker"))


def launcher(binary: str, args: Sequence[str] = ()) -> bytes:
    """./hardcore_worker: exec, so the supervisor's child is the worker itself."""
    return f'#!/bin/sh\nexec {binary} {" ".join(args)} "$@"\n'.encode()


def recording_launcher(ctx: Context, binary: str) -> bytes:
    """./hardcore_worker for the student's own worker: the grader's launcher
    notes each start (time and PID) in the record, then execs the worker."""
    return launcher(private_binary(ctx, RECORD_EXEC_BIN, RECORD_EXEC_SOURCE.encode()), [binary])


def supervise(ctx: Context, worker: bytes, files: dict[str, bytes], timeout: float = RUN_TIMEOUT_S,
              host_actions: Sequence[tuple[str, float, float]] = ()) -> RunResult:
    """One run of the student's supervisor with ./hardcore_worker and these files beside it."""
    return ctx.run(RunSpec(["sh", "-c", f"chmod 755 hardcore_worker && exec python3 {SUPERVISOR}"],
                           files={SUPERVISOR: ctx.source(SUPERVISOR), "hardcore_worker": worker, **files},
                           env=ENV, timeout=timeout, snapshot_at_exit=[LOCK, GENERATED_MARK], record=True),
                   host_actions)


# ------------------------------------------------------------------ the record


@dataclass
class Incarnation:
    """One start of the stand-in, as its record tells it."""

    pid: int
    start_ms: int
    lines: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    refused: bool = False
    eof: bool = False
    exit_code: int | None = None
    exit_ms: int | None = None
    line_ms: list[int] = field(default_factory=list)  # when each line was handled
    signal_ms: list[int] = field(default_factory=list)  # when each signal arrived
    last_ms: int = 0  # its last record

    @property
    def crashed(self) -> bool:
        return any(s not in ("TERM", "INT") for s in self.signals) or (self.exit_code is None and not self.refused)

    @property
    def fatal_signal(self) -> str | None:
        """The signal that killed it, as its handler recorded it (SEGV), if any."""
        return next((s for s in self.signals if s not in ("TERM", "INT")), None)


def incarnations(record: bytes | None) -> list[Incarnation]:
    out: dict[int, Incarnation] = {}
    for raw in (record or b"").decode("utf-8", "replace").splitlines():
        parts = raw.split(" ", 3)
        if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        ms, pid, event = int(parts[0]), int(parts[1]), parts[2]
        detail = parts[3] if len(parts) > 3 else ""
        inc = out.setdefault(pid, Incarnation(pid, ms))
        inc.events.append(event)
        inc.last_ms = max(inc.last_ms, ms)
        if event == "line":
            inc.lines.append(detail)
            inc.line_ms.append(ms)
        elif event == "signal":
            inc.signals.append(detail)
            inc.signal_ms.append(ms)
        elif event == "lock-refused":
            inc.refused = True
        elif event == "eof":
            inc.eof = True
        elif event == "exit":
            inc.exit_code, inc.exit_ms = int(detail) if detail.lstrip("-").isdigit() else None, ms
    return sorted(out.values(), key=lambda i: i.start_ms)


def describe(incs: list[Incarnation], limit: int = 6) -> str:
    if not incs:
        return "no worker was started"
    parts = []
    for n, inc in enumerate(incs[:limit], 1):
        end = ("refused to start: the lock file was there" if inc.refused else
               f"got {', '.join('SIG' + s for s in inc.signals)}" if inc.signals else
               f"exited {inc.exit_code}" if inc.exit_code is not None else "was killed (SIGKILL?)")
        fed = ", ".join(inc.lines[:8]) + (f", ... ({len(inc.lines)} lines)" if len(inc.lines) > 8 else "")
        parts.append(f"worker {n} (pid {inc.pid}): fed [{fed}]; {end}")
    if len(incs) > limit:
        parts.append(f"... {len(incs) - limit} more workers started")
    return "\n".join(parts)


@dataclass
class SystemRun:
    values: list[str]
    result: RunResult
    incs: list[Incarnation]

    def seen(self, what: str) -> str:
        shown = ", ".join(self.values) if len(self.values) <= 40 else f"{len(self.values)} lines"
        forged = (f"\n{self.result.record_forged} message(s) sent to the grader's record socket did not come "
                  "from the grader's programs: ignored" if self.result.record_forged else "")
        return (f"{INPUT}: {shown}\n{what}\n\nthe workers the supervisor started:\n{describe(self.incs)}{forged}\n\n"
                f"supervisor: {self.result.summary(1200)}")


def system_run(ctx: Context, values: list[str], *, naive: bool = False, files: dict[str, bytes] | None = None,
               timeout: float = RUN_TIMEOUT_S, with_input: bool = True, paced: bool = False,
               host_actions: Sequence[tuple[str, float, float]] = ()) -> SystemRun:
    data = "".join(f"{v}\n" for v in values).encode()
    extra = dict(files or {})
    if with_input:
        extra[INPUT] = data
    r = supervise(ctx, launcher(standin(ctx, paced, naive)), extra, timeout, host_actions)
    return SystemRun(values, r, incarnations(r.record))


def readings(rng: random.Random, n: int) -> list[str]:
    return [str(rng.randint(1, 100)) for _ in range(n)]


# ------------------------------------------------------------------ the timeline pictures


def run_t0(s: SystemRun) -> float:
    """The supervisor's start on the sandbox's clock, which the record's times share."""
    if s.result.t_start is not None:
        return s.result.t_start
    return min((inc.start_ms for inc in s.incs), default=0) / 1000


def short_status(r: RunResult) -> str:
    if r.error or r.timed_out:
        return "time limit"
    return f"exit {r.exit_code}" if r.signal is None else f"signal {r.signal}"


def after_span(inc: Incarnation, stop: float, nxt: float) -> Span | None:
    """What the worker was from its end until the next one started (or the run ended)."""
    if nxt <= stop:
        return None
    sig = inc.fatal_signal
    if sig is not None:
        return Span(stop, nxt, f"crashed (SIG{sig})", states.CRASHED)
    if inc.exit_code is None:
        if inc.lines and inc.lines[-1].strip() == BUG:
            return Span(stop, nxt, f"crashed ({BUG})", states.CRASHED)
        return Span(stop, nxt, "killed", states.DEAD)
    return Span(stop, nxt, f"exited {inc.exit_code}", states.STOPPED)


def worker_lane(incs: list[Incarnation], t0: float, end: float,
                instrumented: bool = True) -> tuple[list[Span], list[Mark], list[Window]]:
    """The truth about the workers: each one's life, how it ended, and crash windows."""
    spans: list[Span] = []
    marks: list[Mark] = []
    windows: list[Window] = []
    for i, inc in enumerate(incs):
        start = inc.start_ms / 1000 - t0
        nxt = incs[i + 1].start_ms / 1000 - t0 if i + 1 < len(incs) else end
        if inc.refused:
            marks.append(Mark(start, "refused: lock"))
            continue
        label, state = ("running", states.RUNNING) if i == 0 else ("restarted", states.RESTARTED)
        stop = nxt if not instrumented else (inc.exit_ms if inc.exit_ms is not None else inc.last_ms) / 1000 - t0
        spans.append(Span(start, stop, label, state))
        after = after_span(inc, stop, nxt) if instrumented else None
        if after is not None:
            spans.append(after)
            if after.state == states.CRASHED:
                windows.append(Window(stop, nxt, f"crash on {inc.lines[-1].strip()}" if inc.lines else "crash"))
    return spans, marks, windows


def supervisor_lane(s: SystemRun, t0: float, end: float) -> tuple[list[Span], list[Mark]]:
    """The supervisor's life, and what it did to its workers: restarts and signals."""
    r = s.result
    sup_end = end if r.error else r.elapsed
    marks = [Mark(inc.start_ms / 1000 - t0, "restart") for inc in s.incs[1:]]
    for inc in s.incs:
        marks += [Mark(ms / 1000 - t0, f"SIG{sig}") for sig, ms in zip(inc.signals, inc.signal_ms, strict=False)
                  if sig in ("TERM", "INT")]
    marks.append(Mark(sup_end, short_status(r)))
    return [Span(0.0, sup_end, "running", states.RUNNING)], marks


def picture(tests: str, title: str, s: SystemRun, instrumented: bool = True, note: str = "") -> Picture:
    """One run of the supervisor as a timeline (gradeplot draws it)."""
    t0 = run_t0(s)
    r = s.result
    end = max([r.elapsed, *(inc.last_ms / 1000 - t0 for inc in s.incs), *(e.at_s for e in r.host_events), 0.5])
    pauses = gradeplot.pause_windows(r.host_events, end)
    frozen = gradeplot.paused_spans(pauses)
    truth, truth_marks, crashes = worker_lane(s.incs, t0, end, instrumented)
    said, said_marks = supervisor_lane(s, t0, end)
    times = sorted(ms for inc in s.incs for ms in inc.line_ms)
    progress = [(0.0, 0.0), *((ms / 1000 - t0, float(k)) for k, ms in enumerate(times, 1))]
    return Picture(tests, title, end, "supervisor", "lines fed", truth=gradeplot.overlay(truth, frozen),
                   said=gradeplot.overlay(said, frozen), said_marks=said_marks, truth_marks=truth_marks,
                   progress=progress if times else [], progress_note=note, windows=[*crashes, *pauses])


def draw(ctx: Context, key: str, title: str, s: SystemRun, **kw: Any) -> list[str]:
    """The run's picture (key: the tests that judge it, e.g. 4.17-4.18)."""
    return gradeplot.draw(ctx, key, lambda: picture(", ".join(key.split("-")), title, s, **kw))


# ------------------------------------------------------------------ 4.17, 4.18: a crash on 999


def crash_values(ctx: Context) -> list[str]:
    rng = ctx.rng_for("sup:crash")
    return [*readings(rng, 6), "-10", *readings(rng, 5), "999", *readings(rng, 6), "-25", *readings(rng, 3)]


def crash_run(ctx: Context) -> SystemRun:
    return ctx.memo("sup:crash", lambda: system_run(ctx, crash_values(ctx)))


def first_unfed(values: list[str], fed: list[str]) -> int | None:
    """The position of the first input line that the fed sequence does not
    contain in order (duplicates allowed); None if every line was fed."""
    at = 0
    for i, v in enumerate(values):
        while at < len(fed) and fed[at].strip() != v:
            at += 1
        if at == len(fed):
            return i
        at += 1
    return None


def check_every_line(ctx: Context) -> Outcome:
    """4.17: every line of input.dat reaches a worker, in order."""
    s = crash_run(ctx)
    return shown(judge_every_line(s), draw(ctx, "4.17-4.18", "a crash on 999, and the job goes on", s))


def judge_every_line(s: SystemRun) -> Outcome:
    fed = [line for inc in s.incs for line in inc.lines]
    missing = first_unfed(s.values, fed)
    if s.result.error or missing is not None:
        what = (f"the run broke: {s.result.error}" if s.result.error else
                f"line {missing + 1} ({s.values[missing]}) and what follows it never reached a worker in order"
                if missing is not None else "")
        return Outcome.fail(s.seen(what))
    return Outcome.ok(f"all {len(s.values)} lines reached a worker, in order")


def check_one_restart(ctx: Context) -> Outcome:
    """4.18: one restart after the crash on 999, feeding from the line after it."""
    s = crash_run(ctx)
    return shown(judge_one_restart(s), draw(ctx, "4.17-4.18", "a crash on 999, and the job goes on", s))


def judge_one_restart(s: SystemRun) -> Outcome:
    bug = s.values.index(BUG)
    problems = []
    if not s.incs:
        problems.append("no worker was started")
    elif BUG not in [ln.strip() for ln in s.incs[0].lines] or not s.incs[0].crashed:
        problems.append("the first worker did not crash on 999")
    elif len(s.incs) == 1:
        problems.append("after the crash on 999 no new worker was started")
    elif len(s.incs) > 2:
        problems.append(f"{len(s.incs) - 1} restarts; expected exactly one")
    elif s.incs[1].lines[:1] != [s.values[bug + 1]]:
        got = s.incs[1].lines[0] if s.incs[1].lines else "nothing"
        problems.append(f"the new worker's first line was {got}; expected {s.values[bug + 1]}, the line after 999")
    if s.result.error or problems:
        return Outcome.fail(s.seen("\n".join(problems) or f"the run broke: {s.result.error}"))
    return Outcome.ok(f"one restart after 999; the new worker started at line {bug + 2} ({s.values[bug + 1]})")


# ------------------------------------------------------------------ 4.19: SIGTERM at the end


def check_sigterm_at_end(ctx: Context) -> Outcome:
    """4.19: with the input done, SIGTERM to the worker, and the supervisor waits for it."""
    rng = ctx.rng
    values = [*readings(rng, 8), str(-rng.randint(1, 100)), *readings(rng, 6)]
    s = system_run(ctx, values)
    return shown(judge_sigterm_at_end(s), draw(ctx, "4.19", "the input done: SIGTERM, then wait", s))


def judge_sigterm_at_end(s: SystemRun) -> Outcome:
    r = s.result
    last = s.incs[-1] if s.incs else None
    problems = []
    if r.error or not r.ended_by_itself:
        problems.append(f"the supervisor did not end within {RUN_TIMEOUT_S:g} s: {r.status}")
    elif last is None:
        problems.append("no worker was started")
    elif "TERM" not in last.signals:
        how = ("its stdin was closed and it ended by itself (EOF)" if last.eof else
               "it was killed without SIGTERM" if last.exit_code is None else f"it exited {last.exit_code}")
        problems.append(f"the worker never got SIGTERM: {how}")
    elif last.exit_ms is None or (r.t_end is not None and last.exit_ms > r.t_end * 1000 + 1):
        problems.append("the worker got SIGTERM, but the supervisor did not wait for it to exit (it was still "
                        "running when the supervisor ended)")
    if problems:
        return Outcome.fail(s.seen("\n".join(problems)))
    assert last is not None
    return Outcome.ok(f"the worker got SIGTERM and exited {last.exit_code} before the supervisor ended ({r.status})")


# ------------------------------------------------------------------ 4.20: a stderr flood


def check_stderr_flood(ctx: Context) -> Outcome:
    """4.20: 200,000 negative readings (an error line each on the worker's stderr) within the limit."""
    rng = ctx.rng
    values = [str(-rng.randint(1, 100)) for _ in range(FLOOD_LINES)]
    s = system_run(ctx, values, timeout=FLOOD_TIMEOUT_S)
    return shown(judge_stderr_flood(s), draw(ctx, "4.20", f"{FLOOD_LINES:,} errors on the worker's stderr", s))


def judge_stderr_flood(s: SystemRun) -> Outcome:
    r = s.result
    fed = sum(len(inc.lines) for inc in s.incs)
    if r.error or not r.ended_by_itself:
        return Outcome.fail(s.seen(f"the supervisor did not finish within {FLOOD_TIMEOUT_S:g} s ({r.status}); the "
                                   f"workers had handled {fed} of {FLOOD_LINES} lines: a deadlock on a full pipe?"))
    if fed < FLOOD_LINES:
        return Outcome.fail(s.seen(f"the supervisor ended ({r.status}) after only {fed} of the {FLOOD_LINES} lines "
                                   "reached a worker"))
    return Outcome.ok(f"all {FLOOD_LINES} lines handled and the supervisor ended after {r.elapsed:.1f} s "
                      f"({r.status})")


# ------------------------------------------------------------------ 4.21: a stale lock


def check_stale_lock(ctx: Context) -> Outcome:
    """4.21: after a crash that left cworker.lock, it is cleared before the next worker starts."""
    rng = ctx.rng
    values = [*readings(rng, 4), BUG, *readings(rng, 4)]
    s = system_run(ctx, values, naive=True)
    return shown(judge_stale_lock(s), draw(ctx, "4.21", f"a crash that leaves {LOCK} behind", s))


def judge_stale_lock(s: SystemRun) -> Outcome:
    r = s.result
    problems = []
    if not s.incs or not s.incs[0].crashed:
        problems.append("the first worker did not crash on 999, so no stale lock could be judged")
    elif len(s.incs) > 1 and s.incs[1].refused:
        problems.append(f"the next worker found the dead worker's {LOCK} and refused to start: the supervisor "
                        "did not clear the stale lock first")
    elif len(s.incs) == 1 and r.at_exit.get(LOCK) is not None:
        problems.append(f"the dead worker's {LOCK} was still there when the supervisor ended")
    if r.error or problems:
        return Outcome.fail(s.seen("\n".join(problems) or f"the run broke: {r.error}"))
    if len(s.incs) > 1:
        return Outcome.ok(f"the crash left {LOCK}; it was cleared and the next worker (pid {s.incs[1].pid}) took it")
    return Outcome.ok(f"the crash left {LOCK}; it was cleared (no new worker was started)")


# ------------------------------------------------------------------ 4.22: generateData.py


def generator_stub(values: list[str]) -> bytes:
    """The grader's generateData.py: known data, and a mark that it ran
    (also when imported rather than run)."""
    data = "".join(f"{v}\n" for v in values)
    return ("# The grader's stand-in for generateData.py.\n"
            f"open({GENERATED_MARK!r}, 'w').close()\n"
            f"with open({INPUT!r}, 'w') as f:\n    f.write({data!r})\n"
            f"print('Generated {len(values)} readings in {INPUT}')\n").encode()


def check_generates(ctx: Context) -> Outcome:
    """4.22: without input.dat, generateData.py runs first, and its data is fed."""
    values = readings(ctx.rng, 6)
    s = system_run(ctx, values, files={GENERATOR: generator_stub(values)}, with_input=False)
    return shown(judge_generates(s), draw(ctx, "4.22", f"no {INPUT}: {GENERATOR} first", s))


def judge_generates(s: SystemRun) -> Outcome:
    r = s.result
    problems = []
    if r.at_exit.get(GENERATED_MARK) is None:
        problems.append(f"with no {INPUT}, the supervisor did not run {GENERATOR}")
    elif not s.incs or s.incs[0].lines[:1] != s.values[:1]:
        problems.append(f"{GENERATOR} ran, but its data ({', '.join(s.values)}) did not reach the worker")
    if r.error or problems:
        return Outcome.fail(s.seen("\n".join(problems) or f"the run broke: {r.error}"))
    return Outcome.ok(f"{GENERATOR} ran first and its {len(s.values)} readings were fed")


# ------------------------------------------------------------------ 4.23: with the student's own worker


def answers_in(text: str) -> Counter[int]:
    """The readings whose 'n,n*n' answer appears in text, with multiplicity."""
    return Counter(int(n) for n, sq in ANSWER_RE.findall(text) if int(sq) == int(n) ** 2)


def check_own_worker(ctx: Context) -> Outcome:
    """4.23: the supervisor drives the student's worker through the whole input, crash included."""
    rng = ctx.rng_for("sup:own")
    values = [*readings(rng, 12), "-10", *readings(rng, 6), BUG, *readings(rng, 8), "-25", *readings(rng, 4)]
    data = "".join(f"{v}\n" for v in values).encode()
    r = supervise(ctx, recording_launcher(ctx, ctx.binary(WORKER)), {INPUT: data})
    s = SystemRun(values, r, incarnations(r.record))
    out, note = judge_own_worker(s)
    return shown(out, draw(ctx, "4.23", "your own worker, crash on 999 included", s, instrumented=False, note=note))


def judge_own_worker(s: SystemRun) -> tuple[Outcome, str]:
    """The outcome, and a line for the picture (what was answered: your worker is not instrumented)."""
    values, r = s.values, s.result
    want = Counter(int(v) for v in values if v != BUG and int(v) > 0)
    got = answers_in(r.stdout_text() + "\n" + r.stderr_text())
    missing = want - got
    after = values[values.index(BUG) + 1:]
    note = (f"{sum((want & got).values())} of the {sum(want.values())} valid readings answered in the "
            "supervisor's output (your worker is not instrumented: only its starts are known)")
    problems = []
    if r.error or not r.ended_by_itself:
        problems.append(f"the supervisor did not end within {RUN_TIMEOUT_S:g} s: {r.status}")
    if missing:
        late = sorted(set(missing) & {int(v) for v in after if int(v) > 0})
        problems.append(f"no answer 'n,n*n' in the supervisor's output for {sum(missing.values())} of the "
                        f"{sum(want.values())} valid readings, e.g. {sorted(missing)[:6]}"
                        + (f" (after the 999: {late[:6]})" if late else "")
                        + "; the answers must show in what the supervisor prints or logs")
    if problems:
        return Outcome.fail(f"{INPUT}: {', '.join(values)}\n" + "\n".join(problems) + f"\n\nsupervisor: "
                            f"{r.summary(1500)}"), note
    return Outcome.ok(f"all {sum(want.values())} valid readings answered, the crash on 999 included "
                      f"({r.status})"), note


# ------------------------------------------------------------------ 4.24: docker pause of the whole sandbox


def pause_plan(ctx: Context) -> tuple[list[str], float]:
    """The job's readings and when the pause starts (s after the supervisor started)."""
    rng = ctx.rng
    return readings(rng, PAUSE_LINES), round(rng.uniform(*PAUSE_AT_S), 2)


def check_pause(ctx: Context) -> Outcome:
    """4.24: the whole sandbox is frozen for PAUSE_S mid-job, supervisor and worker
    alike; after the thaw the job goes on with the same worker, no line lost or
    fed twice."""
    values, at_s = pause_plan(ctx)
    s = system_run(ctx, values, paced=True, timeout=PAUSE_TIMEOUT_S, host_actions=[("pause", at_s, PAUSE_S)])
    refused = [e.fault for e in s.result.host_events if e.fault.startswith("pause refused")]
    if refused:
        raise LabError(ExitCode.GRADER_ERROR, f"the sandbox could not be paused: {refused[0]}",
                       "docker pause needs the engine's freezer cgroup")
    out = judge_pause(s)
    out.timeline = list(s.result.host_events)
    if out.passed and not any(e.fault == gradeplot.PAUSE for e in s.result.host_events):
        raise LabError(ExitCode.GRADER_ERROR, f"the job ended before the pause at {at_s:g} s: the paced worker "
                       "was faster than it can be", "see ex4_supervisor.PACE_MS")
    return shown(out, draw(ctx, "4.24", f"docker pause of the whole sandbox for {PAUSE_S:g} s, mid-job", s))


def pause_window(s: SystemRun) -> tuple[float, float] | None:
    """When the sandbox was frozen, on the record's clock (ms), from the host's events."""
    w = gradeplot.pause_windows(s.result.host_events, s.result.elapsed)
    if not w:
        return None
    t0 = run_t0(s) * 1000
    return t0 + w[0].start * 1000, t0 + w[0].end * 1000


def judge_pause(s: SystemRun) -> Outcome:
    """Passed: the run ended by itself, one worker handled every line exactly once, in order."""
    r = s.result
    fed = [ln.strip() for inc in s.incs for ln in inc.lines]
    problems = []
    if r.error or not r.ended_by_itself:
        problems.append(f"the supervisor did not end within {PAUSE_TIMEOUT_S:g} s: {r.status}")
    if not s.incs:
        problems.append("no worker was started")
    elif len(s.incs) > 1:
        problems.append(f"{len(s.incs) - 1} restart(s): the worker never crashed, it was frozen along with the "
                        "supervisor and thawed with it; a supervisor that counts the time the pause took as "
                        "time without an answer takes a pause for a dead or hung worker")
    if s.incs and fed != s.values:
        problems.append(fed_difference(s.values, fed))
    window = pause_window(s)
    before = sum(ms < window[0] for inc in s.incs for ms in inc.line_ms) if window else 0
    when = (f"the sandbox was paused for {PAUSE_S:g} s after {before} of the {len(s.values)} lines had been "
            "handled" if window else "the sandbox was not paused: the run ended first")
    if problems:
        return Outcome.fail(s.seen(when + "\n" + "\n".join(problems)))
    inc = s.incs[0]
    end = (f"got SIG{inc.signals[-1]}" if inc.signals else "was killed" if inc.exit_code is None else
           f"exited {inc.exit_code}")
    return Outcome.ok(f"{when}; after the thaw the same worker (pid {inc.pid}) went on and handled all "
                      f"{len(s.values)} lines exactly once, in order; at the end it {end} ({r.status})")


def fed_difference(values: list[str], fed: list[str]) -> str:
    """Where what the workers were fed first differs from input.dat."""
    i = next((k for k, (a, b) in enumerate(zip(values, fed, strict=False)) if a != b), min(len(values), len(fed)))
    extra = len(fed) - len(values)
    count = (f"{extra} line(s) more than input.dat holds (fed twice)" if extra > 0 else
             f"{-extra} line(s) of input.dat never reached a worker" if extra < 0 else "as many lines as input.dat")
    got = fed[i] if i < len(fed) else "nothing more"
    want = values[i] if i < len(values) else "nothing more"
    return (f"the workers were fed {len(fed)} lines, {count}; the first difference is at line {i + 1}: "
            f"input.dat has {want}, the worker got {got}")


# ------------------------------------------------------------------ 4.25: your worker under the lab's supervisor

LAB_OUT = "out"  # the lab supervisor's --output, in the case directory
LAB_OUTPUTS = ("results.csv", "corrupted.csv", "rejected.csv", "dead-letter.csv", "summary.json")
# The lab's supervisor as the sheet runs it (supervisor.EXERCISE_ARGS), with
# the input given and no generator: one crash on a line dead-letters it.
LAB_ARGS = ("--spawn", "./hardcore_worker", "--input", INPUT, "--output", LAB_OUT, "--worker-lock", LOCK,
            "--max-item-crashes", "1", "--fresh")
LAB_READINGS = 300
LAB_SPECIALS = ("-10", "0", BUG, "-25", "abc", "12abc")  # the faults, and two malformed lines
LAB_LOG_LINES = 12


def lab_supervisor() -> bytes:
    """The lab's supervisor, read from the repository now: the lab's program, not a hidden answer."""
    return reference.SOURCES[SUPERVISOR].read_bytes()


def lab_values(rng: random.Random) -> list[str]:
    """A few hundred readings in 1..100, the fault values and two malformed
    lines put among them (each after the first ten readings), in their order."""
    values = readings(rng, LAB_READINGS)
    at = sorted(rng.sample(range(10, LAB_READINGS), len(LAB_SPECIALS)), reverse=True)
    for pos, v in zip(at, reversed(LAB_SPECIALS), strict=True):
        values.insert(pos, v)
    return values


def lab_hint(problems: list[str], r: RunResult) -> str:
    """What the problems most likely mean for the student's worker."""
    text = "\n".join(problems)
    hints = []
    if r.error or not r.ended_by_itself:
        hints.append("the job never finished: does your worker answer every line at once (fflush(stdout)) and "
                     "exit at the end of its input or on SIGTERM?")
    if "dead-letter.csv" in text:
        hints.append("999 must kill your worker (SIGSEGV, or a non-zero exit after the handler); a worker that "
                     "answers it, or exits 0, hides the crash, and the supervisor cannot isolate the line")
    if "rejected.csv" in text or "not valid" in text:
        hints.append("a line that is not a whole number must get an ERROR line on stderr, not an answer: parse "
                     "with strtol and check the end pointer (atoi turns 'abc' into 0,0)")
    if "lost" in text or "more than once" in text:
        hints.append("every valid reading must be answered exactly once on stdout as n,n*n, flushed as it is made")
    if "squared is" in text:
        hints.append("a square must be computed in a 64-bit type (long) and printed with %ld")
    if "corrupted.csv" in text:
        hints.append("a negative reading must get an ERROR line on stderr (naming the reading) and no answer")
    return "\n".join(f"hint: {h}" for h in hints)


def lab_run(ctx: Context, values: list[str]) -> tuple[SystemRun, list[str]]:
    """The lab's supervisor over the student's worker; the run, and the oracle's problems with its outputs."""
    data = "".join(f"{v}\n" for v in values).encode()
    argv = ["sh", "-c", f"chmod 755 hardcore_worker && exec python3 {SUPERVISOR} " + " ".join(LAB_ARGS)]
    r = ctx.run(RunSpec(argv, files={SUPERVISOR: lab_supervisor(),
                                     "hardcore_worker": recording_launcher(ctx, ctx.binary(WORKER)), INPUT: data},
                        env=ENV, timeout=RUN_TIMEOUT_S, record=True))
    s = SystemRun(values, r, incarnations(r.record))
    with tempfile.TemporaryDirectory(prefix="labctl-4.25-") as tmp:
        d = Path(tmp)
        (d / INPUT).write_bytes(data)
        out = d / LAB_OUT
        out.mkdir()
        for name in LAB_OUTPUTS:
            got = ctx.sandbox.read_file(f"{CASE_DIR}/{LAB_OUT}/{name}")
            if got is not None:
                (out / name).write_bytes(got)
        problems = oracle.compare(out, d / INPUT, int(BUG))
    return s, problems


def check_lab_supervisor(ctx: Context) -> Outcome:
    """4.25: the student's worker under the lab's supervisor; the outputs judged by the oracle."""
    values = lab_values(ctx.rng)
    s, problems = lab_run(ctx, values)
    out, note = judge_lab_supervisor(s, problems)
    return shown(out, draw(ctx, "4.25", "your worker under the lab's supervisor", s, instrumented=False, note=note))


def judge_lab_supervisor(s: SystemRun, problems: list[str]) -> tuple[Outcome, str]:
    r = s.result
    problems = list(problems)
    if r.error or not r.ended_by_itself:
        problems.insert(0, f"the lab's supervisor did not end within {RUN_TIMEOUT_S:g} s: {r.status}")
    elif r.exit_code != 0 or r.signal is not None:
        problems.insert(0, f"the lab's supervisor did not complete the job: {r.status} (0 means complete)")
    starts = len(s.incs)
    note = f"{starts} start(s) of your worker (it is not instrumented: only its starts are known)"
    shown_values = ", ".join(s.values[:20]) + f", ... ({len(s.values)} lines)"
    if problems:
        log = "\n".join(r.stderr_lines()[-LAB_LOG_LINES:]) or "(nothing)"
        return Outcome.fail(
            f"{INPUT}: {shown_values}, with {', '.join(LAB_SPECIALS)} among them\n"
            f"`python3 {SUPERVISOR} {' '.join(LAB_ARGS)}` (the lab's supervisor) with your worker: {r.status}; "
            f"your worker was started {starts} time(s)\n"
            "what the oracle found wrong in the outputs:\n" + "\n".join(f"- {p}" for p in problems)
            + f"\n{lab_hint(problems, r)}\n\nthe supervisor's last log lines:\n{log}"), note
    valid = len(values_valid(s.values))
    return Outcome.ok(f"the lab's supervisor completed the job with your worker ({r.status}, {starts} start(s)): "
                      f"all {valid} valid readings answered once with the right square, the negatives reported "
                      "as corrupted, the malformed lines rejected and 999 dead-lettered"), note


def values_valid(values: list[str]) -> list[tuple[int, int, int]]:
    return oracle.expected([v.encode() for v in values], int(BUG)).results


CHECKS: dict[str, Check] = {
    "4.17": check_every_line,
    "4.18": check_one_restart,
    "4.19": check_sigterm_at_end,
    "4.20": check_stderr_flood,
    "4.21": check_stale_lock,
    "4.22": check_generates,
    "4.23": check_own_worker,
    "4.24": check_pause,
    "4.25": check_lab_supervisor,
}
