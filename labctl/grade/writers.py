"""Reports of a grading run, for Gradescope, for CI and for people.

Per submission, in `DIR/<name>/`:

- `results.json`: Gradescope's autograder format (score, execution_time,
  output with output_format "md", tests with name, number, score, max_score,
  status, output, tags, visibility; seeds, repeats, fault timelines and
  flakiness in extra_data);
- `junit.xml`: one <testsuite> per exercise; a failure is <failure>, a grader
  error is <error>; an informational test is a passed <testcase> whose
  finding is in <system-out>, since a finding must not fail a CI job and
  <skipped> would claim it did not run;
- `feedback.md`: for the student, per exercise a table, then each failed
  test's expectation, what was seen and the hint with its timeline pictures,
  the timelines of the runs that passed, and how to reproduce the run.
  Hidden tests count but are not described (nor drawn). The pictures are
  PNG files the checks wrote beside it (TestResult.images, relative).

For a class (more than one submission), `DIR/grades.csv` and `DIR/summary.md`.

Students' programs print anything: their output reaches every report only
through `printable` (control characters shown as \\xNN, which also keeps
XML 1.0 well-formed) and, in Markdown, inside a code fence longer than any
run of backticks it holds.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import statistics
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from labctl.grade.catalog import EXERCISE_FILES, EXERCISES
from labctl.grade.results import FAILED, GRADER_ERROR_PREFIX, PASSED, SubmissionResult, TestResult

RESULTS_JSON = "results.json"
JUNIT_XML = "junit.xml"
FEEDBACK_MD = "feedback.md"
GRADES_CSV = "grades.csv"
SUMMARY_MD = "summary.md"

# Characters shown as escapes: C0 controls but tab and newline, DEL, C1
# controls, lone surrogates (from undecodable file names) and the two
# non-characters XML 1.0 forbids. A carriage return is shown too: seeing
# "\r" in the output is how a student learns their lines end in CRLF.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# Only what acts mid-line: md_text never starts a line, so '#', '>', '-'
# and friends stay as they are and hints stay readable.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<|~])")


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group(0))
    if c == 0x0D:
        return "\\r"
    return f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}"


def printable(text: str) -> str:
    """Text as it may appear in any report: tabs and newlines kept, every
    other control character (and anything XML 1.0 forbids) as an escape."""
    return _UNPRINTABLE.sub(_escape_char, text)


def md_text(text: str) -> str:
    """Arbitrary text (a file name from an archive) as inert Markdown on one line."""
    return _MD_SPECIAL.sub(r"\\\1", printable(text).replace("\n", " ").replace("\t", " "))


def md_fence(text: str, info: str = "text") -> str:
    """A code block no content can close early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = printable(text)
    return f"{fence}{info}\n{body}{'' if body.endswith(chr(10)) or not body else chr(10)}{fence}"


def _num(x: float) -> float | int:
    """Scores as JSON numbers without float noise: 6 rather than 6.0000000001."""
    r = round(x, 4)
    return int(r) if r == int(r) else r


def _fmt(x: float) -> str:
    return f"{_num(x):g}"


def _image_link(path: str) -> str:
    target = f"<{path}>" if re.search(r"[\s()<>]", path) else path
    return f"![timeline]({printable(target)})"


