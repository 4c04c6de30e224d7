"""Exercise 4, hardcore_worker.c: the contract tests 4.2-4.16 (4.1, the
compile, is the runner's).

Each check drives the student's binary in the sandbox the way the
exercise's supervisor would (stdin lines in, `n,n*n` lines out, errors on
stderr, signals, a lock file) and judges only what it can see from outside:
stdout and stderr, the exit status, the lock file at chosen moments.

The lock is `cworker.lock` in the working directory (the exercise's name);
one in /tmp is accepted too. Answers are lines `n,n*n` (blanks around the
numbers tolerated); other stdout lines are ignored. An error is any line,
on stdout or stderr, that holds "error" in any case.
"""
from __future__ import annotations

import re

from labctl.grade.runner import Check, Context, Outcome
from labctl.grade.sandbox import (
    Flood,
    RunResult,
    RunSpec,
    at,
    close_stdin,
    on_file,
    on_lines,
    send_signal,
    snapshot,
    touch,
    write_stdin,
)

WORKER = "hardcore_worker.c"
LOCKS = ("cworker.lock", "/tmp/cworker.lock")
ANSWER = re.compile(r"^\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*$")
TIMEOUT_S = 3.0
STOP_WITHIN_S = 2.0  # the catalog's "promptly"
STREAM_EVERY_S = 0.05
SQUARE_MAX = 3037000499  # the largest n whose square fits a signed 64-bit long


def argv(ctx: Context) -> list[str]:
    return [ctx.binary(WORKER)]


def answers(r: RunResult) -> list[str]:
    """stdout's answer lines, normalised to 'n,m'."""
    out = []
    for line in r.stdout_lines():
        m = ANSWER.match(line)
        if m:
            out.append(f"{int(m.group(1))},{int(m.group(2))}")
    return out


def errors(r: RunResult) -> list[str]:
    return [ln for ln in r.stdout_lines() + r.stderr_lines() if "error" in ln.lower()]


def expect(*numbers: int) -> list[str]:
    return [f"{n},{n * n}" for n in numbers]


def lines_in(numbers: list[str]) -> bytes:
    return "".join(f"{n}\n" for n in numbers).encode()


def lock_of(files: dict[str, bytes | None] | None) -> tuple[str, bytes] | None:
    """The first lock file present among LOCKS, with its content."""
    for p in LOCKS:
        content = (files or {}).get(p)
        if content is not None:
            return p, content
    return None


def lock_at(r: RunResult, action: int) -> tuple[str, bytes] | None:
    """The lock as the snapshot action at that index saw it (None: absent, or no snapshot)."""
    snap = r.snapshot_of(action)
    return lock_of(snap.files) if snap else None


def seen(what: str, r: RunResult) -> str:
    return f"{what}\n\n{r.summary()}"


