"""`labctl grade`'s engine-free core: the catalog, the result model, the
report formats (Gradescope results.json, JUnit XML, feedback, class files)
and the intake of hostile archives. No engine, nothing executed."""
from __future__ import annotations

import builtins
import csv
import dataclasses
import gzip
import io
import json
import os
import re
import stat
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT
from labctl.errors import ExitCode, LabError
from labctl.grade import catalog, submission, writers
from labctl.grade import results as R
from labctl.grade.catalog import BY_NUMBER, CATALOG, EXERCISE_FILES, TestDef
from labctl.grade.catalog import tests_for as select  # a test_* name would be collected
from labctl.grade.results import FaultEvent, SubmissionResult, TestResult
from labctl.grade.submission import MAX_FILE_BYTES, MAX_MEMBERS, Submission, load_submission, load_submissions

GRADESCOPE_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
GRADESCOPE_FORMATS = {"text", "html", "simple_format", "md", "ansi"}
# XML 1.0 Char production: anything outside it makes the document ill-formed.
XML_ILLEGAL = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
NASTY = ("\x00\x01\x07\x08\x0b\x0c\x1b[31mred\x1b[0m\x7f\x85 \"double\" 'single' ]]> <tag attr=\"x\"> & &amp; "
         "``` fence ```` \r\n" + b"\xff\xfe\xc3(bad utf-8)".decode("utf-8", errors="replace") + " \ufffe\uffff")


# ---------------------------------------------------------------- catalog


def test_catalog_numbers_are_unique_and_of_the_form_exercise_dot_position():
    numbers = [t.number for t in CATALOG]
    assert len(numbers) == len(set(numbers))
    for t in CATALOG:
        assert re.fullmatch(r"[1-4]\.[1-9][0-9]*", t.number), t.number
        assert int(t.number.split(".")[0]) == t.exercise
    # positions run 1..n without gaps in each exercise
    for ex in catalog.EXERCISES:
        positions = sorted(int(t.number.split(".")[1]) for t in CATALOG if t.exercise == ex)
        assert positions == list(range(1, len(positions) + 1))


@pytest.mark.parametrize("ex", [1, 2, 3, 4])
def test_points_sum_to_100_per_exercise(ex):
    assert sum(t.points for t in CATALOG if t.exercise == ex) == pytest.approx(100.0)


def test_informational_tests_and_only_they_carry_no_points():
    infos = [t for t in CATALOG if t.informational]
    assert {t.number for t in infos} >= {"2.8", "3.10", "4.16"}
    assert all(t.points == 0 for t in infos)
    assert all(t.points > 0 for t in CATALOG if not t.informational)


def test_catalog_fields_hold_allowed_values():
    for t in CATALOG:
        assert t.visibility in {"visible", "after_published", "hidden"}
        assert t.kind in catalog.KINDS
        assert t.tags[0] == f"exercise-{t.exercise}"
        assert all(tag == f"exercise-{t.exercise}" or tag.startswith("fault:") for tag in t.tags)
        assert t.files and all(EXERCISE_FILES[f] == t.exercise for f in t.files)
        assert t.description and "\n" not in t.description and t.hint
        if t.fault_test:
            assert t.faults, t.number


def test_fault_tests_are_those_whose_timing_can_matter():
    repeated = {t.number for t in CATALOG if t.fault_test}
    # signals, kills and a second process: repeated
    assert {"2.5", "2.6", "2.8", "3.7", "4.6", "4.7", "4.14", "4.15", "4.18", "4.20", "4.23"} <= repeated
    # faults in the data, met at the same line every run: once is enough
    assert not {"1.5", "1.6", "1.7", "3.4", "4.3", "4.4", "4.9", "4.10", "4.2", "4.11"} & repeated


def test_catalog_names_the_tests_a_careful_grader_runs():
    def find(ex: int, *words: str) -> TestDef:
        hits = [t for t in select([ex]) if all(w.lower() in (t.name + " " + t.description).lower() for w in words)]
        assert hits, f"exercise {ex}: no test about {words}"
        return hits[0]

    assert find(4, "300-byte").visibility == "after_published"
    assert "sigterm" in find(4, "SIGTERM while blocked").faults
    assert find(4, "async-signal-unsafe").informational and "line number" in find(4, "async-signal-unsafe").description
    assert find(3, "async-signal-unsafe").informational
    assert find(2, "SIGSTOP").informational and "sigstop" in find(2, "SIGSTOP").faults
    assert "200,000" in find(4, "stderr flood").description
    for words in [("exactly one restart",), ("two workers",), ("CRLF",), ("no final newline",), ("empty input",),
                  ("12abc",), ("exit(0)",), ("own worker",), ("generateData",), ("SIGTERM at the end",)]:
        find(4, *words)
    for words in [("INFO",), ("WARNING",), ("CRITICAL",), ("traceback",), ("timestamp",), ("-10, 0, 999, -25",)]:
        find(1, *words)
    for words in [("PID",), ("Heartbeat",), ("SIGKILL",), ("stale lock",)]:
        find(2, *words)
    for words in [("leaves naive.lock",), ("removes robust.lock",), ("stderr",), ("exit(0)",)]:
        find(3, *words)


def test_tests_for_selects_sorts_and_refuses_unknown_exercises():
    four = select([4])
    assert [t.number for t in four][:3] == ["4.1", "4.2", "4.3"] and all(t.exercise == 4 for t in four)
    assert [t.number for t in four].index("4.10") == 9  # numeric order, not "4.10" < "4.2"
    assert {t.exercise for t in select("1,3")} == {1, 3}
    assert len(select("all")) == len(CATALOG)
    with pytest.raises(LabError) as e:
        select("5")
    assert e.value.code == ExitCode.USAGE and "--exercise" in e.value.what
    with pytest.raises(LabError):
        select([7])


def test_catalog_check_names_the_broken_test():
    tests = list(CATALOG)
    with pytest.raises(ValueError, match=r"4\.2 .*twice"):
        catalog._check([*tests, dataclasses.replace(BY_NUMBER["4.2"])])
    with pytest.raises(ValueError, match="exercise 4's points sum to 101"):
        catalog._check([dataclasses.replace(t, points=t.points + 1) if t.number == "4.2" else t for t in tests])
    with pytest.raises(ValueError, match=r"4\.16 .*0 points"):
        catalog._check([dataclasses.replace(t, points=1.0) if t.number == "4.16" else t for t in tests])


def test_catalog_cli_prints_the_markdown_the_docs_hold(capsys):
    assert catalog.main(["--markdown"]) == 0
    out = capsys.readouterr().out
    assert out == catalog.markdown()
    rows = [line for line in out.splitlines() if re.match(r"\| [1-4]\.[0-9]+ \|", line)]
    assert len(rows) == len(CATALOG)
    assert catalog.main(["--exercise", "9"]) == ExitCode.USAGE


def test_docs_catalog_table_matches_the_catalog():
    doc = (ROOT / "docs" / "grading.md").read_text()
    m = re.search(r"<!-- catalog:begin.*?-->\n(.*?)<!-- catalog:end -->", doc, re.S)
    assert m, "docs/grading.md lacks the catalog markers"
    assert m.group(1).strip() == catalog.markdown().strip(), (
        "docs/grading.md's table drifted: paste `python -m labctl.grade.catalog --markdown` between the markers")


# ---------------------------------------------------------------- results


def test_cap_keeps_the_first_64_kib_and_says_how_much_was_cut():
    assert R.cap("short") == "short"
    exact = "a" * R.OUTPUT_LIMIT
    assert R.cap(exact) == exact
    text = "a" * R.OUTPUT_LIMIT + "b" * 1000
    out = R.cap(text)
    assert out == "a" * R.OUTPUT_LIMIT + "\n[... 1000 bytes cut]"
    assert R.cap(out) == out  # capping twice changes nothing
    # a 3-byte character straddling the limit is cut whole, and counted
    multi = "a" * (R.OUTPUT_LIMIT - 1) + "€" + "z"
    out = R.cap(multi)
    assert out == "a" * (R.OUTPUT_LIMIT - 1) + "\n[... 4 bytes cut]"
    # bytes that are not UTF-8 become replacement characters
    assert R.cap(b"ok \xff\xfe") == "ok \ufffd\ufffd"
    assert R.cap(b"x" * 10, limit=4) == "xxxx\n[... 6 bytes cut]"


