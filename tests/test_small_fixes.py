"""What an instructor saw (issue 14): times for people are seconds since the
lab started; the picture shades live faults and clips nothing; `labctl
status` names compose-started containers; the process-data report shows the
program's log; undoing a fault that is not on is a one-line no-op; every
exit code labctl can return is in the README."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import ROOT, assert_timeline_png
from labctl import check, cli, faults, journal, labels, report, runlog, timeline
from labctl.engine import ContainerState
from labctl.errors import ExitCode

T0 = 1795991990.0  # a Unix time: none of it may reach a person
UNIX_TIME = re.compile(r"1[0-9]{9}\.[0-9]")


def ev(dt: float, source: str, kind: str, **kw) -> dict:
    return {"ts": T0 + dt, "source": source, "kind": kind, **kw}


def pause_run(tmp_path: Path) -> Path:
    """A run directory where the worker was paused at +3 s and the monitor said so late."""
    rd = tmp_path / "run"
    rd.mkdir()
    shutil.copyfile(ROOT / "labctl" / "scenarios" / "scenario-pause.yaml", rd / "scenario.yaml")
    evs = [ev(0.5, "engine", "container", service="worker", action="start")]
    evs += [ev(1 + i * 0.2, "monitor", "tick", verdict="HEALTHY", heartbeat_only="ALIVE") for i in range(10)]
    evs += [ev(3.0, "engine", "container", service="worker", action="pause")]
    evs += [ev(3.2 + i * 0.2, "monitor", "tick", verdict="HEALTHY", heartbeat_only="ALIVE") for i in range(30)]
    evs += [ev(9.5, "monitor", "tick", verdict="PAUSED", heartbeat_only="DEAD")]
    (rd / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    (rd / "summary.json").write_text(json.dumps({"lab": "p-1", "scenario": "scenario-pause", "started": T0,
                                                 "ended": T0 + 10}))
    return rd


def test_check_names_and_details_say_seconds_since_the_start_not_unix_times(tmp_path, capsys):
    rd = pause_run(tmp_path)
    v = check.check_run(rd)
    saw = next(c for c in v.checks if c.name.startswith("monitor saw paused"))
    assert saw.name == "monitor saw paused at +3.0 s as PAUSED" and not saw.ok
    agree = next(c for c in v.checks if c.name == "no monitor verdict contradicts the truth")
    assert not agree.ok and "(at +" in agree.detail, agree.detail
    for text in [c.name + c.detail for c in v.checks] + [(rd / "report.md").read_text()]:
        assert not UNIX_TIME.search(text), text
    assert cli.main(["check", str(rd)]) == ExitCode.FAILED
    assert not UNIX_TIME.search(capsys.readouterr().out)


def test_agreement_keeps_its_plain_detail_without_a_start():
    bad = check.agreement([(15.0, "PAUSED")], [(0.0, "RUNNING")], 0.2, 2.0)
    assert bad.detail.endswith("(at 15.0)")


def live_fault_events() -> list[dict]:
    """A fault given live (`labctl fault pause`, no step), then undone by hand."""
    f = {"source": "labctl", "kind": "fault", "fault": "pause", "target": "worker", "inverse": "unpause",
         "id": "a-pause", "step": None}
    evs = [ev(i * 0.1, "monitor", "tick", verdict="HEALTHY", heartbeat_only="ALIVE", processed=i * 10_000,
              udp_beats=i) for i in range(100)]
    evs += [ev(i, "supervisor", "latency", p50_ms=1.0, p99_ms=123_456.0) for i in range(10)]
    evs += [{**f, "ts": T0 + 3, "phase": "intent"}, {**f, "ts": T0 + 3.01, "phase": "applied"},
            {**f, "ts": T0 + 5, "phase": "reverted", "id": "a-pause-revert", "of": "a-pause", "fault": "unpause"},
            # An undoing given on its own is no window.
            {**f, "ts": T0 + 6, "phase": "intent", "id": "b", "fault": "heal", "inverse": None},
            {**f, "ts": T0 + 6.1, "phase": "applied", "id": "b", "fault": "heal", "inverse": None}]
    return sorted(evs, key=lambda e: e["ts"])


def test_a_live_fault_is_shaded_and_the_checker_still_judges_steps_only(tmp_path):
    evs = live_fault_events()
    assert runlog.every_fault_window(evs, T0 + 10) == [(T0 + 3, T0 + 5, "pause")]
    assert runlog.fault_windows(evs, T0 + 10) == {}
    out = tmp_path / "t.png"
    meta = timeline.render([timeline.Column("scenario-x", evs, T0, T0 + 10)], out)
    assert meta["FaultWindows"] == "1"
    assert_timeline_png(out, 1, 1)


def test_the_single_lab_picture_clips_no_label_or_legend(tmp_path):
    """Wide tick labels (a million items, a p99 in the hundred thousands) and
    a full legend: nothing drawn may touch the picture's edge."""
    evs = live_fault_events()
    states = ["HEALTHY", "RESTARTED", "PARTITIONED", "PAUSED", "SLOW"]
    evs += [ev(i * 0.1, "supervisor", "state", state=["streaming", "timed_out", "reconnecting", "isolating",
                                                       "done"][i // 20], acked=i * 10_000) for i in range(100)]
    evs += [ev(i * 0.1 + 0.05, "monitor", "verdict", verdict=states[i // 20]) for i in range(100)]
    evs.sort(key=lambda e: e["ts"])
    out = tmp_path / "t.png"
    timeline.render([timeline.Column("scenario-x", evs, T0, T0 + 10)], out)
    px = np.asarray(Image.open(out).convert("RGB")).astype(int)
    for edge, name in ((px[:, :4], "left"), (px[:, -4:], "right"), (px[-4:, :], "bottom"), (px[:4, :], "top")):
        assert (edge > 245).all(), f"something drawn reaches the {name} edge: clipped"


class FakeEngine:
    name = "default"

    def __init__(self, status: str = "running", found: list[ContainerState] | None = None):
        self.status = status
        self.found = found or []

    def inspect(self, name: str) -> ContainerState:
        return ContainerState("id", name, self.status, None, 0, 10, {},
                              [labels.network_name(labels.lab_id_of(name) or "l1")])

    def containers(self, filters: dict) -> list[ContainerState]:
        return self.found

    def networks(self, filters: dict) -> list[tuple[str, str]]:
        return []

    def volumes(self, filters: dict) -> list[str]:
        return []

    def logs_text(self, name: str, tail: int | str = "all", stderr: bool = True) -> str:
        return ('{"ts": 1, "source": "monitor", "kind": "tick", "verdict": "PAUSED", "heartbeat_only": "DEAD"}\n'
                if name.endswith("-monitor") else "")


def test_status_names_compose_started_containers(monkeypatch, capsys):
    compose_labels = {labels.MANAGED: "true", labels.COMPOSE_PROJECT: "labctl-3fa2",
                      labels.COMPOSE_SERVICE: "worker"}
    ours = labels.service_labels("crash-1a2b", "monitor", "scenario-crash")
    found = [ContainerState("a", "labctl-3fa2-worker-1", "running", 0, 0, 1, compose_labels, []),
             ContainerState("b", "labctl-crash-1a2b-monitor", "running", 0, 0, 1, ours, [])]
    monkeypatch.setattr(cli, "open_engines", lambda args, timeout=60: [FakeEngine(found=found)])
    assert cli.main(["status"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "?" not in out
    assert "labctl-3fa2 (compose)" in out and "docker compose up" in out and "scenario-crash" in out
    # Each lab now: its truth and its monitor's last word (the compose project is no lab labctl runs).
    row = next(ln for ln in out.splitlines() if "crash-1a2b" in ln and "PAUSED" in ln)
    assert "RUNNING" in row and "DEAD" in row and "no" in row
    assert labels.describe(compose_labels) == ("labctl-3fa2 (compose)", "worker", "docker compose up")
    assert labels.describe(labels.helper_labels("l1", "f1")) == ("l1", "helper", "-")


def test_the_process_data_report_shows_the_programs_log(tmp_path):
    rd = tmp_path / "run"
    rd.mkdir()
    shutil.copyfile(ROOT / "labctl" / "scenarios" / "scenario-process-data.yaml", rd / "scenario.yaml")
    evs = [ev(1 + i * 0.01, "supervisor", "log", level="info", message=f"line {i + 1}: 3 -> 9") for i in range(50)]
    evs += [ev(1.6, "supervisor", "log", level="warning", message="line 51: corrupted data -10; skipping"),
            ev(1.7, "supervisor", "log", level="critical", message="line 52: reading 0, the sensor is dead; stopping"),
            ev(1.8, "engine", "container", service="supervisor", action="die", exit_code=2)]
    (rd / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    (rd / "summary.json").write_text(json.dumps({"lab": "pd-1", "started": T0, "ended": T0 + 3}))
    check.check_run(rd)
    text = (rd / "report.md").read_text()
    assert "## The program's log" in text and "| WARNING | 1 |" in text and "| CRITICAL | 1 |" in text
    assert "+1.60 s  WARNING  line 51: corrupted data -10; skipping" in text
    assert "CRITICAL line 52: reading 0, the sensor is dead; stopping" in text
    assert f"... {50 - report.INFO_RUN_KEEP - 1} more INFO lines ..." in text
    assert not UNIX_TIME.search(text)


def test_undoing_what_is_not_on_is_a_no_op(monkeypatch, tmp_path):
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    running, paused = FakeEngine("running"), FakeEngine("paused")
    assert faults.nothing_to_undo(running, "l1", "unpause", "worker") == \
        "no pause of the worker is on (labctl-l1-worker is running)"
    assert faults.nothing_to_undo(paused, "l1", "unpause", "worker") is None  # a `docker pause` by hand
    assert faults.nothing_to_undo(running, "l1", "heal", "worker").startswith("no partition of the worker")
    assert faults.nothing_to_undo(running, "l1", "start", "worker").startswith("no kill or stop of the worker")
    for name in ("sigcont", "oneway-off", "loss-off", "slow-off", "latency-off"):
        assert faults.nothing_to_undo(running, "l1", name, "worker"), name
    assert faults.nothing_to_undo(running, "l1", "pause", "worker") is None  # not an undoing
    journal.append("l1", {"id": "x", "fault": "sigstop", "target": "worker", "inverse": "sigcont",
                          "phase": journal.INTENT})
    assert faults.nothing_to_undo(running, "l1", "sigcont", "worker") is None
    assert faults.nothing_to_undo(running, "l1", "sigcont", "monitor") is not None


def test_fault_unpause_when_not_paused_exits_0_with_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    eng = FakeEngine("running")
    monkeypatch.setattr(cli, "open_engines", lambda args, timeout=60: [eng])
    monkeypatch.setattr(cli, "pick_lab", lambda engs, given: (eng, "l1"))
    assert cli.main(["fault", "unpause", "--lab", "l1"]) == ExitCode.OK
    out = capsys.readouterr()
    assert out.out.strip() == "lab l1: no pause of the worker is on (labctl-l1-worker is running); " \
                              "unpause has nothing to undo"
    assert out.err == "" and journal.read("l1") == []


def test_every_exit_code_labctl_returns_is_in_the_readme():
    text = (ROOT / "README.md").read_text()
    start = text.index("Exit codes: 0 ok")
    table = " ".join(text[start:text.index("\n\n", start)].split())
    for code in ExitCode:
        if code == ExitCode.BAD_SUBMISSION:
            continue  # a refused archive's mark in its report, never labctl's exit (README, grading)
        assert re.search(rf"\b{int(code)} [a-z]", table), f"exit code {int(code)} ({code.name}) is not in the README"
