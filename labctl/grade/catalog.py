"""The grading tests of the four exercises, as data.

Each TestDef says what one test expects (one line a student can act on), the
hint shown when it fails, its points and where it appears. The runner looks
tests up here; writers and the docs read names and points from here, so a test
is renamed or reweighted in one place. `python -m labctl.grade.catalog
--markdown` prints the table that docs/grading.md holds.

Points sum to 100 per exercise; informational tests carry none (they report a
finding, such as a call that is unsafe in a signal handler, without judging).
The catalog is checked when this module is imported, so a bad edit fails at
once with the test's number.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from labctl.errors import ExitCode, LabError

EXERCISES = (1, 2, 3, 4)
POINTS_PER_EXERCISE = 100.0
# Gradescope's own values; "after_due_date" exists too, but our tests are
# either plain requirements (visible), edge cases revealed once grades are
# out (after_published), or withheld for good (hidden).
VISIBILITIES = ("visible", "after_published", "hidden")
# How the runner drives a test: compile a C file; drive one program directly
# (contract); run the exercise's architecture with faults (system); read the
# source without running it (static).
KINDS = ("compile", "contract", "system", "static")
NUMBER_RE = re.compile(r"^([1-9][0-9]*)\.([1-9][0-9]*)$")
# Faults carried by the input itself: a program meets them at the same line
# every time, so one run says all. Any other fault (a signal, a kill, a
# second process, a flood) lands at some moment of the program's life, and
# so does every fault in a system test: those repeat under --repeat.
DATA_FAULTS = frozenset({"corrupt-data", "dead-sensor", "malformed-input", "long-line", "bug-trigger"})

# The file names of the exercise sheet, and the exercise each belongs to.
EXERCISE_FILES: dict[str, int] = {
    "generateData.py": 1,
    "processData.py": 1,
    "worker.c": 2,
    "monitor.py": 2,
    "naive_worker.c": 3,
    "robust_worker.c": 3,
    "hardcore_worker.c": 4,
    "supervisor.py": 4,
}


@dataclass(frozen=True)
class TestDef:
    number: str  # "4.3": exercise, then position; Gradescope's `number`
    name: str
    exercise: int
    files: tuple[str, ...]  # what the submission must hold for the test to run
    points: float  # max_score
    description: str  # one line: what is expected
    hint: str  # shown to the student when the test fails
    tags: tuple[str, ...]  # "exercise-N", then "fault:NAME" for each fault injected
    visibility: str = "visible"
    informational: bool = False
    fault_test: bool = False  # repeated under --repeat: its outcome can depend on timing
    kind: str = "contract"

    __test__ = False  # not a pytest class, despite the name

    @property
    def faults(self) -> tuple[str, ...]:
        return tuple(t.removeprefix("fault:") for t in self.tags if t.startswith("fault:"))

    @property
    def sort_key(self) -> tuple[int, int]:
        return number_key(self.number)


def number_key(number: str) -> tuple[int, int]:
    m = NUMBER_RE.match(number)
    if not m:
        raise ValueError(f"test number {number!r} is not of the form EXERCISE.POSITION")
    return int(m.group(1)), int(m.group(2))


@dataclass
class _Exercise:
    """Builds one exercise's tests, numbering them in order."""

    exercise: int
    tests: list[TestDef] = field(default_factory=list)

    def add(self, name: str, files: str | tuple[str, ...], points: float, description: str, hint: str, *,
            faults: tuple[str, ...] = (), visibility: str = "visible", informational: bool = False,
            fault_test: bool | None = None, kind: str = "contract") -> None:
        self.tests.append(TestDef(
            number=f"{self.exercise}.{len(self.tests) + 1}",
            name=name,
            exercise=self.exercise,
            files=(files,) if isinstance(files, str) else files,
            points=float(points),
            description=description,
            hint=hint,
            tags=(f"exercise-{self.exercise}", *(f"fault:{f}" for f in faults)),
            visibility=visibility,
            informational=informational,
            fault_test=(bool(faults) and (kind == "system" or not set(faults) <= DATA_FAULTS)
                        if fault_test is None else fault_test),
            kind=kind,
        ))


