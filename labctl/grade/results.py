"""What grading found: one TestResult per catalog test, one SubmissionResult
per submission, and the exit-code rule.

A harness failure is not a student failure. When the grader itself breaks
(an image missing, the engine gone, a container that would not start), the
affected tests are failed with "grader error, not your code: <reason>" and
flagged, and the run exits with GRADER_ERROR instead of 1, so nobody
publishes those scores by mistake.

Captured output is kept to its first 64 KiB (`cap`): a student's program can
print without end, and every report carries the output.
"""
from __future__ import annotations

import codecs
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from labctl.errors import ExitCode
from labctl.grade.catalog import TestDef

if TYPE_CHECKING:
    from labctl.grade.submission import Submission

PASSED = "passed"
FAILED = "failed"
STATUSES = (PASSED, FAILED)

# Exit codes of `labctl grade`: 0 every test passed, 1 some failed (the
# student's doing), GRADER_ERROR when the grader broke somewhere.
EXIT_ALL_PASSED = ExitCode.OK
EXIT_SOME_FAILED = ExitCode.FAILED
GRADER_ERROR = ExitCode.GRADER_ERROR

OUTPUT_LIMIT = 64 * 1024
GRADER_ERROR_PREFIX = "grader error, not your code: "
_CUT_RE = re.compile(r"\n\[\.\.\. [0-9]+ bytes cut\]\Z")


def decode(data: bytes) -> str:
    """A program's output as text: students' programs print any bytes."""
    return data.decode("utf-8", errors="replace")


def cap(text: str | bytes, limit: int = OUTPUT_LIMIT) -> str:
    """The first `limit` bytes (UTF-8) of text, then "[... N bytes cut]" if
    any were cut. Capping a capped text changes nothing."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return decode(raw)
    if isinstance(text, str):
        m = _CUT_RE.search(text)
        if m and len(text[: m.start()].encode("utf-8", errors="replace")) <= limit:
            return text
    # An incremental decoder holds back a character cut in half at the limit,
    # so it counts as cut rather than turning into a replacement character.
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    kept = dec.decode(raw[:limit], final=False)
    held = len(dec.getstate()[0])
    return f"{kept}\n[... {len(raw) - limit + held} bytes cut]"


@dataclass(frozen=True)
class FaultEvent:
    """One fault the grader injected, seconds after the test started."""

    at_s: float
    fault: str
    target: str

    def to_dict(self) -> dict[str, float | str]:
        return {"at_s": round(self.at_s, 3), "fault": self.fault, "target": self.target}


@dataclass
class TestResult:
    """The outcome of one catalog test. `output` is what the grader saw (the
    program's output, an exit status, a lock file's state); the expectation
    and the hint come from the TestDef, so reports show all three."""

    test: TestDef
    status: str
    score: float
    output: str = ""
    grader_error: bool = False
    runs: int = 1  # > 1 under --repeat for fault tests
    passes: int = -1  # -1: as many as the status says (runs if passed, else 0)
    seed: int | None = None  # the seed of the run this result reports (the failing one, if any)
    timeline: list[FaultEvent] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # relative to the submission's output directory
    time_s: float = 0.0
    unsubmitted: bool = False  # failed because its files were missing or the submission refused

    __test__ = False  # not a pytest class, despite the name

    def __post_init__(self) -> None:
        where = f"result of test {self.test.number}"
        if self.status not in STATUSES:
            raise ValueError(f"{where}: status {self.status!r} is not one of {STATUSES}")
        if not (math.isfinite(self.score) and 0 <= self.score <= self.test.points):
            raise ValueError(f"{where}: score {self.score} outside 0..{self.test.points:g}")
        if not self.test.informational and (self.status == PASSED) != (self.score == self.test.points):
            raise ValueError(f"{where}: a pass scores full points and a failure less ({self.score} {self.status})")
        if self.grader_error and self.status != FAILED:
            raise ValueError(f"{where}: a grader error cannot pass")
        if self.passes == -1:
            self.passes = self.runs if self.status == PASSED else 0
        if self.runs < 1 or not 0 <= self.passes <= self.runs:
            raise ValueError(f"{where}: {self.passes} passes of {self.runs} runs")
        self.output = cap(self.output)

    @classmethod
    def passed(cls, test: TestDef, output: str | bytes = "", **kw) -> TestResult:
        return cls(test, PASSED, test.points, cap(output), **kw)

    @classmethod
    def failed(cls, test: TestDef, seen: str | bytes, score: float = 0.0, **kw) -> TestResult:
        return cls(test, FAILED, score, cap(seen), **kw)

    @classmethod
    def not_submitted(cls, test: TestDef, missing: Iterable[str]) -> TestResult:
        names = ", ".join(missing)
        return cls(test, FAILED, 0.0, f"not submitted: {names} is not in the submission", unsubmitted=True)

    @classmethod
    def grader_failure(cls, test: TestDef, reason: str) -> TestResult:
        return cls(test, FAILED, 0.0, GRADER_ERROR_PREFIX + reason, grader_error=True)

    @property
    def number(self) -> str:
        return self.test.number

    @property
    def max_score(self) -> float:
        return self.test.points

    @property
    def flaky(self) -> bool:
        """Passed in some runs but not all: a race, which a fault test exists to
        find. A run the grader broke says nothing about the student's code."""
        return 0 < self.passes < self.runs and not self.grader_error

    @property
    def counts_as_failure(self) -> bool:
        """Informational findings inform; they never fail a submission."""
        return self.status == FAILED and not self.test.informational