def show_input(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= 400 else text[:400] + f"... ({len(data)} bytes)"


# ------------------------------------------------------------------ answers


def check_squares(ctx: Context) -> Outcome:
    """4.2: readings answered in order, each as it comes (stdin still open)."""
    rng = ctx.rng
    nums = [rng.randint(1, 100) for _ in range(10)] + [rng.randint(101, 46340) for _ in range(2)]
    rng.shuffle(nums)
    data = lines_in([str(n) for n in nums])
    r = ctx.run(RunSpec(argv(ctx), stdin=data, keep_stdin_open=True, timeout=TIMEOUT_S + 1,
                        actions=[close_stdin(on_lines(len(nums))), close_stdin(at(TIMEOUT_S - 0.5))]))
    want, got = expect(*nums), answers(r)
    if got != want:
        return Outcome.fail(seen(f"input:\n{show_input(data)}\nexpected these answers, in order:\n"
                                 + "\n".join(want) + "\ngot:\n" + ("\n".join(got) or "(none)"), r))
    by_lines, by_time = r.fired_action(0), r.fired_action(1)
    if by_lines is None or (by_time is not None and by_time.t < by_lines.t):
        return Outcome.fail(seen("every answer was right, but they came only once stdin was closed: stdout "
                                 "into a pipe is buffered, so a supervisor waiting for each answer would "
                                 "wait forever; fflush(stdout) after each line", r))
    return Outcome.ok(f"{len(nums)} readings, {len(got)} right answers, each while stdin was still open")


def check_corrupted(ctx: Context) -> Outcome:
    """4.3: a negative reading: an error on stderr, then the next line answered."""
    rng = ctx.rng
    a, neg, b = rng.randint(1, 100), -rng.randint(1, 100), rng.randint(1, 100)
    data = lines_in([str(a), str(neg), str(b)])
    r = ctx.run(RunSpec(argv(ctx), stdin=data, timeout=TIMEOUT_S))
    got = answers(r)
    problems = []
    if got != expect(a, b):
        problems.append(f"expected the answers {expect(a, b)} (nothing for {neg}), got {got}")
    if not any(str(neg) in ln and "error" in ln.lower() for ln in r.stderr_lines()):
        problems.append(f"no stderr line holds both 'ERROR' and {neg} (e.g. 'ERROR: Corrupted data {neg}')")
    if problems:
        return Outcome.fail(seen(f"input:\n{show_input(data)}\n" + "\n".join(problems), r))
    return Outcome.ok(f"{neg} reported on stderr and the worker went on")


def answers_case(ctx: Context, data: bytes, want: list[str], what: str, *, exact_errors: int | None = None,
                 min_errors: int = 0) -> Outcome:
    """Runs data through the worker; passes if the answers are exactly `want`,
    the ERROR lines number exact_errors (if given) and at least min_errors,
    and the worker ends at the end of its input."""
    r = ctx.run(RunSpec(argv(ctx), stdin=data, timeout=TIMEOUT_S))
    got, errs = answers(r), errors(r)
    problems = []
    if got != want:
        wrong = [a for a in got if a not in want]
        problems.append(f"expected the answers {want}, got {got}"
                        + (f"; {', '.join(wrong)} answer(s) lines that are not valid readings" if wrong else ""))
    if exact_errors is not None and len(errs) != exact_errors:
        problems.append(f"expected exactly {exact_errors} ERROR line(s), got {len(errs)}")
    if len(errs) < min_errors:
        problems.append(f"expected an ERROR line for each of the {min_errors} bad lines, got {len(errs)}")
    if not r.ended_by_itself:
        problems.append(f"the worker did not end at the end of its input: {r.status}")
    if problems:
        return Outcome.fail(seen(f"input:\n{show_input(data)}\n" + "\n".join(problems), r))
    return Outcome.ok(f"{what}: answers {got}, {len(errs)} ERROR line(s)")


def check_bad_input(ctx: Context) -> Outcome:
    """4.9: garbage, '12abc' and too-large numbers each an ERROR; no 0,0."""
    rng = ctx.rng
    v = rng.randint(1, 100)
    bad = [rng.choice(["abc", "hello", "x1", "--5", "1.5", "0x1F"]), "12abc", str(SQUARE_MAX + 1),
           "9" * rng.randint(20, 30)]
    return answers_case(ctx, lines_in([*bad, str(v)]), expect(v), "bad lines, then a reading", min_errors=len(bad))


def check_long_line(ctx: Context) -> Outcome:
    """4.10: a 300-byte line is one bad line, not two numbers."""
    rng = ctx.rng
    v = rng.randint(1, 100)
    data = ("".join(rng.choice("123456789") for _ in range(300)) + f"\n{v}\n").encode()
    return answers_case(ctx, data, expect(v), "a 300-digit line, then a reading", exact_errors=1)


def check_crlf(ctx: Context) -> Outcome:
    rng = ctx.rng
    a, b = rng.randint(1, 100), rng.randint(1, 100)
    return answers_case(ctx, f"{a}\r\n{b}\r\n".encode(), expect(a, b), "CRLF lines", exact_errors=0)


def check_no_final_newline(ctx: Context) -> Outcome:
    rng = ctx.rng
    a, b = rng.randint(1, 100), rng.randint(1, 100)
    return answers_case(ctx, f"{a}\n{b}".encode(), expect(a, b), "no newline after the last line", exact_errors=0)


def check_empty_input(ctx: Context) -> Outcome:
    """4.13: exit 0 and no lock left."""
    r = ctx.run(RunSpec(argv(ctx), stdin=b"", timeout=TIMEOUT_S, snapshot_at_exit=list(LOCKS)))
    left = lock_of(r.at_exit)
    if r.ended_by_itself and r.exit_code == 0 and left is None:
        return Outcome.ok("exit 0, no lock file left")
    problems = [] if r.ended_by_itself and r.exit_code == 0 else [f"expected exit 0, got: {r.status}"]
    if left:
        problems.append(f"{left[0]} was left behind")
    return Outcome.fail(seen("with empty stdin: " + "; ".join(problems), r))


# ------------------------------------------------------------------ the lock


def check_lock_pid(ctx: Context) -> Outcome:
    """4.5: while it runs, the lock exists and holds the worker's PID."""
    v = ctx.rng.randint(1, 100)
    r = ctx.run(RunSpec(argv(ctx), stdin=f"{v}\n".encode(), keep_stdin_open=True, timeout=TIMEOUT_S,
                        actions=[snapshot(LOCKS, on_lines(1)), close_stdin(on_lines(1)),
                                 snapshot(LOCKS, at(1.5)), close_stdin(at(1.5))]))
    snap = r.snapshot_of(0) or r.snapshot_of(2)
    if snap is None:
        return Outcome.fail(seen("the worker ended before the lock could be looked at", r))
    found = lock_of(snap.files)
    when = "after its first answer" if snap.index == 0 else "1.5 s after the start"
    if found is None:
        return Outcome.fail(seen(f"no lock file ({' or '.join(LOCKS)}) {when}", r))
    path, content = found
    m = re.search(rb"-?\d+", content)
    if m is None or int(m.group()) != r.pid:
        return Outcome.fail(seen(f"{path} {when} holds {content[:80]!r}; expected the worker's PID, {r.pid}", r))
    return Outcome.ok(f"{path} {when} holds {content[:80]!r}, the worker's PID")


def crash_run(ctx: Context) -> tuple[RunResult, int, int]:
    """One run for 4.4, 4.7 and 4.8: a reading, then (once answered) 999 and
    another reading, with stdin left open so only a crash ends the worker."""
    rng = ctx.rng_for("crash")
    a, b = rng.randint(1, 100), rng.randint(1, 100)
    r = ctx.run(RunSpec(argv(ctx), stdin=f"{a}\n".encode(), keep_stdin_open=True, timeout=TIMEOUT_S,
                        actions=[snapshot(LOCKS, on_lines(1)), write_stdin(f"999\n{b}\n".encode(), on_lines(1))],
                        snapshot_at_exit=list(LOCKS)))
    return r, a, b


def crash_problem(r: RunResult, a: int, b: int) -> str | None:
    """Why the run does not show a crash on 999; None if it does."""
    if r.fired_action(1) is None or expect(a)[0] not in answers(r):
        return f"the worker never answered its first reading {a} with {expect(a)[0]}, so 999 does not count"
    if not r.ended_by_itself:
        return f"after 999 (stdin still open) the worker did not die: {r.status}"
    late = [x for x in answers(r) if x.startswith(("999,", f"{b},"))]
    if late:
        return f"after 999 the worker still answered {', '.join(late)}: it did not crash on 999"
    return None


def check_999_crashes(ctx: Context) -> Outcome:
    r, a, b = ctx.memo("crash", lambda: crash_run(ctx))
    problem = crash_problem(r, a, b)
    if problem:
        return Outcome.fail(seen(f"input: {a}, then 999 and {b}\n{problem}", r))
    return Outcome.ok(f"died on 999: {r.status}")


def check_segv_removes_lock(ctx: Context) -> Outcome:
    r, a, b = ctx.memo("crash", lambda: crash_run(ctx))
    problem = crash_problem(r, a, b)
    before = lock_at(r, 0)
    if problem is None and before is None:
        problem = "there was no lock file while the worker ran, so none could be removed"
    after = lock_of(r.at_exit)
    if problem is None and after is not None:
        problem = f"after the crash {after[0]} is still there"
    if problem:
        return Outcome.fail(seen(f"input: {a}, then 999 and {b}\n{problem}", r))
    assert before is not None
    return Outcome.ok(f"{before[0]} existed before 999 and was gone after the crash ({r.status})")


def check_crash_visible(ctx: Context) -> Outcome:
    r, a, b = ctx.memo("crash", lambda: crash_run(ctx))
    problem = crash_problem(r, a, b)
    if problem is None and r.signal is None and r.exit_code == 0:
        problem = "after the crash on 999 the worker exited with status 0: its supervisor cannot tell a crash " \
                  "from a clean end"
    if problem:
        return Outcome.fail(seen(f"input: {a}, then 999 and {b}\n{problem}", r))
    return Outcome.ok(f"the crash is visible: {r.status}")


# ------------------------------------------------------------------ SIGTERM


def sigterm_outcome(r: RunResult, while_what: str) -> Outcome:
    """The lock existed before SIGTERM, the worker ended within STOP_WITHIN_S,
    and the lock is gone."""
    sig = r.fired_action(1)
    if sig is None:
        return Outcome.fail(seen("the worker never answered, so SIGTERM was never sent", r))
    before = lock_at(r, 0)
    problems = [] if before else ["there was no lock file before SIGTERM"]
    took = r.elapsed - sig.t
    if not r.ended_by_itself or took > STOP_WITHIN_S:
        problems.append(f"SIGTERM {while_what}: the worker did not end within {STOP_WITHIN_S:g} s ({r.status})")
    left = lock_of(r.at_exit)
    if left:
        problems.append(f"after SIGTERM {left[0]} was still there")
    if problems:
        return Outcome.fail(seen("\n".join(problems), r))
    return Outcome.ok(f"SIGTERM {while_what}: ended after {took:.2f} s ({r.status}), lock removed")


def check_sigterm(ctx: Context) -> Outcome:
    """4.6: SIGTERM while readings keep coming, as from a supervisor: one
    every STREAM_EVERY_S (4.14 is the idle case). Not a saturating flood:
    a worker may, fairly, look at its stop flag only between reads."""
    r = ctx.run(RunSpec(argv(ctx), stdin=Flood(f"{ctx.rng.randint(1, 100)}\n".encode(), 10**6, STREAM_EVERY_S),
                        keep_stdin_open=True, timeout=TIMEOUT_S + STOP_WITHIN_S, snapshot_at_exit=list(LOCKS),
                        actions=[snapshot(LOCKS, on_lines(5)), send_signal("TERM", on_lines(5))]))
    return sigterm_outcome(r, "while readings kept coming")


def check_sigterm_blocked(ctx: Context) -> Outcome:
    """4.14: SIGTERM while the worker waits on an idle stdin."""
    r = ctx.run(RunSpec(argv(ctx), stdin=f"{ctx.rng.randint(1, 100)}\n".encode(), keep_stdin_open=True,
                        timeout=TIMEOUT_S + STOP_WITHIN_S, snapshot_at_exit=list(LOCKS),
                        actions=[snapshot(LOCKS, on_lines(1)), send_signal("TERM", on_lines(1, delay=0.3))]))
    return sigterm_outcome(r, "while blocked on input")


# ------------------------------------------------------------------ two workers, one lock

A_READY, B_DONE = ".a-ready", ".b-done"
A_STOP_AT = 2.5  # SIGTERM to the first worker if the second never ends (it waits on the lock)


def check_two_workers(ctx: Context) -> Outcome:
    """4.15: B starts once A answered (so A holds its lock). B must refuse
    (non-zero exit, no answer, A's lock untouched) or wait until A is gone;
    both answering while A lives is the failure."""
    rng = ctx.rng
    a, b = rng.randint(1, 100), rng.randint(1, 100)
    first = RunSpec(argv(ctx), stdin=f"{a}\n".encode(), keep_stdin_open=True, timeout=A_STOP_AT + 3,
                    actions=[snapshot(LOCKS, on_lines(1)), touch(A_READY, on_lines(1)),
                             # The stop comes a moment after the snapshot: the driver checks its
                             # triggers one after the other, and the file can appear between the
                             # two checks, so without the delay SIGTERM could land first and the
                             # snapshot find the first worker's lock already (rightly) removed.
                             snapshot(LOCKS, on_file(B_DONE)), send_signal("TERM", on_file(B_DONE, delay=0.3)),
                             send_signal("TERM", at(A_STOP_AT))])
    second = RunSpec(argv(ctx), stdin=f"{b}\n".encode(), timeout=A_STOP_AT + 2, start_when_file=A_READY,
                     start_timeout=TIMEOUT_S, touch_on_exit=B_DONE)
    ra, rb = ctx.run_many([first, second])
    both = f"first worker: {ra.summary(600)}\n\nsecond worker: {rb.summary(600)}"
    if ra.error or ra.fired_action(1) is None:
        return Outcome.fail(f"the first worker never answered its reading {a}\n\n{both}")
    if rb.error:
        return Outcome.fail(f"the second worker could not be judged: {rb.error}\n\n{both}")
    b_answered = bool(answers(rb))
    a_end = ra.t_end if ra.t_end is not None else float("inf")
    if b_answered and rb.t_first_stdout is not None and rb.t_first_stdout >= a_end:
        return Outcome.ok(f"the second worker waited until the first had ended, then ran ({rb.status})")
    if b_answered:
        return Outcome.fail(f"both workers ran at the same time: the second answered {answers(rb)} while the "
                            f"first still held the lock\n\n{both}")
    if not rb.ended_by_itself or rb.exit_code == 0:
        return Outcome.fail(f"the second worker neither refused with a non-zero exit nor ran: {rb.status}\n\n{both}")
    before, after = lock_at(ra, 0), lock_at(ra, 2)
    if before is None or after != before:
        return Outcome.fail(f"the second worker refused ({rb.status}), but the first one's lock changed: before "
                            f"{before}, after {after}\n\n{both}")
    return Outcome.ok(f"the second worker refused ({rb.status}) and left {before[0]} as it was")


# ------------------------------------------------------------------ signal handlers, read from the source

# Not async-signal-safe (signal-safety(7)): stdio, the heap, exit and its
# handlers, remove (unlink is safe), syslog, and the formatting helpers.
UNSAFE = frozenset({
    "printf", "fprintf", "vprintf", "vfprintf", "sprintf", "snprintf", "vsprintf", "vsnprintf", "dprintf",
    "puts", "fputs", "putchar", "fputc", "putc", "fwrite", "fflush", "perror", "fopen", "fclose", "fdopen",
    "exit", "atexit", "malloc", "calloc", "realloc", "free", "strdup", "remove", "syslog", "openlog",
    "strerror", "localtime", "gmtime", "ctime", "asctime", "strftime", "setlocale", "system", "popen",
})
_HANDLER_RES = (
    re.compile(r"\bsignal\s*\(\s*([A-Za-z_]\w*)\s*,\s*&?\s*([A-Za-z_]\w*)\s*\)"),
    re.compile(r"(?:\.|->)\s*sa_(?:handler|sigaction)\s*=\s*&?\s*([A-Za-z_]\w*)"),
)
_DEF_RE = re.compile(r"\b([A-Za-z_]\w*)\s*\([^;{}()]*(?:\([^()]*\)[^;{}()]*)*\)\s*\{")
_CALL_RE = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_KEYWORDS = frozenset({"if", "while", "for", "switch", "return", "sizeof", "do", "else"})


def strip_c(src: str) -> str:
    """Comments, strings and character literals blanked, newlines kept, so
    offsets still give line numbers."""
    pattern = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), src)


