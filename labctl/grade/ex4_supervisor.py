"""Exercise 4, supervisor.py: the system tests 4.17-4.23.

The student's supervisor runs as the sheet runs it, `python3 supervisor.py`
in the case directory, beside input.dat (or, for 4.22, a generateData.py)
and an executable ./hardcore_worker, the name the sheet gives the worker it
launches. For 4.17-4.22 that worker is the grader's stand-in: the lab's
worker in stdin mode, built with --record (labctl.grade.reference makes the
source), which appends to a record file every line it handles, every
signal that reaches it, its start (and a refused lock) and its exit, one
write each, so a worker that crashes still leaves all of it. Its lock
holds its PID alone, as the exercise's workers write it, and it answers
each line as it handles it. ./hardcore_worker is a two-line shell script
that execs it: the supervisor's child is the stand-in itself (same PID,
same exit status). For 4.21 the stand-in runs in naive mode: no handler,
so a crash leaves cworker.lock behind, and a pidfile lock that refuses to
start while any lock file exists. For 4.23 ./hardcore_worker execs the
student's own compiled worker.

The supervisor's own output is judged only for 4.23 (the answers must show
in it); everything else is judged from the record and the exit status.
"""
from __future__ import annotations

import random
import re
import threading
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from labctl.errors import ExitCode, LabError
from labctl.grade import reference
from labctl.grade.runner import Check, Context, Outcome
from labctl.grade.sandbox import CASE_DIR, RunResult, RunSpec, Sandbox

SUPERVISOR, WORKER = "supervisor.py", "hardcore_worker.c"
INPUT, LOCK, GENERATOR = "input.dat", "cworker.lock", "generateData.py"
RECORD = f"{CASE_DIR}/.worker-record"
STANDIN_SRC, STANDIN_BIN = ".standin_worker.c", "standin_worker"
STANDIN_ARGS = ("--plain-lock", "--flush-every-line", "--record", RECORD)
NAIVE_ARGS = ("--mode", "naive")
ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
RUN_TIMEOUT_S = 20.0
FLOOD_LINES = 200_000
FLOOD_TIMEOUT_S = 60.0
GENERATED_MARK = ".generated"
# A reading and its square as a supervisor shows them, e.g. "42,1764"; not
# the tail of a timestamp ("10:00:05,025"), nor a piece of a longer number.
ANSWER_RE = re.compile(r"(?<![\d:.,-])(\d+)\s*,\s*(\d+)(?![\d.])")


# ------------------------------------------------------------------ the stand-in worker

_standins: weakref.WeakKeyDictionary[Sandbox, str] = weakref.WeakKeyDictionary()
_standins_lock = threading.Lock()


def standin(ctx: Context) -> str:
    """The stand-in's binary in this submission's sandbox, compiled once."""
    with _standins_lock:
        found = _standins.get(ctx.sandbox)
    if found:
        return found
    ctx.sandbox.put_files({STANDIN_SRC: reference.worker_source(STANDIN_ARGS, "the grader's stand-in hardcore_worker")})
    c = ctx.sandbox.compile_c(STANDIN_SRC, STANDIN_BIN)
    if not c.ok:
        raise LabError(ExitCode.GRADER_ERROR, f"the grader's stand-in worker did not compile: {c.log[-800:]}",
                       "the lab's worker.c must build with the sandbox's compiler")
    with _standins_lock:
        _standins[ctx.sandbox] = c.binary
    return c.binary


def launcher(binary: str, args: Sequence[str] = ()) -> bytes:
    """./hardcore_worker: exec, so the supervisor's child is the worker itself."""
    return f'#!/bin/sh\nexec {binary} {" ".join(args)} "$@"\n'.encode()