def test_test_result_validates_status_and_score():
    t = BY_NUMBER["4.2"]
    with pytest.raises(ValueError, match="status"):
        TestResult(t, "ok", 8.0)
    with pytest.raises(ValueError, match="outside"):
        TestResult(t, R.PASSED, 9.0)
    with pytest.raises(ValueError, match="full points"):
        TestResult(t, R.PASSED, 4.0)
    with pytest.raises(ValueError, match="full points"):
        TestResult(t, R.FAILED, 8.0)
    with pytest.raises(ValueError, match="grader error"):
        TestResult(t, R.PASSED, 8.0, grader_error=True)
    assert TestResult.failed(t, "seen", score=4.0).score == 4.0  # partial credit on a failure
    big = TestResult.failed(t, "x" * (R.OUTPUT_LIMIT + 10))
    assert big.output.endswith("[... 10 bytes cut]")
    assert TestResult.passed(t).passes == 1 and TestResult.failed(t, "").passes == 0


def test_combine_repeats_passes_only_when_every_run_passed():
    t = BY_NUMBER["4.14"]
    ok = [TestResult.passed(t, seed=s) for s in (1, 2, 3)]
    c = R.combine(ok)
    assert c.status == R.PASSED and c.runs == 3 and c.passes == 3 and not c.flaky and c.score == t.points
    ev = FaultEvent(0.25, "sigterm", "worker")
    bad = TestResult.failed(t, "lock left behind", seed=2, timeline=[ev], images=["timeline-4.14.png"])
    c = R.combine([ok[0], bad, ok[2]])
    assert c.status == R.FAILED and c.score == 0 and c.flaky and (c.passes, c.runs) == (2, 3)
    assert c.seed == 2 and c.timeline == [ev] and c.images == ["timeline-4.14.png"]
    assert "passed 2 of 3 runs" in c.output and "lock left behind" in c.output
    with pytest.raises(ValueError):
        R.combine([ok[0], TestResult.passed(BY_NUMBER["4.2"])])


def _sub(name="alice", files=("hardcore_worker.c", "supervisor.py"), **kw) -> Submission:
    return Submission(name, Path(f"subs/{name}.zip"), files={f: b"int main(void){}" for f in files}, **kw)


def test_for_submission_fails_missing_files_as_not_submitted_and_refused_ones_entirely():
    r = SubmissionResult.for_submission(_sub(files=("supervisor.py",)), select([4]), seed=5)
    worker_tests = [t for t in select([4]) if "hardcore_worker.c" in t.files]
    for t in worker_tests:
        res = r.result_for(t.number)
        assert res is not None and res.status == R.FAILED and "not submitted: hardcore_worker.c" in res.output
    assert {t.number for t in r.pending()} == {t.number for t in select([4]) if t.files == ("supervisor.py",)}
    refused = SubmissionResult.for_submission(_sub(files=(), refused="member '../x' has a '..' component"),
                                              select([4]))
    assert not refused.pending() and all("submission refused" in t.output for t in refused.tests)
    assert refused.score == 0 and not refused.has_grader_error and R.exit_code([refused]) == 1


def test_grader_error_fails_affected_tests_as_not_the_students_and_exits_distinctly():
    r = SubmissionResult.for_submission(_sub(), select([4]))
    first = r.pending()[0]
    r.record(TestResult.passed(first))
    r.mark_grader_error("engine unreachable")
    assert r.result_for(first.number).status == R.PASSED  # done before the harness broke: kept
    for t in r.tests[1:]:
        assert t.status == R.FAILED and t.grader_error and t.score == 0
        assert t.output == "grader error, not your code: engine unreachable"
    assert r.grader_error == "engine unreachable"
    assert R.exit_code([r]) == R.GRADER_ERROR == 10
    r.mark_grader_error("image missing", [BY_NUMBER["4.2"]])
    assert r.grader_error == "engine unreachable; image missing"


def test_complete_flags_planned_tests_left_without_a_result():
    r = SubmissionResult.for_submission(_sub(), select([4]))
    for t in r.pending()[:-1]:
        r.record(TestResult.passed(t))
    r.complete()
    last = r.tests[-1]
    assert last.grader_error and "recorded no result" in last.output


def test_exit_code_rule():
    def graded(fail: str | None = None) -> SubmissionResult:
        r = SubmissionResult.for_submission(_sub(), select([4]))
        for t in r.pending():
            r.record(TestResult.failed(t, "no") if t.number == fail else TestResult.passed(t))
        return r

    assert R.exit_code([graded(), graded()]) == 0
    assert R.exit_code([graded(), graded("4.2")]) == 1
    assert R.exit_code([graded("4.16")]) == 0  # an informational finding fails nobody
    broken = graded("4.2")
    broken.mark_grader_error("container would not start", [BY_NUMBER["4.3"]])
    assert R.exit_code([graded(), broken]) == R.GRADER_ERROR


def test_totals_per_exercise():
    r = SubmissionResult.for_submission(_sub(files=tuple(EXERCISE_FILES)), select("1,4"))
    for t in r.pending():
        if t.exercise == 1:
            r.record(TestResult.passed(t))
        else:
            r.record(TestResult.failed(t, "no", score=t.points / 2) if t.points else TestResult.failed(t, ""))
    totals = r.exercise_totals()
    assert totals[1] == R.Total(100.0, 100.0) and totals[4] == R.Total(50.0, 100.0)
    assert (r.score, r.max_score) == (150.0, 200.0) and r.exercises == [1, 4]


# ---------------------------------------------------------------- a graded class, for the writers


HIDDEN = dataclasses.replace(BY_NUMBER["4.12"], visibility="hidden")


def graded_alice() -> SubmissionResult:
    """Every kind of outcome: passes, a failure with nasty output, a flaky
    fault test with a timeline and a picture, a grader error, an
    informational finding, a hidden test."""
    planned = [HIDDEN if t.number == "4.12" else t for t in select([4])]
    r = SubmissionResult.for_submission(_sub(), planned, seed=1234, repeat=3)
    r.execution_time = 42.4
    r.compile_logs = {"hardcore_worker.c": "hardcore_worker.c:3:5: warning: unused variable 'x'"}
    r.problems = ["ignored extra/worker.c: exercise files are read from the top level only"]
    for t in r.pending():
        if t.number == "4.9":
            r.record(TestResult.failed(t, NASTY, time_s=1.25))
        elif t.number == "4.14":
            ev = [FaultEvent(0.5, "sigterm", "worker")]
            r.record(R.combine([TestResult.passed(t, seed=11),
                                TestResult.failed(t, "lock file still there after 2 s", seed=12, timeline=ev,
                                                  images=["timeline-4.14.png"]),
                                TestResult.passed(t, seed=13)]))
        elif t.number == "4.16":
            r.record(TestResult.failed(t, "hardcore_worker.c:42: printf() in handler on_segv"))
        elif t.number == "4.12":
            r.record(TestResult.failed(t, "no answer to the last line"))
        elif t.number == "4.20":
            pass
        else:
            r.record(TestResult.passed(t, time_s=0.5))
    r.mark_grader_error("container for the flood test was killed by the engine (OOM of the grader's helper)")
    return r


def graded_class() -> list[SubmissionResult]:
    alice = graded_alice()
    bob = SubmissionResult.for_submission(_sub("bob", files=("supervisor.py",)), select([4]), seed=1234)
    for t in bob.pending():
        bob.record(TestResult.failed(t, "no restart") if t.number == "4.18" else TestResult.passed(t))
    carol = SubmissionResult.for_submission(_sub("carol"), select([4]), seed=1234)
    for t in carol.pending():
        carol.record(TestResult.passed(t))
    dave = SubmissionResult.for_submission(_sub("dave", files=(), refused="corrupt zip"), select([4]), seed=1234)
    return [alice, bob, carol, dave]


# ---------------------------------------------------------------- results.json