def _exercise_1() -> list[TestDef]:
    e = _Exercise(1)
    gen, proc = "generateData.py", "processData.py"
    e.add("writes 100 readings in 1..100", gen, 10,
          "`python3 generateData.py` writes input.dat: 100 random readings, one integer in 1..100 per line",
          "Write 100 values of random.randint(1, 100), one per line, to input.dat in the current directory.")
    e.add("fault values -10, 0, 999, -25 at the end", gen, 10,
          "input.dat ends with the four fault values -10, 0, 999, -25, in that order, one per line",
          "After the valid readings append -10 (corrupted), 0 (dead sensor), 999 (the worker's bug trigger) "
          "and -25, each on its own line.")
    e.add("says that it generated the data", gen, 5,
          "generateData.py prints a line saying it generated input.dat",
          "Print a confirmation such as 'Generated 104 readings in input.dat': silence leaves the user guessing.")
    e.add("INFO per valid reading with its square", proc, 20,
          "processData.py logs one INFO line per valid reading that holds the reading and its square",
          "For each reading n >= 1 log at INFO a message that contains both n and n*n, e.g. 'Processed 7 -> 49'.")
    e.add("negative reading: WARNING and skip", proc, 15,
          "a negative reading gives a WARNING and no square, and the readings after it are still processed",
          "Test n < 0 before squaring: log.warning(...) and continue with the next line; do not stop.",
          faults=("corrupt-data",))
    e.add("reading 0: CRITICAL and stop", proc, 15,
          "a reading of 0 gives a CRITICAL line and processing stops: no reading after it is processed",
          "On 0 log at CRITICAL and leave the loop (break, return or sys.exit); a dead sensor makes every "
          "later reading untrustworthy.",
          faults=("dead-sensor",))
    e.add("graceful stop: no traceback", proc, 10,
          "the stop on 0 is graceful: no Python traceback and no uncaught exception",
          "Stop by ending the loop or with sys.exit(...) after logging; an uncaught exception is a crash, not "
          "a stop.",
          faults=("dead-sensor",))
    e.add("log format: timestamp, level, message", proc, 10,
          "every log line holds a timestamp, the level name and the message, e.g. "
          "'2026-01-05 10:00:00,123 - INFO - ...'",
          "logging.basicConfig(level=logging.INFO, format='%(asctime)s - %(levelname)s - %(message)s')")
    e.add("processData reads generateData's file", (gen, proc), 5,
          "generateData.py then processData.py in one directory: every valid reading before the 0 is processed",
          "Both programs must use input.dat in the current working directory; do not hard-code an absolute path.")
    return e.tests


def _exercise_2() -> list[TestDef]:
    e = _Exercise(2)
    w, m = "worker.c", "monitor.py"
    e.add("worker.c compiles", w, 5,
          "worker.c compiles with gcc (warnings are listed, not penalised)",
          "The compiler log is in this test's output; fix the first error first, the later ones often follow "
          "from it.",
          kind="compile")
    e.add("worker.lock holds the worker's PID", w, 15,
          "the running worker creates worker.lock holding its own PID",
          "Create worker.lock at start-up and write getpid() into it; close or fflush it so others can read it.")
    e.add("Heartbeat every second", w, 15,
          "the running worker prints a 'Heartbeat' line about once a second, each one as it happens",
          "printf the heartbeat, then fflush(stdout): stdout into a pipe is fully buffered, so unflushed "
          "heartbeats arrive in bursts or not at all.")
    e.add("monitor: running while alive", (w, m), 15,
          "with the worker alive, monitor.py reports it as running",
          "Read the PID from worker.lock and test it with os.kill(pid, 0): no exception means the process exists.",
          kind="system")
    e.add("monitor: crashed after SIGKILL", (w, m), 20,
          "after the worker is killed with SIGKILL, monitor.py reports it as crashed within a few seconds",
          "SIGKILL runs no handler, so worker.lock stays behind: a lock whose PID no longer exists "
          "(ProcessLookupError) means the worker crashed.",
          faults=("sigkill",), kind="system")
    e.add("monitor: stale lock reported", (w, m), 20,
          "a worker.lock naming a PID that no longer runs is reported as a stale lock, not as a running worker",
          "Catch ProcessLookupError from os.kill(pid, 0) and say the lock is stale; cope with an empty or "
          "non-numeric lock file too.",
          faults=("stale-lock",), kind="system")
    e.add("monitor: no false alarm", (w, m), 10,
          "over 10 s of a healthy worker, monitor.py never reports it as crashed or the lock as stale",
          "A lock file read at the moment the worker writes it can be empty: retry a read that finds no PID "
          "before calling anything stale.",
          visibility="after_published", kind="system")
    e.add("SIGSTOP: still 'running'?", (w, m), 0,
          "informational: after SIGSTOP the worker is frozen; your monitor's verdict is shown beside the truth "
          "(paused)",
          "os.kill(pid, 0) succeeds for a stopped process: a PID check cannot tell paused from running, "
          "missing heartbeats can. The lab's monitor shows how.",
          faults=("sigstop",), informational=True, kind="system")
    return e.tests