def supervise(ctx: Context, worker: bytes, files: dict[str, bytes], timeout: float = RUN_TIMEOUT_S) -> RunResult:
    """One run of the student's supervisor with ./hardcore_worker and these files beside it."""
    return ctx.run(RunSpec(["sh", "-c", f"chmod 755 hardcore_worker && exec python3 {SUPERVISOR}"],
                           files={SUPERVISOR: ctx.source(SUPERVISOR), "hardcore_worker": worker, **files},
                           env=ENV, timeout=timeout, snapshot_at_exit=[LOCK, GENERATED_MARK]))


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

    @property
    def crashed(self) -> bool:
        return any(s not in ("TERM", "INT") for s in self.signals) or (self.exit_code is None and not self.refused)


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
        if event == "line":
            inc.lines.append(detail)
        elif event == "signal":
            inc.signals.append(detail)
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
        return (f"{INPUT}: {shown}\n{what}\n\nthe workers the supervisor started:\n{describe(self.incs)}\n\n"
                f"supervisor: {self.result.summary(1200)}")


def system_run(ctx: Context, values: list[str], *, naive: bool = False, files: dict[str, bytes] | None = None,
               timeout: float = RUN_TIMEOUT_S, with_input: bool = True) -> SystemRun:
    data = "".join(f"{v}\n" for v in values).encode()
    extra = dict(files or {})
    if with_input:
        extra[INPUT] = data
    r = supervise(ctx, launcher(standin(ctx), NAIVE_ARGS if naive else ()), extra, timeout)
    return SystemRun(values, r, incarnations(ctx.sandbox.read_file(RECORD)))


def readings(rng: random.Random, n: int) -> list[str]:
    return [str(rng.randint(1, 100)) for _ in range(n)]


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
    bug = s.values.index("999")
    problems = []
    if not s.incs:
        problems.append("no worker was started")
    elif "999" not in [ln.strip() for ln in s.incs[0].lines] or not s.incs[0].crashed:
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
    values = [*readings(rng, 4), "999", *readings(rng, 4)]
    s = system_run(ctx, values, naive=True)
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
    r = s.result
    problems = []
    if r.at_exit.get(GENERATED_MARK) is None:
        problems.append(f"with no {INPUT}, the supervisor did not run {GENERATOR}")
    elif not s.incs or s.incs[0].lines[:1] != values[:1]:
        problems.append(f"{GENERATOR} ran, but its data ({', '.join(values)}) did not reach the worker")
    if r.error or problems:
        return Outcome.fail(s.seen("\n".join(problems) or f"the run broke: {r.error}"))
    return Outcome.ok(f"{GENERATOR} ran first and its {len(values)} readings were fed")


# ------------------------------------------------------------------ 4.23: with the student's own worker


def answers_in(text: str) -> Counter[int]:
    """The readings whose 'n,n*n' answer appears in text, with multiplicity."""
    return Counter(int(n) for n, sq in ANSWER_RE.findall(text) if int(sq) == int(n) ** 2)


def check_own_worker(ctx: Context) -> Outcome:
    """4.23: the supervisor drives the student's worker through the whole input, crash included."""
    rng = ctx.rng_for("sup:own")
    values = [*readings(rng, 12), "-10", *readings(rng, 6), "999", *readings(rng, 8), "-25", *readings(rng, 4)]
    data = "".join(f"{v}\n" for v in values).encode()
    r = supervise(ctx, launcher(ctx.binary(WORKER)), {INPUT: data})
    want = Counter(int(v) for v in values if v not in ("999",) and int(v) > 0)
    got = answers_in(r.stdout_text() + "\n" + r.stderr_text())
    missing = want - got
    after = values[values.index("999") + 1:]
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
                            f"{r.summary(1500)}")
    return Outcome.ok(f"all {sum(want.values())} valid readings answered, the crash on 999 included ({r.status})")


CHECKS: dict[str, Check] = {
    "4.17": check_every_line,
    "4.18": check_one_restart,
    "4.19": check_sigterm_at_end,
    "4.20": check_stderr_flood,
    "4.21": check_stale_lock,
    "4.22": check_generates,
    "4.23": check_own_worker,
}