def md_code(text: str) -> str:
    """Inline code that no backtick in the text can end early."""
    body = printable(text).replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    tick = "`" * (longest + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{tick}{pad}{body}{pad}{tick}"


def _exercise_arg(r: SubmissionResult) -> str:
    return "all" if r.exercises == list(EXERCISES) else ",".join(map(str, r.exercises))


def reproduce_command(r: SubmissionResult, seed: int | None = None) -> str:
    seed = r.seed if seed is None else seed
    parts = ["labctl grade", shlex.quote(r.source or r.submission), "--exercise", _exercise_arg(r)]
    if seed is not None:
        parts += ["--seed", str(seed)]
    if r.repeat > 1:
        parts += ["--repeat", str(r.repeat)]
    return printable(" ".join(parts))


def status_label(t: TestResult) -> str:
    if t.grader_error:
        return "grader error"
    if t.test.informational:
        return "finding" if t.status == FAILED else "info"
    if t.flaky:
        return f"flaky ({t.passes}/{t.runs})"
    return t.status


# ---------------------------------------------------------------- results.json (Gradescope)


def _test_output_md(t: TestResult) -> str:
    """A test's output for Gradescope (Markdown): for a failure, the
    expectation, what was seen and the hint; for a grader error, only that."""
    if t.grader_error:
        reason = t.output.removeprefix(GRADER_ERROR_PREFIX)
        return f"**Grader error, not your code:** {md_text(reason)}"
    parts: list[str] = []
    if t.runs > 1:
        parts.append(f"Passed {t.passes} of {t.runs} runs." + (f" Seed of the run shown: {t.seed}." if t.flaky else ""))
    if t.test.informational:
        parts.append(f"**Informational, no points:** {md_text(t.test.description)}")
        if t.output:
            parts.append(md_fence(t.output))
        if t.status == FAILED:
            parts.append(f"**Hint:** {md_text(t.test.hint)}")
        return "\n\n".join(parts)
    if t.status == PASSED:
        if t.output:
            parts.append(md_fence(t.output))
        return "\n\n".join(parts)
    parts.append(f"**Expected:** {md_text(t.test.description)}")
    parts.append("**Seen:**\n\n" + (md_fence(t.output) if t.output else "(nothing)"))
    parts.append(f"**Hint:** {md_text(t.test.hint)}")
    return "\n\n".join(parts)


def _summary_md(r: SubmissionResult) -> str:
    lines = [f"**Score: {_fmt(r.score)} / {_fmt(r.max_score)}**"]
    for ex, tot in r.exercise_totals().items():
        lines.append(f"- Exercise {ex}: {_fmt(tot.score)} / {_fmt(tot.max_score)}")
    if r.refused:
        lines.append(f"\n**Submission refused:** {md_text(r.refused)}")
    if r.has_grader_error:
        lines.append(f"\n**Grader error, not your code:** {md_text(r.grader_error or 'see the tests marked so')}. "
                     "The tests it affected are not graded yet; this score is not final.")
    if r.problems:
        lines.append("\nAbout your submission:")
        lines += [f"- {md_text(p)}" for p in r.problems]
    if r.seed is not None:
        lines.append(f"\nSeed {r.seed}" + (f", each fault test run {r.repeat} times" if r.repeat > 1 else "")
                     + f". Reproduce: {md_code(reproduce_command(r))}")
    return "\n".join(lines)


def _test_extra(t: TestResult) -> dict[str, Any]:
    return {
        "runs": t.runs,
        "passes": t.passes,
        "flaky": t.flaky,
        "seed": t.seed,
        "grader_error": t.grader_error,
        "informational": t.test.informational,
        "fault_timeline": [e.to_dict() for e in t.timeline],
        "images": list(t.images),
        "time_s": round(t.time_s, 3),
    }


def results_json(r: SubmissionResult) -> dict[str, Any]:
    """The submission in Gradescope's results.json format."""
    return {
        "score": _num(r.score),
        "execution_time": int(round(r.execution_time)),
        "output": _summary_md(r),
        "output_format": "md",
        "test_output_format": "md",
        "test_name_format": "text",
        "extra_data": {
            "submission": r.submission,
            "seed": r.seed,
            "repeat": r.repeat,
            "max_score": _num(r.max_score),
            "grader_error": None if r.grader_error is None else printable(r.grader_error),
            "refused": None if r.refused is None else printable(r.refused),
            "flaky": [t.number for t in r.flaky],
            "files": list(r.files),
            "other_files": [printable(f) for f in r.other_files],
        },
        "tests": [
            {
                "name": t.test.name,
                "number": t.number,
                "score": _num(t.score),
                "max_score": _num(t.max_score),
                "status": t.status,
                "output": _test_output_md(t),
                "output_format": "md",
                "tags": list(t.test.tags),
                "visibility": t.test.visibility,
                "extra_data": _test_extra(t),
            }
            for t in r.tests
        ],
    }


# ---------------------------------------------------------------- junit.xml


def _attr(text: str, limit: int = 1000) -> str:
    one_line = " ".join(printable(text).split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def _failure_text(t: TestResult) -> str:
    parts = [f"expected: {t.test.description}", "seen:", t.output or "(nothing)", f"hint: {t.test.hint}"]
    if t.runs > 1:
        parts.insert(0, f"passed {t.passes} of {t.runs} runs (seed {t.seed})")
    return printable("\n".join(parts))


def junit_xml(r: SubmissionResult) -> str:
    """The submission as JUnit XML: suites per exercise, cases per test."""
    by_ex: dict[int, list[TestResult]] = defaultdict(list)
    for t in r.tests:
        by_ex[t.test.exercise].append(t)
    root = ET.Element("testsuites", {
        "name": f"labctl grade {r.submission}",
        "tests": str(len(r.tests)),
        "failures": str(sum(1 for t in r.tests if t.counts_as_failure and not t.grader_error)),
        "errors": str(sum(1 for t in r.tests if t.grader_error)),
        "skipped": "0",
        "time": f"{r.execution_time:.3f}",
    })
    for ex in sorted(by_ex):
        tests = by_ex[ex]
        suite = ET.SubElement(root, "testsuite", {
            "name": f"exercise-{ex}",
            "tests": str(len(tests)),
            "failures": str(sum(1 for t in tests if t.counts_as_failure and not t.grader_error)),
            "errors": str(sum(1 for t in tests if t.grader_error)),
            "skipped": "0",
            "time": f"{sum(t.time_s for t in tests):.3f}",
        })
        props = ET.SubElement(suite, "properties")
        tot = r.exercise_totals().get(ex)
        for name, value in (("submission", r.submission), ("seed", r.seed), ("repeat", r.repeat),
                            ("score", _fmt(tot.score) if tot else ""),
                            ("max_score", _fmt(tot.max_score) if tot else "")):
            ET.SubElement(props, "property", {"name": name, "value": _attr(str("" if value is None else value))})
        for t in tests:
            case = ET.SubElement(suite, "testcase", {
                "classname": f"exercise-{ex}",
                "name": _attr(f"{t.number} {t.test.name}"),
                "time": f"{t.time_s:.3f}",
            })
            if t.grader_error:
                err = ET.SubElement(case, "error", {"message": _attr(t.output), "type": "grader_error"})
                err.text = printable(t.output)
            elif t.counts_as_failure:
                fail = ET.SubElement(case, "failure", {
                    "message": _attr(f"{_fmt(t.score)}/{_fmt(t.max_score)}: expected {t.test.description}"),
                    "type": "flaky" if t.flaky else "failed",
                })
                fail.text = _failure_text(t)
            elif t.test.informational and t.output:
                out = ET.SubElement(case, "system-out")
                out.text = printable(f"informational (no points): {t.test.description}\n{t.output}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------- feedback.md (the student's)


def feedback_md(r: SubmissionResult) -> str:
    out = [f"# Feedback: {md_text(r.submission)}", "", _summary_md(r), ""]
    if r.files or r.other_files:
        out.append("Files graded: " + (", ".join(f"`{f}`" for f in r.files) or "none") + ".")
        if r.other_files:
            out += ["", "Other files, not graded:", "", md_fence("\n".join(r.other_files))]
        out.append("")
    totals = r.exercise_totals()
    for ex in r.exercises:
        tests = [t for t in r.tests if t.test.exercise == ex]
        shown = [t for t in tests if t.test.visibility != "hidden"]
        hidden = [t for t in tests if t.test.visibility == "hidden"]
        out += [f"## Exercise {ex}: {_fmt(totals[ex].score)} / {_fmt(totals[ex].max_score)}", "",
                "| # | test | score | status |", "|---|---|---|---|"]
        for t in shown:
            score = "info" if t.test.informational else f"{_fmt(t.score)} / {_fmt(t.max_score)}"
            out.append(f"| {t.number} | {md_text(t.test.name)} | {score} | {status_label(t)} |")
        if hidden:
            out += ["", f"The total includes {len(hidden)} hidden test(s) worth "
                        f"{_fmt(sum(t.max_score for t in hidden))} points; you scored "
                        f"{_fmt(sum(t.score for t in hidden))} of them."]
        out.append("")
        for file, log in sorted(r.compile_logs.items()):
            if EXERCISE_FILES.get(file) == ex and log.strip():
                out += [f"### Compiler output for `{md_text(file)}`", "", md_fence(log), ""]
        missing = [t for t in shown if t.unsubmitted]
        if missing:
            # One line for them all: each would only repeat "file missing".
            out += [f"Not run, {md_text(missing[0].output)}: " + ", ".join(t.number for t in missing) + ".", ""]
        worth = [t for t in shown if not t.unsubmitted
                 and (t.status == FAILED or t.flaky or (t.test.informational and t.output))]
        for t in worth:
            out += _feedback_detail(t, r)
        out += _feedback_pictures(shown, {img for t in worth for img in t.images})
    out += ["## Reproduce", ""]
    if r.seed is not None:
        out.append(f"This run used seed {r.seed}" + (f" and ran each fault test {r.repeat} times" if r.repeat > 1
                                                     else "") + ". The same seed replays the same faults at the "
                   "same moments:")
    else:
        out.append("Grade the same files again with:")
    out += ["", md_fence(reproduce_command(r), "sh"), ""]
    return "\n".join(out)


def _feedback_detail(t: TestResult, r: SubmissionResult) -> list[str]:
    head = f"### {t.number} {md_text(t.test.name)}"
    if t.test.informational:
        head += " (informational, no points)"
    else:
        head += f" ({_fmt(t.score)} / {_fmt(t.max_score)})"
    out = [head, ""]
    if t.grader_error:
        reason = t.output.removeprefix(GRADER_ERROR_PREFIX)
        return out + [f"Grader error, not your code: {md_text(reason)}. This test will be run again.", ""]
    if t.runs > 1:
        out += [f"Passed {t.passes} of {t.runs} runs" + ("; a fault handled only sometimes is a race. "
                                                         "The run shown failed." if t.flaky else "."), ""]
    out += [f"**Expected:** {md_text(t.test.description)}", "", "**Seen:**", "",
            md_fence(t.output) if t.output else "(nothing)", ""]
    if t.status == FAILED:
        out += [f"**Hint:** {md_text(t.test.hint)}", ""]
    if t.timeline:
        out += ["Faults injected:", "", "| at (s) | fault | target |", "|---|---|---|"]
        out += [f"| {e.at_s:.2f} | {md_text(e.fault)} | {md_text(e.target)} |" for e in t.timeline]
        out.append("")
    for img in t.images:
        out += [_image_link(img), ""]
    if t.seed is not None and t.seed != r.seed:
        out += [f"Replay this run: {md_code(reproduce_command(r, t.seed))}", ""]
    return out


def _feedback_pictures(tests: list[TestResult], shown_already: set[str]) -> list[str]:
    """The timelines of the runs not shown with a failure above (those that
    passed), each picture once with the tests that judged its run."""
    by_image: dict[str, list[str]] = {}
    for t in tests:
        for img in t.images:
            if img not in shown_already:
                by_image.setdefault(img, []).append(t.number)
    if not by_image:
        return []
    out = ["### Timelines of the lab runs", ""]
    for img, numbers in by_image.items():
        out += [f"Test{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}:", "", _image_link(img), ""]
    return out


# ---------------------------------------------------------------- the class: grades.csv and summary.md


def _csv_cell(text: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def class_exercises(results: Iterable[SubmissionResult]) -> list[int]:
    return sorted({ex for r in results for ex in r.exercises})


def grades_csv(results: list[SubmissionResult]) -> str:
    exercises = class_exercises(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["submission", "total", "max", *(f"exercise_{ex}" for ex in exercises), "grader_error"])
    for r in results:
        totals = r.exercise_totals()
        w.writerow([_csv_cell(r.submission), _fmt(r.score), _fmt(r.max_score),
                    *(_fmt(totals[ex].score) if ex in totals else "" for ex in exercises),
                    _csv_cell(printable(r.grader_error or ("yes" if r.has_grader_error else "")))])
    return buf.getvalue()


DISTRIBUTION_BINS = tuple((lo, lo + 10) for lo in range(0, 100, 10))


def distribution(results: list[SubmissionResult]) -> dict[str, int]:
    """Submissions per tenth of the maximum: '0-9 %' ... '90-99 %', '100 %'."""
    bins = {f"{lo}-{hi - 1} %": 0 for lo, hi in DISTRIBUTION_BINS}
    bins["100 %"] = 0
    for r in results:
        pct = 100.0 * r.score / r.max_score if r.max_score else 0.0
        if pct >= 100.0 - 1e-9:
            bins["100 %"] += 1
        else:
            lo = int(pct // 10) * 10
            bins[f"{lo}-{lo + 9} %"] += 1
    return bins


def failure_counts(results: list[SubmissionResult]) -> list[tuple[TestResult, int, int]]:
    """(a result of the test, submissions whose code failed it, submissions
    that did not submit its file), most failed first. Grader errors are not
    the students' and are not counted."""
    failed: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    example: dict[str, TestResult] = {}
    for r in results:
        for t in r.tests:
            if t.counts_as_failure and not t.grader_error:
                (missing if t.unsubmitted else failed)[t.number] += 1
                example.setdefault(t.number, t)
    order = sorted(example, key=lambda n: (-failed[n], -missing[n], example[n].test.sort_key))
    return [(example[n], failed[n], missing[n]) for n in order]


def summary_md(results: list[SubmissionResult]) -> str:
    out = ["# Class summary", "", _summary_intro(results)]
    out += _summary_scores(results)
    out += _summary_failures(results)
    out += _summary_flaky(results)
    out += _summary_errors(results)
    return "\n".join(out) + "\n"


def _summary_intro(results: list[SubmissionResult]) -> str:
    seeds = sorted({r.seed for r in results if r.seed is not None})
    return (f"{len(results)} submission(s) graded on exercise(s) {', '.join(map(str, class_exercises(results)))}"
            + (f", seed {', '.join(map(str, seeds))}" if seeds else "")
            + (f", fault tests run {results[0].repeat} times" if results and results[0].repeat > 1 else "")
            + ".")


def _summary_scores(results: list[SubmissionResult]) -> list[str]:
    exercises = class_exercises(results)
    out = ["", "## Scores", ""]
    header = ["", "total", *(f"exercise {ex}" for ex in exercises)]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    columns: list[list[float]] = [[r.score for r in results]]
    for ex in exercises:
        columns.append([r.exercise_totals()[ex].score for r in results if ex in r.exercise_totals()])
    maxes = [max((r.max_score for r in results), default=0.0)]
    maxes += [max((r.exercise_totals()[ex].max_score for r in results if ex in r.exercise_totals()), default=0.0)
              for ex in exercises]
    for label, fn in (("mean", statistics.fmean), ("median", statistics.median), ("min", min), ("max", max)):
        cells = [f"{fn(c):.1f}" if c else "" for c in columns]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("| out of | " + " | ".join(_fmt(m) for m in maxes) + " |")
    out += ["", "## Distribution of totals", "", "| share of the maximum | submissions |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in distribution(results).items()]
    return out


def _summary_failures(results: list[SubmissionResult]) -> list[str]:
    n = len(results)
    out = ["", "## Tests failed most", ""]
    counts = failure_counts(results)
    if counts:
        out += ["| # | test | failed | not submitted |", "|---|---|---|---|"]
        out += [f"| {t.number} | {md_text(t.test.name)} | {k} of {n} | {m} of {n} |" for t, k, m in counts]
    else:
        out.append("No test failed.")
    findings = Counter(t.number for r in results for t in r.tests
                       if t.test.informational and t.status == FAILED and not t.grader_error and not t.unsubmitted)
    if findings:
        names = {t.number: t.test.name for r in results for t in r.tests}
        out += ["", "## Informational findings", "", "| # | finding | submissions |", "|---|---|---|"]
        out += [f"| {num} | {md_text(names[num])} | {k} of {n} |" for num, k in findings.most_common()]
    return out


def _summary_flaky(results: list[SubmissionResult]) -> list[str]:
    flaky: dict[str, list[str]] = defaultdict(list)
    for r in results:
        for t in r.flaky:
            flaky[t.number].append(r.submission)
    out = ["", "## Flaky tests", ""]
    if flaky:
        out += ["Passed in some runs and failed in others (a race in the student's code, or in the grader):", "",
                "| # | submissions |", "|---|---|"]
        out += [f"| {num} | {md_text(', '.join(subs))} ({len(subs)}) |"
                for num, subs in sorted(flaky.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    else:
        out.append("None" + (" (run with --repeat N to look for them)." if all(r.repeat == 1 for r in results)
                             else "."))
    return out


def _summary_errors(results: list[SubmissionResult]) -> list[str]:
    errs = [r for r in results if r.has_grader_error]
    out = ["", "## Grader errors", ""]
    if errs:
        out.append(f"{len(errs)} submission(s) were not fully graded; their scores are not final:")
        out += [""] + [f"- {md_text(r.submission)}: {md_text(r.grader_error or 'see its tests')}" for r in errs]
    else:
        out.append("None.")
    refused = [r for r in results if r.refused]
    if refused:
        out += ["", "## Refused submissions", ""]
        out += [f"- {md_text(r.submission)}: {md_text(r.refused or '')}" for r in refused]
    return out


# ---------------------------------------------------------------- files


def _write(path: Path, text: str) -> None:
    """Replaces the file whole: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def submission_dir(out_dir: Path, r: SubmissionResult) -> Path:
    d = (out_dir / r.submission).resolve()
    if d.parent != out_dir.resolve():
        # Names come from safe_name(); this guards against a caller that skipped it.
        raise ValueError(f"submission name {r.submission!r} would leave {out_dir}")
    return d


def write_submission(out_dir: Path, r: SubmissionResult) -> Path:
    """Writes results.json, junit.xml and feedback.md; returns their directory."""
    d = submission_dir(out_dir, r)
    _write(d / RESULTS_JSON, json.dumps(results_json(r), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    _write(d / JUNIT_XML, junit_xml(r))
    _write(d / FEEDBACK_MD, feedback_md(r))
    return d


def write_all(out_dir: Path, results: list[SubmissionResult], class_files: bool | None = None) -> list[Path]:
    """Every submission's reports, and the class's when there are several
    (or when class_files says so). Returns the files written."""
    written: list[Path] = []
    for r in results:
        d = write_submission(out_dir, r)
        written += [d / RESULTS_JSON, d / JUNIT_XML, d / FEEDBACK_MD]
    if class_files if class_files is not None else len(results) > 1:
        _write(out_dir / GRADES_CSV, grades_csv(results))
        _write(out_dir / SUMMARY_MD, summary_md(results))
        written += [out_dir / GRADES_CSV, out_dir / SUMMARY_MD]
    return written