def functions(code: str) -> dict[str, tuple[int, str]]:
    """Function name -> (offset of its body, its body), by brace matching."""
    out: dict[str, tuple[int, str]] = {}
    for m in _DEF_RE.finditer(code):
        name = m.group(1)
        if name in _KEYWORDS or name in out:
            continue
        depth, i = 0, m.end() - 1
        for i in range(m.end() - 1, len(code)):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            if depth == 0:
                break
        out[name] = (m.end(), code[m.end():i])
    return out


def handlers(code: str) -> dict[str, set[str]]:
    """Handler function -> the signals it is installed for (sigaction's signal is not tracked: '?')."""
    out: dict[str, set[str]] = {}
    for m in _HANDLER_RES[0].finditer(code):
        if m.group(2) not in ("SIG_IGN", "SIG_DFL", "SIG_ERR"):
            out.setdefault(m.group(2), set()).add(m.group(1))
    for m in _HANDLER_RES[1].finditer(code):
        if m.group(1) not in ("SIG_IGN", "SIG_DFL", "SIG_ERR"):
            out.setdefault(m.group(1), set()).add("sigaction")
    return out


def unsafe_calls(src: str) -> list[str]:
    """'line N: CALL in HANDLER[ via HELPER]' for each unsafe call reachable from a handler."""
    code = strip_c(src)
    funcs = functions(code)
    found: list[tuple[int, str]] = []
    for handler in sorted(handlers(code)):
        todo, seen_fns = [(handler, handler)], {handler}
        while todo:
            name, path = todo.pop()
            if name not in funcs:
                continue
            start, body = funcs[name]
            for m in _CALL_RE.finditer(body):
                callee = m.group(1)
                line = code.count("\n", 0, start + m.start()) + 1
                if callee in UNSAFE:
                    found.append((line, f"line {line}: {callee}() in the signal handler {path}"))
                elif callee in funcs and callee not in seen_fns:
                    seen_fns.add(callee)
                    todo.append((callee, f"{path} -> {callee}"))
    return [text for _, text in sorted(set(found))]


