"""`--junit FILE` (labctl up, labctl demo): one testcase per expectation,
classname the scenario, a failure with the detail, the run directory in
system-out; written also when a lab errors or never ran."""
from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import checker_verdict, labctl, labelled
from labctl import check, cli, junit
from labctl.errors import ExitCode, LabError
from labctl.lab import RunResult


def cases(path: Path) -> list[ET.Element]:
    return ET.parse(path).getroot().findall("testsuite/testcase")


def test_one_testcase_per_expectation_with_failures_and_the_run_dir(tmp_path):
    ok = RunResult("crash-1a2b", "scenario-crash", tmp_path / "runs" / "crash-1a2b" / "20260101T000000Z",
                   [check.Check("the job completes", True, "supervisor exit code 0"),
                    check.Check("step 1 pause: monitor says PAUSED", False, "after 2.91 s, later than 2.50 s")])
    broke = RunResult("pause-3c4d", "scenario-pause", tmp_path / "p", [], error="labctl: error: the job did not end")
    path = tmp_path / "out" / "junit.xml"
    junit.write(path, [ok, broke])
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "2"
    suites = root.findall("testsuite")
    assert [s.get("tests") for s in suites] == ["2", "1"] and [s.get("failures") for s in suites] == ["1", "1"]
    got = [(c.get("classname"), c.get("name"), c.find("failure")) for c in cases(path)]
    assert [(k, n) for k, n, _ in got] == [("scenario-crash", "the job completes"),
                                           ("scenario-crash", "step 1 pause: monitor says PAUSED"),
                                           ("scenario-pause", "run")]
    assert got[0][2] is None
    assert got[1][2].text == "after 2.91 s, later than 2.50 s" and got[1][2].get("message") == got[1][2].text
    assert got[2][2].text == "labctl: error: the job did not end"
    assert suites[0].find("system-out").text.strip() == f"run directory: {ok.run_dir}"
    assert not list(path.parent.glob(".*tmp")), "no temporary file left"


def test_a_lab_with_nothing_checked_is_a_failed_run():
    root = ET.fromstring(junit.to_xml([RunResult("x-1", "scenario-x", Path("/r"))]))
    (case,) = root.findall("testsuite/testcase")
    assert case.get("name") == "run" and case.find("failure").text == "nothing was checked"


def fake_up(monkeypatch, tmp_path, run_labs):
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(cli, "open_engines", lambda args, timeout=60: [object()])
    monkeypatch.setattr(cli, "fresh_ids", lambda scs, engs=None: [f"l{i}" for i in range(len(scs))])
    monkeypatch.setattr(cli, "run_labs", run_labs)


def test_written_when_the_labs_never_ran(monkeypatch, tmp_path):
    def refuse(*a, **kw):
        raise LabError(ExitCode.IMAGE_MISSING, "no image labctl-worker:abc", "run `labctl build`")

    fake_up(monkeypatch, tmp_path, refuse)
    out = tmp_path / "j.xml"
    assert cli.main(["up", "scenario-crash", "scenario-pause", "--junit", str(out)]) == ExitCode.IMAGE_MISSING
    got = [(c.get("classname"), c.get("name"), c.find("failure").text) for c in cases(out)]
    assert got == [(s, "run", "labctl: error: no image labctl-worker:abc; run `labctl build`")
                   for s in ("scenario-crash", "scenario-pause")]


def test_a_lab_that_raised_keeps_the_others_results(monkeypatch, tmp_path):
    def half(scs, ids, keep, base, engs=None, blind_run=False, sink=None, live_mode=False):
        sink.append(RunResult(ids[0], scs[0].name, tmp_path / "r0", [check.Check("c", True, "fine")]))
        sink.append(RunResult(ids[1], scs[1].name, tmp_path / "r1", error="labctl: error: lab 'l1' already exists"))
        raise LabError(ExitCode.LAB_EXISTS, "lab 'l1' already exists")

    fake_up(monkeypatch, tmp_path, half)
    out = tmp_path / "j.xml"
    assert cli.main(["up", "scenario-crash", "scenario-pause", "--junit", str(out)]) == ExitCode.LAB_EXISTS
    got = [(c.get("name"), c.find("failure") is None) for c in cases(out)]
    assert got == [("c", True), ("run", False)]


def test_written_when_interrupted(monkeypatch, tmp_path):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    fake_up(monkeypatch, tmp_path, interrupted)
    out = tmp_path / "j.xml"
    assert cli.main(["demo", "--junit", str(out)]) == ExitCode.INTERRUPTED
    assert [c.find("failure").text for c in cases(out)] == ["labctl: error: interrupted"] * 3


def test_an_unwritable_path_is_refused_before_any_lab(monkeypatch, tmp_path):
    def never(*a, **kw):
        raise AssertionError("a lab ran")

    fake_up(monkeypatch, tmp_path, never)
    assert cli.main(["up", "scenario-crash", "--junit", str(tmp_path)]) == ExitCode.USAGE


def test_up_and_demo_take_junit():
    for argv in (["up", "scenario-crash", "--junit", "j.xml"], ["demo", "--junit", "j.xml"]):
        args = cli.build_parser().parse_args(argv)
        assert isinstance(args, argparse.Namespace) and args.junit == Path("j.xml")


@pytest.mark.docker
@pytest.mark.slow
def test_up_writes_junit_matching_the_expectation_table(built, engine, labs, tmp_path):
    lab = labs.new("junit")
    out = tmp_path / "ci" / "junit.xml"
    p = labctl("up", "scenario-crash", "--lab", lab, "--junit", str(out), runs=labs.runs)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    (run_dir,) = (labs.runs / lab).glob("2*")
    verdict = checker_verdict(run_dir)
    got = cases(out)
    assert [(c.get("classname"), c.get("name")) for c in got] == [
        ("scenario-crash", c["name"]) for c in verdict["checks"]]
    assert all(c.find("failure") is None for c in got)
    (suite,) = ET.parse(out).getroot().findall("testsuite")
    assert suite.find("system-out").text.strip() == f"run directory: {run_dir}"
    assert json.loads((run_dir / "summary.json").read_text())["lab"] == lab
    assert labelled(engine, lab) == ([], [], [])


def test_written_when_no_engine_answers(monkeypatch, tmp_path):
    def unreachable(args, timeout=60):
        raise LabError(ExitCode.ENGINE_UNREACHABLE, "the Docker engine is not reachable (refused)", "start it")

    monkeypatch.setattr(cli, "open_engines", unreachable)
    out = tmp_path / "j.xml"
    assert cli.main(["demo", "--junit", str(out)]) == ExitCode.ENGINE_UNREACHABLE
    assert [(c.get("classname"), c.find("failure").text) for c in cases(out)] == [
        (s, "labctl: error: the Docker engine is not reachable (refused); start it")
        for s in ("scenario-crash", "scenario-pause", "scenario-partition")]
