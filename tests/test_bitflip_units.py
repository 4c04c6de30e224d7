"""The bitflip fault's pieces without an engine (issue 15): the fault's
commands and journal, the worker's count as an event, the checker's
corruption checks and coverage, the report, and the two scenarios."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tenacity import wait_none

from labctl import check, faults, journal, observe, report, scenario, states
from labctl.errors import ExitCode, LabError


class ExecEngine:
    """Records each exec; answers as told."""
    name = "fake"

    def __init__(self, code: int = 0, out: str = ""):
        self.calls: list[tuple[str, list[str]]] = []
        self.code, self.out = code, out

    def exec(self, name, cmd, user=None):
        self.calls.append((name, cmd))
        return self.code, self.out


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    monkeypatch.setattr(faults, "RETRY_WAIT", wait_none())
    return tmp_path


def test_the_fault_and_its_inverse_are_registered_like_a_signal():
    on, off = faults.get("bitflip"), faults.get("bitflip-off")
    assert on.inverse == "bitflip-off" and off.inverse is None
    assert on.journal_truth == states.DEGRADED and off.journal_truth == states.RUNNING
    assert not on.survives_restart and not on.needs_tools and on.cli_args == ("p",)
    assert on.settings({}) == {"p": 0.05} and on.settings({"p": "0.5"}) == {"p": 0.5}
    with pytest.raises(LabError) as ei:
        on.settings({"p": 2})
    assert ei.value.code == ExitCode.USAGE and ei.value.what.startswith("p: must be between 0 and 1")
    assert faults.undoes("bitflip-off") == [on]


def test_apply_writes_p_then_signals_and_revert_signals_off(runs):
    eng = ExecEngine()
    intent = faults.apply(eng, "l1", "bitflip", "worker", params={"p": 0.2})  # type: ignore[arg-type]
    assert intent["params"] == {"p": 0.2} and intent["inverse"] == "bitflip-off"
    assert eng.calls == [("labctl-l1-worker", ["sh", "-c", "printf %s 0.200000 > /tmp/bitflip && kill -USR1 -1"])]
    faults.revert(eng, "l1", journal.read("l1")[0])  # type: ignore[arg-type]
    assert eng.calls[-1] == ("labctl-l1-worker", ["sh", "-c", "rm -f /tmp/bitflip; kill -USR2 -1"])
    assert [r["phase"] for r in journal.read("l1")] == ["intent", "applied", "reverted"]
    assert journal.pending("l1") == []


def test_only_the_worker_and_a_failed_signal_is_an_error_but_off_on_no_process_is_done(runs):
    with pytest.raises(LabError, match="sends none"):
        faults.FAULTS["bitflip"].apply(ExecEngine(), faults.Target("l1", "monitor", {"p": 0.1}))  # type: ignore[arg-type]
    gone = ExecEngine(1, "sh: 1: kill: No such process\n")
    with pytest.raises(LabError, match="No such process"):
        faults.FAULTS["bitflip"].apply(gone, faults.Target("l1", "worker", {"p": 0.1}))  # type: ignore[arg-type]
    faults.FAULTS["bitflip-off"].apply(gone, faults.Target("l1", "worker"))  # type: ignore[arg-type]


def test_the_workers_count_is_an_event_of_its_own():
    ev = observe.parse_log_line("worker", "2026-01-01T00:00:01.5Z worker[7]: info: bitflip: 12 result(s) flipped "
                                          "while on (p 0.0500)")
    assert ev == {"ts": pytest.approx(1767225601.5), "source": "worker", "kind": "bitflip", "pid": 7,
                  "flipped": 12, "p": 0.05}
    other = observe.parse_log_line("worker", "2026-01-01T00:00:01.5Z worker[7]: info: started")
    assert other is not None and other["kind"] == "log"


def _lab(tmp_path: Path, rows: list[tuple[int, int, int]], corrupt_results: int) -> Path:
    lab = tmp_path / "lab"
    (lab / "out").mkdir(parents=True)
    (lab / "input.dat").write_text("".join(f"{n}\n" for _, n, _ in rows))
    (lab / "out" / "results.csv").write_text("index,n,square\n" + "".join(f"{i},{n},{s}\n" for i, n, s in rows))
    (lab / "out" / "corrupted.csv").write_text("index,value\n")
    (lab / "out" / "rejected.csv").write_text("index,reason\n")
    (lab / "out" / "dead-letter.csv").write_text("index,item,reason,crashes\n")
    (lab / "out" / "summary.json").write_text(json.dumps({"corrupt_results": corrupt_results}))
    return lab


def _run(tmp_path, lab: Path, job: dict, flipped: int) -> check.Run:
    sc = scenario.parse({"name": "t", "lesson": "t", "expect": {"job": {"completes": True, **job}}},
                        tmp_path / "t.yaml")
    events = [{"ts": 1.0, "source": "worker", "kind": "bitflip", "pid": 1, "flipped": flipped, "p": 0.05}]
    return check.Run(sc, events, lab, 2.0, 0.0)


def test_unverified_the_checker_reports_each_undetected_corruption(tmp_path):
    lab = _lab(tmp_path, [(1, 2, 4), (2, 3, 13), (3, 4, 16), (4, 5, 57)], 0)
    run = _run(tmp_path, lab, {"exactly_once": False, "undetected_corruption_min": 1}, flipped=2)
    got = {c.name: c for c in check.judge_corruption(run, None)}
    c = got["the oracle finds at least 1 corrupt result(s)"]
    assert c.ok and c.detail == "undetected corruption: 2 results, first items [2, 4] (2 injected)"
    assert got["apart from the wrong squares, every valid item exactly once"].ok
    assert check.corruption(run.events, lab) == {"injected": 2, "detected": 0, "undetected": 2,
                                                 "undetected_items": [2, 4], "coverage": 0.0}


def test_verified_coverage_and_no_undetected(tmp_path):
    lab = _lab(tmp_path, [(1, 2, 4), (2, 3, 9)], 3)
    run = _run(tmp_path, lab, {"undetected_corruption_max": 0, "detection_coverage_min": 1.0}, flipped=3)
    assert [(c.ok, c.detail) for c in check.judge_corruption(run, None)] == [
        (True, "undetected corruption: 0 results (3 injected)"), (True, "3 detected / 3 injected = 1")]
    short = _run(tmp_path, lab, {"detection_coverage_min": 1.0}, flipped=4)
    assert [(c.ok, c.detail) for c in check.judge_corruption(short, None)] == [
        (False, "3 detected / 4 injected = 0.75")]
    none = _run(tmp_path, lab, {"detection_coverage_min": 1.0}, flipped=0)
    assert not check.judge_corruption(none, None)[0].ok
    assert check.judge_corruption(_run(tmp_path, lab, {}, flipped=3), None) == []


def test_the_report_shows_the_coverage(tmp_path):
    v = check.Verdict(tmp_path, "t", corruption={"injected": 4, "detected": 3, "undetected": 1,
                                                 "undetected_items": [9], "coverage": 0.75})
    lines = report._corruption(v)
    assert "## Silent data corruption" in lines and lines[-1] == "| 4 | 3 | 1 | 75% |"
    assert report._corruption(check.Verdict(tmp_path, "t")) == []
    assert v.to_json()["corruption"]["coverage"] == 0.75


def test_the_two_scenarios_load_and_differ_in_verify_only():
    on, off = scenario.resolve("scenario-bitflip"), scenario.resolve("scenario-bitflip-unchecked")
    assert on.lab.verify and not off.lab.verify
    assert on.lab.env()["LAB_VERIFY"] == "on" and off.lab.env()["LAB_VERIFY"] == "off"
    assert [(s.do, s.params) for s in on.timeline] == [(s.do, s.params) for s in off.timeline] == [
        ("bitflip", {"p": 0.05})]
    assert on.expect.job.detection_coverage_min == 1.0 and on.expect.job.undetected_corruption_max == 0
    assert off.expect.job.undetected_corruption_min == 1 and not off.expect.job.exactly_once


def test_job_corruption_keys_are_checked(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("name: b\nlesson: b\nexpect: {job: {detection_coverage_min: 1.5, undetected_corruption_min: -1}}\n")
    problems = scenario.validate(bad)
    assert any("expect.job.detection_coverage_min: must be 1 or less" in p for p in problems), problems
    assert any("expect.job.undetected_corruption_min: must be 0 or more" in p for p in problems), problems
