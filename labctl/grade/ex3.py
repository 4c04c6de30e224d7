"""Exercise 3, naive_worker.c and robust_worker.c: tests 3.3-3.10 (3.1 and
3.2, the compiles, are the runner's).

Each worker runs in the case directory with a first reading on stdin and
stdin left open, as under a supervisor; a second later the grader writes
999 and one more reading. Its lock file is looked at before the 999 and
once it died. Time triggers, not the worker's answers, pace the run: an
exercise-3 worker need not flush its stdout, and its answers are not
what is graded here.

3.10 reads robust_worker.c's signal handlers with exercise 4's reader
(ex4_worker.unsafe_calls): a finding is informational.
"""
from __future__ import annotations

import re
import signal

from labctl.grade.ex4_worker import handler_safety
from labctl.grade.runner import Check, Context, Outcome
from labctl.grade.sandbox import RunResult, RunSpec, at, snapshot, write_stdin

NAIVE, ROBUST = "naive_worker.c", "robust_worker.c"
LOCKS = {NAIVE: "naive.lock", ROBUST: "robust.lock"}
LOOK_AT_S = 0.8  # the lock, while the worker waits for its next reading
BUG_AT_S = 1.0  # then 999
TIMEOUT_S = 3.5
# What a SIGSEGV handler's message says, in some words.
MESSAGE_RE = re.compile(r"segfault|segmentation|sigsegv|signal|crash|fatal|error|caught|received|fault", re.I)


def crash_run(ctx: Context, source: str) -> tuple[RunResult, int, int]:
    rng = ctx.rng_for(f"ex3:crash:{source}")
    a, b = rng.sample(range(1, 101), 2)  # b != a: an answer for b after 999 must mean it went on
    lock = LOCKS[source]
    r = ctx.run(RunSpec([ctx.binary(source)], stdin=f"{a}\n".encode(), keep_stdin_open=True, timeout=TIMEOUT_S,
                        actions=[snapshot([lock], at(LOOK_AT_S)), write_stdin(f"999\n{b}\n".encode(), at(BUG_AT_S))],
                        snapshot_at_exit=[lock]))
    return r, a, b


def crashed(ctx: Context, source: str) -> tuple[RunResult, int, int]:
    return ctx.memo(f"ex3:crash:{source}", lambda: crash_run(ctx, source))


def seen(a: int, b: int, what: str, r: RunResult) -> str:
    return f"stdin: {a}, then at {BUG_AT_S:g} s 999 and {b}\n{what}\n\n{r.summary()}"


def lock_while_running(r: RunResult, lock: str) -> bytes | None:
    snap = r.snapshot_of(0)
    return snap.files.get(lock) if snap else None


def why_no_crash(r: RunResult, b: int) -> str | None:
    """Why the run does not show the worker dying on 999; None if it does."""
    if r.error:
        return f"the run broke: {r.error}"
    if r.fired_action(1) is None:
        return f"the worker ended before 999 was sent: {r.status}"
    if not r.ended_by_itself:
        return f"after 999 (stdin still open) the worker did not die: {r.status}"
    if any(ln.replace(" ", "").startswith(f"{b},") for ln in r.stdout_lines()):
        return f"after 999 the worker still answered {b}: it did not crash on 999"
    return None


def check_creates_lock(ctx: Context, source: str) -> Outcome:
    r, a, b = crashed(ctx, source)
    lock = LOCKS[source]
    content = lock_while_running(r, lock)
    if content is None:
        return Outcome.fail(seen(a, b, f"no {lock} in the worker's directory {LOOK_AT_S:g} s after it started "
                                       f"(files at the end: {', '.join(r.files) or 'none'})", r))
    return Outcome.ok(f"{lock} existed {LOOK_AT_S:g} s after the start, holding {content[:60]!r}")


def check_naive_segfaults(ctx: Context) -> Outcome:
    """3.4: dies by SIGSEGV on 999."""
    r, a, b = crashed(ctx, NAIVE)
    problem = why_no_crash(r, b)
    if problem is None and r.signal != signal.SIGSEGV:
        problem = f"it died on 999, but not by SIGSEGV: {r.status}"
    if problem:
        return Outcome.fail(seen(a, b, problem, r))
    return Outcome.ok(f"on 999: {r.status}")


def check_naive_leaves_lock(ctx: Context) -> Outcome:
    """3.5: after the crash naive.lock is still there."""
    r, a, b = crashed(ctx, NAIVE)
    problem = why_no_crash(r, b)
    if problem is None and lock_while_running(r, "naive.lock") is None:
        problem = "there was no naive.lock while the worker ran, so none could be left behind"
    if problem is None and r.at_exit.get("naive.lock") is None:
        problem = "after the crash naive.lock was gone: the naive worker must not clean up (no handler)"
    if problem:
        return Outcome.fail(seen(a, b, problem, r))
    return Outcome.ok(f"after the crash ({r.status}) naive.lock is still there: a stale lock")


def check_robust_removes_lock(ctx: Context) -> Outcome:
    """3.7: the SIGSEGV handler removes robust.lock."""
    r, a, b = crashed(ctx, ROBUST)
    problem = why_no_crash(r, b)
    if problem is None and lock_while_running(r, "robust.lock") is None:
        problem = "there was no robust.lock while the worker ran, so none could be removed"
    if problem is None and r.at_exit.get("robust.lock") is not None:
        problem = f"after the crash ({r.status}) robust.lock is still there"
    if problem:
        return Outcome.fail(seen(a, b, problem, r))
    return Outcome.ok(f"robust.lock existed before 999 and was gone after the crash ({r.status})")


def check_robust_message(ctx: Context) -> Outcome:
    """3.8: the handler writes an error message to stderr (a line that came after the 999)."""
    r, a, b = crashed(ctx, ROBUST)
    problem = why_no_crash(r, b)
    write = r.fired_action(1)
    later = r.stderr_lines()[write.stderr_lines:] if write else []
    said = [ln for ln in later if MESSAGE_RE.search(ln)]
    if problem is None and not said:
        problem = ("no error message on stderr after 999 (expected a line such as 'Caught SIGSEGV, removed "
                   "robust.lock')" + (f"; stderr after 999: {later[:3]}" if later else ""))
    if problem:
        return Outcome.fail(seen(a, b, problem, r))
    return Outcome.ok("on stderr after 999:\n" + "\n".join(said[:3]))


def check_robust_visible(ctx: Context) -> Outcome:
    """3.9: after the handler, death by SIGSEGV or a non-zero exit."""
    r, a, b = crashed(ctx, ROBUST)
    problem = why_no_crash(r, b)
    if problem is None and r.signal is None and r.exit_code == 0:
        problem = "after the crash on 999 the worker exited with status 0: whoever started it sees a clean end"
    if problem:
        return Outcome.fail(seen(a, b, problem, r))
    return Outcome.ok(f"the crash stays visible: {r.status}")


def check_handler_safety(ctx: Context) -> Outcome:
    """3.10 (informational): async-signal-unsafe calls in robust_worker.c's handlers."""
    return handler_safety(ctx, ROBUST)


CHECKS: dict[str, Check] = {
    "3.3": lambda ctx: check_creates_lock(ctx, NAIVE),
    "3.4": check_naive_segfaults,
    "3.5": check_naive_leaves_lock,
    "3.6": lambda ctx: check_creates_lock(ctx, ROBUST),
    "3.7": check_robust_removes_lock,
    "3.8": check_robust_message,
    "3.9": check_robust_visible,
    "3.10": check_handler_safety,
}