def handler_safety(ctx: Context, name: str) -> Outcome:
    """Informational: async-signal-unsafe calls in the signal handlers of the C file `name`."""
    src = ctx.source(name).decode("utf-8", "replace")
    hs = handlers(strip_c(src))
    if not hs:
        return Outcome.ok("no signal handler found (signal() or sigaction with sa_handler / sa_sigaction)")
    found = unsafe_calls(src)
    names = ", ".join(sorted(hs))
    if found:
        return Outcome.fail(f"handlers: {names}\n" + "\n".join(found))
    return Outcome.ok(f"handlers: {names}; no async-signal-unsafe call found in them")


def check_handler_safety(ctx: Context) -> Outcome:
    """4.16 (informational): async-signal-unsafe calls in the handlers."""
    return handler_safety(ctx, WORKER)


CHECKS: dict[str, Check] = {
    "4.2": check_squares,
    "4.3": check_corrupted,
    "4.4": check_999_crashes,
    "4.5": check_lock_pid,
    "4.6": check_sigterm,
    "4.7": check_segv_removes_lock,
    "4.8": check_crash_visible,
    "4.9": check_bad_input,
    "4.10": check_long_line,
    "4.11": check_crlf,
    "4.12": check_no_final_newline,
    "4.13": check_empty_input,
    "4.14": check_sigterm_blocked,
    "4.15": check_two_workers,
    "4.16": check_handler_safety,
}