def combine(runs: list[TestResult]) -> TestResult:
    """One result for a test run several times (--repeat): it passes only if
    every run passed, since a fault handled only sometimes is a race. The
    first failing run speaks for all (its output, seed and timeline), so the
    student can replay exactly that one."""
    if not runs:
        raise ValueError("combine: no runs")
    numbers = {r.test.number for r in runs}
    if len(numbers) != 1:
        raise ValueError(f"combine: runs of different tests {sorted(numbers)}")
    total = sum(r.runs for r in runs)
    passes = sum(r.passes for r in runs)
    failing = [r for r in runs if r.status == FAILED]
    rep = next((r for r in failing if r.grader_error), failing[0] if failing else runs[0])
    output = rep.output
    if failing and passes:
        output = f"passed {passes} of {total} runs; the first failing run (seed {rep.seed}):\n{output}"
    return TestResult(rep.test, rep.status, min(r.score for r in runs), output,
                      grader_error=any(r.grader_error for r in runs), runs=total, passes=passes, seed=rep.seed,
                      timeline=list(rep.timeline), images=list(rep.images),
                      time_s=sum(r.time_s for r in runs))


@dataclass(frozen=True)
class Total:
    score: float
    max_score: float


def _sum(values: Iterable[float]) -> float:
    # fsum, then rounding, so 0.1-point tests add up to what a human expects.
    return round(math.fsum(values), 6)


@dataclass
class SubmissionResult:
    """Everything graded for one submission. `planned` is the tests it was
    to run; a planned test left without a result at the end is a grader bug
    and `complete()` flags it as one."""

    submission: str
    planned: list[TestDef]
    tests: list[TestResult] = field(default_factory=list)
    execution_time: float = 0.0
    seed: int | None = None
    repeat: int = 1
    grader_error: str | None = None
    compile_logs: dict[str, str] = field(default_factory=dict)  # file -> compiler output
    source: str = ""  # the path as given, for "how to reproduce"
    files: list[str] = field(default_factory=list)  # exercise files found
    other_files: list[str] = field(default_factory=list)  # present but ignored
    problems: list[str] = field(default_factory=list)  # intake remarks for the student
    refused: str | None = None  # why the submission could not be read at all

    @classmethod
    def for_submission(cls, sub: Submission, planned: Iterable[TestDef], *, seed: int | None = None,
                       repeat: int = 1) -> SubmissionResult:
        """A result with what intake already decides: a refused submission
        fails every test, and a test whose files are missing is not submitted.
        The runner fills in the rest (see `pending`)."""
        r = cls(submission=sub.name, planned=sorted(planned, key=lambda t: t.sort_key), seed=seed, repeat=repeat,
                source=str(sub.source), files=sorted(sub.files), other_files=list(sub.other_files),
                problems=list(sub.problems), refused=sub.refused)
        for t in r.planned:
            if sub.refused:
                r.record(TestResult.failed(t, f"submission refused: {sub.refused}", unsubmitted=True))
            elif missing := [f for f in t.files if f not in sub.files]:
                r.record(TestResult.not_submitted(t, missing))
        return r

    def record(self, result: TestResult) -> None:
        """Adds a test's result, replacing an earlier one for the same test."""
        self.tests = [t for t in self.tests if t.number != result.number]
        self.tests.append(result)
        self.tests.sort(key=lambda t: t.test.sort_key)

    def result_for(self, number: str) -> TestResult | None:
        return next((t for t in self.tests if t.number == number), None)

    def pending(self) -> list[TestDef]:
        """Planned tests without a result yet: what the runner still has to run."""
        done = {t.number for t in self.tests}
        return [t for t in self.planned if t.number not in done]

    def mark_grader_error(self, reason: str, tests: Iterable[TestDef] | None = None) -> None:
        """The harness broke: fails the affected tests (by default every one
        still pending) as grader errors, not the student's, and notes why."""
        affected = list(self.pending() if tests is None else tests)
        for t in affected:
            self.record(TestResult.grader_failure(t, reason))
        if self.grader_error is None:
            self.grader_error = reason
        elif reason not in self.grader_error.split("; "):
            self.grader_error += "; " + reason

    def complete(self) -> None:
        """Call when the runner is done: no planned test may be left silent."""
        if self.pending():
            self.mark_grader_error("the runner recorded no result for this test")

    @property
    def score(self) -> float:
        return _sum(t.score for t in self.tests)

    @property
    def max_score(self) -> float:
        return _sum(t.points for t in self.planned)

    @property
    def exercises(self) -> list[int]:
        return sorted({t.exercise for t in self.planned})

    def exercise_totals(self) -> dict[int, Total]:
        return {ex: Total(_sum(t.score for t in self.tests if t.test.exercise == ex),
                          _sum(t.points for t in self.planned if t.exercise == ex))
                for ex in self.exercises}

    @property
    def has_grader_error(self) -> bool:
        return self.grader_error is not None or any(t.grader_error for t in self.tests)

    @property
    def all_passed(self) -> bool:
        return (self.refused is None and not self.pending()
                and not any(t.counts_as_failure for t in self.tests))

    @property
    def flaky(self) -> list[TestResult]:
        return [t for t in self.tests if t.flaky]


def exit_code(results: Iterable[SubmissionResult]) -> int:
    """0 when every test of every submission passed, 1 when some failed,
    GRADER_ERROR when the grader broke anywhere (which outranks failures:
    those scores are not to be trusted yet)."""
    rs = list(results)
    if any(r.has_grader_error for r in rs):
        return GRADER_ERROR
    if not all(r.all_passed for r in rs):
        return EXIT_SOME_FAILED
    return EXIT_ALL_PASSED