def _exercise_3() -> list[TestDef]:
    e = _Exercise(3)
    n, r = "naive_worker.c", "robust_worker.c"
    e.add("naive_worker.c compiles", n, 5,
          "naive_worker.c compiles with gcc (warnings are listed, not penalised)",
          "The compiler log is in this test's output; fix the first error first.",
          kind="compile")
    e.add("robust_worker.c compiles", r, 5,
          "robust_worker.c compiles with gcc (warnings are listed, not penalised)",
          "The compiler log is in this test's output; fix the first error first.",
          kind="compile")
    e.add("naive: creates naive.lock", n, 10,
          "the naive worker creates naive.lock while it runs",
          "Create naive.lock at start-up, before reading any input.")
    e.add("naive: segfaults on 999", n, 15,
          "on the reading 999 the naive worker dies by SIGSEGV",
          "The exercise's bug: on 999 write through a NULL pointer, e.g. *(volatile int *)0 = 1;",
          faults=("bug-trigger",))
    e.add("naive: leaves naive.lock behind", n, 15,
          "after the crash naive.lock is still there: the stale lock this exercise is about",
          "The naive worker has no signal handler, so nothing removes its lock when it dies; do not add one here.",
          faults=("bug-trigger",))
    e.add("robust: creates robust.lock", r, 10,
          "the robust worker creates robust.lock while it runs",
          "Create robust.lock at start-up, before reading any input.")
    e.add("robust: SIGSEGV removes robust.lock", r, 20,
          "when the robust worker segfaults on 999, its SIGSEGV handler removes robust.lock",
          "Install a handler with sigaction(SIGSEGV, ...) that calls unlink(\"robust.lock\"), which is "
          "async-signal-safe.",
          faults=("sigsegv",))
    e.add("robust: error message on stderr", r, 10,
          "the SIGSEGV handler writes an error message to stderr",
          "Use write(STDERR_FILENO, msg, len) in the handler: fprintf and printf are not async-signal-safe.",
          faults=("sigsegv",))
    e.add("robust: the crash stays visible", r, 10,
          "after its handler the worker dies by SIGSEGV or exits non-zero: an exit(0) handler hides the crash",
          "End the handler with signal(SIGSEGV, SIG_DFL); raise(SIGSEGV); (or _exit(1)), never exit(0).",
          faults=("sigsegv",))
    e.add("signal handler: async-signal-unsafe calls", r, 0,
          "informational: calls in robust_worker.c's signal handlers that are not async-signal-safe "
          "(printf, malloc, exit, ...), with their line numbers",
          "A handler may run in the middle of malloc or printf: call only async-signal-safe functions "
          "(signal-safety(7)), e.g. write, unlink, _exit, raise.",
          informational=True, kind="static")
    return e.tests


def _exercise_4() -> list[TestDef]:
    e = _Exercise(4)
    _exercise_4_worker(e, "hardcore_worker.c")
    _exercise_4_supervisor(e, "hardcore_worker.c", "supervisor.py")
    _exercise_4_worker_under_lab(e, "hardcore_worker.c")
    return e.tests


