"""`labctl grade`: every submission in its own sandbox, every planned test
run, the reports written.

How a run goes: the submissions are read (submission.py); the planned tests
are the selected exercises' catalog tests that have a check (below); each
submission, on a pool of --jobs threads, gets one Sandbox (sandbox.py), its
exercise files copied into /work/src, its C files compiled (once, into
/work/bin), then every planned test's check is called, the fault tests
(TestDef.fault_test) --repeat times; the results (results.py) are written by
writers.py into DIR/<submission>/ and, for several submissions,
DIR/grades.csv and DIR/summary.md. The exit code is results.exit_code().

What the runner decides, so checks need not:
- a test whose file is missing scores 0 as "not submitted" (intake);
- a test of kind "compile" is the runner's own check: passed if the file
  compiled; its output is the compiler's (warnings listed, not penalised);
- a test that needs a C file that did not compile fails with "did not
  compile", without its check being called;
- an exception in a check is a grader error for that test (LabError: its
  message; anything else: its type and message), never the student's
  failure; a lost engine makes every test still pending a grader error.

The check contract (for the next exercise module)
--------------------------------------------------
A check is a function of one Context that returns an Outcome:

    def check_4_2(ctx: Context) -> Outcome:
        r = ctx.run(RunSpec([ctx.binary("hardcore_worker.c")], stdin=b"7\\n", timeout=3))
        if r.stdout_lines() == ["7,49"]:
            return Outcome.ok(r.summary())
        return Outcome.fail(f"for 7 expected 7,49\\n{r.summary()}")

    CHECKS: dict[str, Check] = {"4.2": check_4_2}

- Outcome(passed, seen, images=[], timeline=[]): seen is what the grader
  saw, shown to the student as is (capped at 64 KiB) beside the test's
  expectation and hint from the catalog; say what was expected and what
  came instead, with the program's status and output (RunResult.summary()).
  images are paths relative to ctx.out_dir (write them there: gradeplot.draw
  draws a run's timeline once per attempt, named after the attempt, and
  feedback.md shows them, passed or failed); under --repeat the pictures
  of runs no result shows are removed. timeline is the FaultEvents injected
  (RunResult.host_events, or your own).
- For an informational test (0 points) passed means "nothing to report";
  a failed one is shown as a finding and never fails the submission.
- ctx.sandbox / ctx.run(spec, host_actions=()): the submission's sandbox
  (sandbox.py documents RunSpec, triggers, actions, RunResult); each run
  starts with every leftover process killed and an empty case directory.
  ctx.run_many(specs) runs several programs at once (e.g. two on one lock).
- ctx.binary("x.c") is x.c's compiled binary inside the sandbox;
  ctx.script("x.py") the path of a student's file in /work/src (run it
  with ["python3", ctx.script("x.py")]); ctx.source("x.c") its bytes on the
  host (for static checks, which need no sandbox).
- ctx.rng: a random.Random seeded from (--seed, test number, attempt):
  generate inputs with it, never with the random module, so --seed N
  replays a run exactly. ctx.seed and ctx.attempt (0-based, under --repeat)
  are there too.
- ctx.memo(key, fn): fn() computed once per attempt and shared by the
  checks of that attempt, for tests that judge one run from several angles
  (e.g. 4.4, 4.7 and 4.8 all look at the 999 run); such a run draws its
  inputs from ctx.rng_for(key), so it does not matter which check asks first.
- A check must not raise for anything the student's program does; a raise
  means the grader broke.

To add an exercise: write labctl/grade/exN.py (or exN_part.py) with CHECKS
keyed by the catalog's test numbers, and name the module in
EXERCISE_MODULES (a module named there that does not exist yet is skipped;
only the selected exercises' modules are imported; one that fails to import
turns its exercise's tests into grader errors). Tests without a check are
left out of the plan and listed as not gradable yet.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib
import importlib.util
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from labctl import images, labels
from labctl.engine import Engine, is_engine_gone
from labctl.errors import ExitCode, LabError
from labctl.grade import writers
from labctl.grade.catalog import CATALOG, TestDef, tests_for
from labctl.grade.results import FAILED, PASSED, FaultEvent, SubmissionResult, TestResult, combine, exit_code
from labctl.grade.sandbox import SRC_DIR, CompileResult, RunResult, RunSpec, Sandbox
from labctl.grade.submission import Submission, load_submissions

EXERCISE_MODULES = (
    "labctl.grade.ex1",
    "labctl.grade.ex2",
    "labctl.grade.ex3",
    "labctl.grade.ex4_worker",
    "labctl.grade.ex4_supervisor",
)
T = TypeVar("T")


@dataclass
class Outcome:
    passed: bool
    seen: str
    images: list[str] = field(default_factory=list)
    timeline: list[FaultEvent] = field(default_factory=list)

    @classmethod
    def ok(cls, seen: str = "", **kw: Any) -> Outcome:
        return cls(True, seen, **kw)

    @classmethod
    def fail(cls, seen: str, **kw: Any) -> Outcome:
        return cls(False, seen, **kw)


@dataclass
class Context:
    """What a check gets; see the module's docstring for the contract."""

    test: TestDef
    sandbox: Sandbox
    submission: Submission
    binaries: dict[str, str]
    seed: int
    attempt: int
    out_dir: Path
    _memo: dict[str, Any]

    @property
    def rng(self) -> random.Random:
        return self.rng_for(self.test.number)

    def rng_for(self, name: str) -> random.Random:
        """A generator for a run shared under memo(name): the same whichever check asks first."""
        return random.Random(f"{self.seed}:{name}:{self.attempt}")

    def binary(self, c_file: str) -> str:
        return self.binaries[c_file]

    def script(self, name: str) -> str:
        return f"{SRC_DIR}/{name}"

    def source(self, name: str) -> bytes:
        return self.submission.files[name]

    def run(self, spec: RunSpec, host_actions: Sequence[tuple[str, float, float]] = ()) -> RunResult:
        return self.sandbox.run(spec, host_actions)

    def run_many(self, specs: Sequence[RunSpec]) -> list[RunResult]:
        return self.sandbox.run_many(specs)

    def memo(self, key: str, fn: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = fn()
        result: T = self._memo[key]
        return result


Check = Callable[[Context], Outcome]


def compile_check(ctx: Context) -> Outcome:
    """Placeholder: the runner judges compile tests itself, from the compile it ran."""
    raise AssertionError("compile tests are judged by the runner")


def module_exercise(name: str) -> int:
    """labctl.grade.ex4_worker -> 4: a module's exercise, from its name."""
    m = re.match(r"labctl\.grade\.ex([1-9])", name)
    if not m:
        raise ValueError(f"exercise module {name} is not named labctl.grade.exN...")
    return int(m.group(1))


def broken_check(module: str, reason: str) -> Check:
    def check(ctx: Context) -> Outcome:
        raise LabError(ExitCode.INTERNAL, f"the checks of {module} could not be loaded: {reason}")

    return check


def registry(exercises: Sequence[int] | str = "all") -> dict[str, Check]:
    """Test number -> check, from the modules of these exercises that exist,
    plus the runner's own check for every compile test. A module that fails
    to import makes each of its exercise's tests left without a check a
    grader error, rather than stopping every other exercise's grading."""
    wanted = {t.exercise for t in tests_for(exercises)}
    checks: dict[str, Check] = {t.number: compile_check for t in CATALOG if t.kind == "compile"}
    broken: dict[int, Check] = {}
    for name in EXERCISE_MODULES:
        if module_exercise(name) not in wanted or importlib.util.find_spec(name) is None:
            continue
        try:
            checks.update(importlib.import_module(name).CHECKS)
        except Exception as e:  # a bug in labctl: reported per test as the grader's error
            broken.setdefault(module_exercise(name), broken_check(name, f"{type(e).__name__}: {e}"))
    for t in CATALOG:
        if t.exercise in broken and t.number not in checks:
            checks[t.number] = broken[t.exercise]
    return checks


@dataclass
class Plan:
    tests: list[TestDef]
    skipped: list[TestDef]  # selected, but no check exists yet
    checks: dict[str, Check]


def plan(exercises: Sequence[int] | str) -> Plan:
    checks = registry(exercises)
    selected = tests_for(exercises)
    return Plan([t for t in selected if t.number in checks], [t for t in selected if t.number not in checks], checks)


def default_out_dir() -> Path:
    return Path("grades") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


@dataclass
class Options:
    exercises: Sequence[int] | str = "all"
    out_dir: Path | None = None
    jobs: int = 1
    seed: int | None = None
    repeat: int = 1


@dataclass
class GradeRun:
    run_id: str
    out_dir: Path
    results: list[SubmissionResult]
    skipped: list[TestDef]
    exit_code: int


def grade(paths: Sequence[Path | str], opts: Options, progress: Callable[[str], None] = lambda s: None,
          engine: Engine | None = None) -> GradeRun:
    """Grades every submission; writes the reports; returns them with the
    exit code. User errors (a path that does not exist, bad options) raise
    LabError; grader failures are recorded in the results instead."""
    if opts.jobs < 1 or opts.repeat < 1:
        raise LabError(ExitCode.USAGE, "--jobs and --repeat want a positive number", "e.g. --jobs 2 --repeat 5")
    subs = load_submissions(paths)
    pl = plan(opts.exercises)
    if pl.skipped:
        progress(f"not gradable yet (no check): {', '.join(t.number for t in pl.skipped)}")
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(2**31)
    out_dir = opts.out_dir or default_out_dir()
    run = _Run(labels.new_grade_run_id(), pl, seed, opts.repeat, out_dir, progress)
    owned = engine is None
    try:
        eng = engine or Engine.open()
    except LabError as e:
        results = [run.harness_failed(s, e.what) for s in subs]
    else:
        try:
            results = run.all(eng, subs, opts.jobs)
        finally:
            Sandbox.cleanup(eng, run.run_id)
            if owned:
                eng.close()
    if run.interrupted:
        done = {r.submission for r in results}
        for sub in subs:
            if sub.name not in done:
                drop_pictures(writers.submission_dir(out_dir, run.new_result(sub)))
        if results:
            writers.write_all(out_dir, results)
        raise LabError(ExitCode.INTERRUPTED, f"grading interrupted: {len(results)} of {len(subs)} submission(s) "
                       "graded" + (f", their reports are in {out_dir}" if results else ""),
                       "grade the others again (nothing was left on the engine)")
    writers.write_all(out_dir, results)
    return GradeRun(run.run_id, out_dir, results, pl.skipped, exit_code(results))


def drop_pictures(folder: Path) -> None:
    """An interrupted submission's pictures (drawn as its tests ran), and its
    folder if they were all it held: no report is left half made."""
    for png in folder.glob("timeline-*.png"):
        png.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def resolve_images(engine: Engine) -> tuple[str, str]:
    """(sandbox image, builder image): the run-time base and the builder
    `labctl build` used.

    Not the lab's supervisor image: its /app holds the lab's own answers to
    exercise 1 and to exercise 4's supervisor, which a student's program could
    read or run. The run-time base has what a sandbox needs (python3, libc)
    and no compiler; the builder has gcc and the static libc, and runs only
    the compile steps. Neither holds anything of the lab. Never builds:
    grading needs them ready."""
    override = os.environ.get("LAB_BASE_IMAGE")
    candidates = [override] if override else [images.local_base_ref(), images.UPSTREAM_BASE]
    base = next((c for c in candidates if engine.image_exists(c)), None)
    if base is None:
        raise LabError(ExitCode.IMAGE_MISSING, "no base image for the grading sandboxes", "run `labctl build`")
    # Without the local builder, the base itself: a compile step then says
    # the base has no gcc (the grader's problem, with what to do).
    override = os.environ.get("LAB_BUILDER_IMAGE")
    candidates = [override] if override else [images.local_builder_ref(), base]
    builder = next((c for c in candidates if engine.image_exists(c)), None)
    if builder is None:
        raise LabError(ExitCode.IMAGE_MISSING, f"no builder image {override} to compile the submissions",
                       "build it, or drop LAB_BUILDER_IMAGE to use labctl's local builder (`labctl base`)")
    return base, builder


@contextlib.contextmanager
def ignoring_sigint() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class _Run:
    """One grading run: shared settings and the per-submission work."""

    def __init__(self, run_id: str, pl: Plan, seed: int, repeat: int, out_dir: Path,
                 progress: Callable[[str], None]):
        self.run_id = run_id
        self.plan = pl
        self.seed = seed
        self.repeat = repeat
        self.out_dir = out_dir
        self.progress = progress
        self.cancel = threading.Event()
        self.interrupted = False

    def raise_if_cancelled(self) -> None:
        if self.cancel.is_set():
            raise LabError(ExitCode.INTERRUPTED, "grading interrupted")

    def new_result(self, sub: Submission) -> SubmissionResult:
        return SubmissionResult.for_submission(sub, self.plan.tests, seed=self.seed, repeat=self.repeat)

    def harness_failed(self, sub: Submission, reason: str) -> SubmissionResult:
        r = self.new_result(sub)
        r.mark_grader_error(reason)
        r.complete()
        return r

    def all(self, engine: Engine, subs: list[Submission], jobs: int) -> list[SubmissionResult]:
        try:
            sandbox_image, builder_image = resolve_images(engine)
        except LabError as e:
            return [self.harness_failed(s, e.what) for s in subs]
        results: list[SubmissionResult | None] = [None] * len(subs)
        with cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="grade") as pool:
            futures = {pool.submit(self.one, engine, s, sandbox_image, builder_image): i for i, s in enumerate(subs)}
            try:
                pending = set(futures)
                while pending:
                    # A bounded wait, so that Ctrl-C reaches this thread.
                    done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                    for f in done:
                        results[futures[f]] = f.result()
            except KeyboardInterrupt:
                with ignoring_sigint():  # the cleanup must finish: a second Ctrl-C waits for it
                    self.interrupt(engine, pool, futures)
                self.interrupted = True
        return [r for r in results if r is not None]

    def interrupt(self, engine: Engine, pool: cf.ThreadPoolExecutor, futures: dict[cf.Future[Any], int]) -> None:
        """Ctrl-C: no queued submission starts, the runs in flight end (their
        sandboxes removed), and what they raised on the way out is dropped:
        an interrupted submission is neither scored nor reported."""
        self.cancel.set()
        for f in futures:
            f.cancel()
        Sandbox.cleanup(engine, self.run_id)
        pool.shutdown(wait=True, cancel_futures=True)
        Sandbox.cleanup(engine, self.run_id)  # a sandbox begun while the first cleanup ran

    def one(self, engine: Engine, sub: Submission, sandbox_image: str, builder_image: str) -> SubmissionResult:
        t0 = time.monotonic()
        r = self.new_result(sub)
        if r.pending():
            self.raise_if_cancelled()
            eng = engine.clone()
            try:
                with Sandbox(eng, run_id=self.run_id, submission=sub.name, image=sandbox_image,
                             builder_image=builder_image, cancel=self.cancel) as sb:
                    _Submission(self, sub, r, sb).grade()
            except Exception as e:  # the grader broke: this submission's pending tests say so
                self.raise_if_cancelled()  # unless Ctrl-C broke it, removing the sandbox under it
                r.mark_grader_error(e.what if isinstance(e, LabError) else "lost the Docker engine"
                                    if is_engine_gone(e) else f"{type(e).__name__}: {e}")
            finally:
                eng.close()
            self.raise_if_cancelled()
        r.execution_time = time.monotonic() - t0
        r.complete()
        failed = sum(1 for t in r.tests if t.counts_as_failure)
        self.progress(f"{sub.name}: {r.score:g}/{r.max_score:g}, {failed} test(s) failed"
                      + (", GRADER ERROR: " + (r.grader_error or "see its tests") if r.has_grader_error else "")
                      + f" ({r.execution_time:.0f} s)")
        return r