@pytest.fixture
def rj() -> dict:
    return writers.results_json(graded_alice())


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def test_results_json_top_level_fields(rj):
    assert _is_number(rj["score"]) and rj["score"] == pytest.approx(sum(t["score"] for t in rj["tests"]))
    assert _is_number(rj["execution_time"]) and rj["execution_time"] == 42
    assert isinstance(rj["output"], str) and "Score: " in rj["output"]
    assert rj["output_format"] == "md"
    assert rj["test_output_format"] in GRADESCOPE_FORMATS and rj["test_name_format"] in GRADESCOPE_FORMATS
    assert isinstance(rj["tests"], list) and len(rj["tests"]) == len(select([4]))
    assert set(rj) <= {"score", "execution_time", "output", "output_format", "test_output_format",
                       "test_name_format", "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}


def test_results_json_test_names_and_numbers(rj):
    numbers = [t["number"] for t in rj["tests"]]
    assert len(numbers) == len(set(numbers))
    for t in rj["tests"]:
        assert isinstance(t["name"], str) and t["name"] == BY_NUMBER[t["number"]].name
        assert isinstance(t["number"], str) and re.fullmatch(r"[0-9]+\.[0-9]+", t["number"])


def test_results_json_scores_within_max(rj):
    for t in rj["tests"]:
        assert _is_number(t["score"]) and _is_number(t["max_score"])
        assert 0 <= t["score"] <= t["max_score"], t
        assert t["max_score"] == BY_NUMBER[t["number"]].points
        if t["status"] == "passed" and t["max_score"]:
            assert t["score"] == t["max_score"]


def test_results_json_status_values(rj):
    statuses = {t["number"]: t["status"] for t in rj["tests"]}
    assert set(statuses.values()) <= {"passed", "failed"}
    assert statuses["4.9"] == "failed" and statuses["4.14"] == "failed" and statuses["4.2"] == "passed"
    assert statuses["4.20"] == "failed"  # grader error: failed, flagged in extra_data


def test_results_json_visibility_values(rj):
    vis = {t["number"]: t["visibility"] for t in rj["tests"]}
    assert set(vis.values()) <= GRADESCOPE_VISIBILITY
    assert vis["4.12"] == "hidden" and vis["4.10"] == "after_published" and vis["4.2"] == "visible"


def test_results_json_tags_and_output_format(rj):
    for t in rj["tests"]:
        assert isinstance(t["tags"], list) and all(isinstance(x, str) for x in t["tags"])
        assert "exercise-4" in t["tags"]
        assert t["output_format"] in GRADESCOPE_FORMATS and t["output_format"] == "md"
        assert isinstance(t["output"], str)
    tags = {t["number"]: t["tags"] for t in rj["tests"]}
    assert "fault:sigterm" in tags["4.14"]


def test_results_json_outputs_say_expected_seen_hint(rj):
    by = {t["number"]: t for t in rj["tests"]}
    failed = by["4.9"]["output"]
    assert "**Expected:**" in failed and "**Seen:**" in failed and "**Hint:**" in failed
    assert "strtol" in failed  # the hint itself
    assert "`````text" in failed  # a fence longer than the student's own run of four backticks
    assert "\x1b" not in failed and "\\x1b" in failed
    assert by["4.20"]["output"].startswith("**Grader error, not your code:**")
    assert "Passed 2 of 3 runs" in by["4.14"]["output"] and "12" in by["4.14"]["output"]
    assert "Informational, no points" in by["4.16"]["output"] and "hardcore_worker.c:42" in by["4.16"]["output"]


def test_results_json_extra_data(rj):
    x = rj["extra_data"]
    assert x["seed"] == 1234 and x["repeat"] == 3 and x["flaky"] == ["4.14"]
    assert "OOM" in x["grader_error"] and x["refused"] is None
    by = {t["number"]: t["extra_data"] for t in rj["tests"]}
    assert by["4.14"]["fault_timeline"] == [{"at_s": 0.5, "fault": "sigterm", "target": "worker"}]
    assert by["4.14"]["images"] == ["timeline-4.14.png"]
    assert (by["4.14"]["runs"], by["4.14"]["passes"], by["4.14"]["flaky"], by["4.14"]["seed"]) == (3, 2, True, 12)
    assert by["4.20"]["grader_error"] is True and by["4.2"]["grader_error"] is False
    assert by["4.16"]["informational"] is True


def test_results_json_file_is_strict_utf8_json(tmp_path):
    d = writers.write_submission(tmp_path, graded_alice())
    raw = (d / "results.json").read_bytes()
    data = json.loads(raw.decode("utf-8"), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data == json.loads(json.dumps(writers.results_json(graded_alice())))


# ---------------------------------------------------------------- junit.xml


@pytest.fixture
def junit(tmp_path) -> ET.Element:
    d = writers.write_submission(tmp_path, graded_alice())
    raw = (d / "junit.xml").read_bytes()
    text = raw.decode("utf-8")  # strict: must be UTF-8
    assert not XML_ILLEGAL.search(text), "a character XML 1.0 forbids"
    return ET.fromstring(raw)


def test_junit_is_well_formed_with_one_suite_per_exercise(junit):
    assert junit.tag == "testsuites"
    suites = junit.findall("testsuite")
    assert [s.get("name") for s in suites] == ["exercise-4"]
    for s in [junit, *suites]:
        cases = list(s.iter("testcase"))
        assert int(s.get("tests")) == len(cases)
        assert int(s.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(s.get("errors")) == sum(1 for c in cases if c.find("error") is not None)
        assert int(s.get("skipped")) == 0
        assert float(s.get("time")) >= 0


def test_junit_testcases_have_classname_name_time(junit):
    cases = list(junit.iter("testcase"))
    assert len(cases) == len(select([4]))
    for c in cases:
        assert c.get("classname") == "exercise-4"
        number = c.get("name").split(" ", 1)[0]
        assert c.get("name") == f"{number} {BY_NUMBER[number].name}"
        assert float(c.get("time")) >= 0
    times = {c.get("name").split()[0]: float(c.get("time")) for c in cases}
    assert times["4.9"] == 1.25


def test_junit_failures_errors_and_informational(junit):
    cases = {c.get("name").split()[0]: c for c in junit.iter("testcase")}
    fail = cases["4.9"].find("failure")
    assert fail is not None and fail.get("message").startswith("0/6: expected garbage lines")
    assert "hint: Parse with strtol" in fail.text
    err = cases["4.20"].find("error")
    assert err is not None and err.get("message").startswith("grader error, not your code: ")
    assert cases["4.20"].find("failure") is None
    assert cases["4.14"].find("failure").get("type") == "flaky"
    info = cases["4.16"]
    assert info.find("failure") is None and info.find("error") is None and info.find("skipped") is None
    assert "hardcore_worker.c:42" in info.find("system-out").text
    assert cases["4.2"].find("failure") is None and list(cases["4.2"]) == []


def test_junit_survives_control_characters_quotes_cdata_end_and_bad_bytes(junit):
    fail = {c.get("name").split()[0]: c for c in junit.iter("testcase")}["4.9"].find("failure")
    assert "]]>" in fail.text
    assert "\"double\" 'single'" in fail.text and "<tag attr=\"x\"> & &amp;" in fail.text
    assert "\\x1b[31mred" in fail.text and "\\x00" in fail.text and "\\r" in fail.text
    assert "\ufffd" in fail.text  # the undecodable bytes, replaced
    assert "\\ufffe" in fail.text and "\\uffff" in fail.text


# ---------------------------------------------------------------- feedback.md


def test_feedback_tables_details_images_and_reproduction():
    md = writers.feedback_md(graded_alice())
    assert md.startswith("# Feedback: alice")
    assert "## Exercise 4: " in md and "| # | test | score | status |" in md
    rows = re.findall(r"^\| (4\.[0-9]+) \| .* \| (.*) \| (.*) \|$", md, re.M)
    assert [n for n, _, _ in rows] == [t.number for t in select([4]) if t.number != "4.12"]
    status = {n: s for n, _, s in rows}
    assert status["4.9"] == "failed" and status["4.14"] == "flaky (2/3)" and status["4.20"] == "grader error"
    assert status["4.16"] == "finding" and status["4.2"] == "passed"
    assert "1 hidden test(s) worth 3 points" in md
    assert "no answer to the last line" not in md  # a hidden test is not described
    # the failed test: what was expected, what was seen, the hint
    section = md.split("### 4.9 ", 1)[1].split("\n### ", 1)[0]
    assert "**Expected:** garbage lines" in section and "**Seen:**" in section and "**Hint:** Parse" in section
    assert "![timeline](timeline-4.14.png)" in md
    assert "| 0.50 | sigterm | worker |" in md
    assert "seed 1234" in md and "labctl grade subs/alice.zip --exercise 4 --seed 1234 --repeat 3" in md
    assert "--seed 12" in md  # the failing repeat's own seed, to replay it
    assert "Grader error, not your code" in md and "warning: unused variable" in md
    assert "ignored extra/worker.c" in md


def test_feedback_lists_unsubmitted_tests_once():
    bob = graded_class()[1]
    md = writers.feedback_md(bob)
    worker_tests = [t.number for t in select([4]) if "hardcore_worker.c" in t.files]
    line = next(x for x in md.splitlines() if x.startswith("Not run, not submitted: hardcore\\_worker.c"))
    assert line.endswith(": " + ", ".join(worker_tests) + ".")
    assert "### 4.2 " not in md and "### 4.18 " in md  # its own failure is detailed


def test_feedback_code_fences_cannot_be_closed_by_student_output():
    md = writers.feedback_md(graded_alice())
    section = md.split("### 4.9 ", 1)[1].split("\n### ", 1)[0]
    opening = re.search(r"^(`{3,})text$", section, re.M)
    assert opening
    fence = opening.group(1)
    assert len(fence) == 5  # the output holds a run of 4
    body = section[opening.end():]
    assert re.search(rf"^{fence}$", body, re.M)  # closed
    assert "\x1b" not in md and "\x00" not in md


# ---------------------------------------------------------------- the class: grades.csv, summary.md


def test_grades_csv_columns_and_values():
    rows = list(csv.DictReader(io.StringIO(writers.grades_csv(graded_class()))))
    assert list(rows[0]) == ["submission", "total", "max", "exercise_4", "grader_error"]
    by = {r["submission"]: r for r in rows}
    assert list(by) == ["alice", "bob", "carol", "dave"]
    assert by["carol"]["total"] == "100" and by["carol"]["max"] == "100" and by["carol"]["exercise_4"] == "100"
    assert float(by["bob"]["total"]) == pytest.approx(100 - sum(t.points for t in select([4])
                                                                  if "hardcore_worker.c" in t.files) - 6)
    assert "OOM" in by["alice"]["grader_error"] and by["bob"]["grader_error"] == ""
    assert by["dave"]["total"] == "0"
    assert float(by["alice"]["total"]) == graded_alice().score


def test_grades_csv_one_column_per_exercise_graded():
    r1 = SubmissionResult.for_submission(_sub(files=tuple(EXERCISE_FILES)), select("1,3"))
    header = next(csv.reader(io.StringIO(writers.grades_csv([r1]))))
    assert header == ["submission", "total", "max", "exercise_1", "exercise_3", "grader_error"]


def test_summary_counts():
    cls = graded_class()
    md = writers.summary_md(cls)
    assert "4 submission(s) graded on exercise(s) 4, seed 1234" in md
    dist = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| ([0-9-]+ %) \| ([0-9]+) \|$", md, re.M)}
    assert sum(dist.values()) == 4 and dist["100 %"] == 1 and dist["0-9 %"] == 1
    failed = {m.group(1): (int(m.group(2)), int(m.group(3)))
              for m in re.finditer(r"^\| (4\.[0-9]+) \| .*? \| ([0-9]+) of 4 \| ([0-9]+) of 4 \|$", md, re.M)}
    # (failed by the code, not submitted): bob's code failed 4.18 and dave was refused;
    # alice's code failed 4.9 while bob lacked the worker and dave was refused
    assert failed["4.18"] == (1, 1)
    assert failed["4.9"] == (1, 2)
    assert failed["4.2"] == (0, 2)
    assert failed["4.20"] == (0, 1)  # dave's refusal; alice's was a grader error, not her failure
    assert "4.16" not in failed  # informational: a finding, not a failure
    order = list(failed)
    assert order[:4] == ["4.9", "4.12", "4.14", "4.18"]  # failed by code first, then by number
    assert "| 4.14 | alice (1) |" in md
    assert "- alice: container for the flood test" in md
    assert "## Refused submissions" in md and "- dave: corrupt zip" in md
    assert "| 4.16 | signal handler: async-signal-unsafe calls | 1 of 4 |" in md  # alice's only


def test_write_all_writes_class_files_only_for_several(tmp_path):
    one = writers.write_all(tmp_path / "one", [graded_alice()])
    assert sorted(p.name for p in one) == ["feedback.md", "junit.xml", "results.json"]
    assert not (tmp_path / "one" / "grades.csv").exists()
    many = writers.write_all(tmp_path / "many", graded_class())
    for name in ("alice", "bob", "carol", "dave"):
        for f in ("results.json", "junit.xml", "feedback.md"):
            assert (tmp_path / "many" / name / f).is_file()
    assert (tmp_path / "many" / "grades.csv").is_file() and (tmp_path / "many" / "summary.md").is_file()
    assert len(many) == 4 * 3 + 2
    assert not list((tmp_path / "many").rglob("*.tmp"))


def test_writers_refuse_a_name_that_leaves_the_output_dir(tmp_path):
    r = graded_alice()
    r.submission = "../escape"
    with pytest.raises(ValueError, match="would leave"):
        writers.write_submission(tmp_path / "out", r)
    assert not (tmp_path / "escape").exists()


# ---------------------------------------------------------------- intake


def snapshot(root: Path) -> set[tuple[str, int, int]]:
    return {(str(p.relative_to(root)), p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def intake(tmp_path, monkeypatch):
    """load_submission(s) with every write forbidden, and the tmp dir (and
    its parent) checked unchanged afterwards: intake reads, nothing else."""
    real_open, real_os_open = builtins.open, os.open
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_open(file, mode="r", *a, **kw):
        assert not set(mode) & set("wax+"), f"intake opened {file} with mode {mode}"
        return real_open(file, mode, *a, **kw)

    def guarded_os_open(path, flags, *a, **kw):
        assert not flags & writes, f"intake opened {path} for writing"
        return real_os_open(path, flags, *a, **kw)

    class Intake:
        def _run(self, fn, arg):
            before, parent_before = snapshot(tmp_path), set(os.listdir(tmp_path.parent))
            with monkeypatch.context() as m:
                m.setattr(builtins, "open", guarded_open)
                m.setattr(io, "open", guarded_open)
                m.setattr(os, "open", guarded_os_open)
                try:
                    return fn(arg)
                finally:
                    m.undo()
                    assert snapshot(tmp_path) == before, "intake changed the directory it read"
                    assert set(os.listdir(tmp_path.parent)) == parent_before, "intake wrote beside it"

        def load(self, path):
            return self._run(load_submission, path)

        def load_all(self, paths):
            return self._run(load_submissions, paths)

    return Intake()


def test_intake_guard_catches_writes(tmp_path, intake):
    with pytest.raises(AssertionError, match="mode w"):
        intake._run(lambda p: open(p, "w"), tmp_path / "f")
    with pytest.raises(AssertionError, match="for writing"):
        intake._run(lambda p: os.open(p, os.O_WRONLY | os.O_CREAT), tmp_path / "g")
    assert not (tmp_path / "f").exists() and not (tmp_path / "g").exists()


def make_zip(path: Path, members: dict[str, bytes | str], infos: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for info, data in infos:
            zf.writestr(info, data)
    return path


def make_tgz(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = (), mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for ti in extra:
            tf.addfile(ti)
    return path


WORKER = b"#include <stdio.h>\nint main(void) { return 0; }\n"
SUPERVISOR = b"print('hi')\n"


def refused(intake, path: Path, *words: str) -> LabError:
    with pytest.raises(LabError) as e:
        intake.load(path)
    assert str(path) in e.value.what, e.value.what
    for w in words:
        assert w in e.value.what, e.value.what
    assert e.value.code == submission.REFUSED
    return e.value


def test_intake_directory_takes_exercise_files_and_lists_the_rest(tmp_path, intake):
    d = tmp_path / "alice"
    (d / "notes").mkdir(parents=True)
    (d / "hardcore_worker.c").write_bytes(WORKER)
    (d / "supervisor.py").write_bytes(SUPERVISOR)
    (d / "notes" / "todo.txt").write_text("x")
    (d / ".git").mkdir()
    for i in range(300):  # a checkout's objects do not count against the member cap
        (d / ".git" / f"obj{i}").write_text("x")
    s = intake.load(d)
    assert s.name == "alice" and s.source == d
    assert s.files == {"hardcore_worker.c": WORKER, "supervisor.py": SUPERVISOR}
    assert s.other_files == [".git/", "notes/todo.txt"] and s.problems == []


def test_intake_zip_at_top_level(tmp_path, intake):
    z = make_zip(tmp_path / "bob.zip", {"worker.c": WORKER, "monitor.py": SUPERVISOR, "README.md": "hi"})
    s = intake.load(z)
    assert s.name == "bob" and set(s.files) == {"worker.c", "monitor.py"} and s.files["worker.c"] == WORKER
    assert s.other_files == ["README.md"]


def test_intake_tar_gz_with_a_single_nested_folder(tmp_path, intake):
    t = make_tgz(tmp_path / "carol.tar.gz", {"carol-ex4/hardcore_worker.c": WORKER,
                                              "carol-ex4/supervisor.py": SUPERVISOR,
                                              "__MACOSX/carol-ex4/._supervisor.py": b"junk"})
    s = intake.load(t)
    assert s.name == "carol" and set(s.files) == {"hardcore_worker.c", "supervisor.py"}
    assert "__MACOSX/carol-ex4/._supervisor.py" in s.other_files
    assert intake.load(make_tgz(tmp_path / "carol2.tgz", {"x/worker.c": WORKER})).files == {"worker.c": WORKER}
    assert intake.load(make_tgz(tmp_path / "c3.tar", {"worker.c": WORKER}, mode="w")).files == {"worker.c": WORKER}


def test_intake_deeper_or_scattered_files_are_ignored_with_a_problem(tmp_path, intake):
    s = intake.load(make_zip(tmp_path / "deep.zip", {"a/b/worker.c": WORKER}))
    assert s.files == {} and "a/b/worker.c" in s.other_files
    assert any("ignored a/b/worker.c" in p for p in s.problems)
    s = intake.load(make_zip(tmp_path / "two.zip", {"ex2/worker.c": WORKER, "ex4/supervisor.py": SUPERVISOR}))
    assert s.files == {} and any("ignored ex2/worker.c" in p for p in s.problems)
    s = intake.load(make_zip(tmp_path / "case.zip", {"Worker.c": WORKER, "supervisor.py": b""}))
    assert set(s.files) == {"supervisor.py"}
    assert any("expects worker.c" in p for p in s.problems) and any("supervisor.py is empty" in p for p in s.problems)


@pytest.mark.parametrize("kind", ["zip", "tgz", "dir"])
def test_intake_empty_submission_has_no_files_and_is_no_error(tmp_path, intake, kind):
    if kind == "zip":
        path = make_zip(tmp_path / "empty.zip", {})
    elif kind == "tgz":
        path = make_tgz(tmp_path / "empty.tgz", {})
    else:
        path = tmp_path / "empty"
        path.mkdir()
    s = intake.load(path)
    assert s.files == {} and s.other_files == [] and s.refused is None
    assert any("no exercise file found" in p for p in s.problems)
    r = SubmissionResult.for_submission(s, select("all"))
    assert not r.pending() and all(t.output.startswith("not submitted:") for t in r.tests)


@pytest.mark.parametrize("name", ["../x", "ok/../../x", "..\\x", "a/../../../tmp/x"])
def test_intake_refuses_dot_dot_in_zip_and_tar(tmp_path, intake, name):
    refused(intake, make_zip(tmp_path / "evil.zip", {"worker.c": WORKER, name: b"pwned"}), "'..'", "refused")
    refused(intake, make_tgz(tmp_path / "evil.tgz", {name: b"pwned", "worker.c": WORKER}), "'..'")
    assert not (tmp_path.parent / "x").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["/etc/x", "/tmp/labctl-evil", "C:\\evil.c", "//server/share/x"])
def test_intake_refuses_absolute_paths(tmp_path, intake, name):
    refused(intake, make_zip(tmp_path / "abs.zip", {name: b"pwned"}), "absolute path", repr(name))
    refused(intake, make_tgz(tmp_path / "abs.tgz", {name: b"pwned"}), "absolute path")
    assert not Path("/tmp/labctl-evil").exists()


def test_intake_refuses_links_and_devices(tmp_path, intake):
    link = zipfile.ZipInfo("worker.c")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    refused(intake, make_zip(tmp_path / "link.zip", {}, [(link, b"/etc/passwd")]), "'worker.c'", "symbolic link")
    dev = zipfile.ZipInfo("dev")
    dev.create_system = 3
    dev.external_attr = (stat.S_IFCHR | 0o644) << 16
    refused(intake, make_zip(tmp_path / "dev.zip", {}, [(dev, b"")]), "'dev'", "device")
    for kind, word in ((tarfile.SYMTYPE, "symbolic link"), (tarfile.LNKTYPE, "hard link"),
                       (tarfile.CHRTYPE, "device"), (tarfile.FIFOTYPE, "device")):
        ti = tarfile.TarInfo("carol/worker.c")
        ti.type = kind
        ti.linkname = "/etc/shadow"
        refused(intake, make_tgz(tmp_path / f"t{kind!r}.tgz", {}, [ti]), "'carol/worker.c'", word)
    d = tmp_path / "linked"
    d.mkdir()
    (d / "worker.c").symlink_to("/etc/passwd")
    refused(intake, d, "'worker.c'", "symbolic link")


def test_intake_refuses_an_oversize_member_and_accepts_exactly_the_cap(tmp_path, intake):
    ok = intake.load(make_zip(tmp_path / "ok.zip", {"worker.c": b"x" * MAX_FILE_BYTES}))
    assert len(ok.files["worker.c"]) == MAX_FILE_BYTES
    refused(intake, make_zip(tmp_path / "big.zip", {"worker.c": b"x" * (MAX_FILE_BYTES + 1)}), "'worker.c'",
            "more than 1 MiB")
    refused(intake, make_tgz(tmp_path / "big.tgz", {"notes.bin": b"x" * (MAX_FILE_BYTES + 1)}), "'notes.bin'")
    d = tmp_path / "bigdir"
    d.mkdir()
    (d / "worker.c").write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    refused(intake, d, "'worker.c'")


def test_intake_refuses_too_much_in_total(tmp_path, intake):
    members = {f"data{i}.bin": b"\0" * MAX_FILE_BYTES for i in range(6)}
    refused(intake, make_zip(tmp_path / "total.zip", members), "5 MiB")
    refused(intake, make_tgz(tmp_path / "total.tgz", members), "5 MiB")


def test_intake_refuses_many_members(tmp_path, intake):
    members = {f"f{i}.txt": b"" for i in range(MAX_MEMBERS + 1)}
    refused(intake, make_zip(tmp_path / "many.zip", members), f"more than {MAX_MEMBERS}")
    refused(intake, make_tgz(tmp_path / "many.tgz", members), f"more than {MAX_MEMBERS}")
    assert intake.load(make_zip(tmp_path / "enough.zip", dict(list(members.items())[:MAX_MEMBERS]))).files == {}


def test_intake_refuses_a_zip_bomb_that_declares_a_small_size(tmp_path, intake):
    z = make_zip(tmp_path / "bomb.zip", {"worker.c": b"A" * (4 * MAX_FILE_BYTES)})
    data = bytearray(z.read_bytes())
    assert len(data) < 64 * 1024  # highly compressed
    # Lie about the size in both the local header and the central directory.
    local = data.index(b"PK\x03\x04")
    data[local + 22: local + 26] = (100).to_bytes(4, "little")
    central = data.index(b"PK\x01\x02")
    data[central + 24: central + 28] = (100).to_bytes(4, "little")
    z.write_bytes(bytes(data))
    with zipfile.ZipFile(z) as zf:
        assert zf.getinfo("worker.c").file_size == 100  # what it declares
    refused(intake, z, "worker.c")


def test_intake_counts_bytes_whatever_was_declared():
    budget = submission._Budget()
    with pytest.raises(submission._Refused, match="larger than 1 MiB"):
        budget.read(io.BytesIO(b"x" * (MAX_FILE_BYTES + 1)), "worker.c")
    budget.used = submission.MAX_TOTAL_BYTES - 10
    with pytest.raises(submission._Refused, match="5 MiB"):
        budget.read(io.BytesIO(b"x" * 11), "monitor.py")


def test_intake_refuses_a_gzip_bomb_inside_a_tar_header(tmp_path, intake):
    # A pax header of 8 MiB: no member declares anything, but tarfile would
    # read the whole header into memory.
    ti = tarfile.TarInfo("././@PaxHeader")
    ti.type = tarfile.XHDTYPE
    ti.size = 8 * MAX_FILE_BYTES
    raw = ti.tobuf(format=tarfile.USTAR_FORMAT) + b"0" * ti.size + b"\0" * 1024
    path = tmp_path / "paxbomb.tgz"
    path.write_bytes(gzip.compress(raw))
    assert path.stat().st_size < 64 * 1024
    refused(intake, path, "decompresses to more than")


def test_intake_refuses_an_archive_larger_than_any_valid_one(tmp_path, intake):
    path = tmp_path / "huge.zip"
    path.write_bytes(os.urandom(submission.MAX_ARCHIVE_BYTES + 1))
    refused(intake, path, "more than")


@pytest.mark.parametrize("suffix", [".zip", ".tgz", ".tar.gz"])
def test_intake_corrupt_archive_is_an_error_naming_the_file(tmp_path, intake, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not an archive at all\n" * 10)
    refused(intake, path, "not a readable")


def test_intake_truncated_and_bad_crc_archives(tmp_path, intake):
    t = make_tgz(tmp_path / "trunc.tgz", {"worker.c": os.urandom(50_000)})
    t.write_bytes(t.read_bytes()[:20_000])
    refused(intake, t, "not a readable")
    z = make_zip(tmp_path / "crc.zip", {"worker.c": WORKER})
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("worker.c")
    data = bytearray(z.read_bytes())
    start = info.header_offset + 30 + len(info.filename)
    data[start] ^= 0xFF
    z.write_bytes(bytes(data))
    refused(intake, z, "not a readable")


def test_intake_unknown_kind_and_missing_path(tmp_path, intake):
    rar = tmp_path / "alice.rar"
    rar.write_bytes(b"Rar!")
    refused(intake, rar, "not a directory, .zip")
    with pytest.raises(LabError) as e:
        load_submission(tmp_path / "nope.zip")
    assert e.value.code == ExitCode.NOT_FOUND and "nope.zip" in e.value.what


def test_load_submissions_dedupes_names_and_keeps_refused_ones(tmp_path, intake):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    z1 = make_zip(tmp_path / "a" / "alice.zip", {"worker.c": WORKER})
    z2 = make_tgz(tmp_path / "b" / "alice.tgz", {"alice/monitor.py": SUPERVISOR})
    d = tmp_path / "alice"
    d.mkdir()
    evil = make_zip(tmp_path / "alice-2.zip", {"../x": b""})
    subs = intake.load_all([z1, z2, d, evil])
    assert [s.name for s in subs] == ["alice", "alice-2", "alice-3", "alice-2-2"]
    assert subs[3].refused and "'..'" in subs[3].refused and subs[3].files == {}
    assert subs[0].files == {"worker.c": WORKER} and subs[1].files == {"monitor.py": SUPERVISOR}
    with pytest.raises(LabError):
        load_submissions([z1, tmp_path / "missing.zip"])


def test_submission_names_are_safe_directory_names(tmp_path, intake):
    z = make_zip(tmp_path / "..Alice Smith (1) ü.zip", {"worker.c": WORKER})
    s = intake.load(z)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s.name), s.name
    assert s.name.startswith("Alice_Smith_1_")
    assert submission.safe_name("../..") == "submission"


# ---------------------------------------------------------------- timeline pictures and the pause test (4.24)


def _record(*incs: tuple[int, int, list[str], float, list[str]], pause: tuple[int, int] | None = None) -> bytes:
    """A stand-in's record: per incarnation (pid, start ms, lines, ms per line, its end: ["signal TERM",
    "exit 0"], ["signal SEGV"], ...); a pause (from, to ms) holds every clock still inside it."""
    out = []
    for pid, t, lines, every, end in incs:
        out.append(f"{t} {pid} start robust")
        for line in lines:
            t += every
            if pause and pause[0] <= t < pause[1]:
                t = pause[1]
            out.append(f"{int(t)} {pid} line {line}")
        out += [f"{int(t) + 1} {pid} {e}" for e in end]
    return ("\n".join(out) + "\n").encode()


def _pause_run(record: bytes, values: list[str], *, ended: bool = True, paused: bool = True):
    from labctl.grade import ex4_supervisor as sup
    from labctl.grade.sandbox import RunResult

    events = [FaultEvent(1.2, "pause", "sandbox"), FaultEvent(4.2, "unpause", "sandbox")] if paused else []
    r = (RunResult(pid=5, exit_code=0, elapsed=9.0, t_start=100.0, t_end=109.0, host_events=events) if ended else
         RunResult(pid=5, timed_out=True, elapsed=23.0, t_start=100.0, t_end=123.0, host_events=events))
    return sup.SystemRun(values, r, sup.incarnations(record))


PAUSE_VALUES = [str(1 + i % 97) for i in range(300)]
PAUSE_MS = (101200, 104200)


def test_the_pause_test_passes_one_worker_that_handled_every_line_once_across_the_thaw():
    from labctl.grade.ex4_supervisor import judge_pause

    rec = _record((7, 100050, PAUSE_VALUES, 10, ["signal TERM", "exit 0"]), pause=PAUSE_MS)
    out = judge_pause(_pause_run(rec, PAUSE_VALUES))
    assert out.passed, out.seen
    assert "paused for 3 s after 114 of the 300 lines" in out.seen and "got SIGTERM" in out.seen


def test_the_pause_test_fails_a_supervisor_that_took_the_time_jump_for_a_hung_worker():
    from labctl.grade.ex4_supervisor import judge_pause

    # The watchdog fired at the thaw: the worker was killed (no record of its end) and the
    # line it had just handled was sent again to a new one.
    first, rest = PAUSE_VALUES[:115], PAUSE_VALUES[114:]
    rec = _record((7, 100050, first, 10, []), (9, 104300, rest, 10, ["signal TERM", "exit 0"]), pause=PAUSE_MS)
    out = judge_pause(_pause_run(rec, PAUSE_VALUES))
    assert not out.passed
    assert "1 restart(s): the worker never crashed" in out.seen
    assert "301 lines, 1 line(s) more than input.dat holds (fed twice)" in out.seen
    assert "first difference is at line 116" in out.seen


def test_the_pause_test_fails_lost_lines_and_a_supervisor_that_never_ends():
    from labctl.grade.ex4_supervisor import judge_pause

    skipped = PAUSE_VALUES[:115] + PAUSE_VALUES[116:]  # the line in flight at the pause given up on
    out = judge_pause(_pause_run(_record((7, 100050, skipped, 10, ["signal TERM", "exit 0"]), pause=PAUSE_MS),
                                 PAUSE_VALUES))
    assert not out.passed and "1 line(s) of input.dat never reached a worker" in out.seen
    assert "line 116: input.dat has" in out.seen
    hung = judge_pause(_pause_run(_record((7, 100050, PAUSE_VALUES[:200], 10, []), pause=PAUSE_MS),
                                  PAUSE_VALUES, ended=False))
    assert not hung.passed and "did not end within 23 s" in hung.seen
    nothing = judge_pause(_pause_run(b"", PAUSE_VALUES, paused=False))
    assert not nothing.passed and "no worker was started" in nothing.seen and "was not paused" in nothing.seen


def test_the_pause_test_is_a_repeated_system_test_of_the_supervisor():
    t = BY_NUMBER["4.24"]
    assert (t.kind, t.faults, t.fault_test, t.files, t.informational) == (
        "system", ("docker-pause",), True, ("supervisor.py",), False)
    assert "docker pause" in t.description and t.points > 0


def test_the_paced_stand_in_paces_only_its_answers():
    from labctl.grade import ex4_supervisor as sup

    src = sup.paced_source().decode()
    assert src.index("#define write(fd, buf, n) grader_paced_write") < src.index("#define WORKER_DEFAULT_ARGS")
    assert "if (fd == STDOUT_FILENO)" in src and f"{{0, {sup.PACE_MS * 1_000_000}L}}" in src
    # The job outlasts the latest pause by far, even at full speed.
    assert sup.PAUSE_LINES * sup.PACE_MS / 1000 > 2 * sup.PAUSE_AT_S[1]


class _PrivateBuilds:
    """A sandbox stand-in that notes what the grader builds privately."""

    record_token = "f00d" * 8

    def __init__(self):
        self.built: list[tuple[str, bytes]] = []

    def build_private(self, name, source):
        self.built.append((name, source))
        return f"/work/.grader/{name}"


def test_the_grader_programs_are_built_privately_once_with_the_token():
    from types import SimpleNamespace

    from labctl.grade import ex4_supervisor as sup

    ctx = SimpleNamespace(sandbox=_PrivateBuilds())
    launcher = sup.recording_launcher(ctx, "/work/bin/hardcore_worker").decode()
    assert launcher == '#!/bin/sh\nexec /work/.grader/record_exec /work/bin/hardcore_worker "$@"\n'
    assert sup.standin(ctx) == "/work/.grader/standin_worker" == sup.standin(ctx)
    assert sup.standin(ctx, paced=True) == "/work/.grader/paced_standin_worker"
    assert sup.standin(ctx, naive=True) == "/work/.grader/naive_standin_worker"
    assert [n for n, _ in ctx.sandbox.built] == ["record_exec", "standin_worker", "paced_standin_worker",
                                                 "naive_standin_worker"]
    assert '"--mode", "naive"' in ctx.sandbox.built[3][1].decode()
    for _, src in ctx.sandbox.built:
        assert src.startswith(f'#define WORKER_RECORD_TOKEN "{"f00d" * 8}"\n'.encode())
    assert "--record\", \"@labctl-grader-record\"" in ctx.sandbox.built[1][1].decode()


def _png(path: Path):
    from PIL import Image

    img = Image.open(path)
    assert img.format == "PNG"
    return img


def _shaded_pixels(img) -> int:
    import numpy as np

    px = np.asarray(img.convert("RGB")).astype(int)
    return int((np.abs(px - np.array([220, 228, 231])).max(axis=2) < 6).sum())


def test_a_supervisor_run_is_drawn_from_its_record(tmp_path):
    import time

    from labctl.grade import ex4_supervisor as sup
    from labctl.grade import gradeplot

    first, rest = PAUSE_VALUES[:115], PAUSE_VALUES[114:]
    rec = _record((7, 100050, first, 10, []), (9, 104300, rest, 10, ["signal TERM", "exit 0"]), pause=PAUSE_MS)
    pic = sup.picture("4.24", "docker pause mid-job", _pause_run(rec, PAUSE_VALUES))
    assert [(w.name, w.start, w.end) for w in pic.windows] == [("docker pause", 1.2, 4.2)]
    assert pic.progress[-1][1] == len(PAUSE_VALUES) + 1
    t0 = time.monotonic()
    name = gradeplot.write(pic, tmp_path / "alice", gradeplot.image_name("4.24"))
    took = time.monotonic() - t0
    path = tmp_path / "alice" / name
    assert name == "timeline-4.24.png" and path.stat().st_size < 150_000 and took < 5
    img = _png(path)
    assert img.size == (800, 380)
    meta = img.text
    assert meta["Tests"] == "4.24" and meta["Lanes"] == "worker (truth)|supervisor|lines fed"
    assert meta["FaultWindows"] == "1"
    assert {"running", "restarted", "paused (docker)", "killed", "exited 0"} <= set(meta["States"].split("|"))
    assert {"restart", "SIGTERM", "exit 0"} <= set(meta["Marks"].split("|"))
    assert _shaded_pixels(img) > 3000
    assert [p.name for p in (tmp_path / "alice").iterdir()] == [name]  # no temporary file left


def test_a_crash_is_drawn_as_a_fault_window_and_a_restart():
    from labctl.grade import ex4_supervisor as sup

    rec = _record((7, 100010, ["5", "-10", "999"], 10, ["signal SEGV"]),
                  (8, 100300, ["6"], 10, ["signal TERM", "exit 0"]))
    s = _pause_run(rec, ["5", "-10", "999", "6"], paused=False)
    pic = sup.picture("4.17, 4.18", "a crash on 999", s)
    assert [(w.name, round(w.start, 3), round(w.end, 3)) for w in pic.windows] == [("crash on 999", 0.041, 0.3)]
    assert [(sp.label, sp.state) for sp in pic.truth] == [("running", "RUNNING"), ("crashed (SIGSEGV)", "CRASHED"),
                                                          ("restarted", "RESTARTED"), ("exited 0", "STOPPED")]
    assert [m.label for m in pic.said_marks] == ["restart", "SIGTERM", "exit 0"]
    own = sup.picture("4.23", "your own worker", sup.SystemRun(["5"], s.result, sup.incarnations(
        b"100010 7 start own\n100300 8 start own\n")), instrumented=False, note="2 of 2 answered")
    assert [(sp.label, round(sp.end, 2)) for sp in own.truth] == [("running", 0.3), ("restarted", 9.0)]
    assert own.windows == [] and own.progress == [] and own.progress_note == "2 of 2 answered"


def test_a_monitor_run_is_drawn_with_its_verdicts_timed_at_the_marks(tmp_path):
    from labctl.grade import ex2, gradeplot
    from labctl.grade.sandbox import Fired, RunResult

    worker = RunResult(pid=3, signal=9, elapsed=10.05, t_start=50.0, t_end=60.05, stdout_newlines=10,
                       fired=[Fired(0, "touch", 9.7, 9, 0), Fired(1, "signal", 10.0, 10, 0)])
    said = b"checking\n" + b"Worker 3 is running\n" * 7 + b"Worker 3 crashed\n" * 2
    marks = [Fired(0, "snapshot", 8.2, 8, 0), Fired(1, "snapshot", 8.5, 8, 0)]
    monitor = RunResult(pid=4, signal=9, elapsed=13.0, t_start=51.5, t_end=64.5, stdout=said,
                        stdout_total=len(said), fired=marks)
    timed = ex2.timed_lines(monitor, 1.5)
    assert timed[0] == (1.5, "checking") and timed[8] == (10.0, "Worker 3 crashed")  # the 9th line: at the mark
    pic = ex2.picture("2.4, 2.5, 2.7", "SIGKILL", worker, [monitor],
                      ex2.Fault("SIGKILL", "killed (SIGKILL)", "CRASHED", 10.0))
    # 8 lines before the first mark at 8.2 s: the first (no verdict) at the start, the next 8.2/8 s later
    assert [(sp.label, sp.start, sp.end) for sp in pic.said] == [
        ("running", pytest.approx(1.5 + 8.2 / 8), pytest.approx(10.0)), ("crashed", pytest.approx(10.0), 14.5)]
    assert pic.truth[-1].label == "killed (SIGKILL)" and pic.windows[0].name == "SIGKILL"
    assert pic.progress[-1] == (10.05, 10.0) and not pic.progress_steps
    img = _png(tmp_path / gradeplot.write(pic, tmp_path, "t.png"))
    assert img.text["Lanes"] == "worker (truth)|monitor|worker's stdout\n(heartbeats)"
    assert {"running", "crashed", "killed (SIGKILL)"} <= set(img.text["States"].split("|"))


def test_gradeplot_helpers():
    from labctl.grade import gradeplot as g

    assert g.image_name("4.17-4.18") == "timeline-4.17-4.18.png"
    assert g.image_name("4.24", attempt=2) == "timeline-4.24-run3.png"
    ev = [FaultEvent(1.0, "pause", "sandbox"), FaultEvent(4.1, "unpause", "sandbox"), FaultEvent(6.0, "pause", "s")]
    assert g.pause_windows(ev, 7.0) == [g.Window(1.0, 4.1, "docker pause"), g.Window(6.0, 7.0, "docker pause")]
    top = g.paused_spans([g.Window(1.0, 4.1, "docker pause")])
    cut = g.overlay([g.Span(0.0, 9.0, "running", "RUNNING")], top)
    assert [(s.start, s.end, s.label) for s in cut] == [(0.0, 1.0, "running"), (1.0, 4.1, "paused (docker)"),
                                                        (4.1, 9.0, "running")]
    pts = [(float(i), float(i)) for i in range(10_000)]
    thin = g.thin(pts, 100)
    assert len(thin) == 101 and thin[0] == pts[0] and thin[-1] == pts[-1]


def test_feedback_shows_every_runs_picture_once_and_hidden_ones_never():
    r = SubmissionResult.for_submission(_sub(), select([4]), seed=1)
    for t in r.pending():
        if t.number in ("4.17", "4.18"):
            r.record(TestResult.passed(t, images=["timeline-4.17-4.18.png"]))
        elif t.number == "4.24":
            r.record(TestResult.failed(t, "1 restart(s)", images=["timeline-4.24.png"]))
        elif t.number == "4.19":
            r.record(TestResult.passed(t, images=["timeline-4.19.png"]))
        else:
            r.record(TestResult.passed(t))
    md = writers.feedback_md(r)
    assert md.count("![timeline](timeline-4.17-4.18.png)") == 1 and "Tests 4.17, 4.18:" in md
    assert md.count("![timeline](timeline-4.24.png)") == 1  # with its failure, not again below
    assert md.index("### 4.24 ") < md.index("![timeline](timeline-4.24.png)") < md.index("### Timelines")
    hidden = SubmissionResult.for_submission(_sub(), [dataclasses.replace(BY_NUMBER["4.19"], visibility="hidden")])
    hidden.record(TestResult.passed(hidden.planned[0], images=["timeline-4.19.png"]))
    assert "timeline-4.19" not in writers.feedback_md(hidden)


# ---------------------------------------------------------------- 4.25: your worker under the lab's supervisor


def test_the_lab_supervisor_test_is_a_repeated_system_test_of_the_worker():
    t = BY_NUMBER["4.25"]
    assert (t.kind, t.faults, t.fault_test, t.files, t.informational) == (
        "system", ("bug-trigger",), True, ("hardcore_worker.c",), False)
    assert "lab's supervisor" in t.description and t.points > 0
    # The tests that other tests hard-code kept their points.
    assert (BY_NUMBER["4.2"].points, BY_NUMBER["4.5"].points, BY_NUMBER["4.9"].points) == (8, 5, 6)


def test_the_lab_supervisor_test_runs_the_labs_own_supervisor_in_spawn_mode():
    from labctl.grade import ex4_supervisor as sup

    assert sup.lab_supervisor() == (ROOT / "images" / "supervisor" / "supervisor.py").read_bytes()
    args = list(sup.LAB_ARGS)
    assert args[args.index("--spawn") + 1] == "./hardcore_worker"
    assert args[args.index("--input") + 1] == "input.dat" and "--output" in args


def test_the_lab_supervisor_test_input_holds_every_fault_once_among_a_few_hundred_readings():
    import random

    from labctl.grade import ex4_supervisor as sup

    values = sup.lab_values(random.Random(7))
    assert values == sup.lab_values(random.Random(7))  # seeded: --seed replays it
    assert len(values) == sup.LAB_READINGS + len(sup.LAB_SPECIALS)
    specials = [v for v in values if not (v.isdigit() and 1 <= int(v) <= 100)]
    assert specials == ["-10", "0", "999", "-25", "abc", "12abc"]
    assert all(v not in sup.LAB_SPECIALS for v in values[:10])


def _lab_run(values: list[str], **result):
    from labctl.grade import ex4_supervisor as sup
    from labctl.grade.sandbox import RunResult

    log = b"2026-01-05 10:00:00,000 - INFO - job complete: 306 read\n"
    r = RunResult(pid=5, elapsed=1.0, t_start=100.0, t_end=101.0, stderr=log, **({"exit_code": 0} | result))
    return sup.SystemRun(values, r, sup.incarnations(b"100000 7 start own\n100300 9 start own\n"))


def test_the_lab_supervisor_test_passes_a_complete_job_the_oracle_accepts():
    from labctl.grade import ex4_supervisor as sup

    values = ["7", "-10", "abc", "999", "5"]
    out, note = sup.judge_lab_supervisor(_lab_run(values), [])
    assert out.passed and "all 2 valid readings answered" in out.seen and "exit 0" in out.seen
    assert "2 start(s)" in note


def test_the_lab_supervisor_test_shows_the_oracles_problems_the_log_and_a_hint():
    from labctl.grade import ex4_supervisor as sup

    values = ["7", "-10", "abc", "999", "5"]
    problems = ["rejected.csv: expected lines [3], got []", "dead-letter.csv: expected lines [4], got []"]
    out, _ = sup.judge_lab_supervisor(_lab_run(values), problems)
    assert not out.passed
    assert "- rejected.csv: expected lines [3], got []" in out.seen and "job complete: 306 read" in out.seen
    assert "atoi" in out.seen and "never exit 0" not in out.seen and "hides the crash" in out.seen
    failed = sup.judge_lab_supervisor(_lab_run(values, exit_code=69), [])[0]
    assert not failed.passed and "did not complete the job: exit 69" in failed.seen
    hung = sup.judge_lab_supervisor(_lab_run(values, exit_code=None, timed_out=True), [])[0]
    assert not hung.passed and "did not end within 20 s" in hung.seen and "the job never finished" in hung.seen


def test_the_lab_supervisor_test_judges_the_outputs_with_the_oracle(tmp_path):
    from labctl import oracle

    (tmp_path / "input.dat").write_bytes(b"7\n-10\nabc\n999\n5\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("item,n,square\n1,7,49\n5,5,25\n")
    (out / "corrupted.csv").write_text("item,value\n2,-10\n")
    (out / "rejected.csv").write_text("item,line\n3,abc\n")
    (out / "dead-letter.csv").write_text("item,line,crashes,why\n4,999,1,crash\n")
    assert oracle.compare(out, tmp_path / "input.dat", 999) == []
    (out / "results.csv").write_text("item,n,square\n1,7,49\n3,0,0\n5,5,25\n")  # atoi: 'abc' answered 0,0
    assert any("not valid" in p for p in oracle.compare(out, tmp_path / "input.dat", 999))


def test_the_drivers_seccomp_filter_refuses_ptrace_even_from_the_start():
    """What the filter is for: a program that PTRACE_TRACEMEs and then execs
    the stand-in could read its registers; under the filter the request is
    refused (EPERM), while without it (this host) it is allowed."""
    import ctypes
    import os

    from labctl.grade import driver

    assert driver.NO_PTRACE_PROG is not None, "no filter for this machine"
    assert len(driver.NO_PTRACE_PROG) % 8 == 0

    def traceme(filtered: bool) -> int:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child reports its errno and leaves at once
            try:
                os.close(r)
                if filtered:
                    driver.install_filter(driver.NO_PTRACE_PROG)
                libc = ctypes.CDLL(None, use_errno=True)
                os.write(w, str(0 if libc.ptrace(0, 0, 0, 0) == 0 else ctypes.get_errno()).encode())
            finally:
                os._exit(0)
        os.close(w)
        got = os.read(r, 16)
        os.close(r)
        os.waitpid(pid, 0)
        return int(got or b"-1")

    assert traceme(filtered=False) == 0
    assert traceme(filtered=True) == 1  # EPERM


def test_a_run_whose_output_the_engine_lost_runs_once_more():
    """moby/moby#27289: the engine can lose an exec's output; the driver's exit
    0 with no result line is that, not the program: the case runs again."""
    from labctl.grade.sandbox import RunResult, RunSpec, Sandbox

    calls = []

    def fake_run(answers):
        box = object.__new__(Sandbox)

        def _run(spec, host_actions, reset):
            calls.append(reset)
            return answers.pop(0)

        box._run = _run
        return box

    spec = RunSpec(argv=["./prog"])
    lost, good = RunResult(error="the run gave no result (driver exit 0 ...)", output_lost=True), RunResult(exit_code=0)
    assert fake_run([lost, good]).run(spec) is good and calls == [True, True]
    calls.clear()
    killed = RunResult(error="the run gave no result (driver exit 137 ...)")
    assert fake_run([killed, good]).run(spec) is killed and calls == [True]
    calls.clear()
    assert fake_run([lost, lost, good]).run(spec).output_lost and calls == [True, True]  # once more, not forever