def _exercise_4_worker(e: _Exercise, w: str) -> None:
    e.add("hardcore_worker.c compiles", w, 3,
          "hardcore_worker.c compiles with gcc (warnings are listed, not penalised)",
          "The compiler log is in this test's output; fix the first error first.",
          kind="compile")
    e.add("squares: n -> n,n*n", w, 8,
          "each reading n on stdin is answered on stdout with the line n,n*n, in order",
          "Read a line, parse it, print \"%ld,%ld\\n\" and fflush(stdout) so a supervisor reading the pipe "
          "sees each answer at once.")
    e.add("corrupted reading: stderr, then go on", w, 4,
          "a negative reading gives an error line on stderr (e.g. 'ERROR: Corrupted data -10') and the worker "
          "goes on with the next line",
          "Report the bad reading on stderr and continue the loop; one bad reading must not stop the job.",
          faults=("corrupt-data",))
    e.add("999 segfaults", w, 4,
          "the reading 999 makes the worker die by SIGSEGV (the exercise's bug)",
          "On 999 write through a NULL pointer, as in the exercise; the handler must let the crash happen.",
          faults=("bug-trigger",))
    e.add("lock file holds the PID", w, 5,
          "while it runs, the worker's lock file exists and holds its PID",
          "Create the lock at start-up and write getpid() into it before reading input.")
    e.add("SIGTERM removes the lock", w, 5,
          "on SIGTERM the worker removes its lock file and exits promptly",
          "Install a SIGTERM handler with sigaction; clean up (unlink the lock) and end the process.",
          faults=("sigterm",))
    e.add("SIGSEGV removes the lock", w, 4,
          "when the worker segfaults on 999, its SIGSEGV handler removes the lock file",
          "In the SIGSEGV handler unlink the lock (async-signal-safe), then let the process die.",
          faults=("sigsegv",))
    e.add("the crash stays visible", w, 3,
          "after its SIGSEGV handler the worker dies by SIGSEGV or exits non-zero: an exit(0) handler hides "
          "the crash from the supervisor",
          "End the handler with signal(SIGSEGV, SIG_DFL); raise(SIGSEGV); (or _exit(1)), never exit(0).",
          faults=("sigsegv",))
    _exercise_4_worker_hidden_cases(e, w)


def _exercise_4_worker_hidden_cases(e: _Exercise, w: str) -> None:
    """The cases a careful grader adds: bad bytes, long lines, line endings, signals, contention."""
    e.add("bad input answered with an ERROR", w, 6,
          "garbage lines, '12abc' and numbers whose square does not fit each get an ERROR line, never a silent "
          "0,0 or a wrong square",
          "Parse with strtol and check the end pointer (only spaces may follow), errno == ERANGE, and that "
          "n*n fits (|n| <= 3037000499 for a 64-bit long) before squaring.",
          faults=("malformed-input",), visibility="after_published")
    e.add("a 300-byte line is one bad line", w, 3,
          "a 300-byte line gets exactly one answer (an ERROR), not two: a 256-byte fgets must not split it "
          "into two numbers",
          "If fgets returns no '\\n' and the stream is not at EOF, the line was longer than the buffer: read "
          "and drop the rest of it, then answer ERROR once.",
          faults=("long-line",), visibility="after_published")
    e.add("CRLF line endings", w, 3,
          "lines ending in \\r\\n are read as numbers: '7\\r\\n' is answered with 7,49",
          "Strip a trailing '\\r' as well as '\\n' before parsing (files written on Windows end lines so).",
          visibility="after_published")
    e.add("no final newline", w, 3,
          "a last line without a newline is still answered",
          "fgets returns the last line even without '\\n'; do not skip a line for lacking one.",
          visibility="after_published")
    e.add("empty input", w, 3,
          "with empty stdin the worker exits 0 and leaves no lock file behind",
          "At EOF leave the loop, remove the lock and return 0; an empty job is not an error.",
          visibility="after_published")
    e.add("SIGTERM while blocked on input", w, 4,
          "a SIGTERM while the worker waits on stdin removes the lock and ends the worker within 2 s",
          "Install the handler with sigaction and without SA_RESTART so the blocked read returns EINTR, "
          "or clean up in the handler itself.",
          faults=("sigterm",), visibility="after_published")
    e.add("two workers, one lock", w, 4,
          "a second worker started while the first holds the lock refuses to run (non-zero exit) and leaves "
          "the first one's lock alone",
          "Take the lock with open(O_CREAT | O_EXCL) or flock(LOCK_EX | LOCK_NB) and exit non-zero when it is "
          "taken; never delete a lock you do not hold.",
          faults=("lock-contention",), visibility="after_published")
    e.add("signal handler: async-signal-unsafe calls", w, 0,
          "informational: calls in hardcore_worker.c's signal handlers that are not async-signal-safe "
          "(printf, malloc, exit, ...), with their line numbers",
          "A handler may run in the middle of malloc or printf: call only async-signal-safe functions "
          "(signal-safety(7)), e.g. write, unlink, _exit, raise.",
          informational=True, kind="static")
    # The supervisor runs first with the lab's worker in stdin mode, an
    # instrumented stand-in that records every line, restart and signal, so its
    # faults are the supervisor's own; then once with the student's worker.