class _Submission:
    """Grading one submission in its sandbox."""

    def __init__(self, run: _Run, sub: Submission, result: SubmissionResult, sandbox: Sandbox):
        self.run = run
        self.sub = sub
        self.result = result
        self.sandbox = sandbox
        self.compiled: dict[str, CompileResult] = {}

    def grade(self) -> None:
        pending = self.result.pending()
        needed = sorted({f for t in pending for f in t.files if f in self.sub.files})
        self.sandbox.put_files({f: self.sub.files[f] for f in needed})
        for f in needed:
            if f.endswith(".c"):
                c = self.compiled[f] = self.sandbox.compile_c(f)
                self.result.compile_logs[f] = c.log
        runs: dict[str, list[TestResult]] = {}
        for attempt in range(self.run.repeat):
            memo: dict[str, Any] = {}
            # Repeats are for fault tests that ran: one judged without running says nothing new.
            todo = pending if attempt == 0 else [t for t in pending if t.fault_test and self.compiles(t)[0]]
            for t in todo:
                runs.setdefault(t.number, []).append(self.one(t, attempt, memo))
        for t in pending:
            self.result.record(combine(runs[t.number]))
        self.drop_unshown_pictures(runs)

    def drop_unshown_pictures(self, runs: dict[str, list[TestResult]]) -> None:
        """Each repeat draws its own run; the pictures of runs no result shows
        (combine() keeps the failing run's) are removed from the folder."""
        kept = {img for t in self.result.tests for img in t.images}
        drawn = {img for rs in runs.values() for r in rs for img in r.images}
        folder = writers.submission_dir(self.run.out_dir, self.result)
        for img in drawn - kept:
            (folder / Path(img).name).unlink(missing_ok=True)

    def compiles(self, t: TestDef) -> tuple[bool, str]:
        """Whether every C file t needs compiled; if not, why."""
        for f in t.files:
            c = self.compiled.get(f)
            if c is not None and not c.ok:
                return False, f"{f} did not compile" + (" (timed out)" if c.timed_out else "")
        return True, ""

    def one(self, t: TestDef, attempt: int, memo: dict[str, Any]) -> TestResult:
        t0 = time.monotonic()
        try:
            outcome = self.judge(t, attempt, memo)
        except LabError as e:
            self.run.raise_if_cancelled()
            return TestResult.grader_failure(t, e.what)
        except Exception as e:
            self.run.raise_if_cancelled()
            if is_engine_gone(e):
                raise
            return TestResult.grader_failure(t, f"{type(e).__name__} in the check: {e}")
        passed = outcome.passed
        return TestResult(t, PASSED if passed else FAILED, t.points if passed else 0.0, outcome.seen,
                          seed=self.run.seed, timeline=outcome.timeline, images=outcome.images,
                          time_s=time.monotonic() - t0)

    def judge(self, t: TestDef, attempt: int, memo: dict[str, Any]) -> Outcome:
        if t.kind == "compile":
            c = self.compiled[t.files[0]]
            log = c.log.strip()
            if c.ok:
                return Outcome.ok(f"compiled with warnings:\n{log}" if log else "compiled without warnings")
            return Outcome.fail(log or "the compiler failed without a message")
        ok, why = self.compiles(t)
        if not ok and t.kind != "static":  # a static check reads the source, compiled or not
            return Outcome.fail(f"not run: {why}; the compiler's output is in the compile test")
        ctx = Context(t, self.sandbox, self.sub, {f: c.binary for f, c in self.compiled.items() if c.ok},
                      self.run.seed, attempt, writers.submission_dir(self.run.out_dir, self.result), memo)
        return self.run.plan.checks[t.number](ctx)