def _exercise_4_supervisor(e: _Exercise, w: str, s: str) -> None:
    e.add("supervisor: every line fed", s, 5,
          "every line of input.dat is fed to a worker, in order; none is skipped around the restart",
          "Write each line to the worker's stdin and flush; after a restart go on from the line after the one "
          "that crashed the worker.",
          kind="system")
    e.add("supervisor: one restart after 999", s, 6,
          "the crash on 999 is followed by exactly one restart, and feeding resumes after the 999 line",
          "Start one new worker when the old one dies and do not resend the line that killed it, or the "
          "worker crashes again and again.",
          faults=("bug-trigger",), kind="system")
    e.add("supervisor: SIGTERM at the end", s, 4,
          "when the input is done the supervisor stops the worker with SIGTERM and waits for it to exit",
          "proc.terminate(), then proc.wait(timeout=...), and proc.kill() only if it does not stop in time.",
          faults=("sigterm",), kind="system")
    e.add("supervisor: no deadlock on a stderr flood", s, 5,
          "with 200,000 negative readings, each an error on the worker's stderr, the supervisor finishes "
          "within the time limit: no pipe deadlock",
          "Drain the worker's stderr (a reader thread, or send it to a file or DEVNULL): an unread pipe fills "
          "at 64 KiB and then blocks the worker mid-write.",
          faults=("stderr-flood",), visibility="after_published", kind="system")
    e.add("supervisor: lock checked after a crash", s, 4,
          "after the worker crashes, the supervisor checks the lock file (and clears a stale one) before it "
          "starts the next worker",
          "Before restarting read the lock: if its PID no longer runs, remove it, or the new worker may refuse "
          "to start.",
          faults=("stale-lock",), kind="system")
    e.add("supervisor: generates missing data", s, 2,
          "started with no input.dat, the supervisor runs generateData.py first",
          "if not os.path.exists('input.dat'): subprocess.run([sys.executable, 'generateData.py'], check=True)",
          kind="system")
    e.add("supervisor with your own worker", (w, s), 3,
          "the supervisor drives your hardcore_worker through the whole input, crash on 999 included, and "
          "every valid reading is answered",
          "Run the two together on the generated data and compare the answers with the readings.",
          faults=("bug-trigger",), kind="system")
    e.add("supervisor: a pause of the whole machine loses nothing", s, 5,
          "`docker pause` freezes supervisor and worker together for 3 s mid-job; after the thaw the same worker "
          "goes on: every line fed exactly once, in order, and no restart",
          "A pause looks like time jumping: after the thaw every timer has expired at once, though the worker "
          "never stopped. Restart a worker only once it has exited (proc.poll() is not None); if you keep an "
          "answer timeout, look at the pipe once more before acting on it, and never resend a line to a live "
          "worker.",
          faults=("docker-pause",), kind="system")


def _exercise_4_worker_under_lab(e: _Exercise, w: str) -> None:
    """The student's worker driven by the lab's own supervisor, its outputs judged by labctl.oracle."""
    e.add("your worker under the lab's supervisor", w, 4,
          "the lab's supervisor (`--spawn ./hardcore_worker`) completes a job of a few hundred readings with your "
          "worker: every valid reading answered once with its square, negatives corrupted, malformed lines "
          "rejected, 999 dead-lettered",
          "Answer each number with n,n*n on stdout and fflush; every other line gets an ERROR on stderr (strtol "
          "with an end-pointer check, never atoi); let 999 crash the worker (never exit 0 from the SIGSEGV "
          "handler) so the supervisor can isolate it.",
          faults=("bug-trigger",), fault_test=True, kind="system")


def _check(tests: list[TestDef]) -> None:
    """The catalog's invariants; the error names the test that breaks one."""
    seen: set[str] = set()
    for t in tests:
        where = f"catalog test {t.number} ({t.name})"
        ex, _ = number_key(t.number)
        if t.number in seen:
            raise ValueError(f"{where}: number used twice")
        seen.add(t.number)
        if ex != t.exercise or t.exercise not in EXERCISES:
            raise ValueError(f"{where}: number does not match exercise {t.exercise}")
        if t.visibility not in VISIBILITIES:
            raise ValueError(f"{where}: visibility {t.visibility!r} is not one of {VISIBILITIES}")
        if t.kind not in KINDS:
            raise ValueError(f"{where}: kind {t.kind!r} is not one of {KINDS}")
        if t.informational != (t.points == 0):
            raise ValueError(f"{where}: informational tests and only they carry 0 points")
        if t.points < 0:
            raise ValueError(f"{where}: negative points")
        if not t.files or any(EXERCISE_FILES.get(f) != t.exercise for f in t.files):
            raise ValueError(f"{where}: files {t.files} are not all exercise {t.exercise}'s")
        if f"exercise-{t.exercise}" not in t.tags:
            raise ValueError(f"{where}: tags lack exercise-{t.exercise}")
        if t.fault_test and not t.faults:
            raise ValueError(f"{where}: a fault test names no fault in its tags")
        if "\n" in t.description or not t.description or not t.hint:
            raise ValueError(f"{where}: description must be one non-empty line, and a hint is needed")
    for ex in EXERCISES:
        total = sum(t.points for t in tests if t.exercise == ex)
        if abs(total - POINTS_PER_EXERCISE) > 1e-9:
            raise ValueError(f"catalog: exercise {ex}'s points sum to {total:g}, not {POINTS_PER_EXERCISE:g}")


CATALOG: tuple[TestDef, ...] = (*_exercise_1(), *_exercise_2(), *_exercise_3(), *_exercise_4())
_check(list(CATALOG))
BY_NUMBER: dict[str, TestDef] = {t.number: t for t in CATALOG}


def parse_exercises(text: str, source: str = "--exercise") -> tuple[int, ...]:
    """'all', '4' or '1,3' -> the exercise numbers, in order."""
    t = text.strip().lower()
    if t == "all":
        return EXERCISES
    chosen: set[int] = set()
    for part in t.split(","):
        if part.strip() not in {str(e) for e in EXERCISES}:
            raise LabError(ExitCode.USAGE, f"{source}: {text!r} is not an exercise",
                           "give 1, 2, 3, 4, a comma-separated list of them, or all")
        chosen.add(int(part))
    return tuple(sorted(chosen))


def tests_for(exercises: Iterable[int] | str = "all") -> list[TestDef]:
    """The tests of these exercises, in number order."""
    wanted = set(parse_exercises(exercises) if isinstance(exercises, str) else exercises)
    unknown = wanted - set(EXERCISES)
    if unknown:
        raise LabError(ExitCode.USAGE, f"no exercise {sorted(unknown)[0]}", "the exercises are 1, 2, 3 and 4")
    return sorted((t for t in CATALOG if t.exercise in wanted), key=lambda t: t.sort_key)


def lookup(number: str) -> TestDef:
    try:
        return BY_NUMBER[number]
    except KeyError:
        raise LabError(ExitCode.NOT_FOUND, f"no test numbered {number}",
                       "python -m labctl.grade.catalog --markdown lists them") from None


def _cell(text: str) -> str:
    # `n*n` twice in one row would turn into emphasis.
    return text.replace("|", "\\|").replace("*", "\\*")


def markdown(exercises: Iterable[int] | str = "all") -> str:
    """The catalog as Markdown tables, one per exercise; docs/grading.md holds this text."""
    out: list[str] = []
    for ex in sorted(set(t.exercise for t in tests_for(exercises))):
        tests = tests_for([ex])
        files = sorted({f for t in tests for f in t.files}, key=list(EXERCISE_FILES).index)
        out.append(f"#### Exercise {ex} ({', '.join(f'`{f}`' for f in files)})\n")
        out.append("| # | test | points | kind | faults | visibility | what is expected |")
        out.append("|---|---|---|---|---|---|---|")
        for t in tests:
            points = "info" if t.informational else f"{t.points:g}"
            faults = ", ".join(t.faults) + (" (repeated)" if t.fault_test else "") if t.faults else ""
            out.append(f"| {t.number} | {_cell(t.name)} | {points} | {t.kind} | {faults} | {t.visibility} "
                       f"| {_cell(t.description)} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labctl.grade.catalog", description="The grading tests.")
    ap.add_argument("--markdown", action="store_true", help="print the catalog as Markdown tables")
    ap.add_argument("--exercise", default="all", help="1, 2, 3, 4, a list like 1,3, or all (default)")
    args = ap.parse_args(argv)
    try:
        exercises = parse_exercises(args.exercise)
    except LabError as e:
        sys.stderr.write(e.message() + "\n")
        return int(e.code)
    if args.markdown:
        sys.stdout.write(markdown(exercises))
    else:
        for t in tests_for(exercises):
            sys.stdout.write(f"{t.number}\t{t.points:g}\t{t.name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
