"""labctl's pure logic: scenarios, compose reading, events, truth, judging,
the oracle, the fault journal, and the CLI's errors. No engine needed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import LABCTL, ROOT
from labctl import check, compose, faults, observe, oracle, scenario
from labctl.cli import parse_duration
from labctl.errors import ExitCode, LabError



def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


GOOD = """
name: t
lesson: a lesson
lab: {items: 10, rate: 5}
timeline:
  - {at: 1, do: pause, for: 2}
expect:
  windows: [{step: 1, monitor: PAUSED}]
  job: {completes: true}
"""


def test_builtin_scenarios_all_parse_and_have_lessons():
    scs = scenario.builtin()
    names = {s.name for s in scs}
    assert {"scenario-crash", "scenario-pause", "scenario-partition", "scenario-sigstop", "scenario-stale-lock",
            "scenario-graceful", "scenario-corrupt", "scenario-process-data"} <= names
    assert all(s.lesson and s.path.stem == s.name for s in scs)


@pytest.mark.parametrize(
    "text, where",
    [
        (GOOD.replace("lesson: a lesson", "lesson: a lesson\ncolour: red"), "colour: unknown key"),
        (GOOD.replace("items: 10", "items: ten"), "lab.items: expected a whole number, got a string 'ten'"),
        (GOOD.replace("items: 10", "items: 2.5"), "lab.items: expected a whole number"),
        (GOOD.replace("do: pause", "do: explode"), "timeline[0].do: 'explode' is not one of"),
        (GOOD.replace("for: 2", "for: -3"), "timeline[0].for: must be 0 or more, got -3"),
        (GOOD.replace("for: 2", "for: 0"), "timeline[0].for: must be more than 0"),
        (GOOD.replace("at: 1", "at: -1"), "timeline[0].at: must be 0 or more"),
        (GOOD.replace("at: 1,", "fro: 1,"), "timeline[0].fro: unknown key"),
        (GOOD.replace("monitor: PAUSED", "monitor: SLEEPY"), "expect.windows[0].monitor: 'SLEEPY' is not one of"),
        (GOOD.replace("step: 1", "step: 4"), "expect.windows[0].step: must be 1 or less"),
        (GOOD.replace("completes: true", "completes: 1"), "expect.job.completes: expected true or false"),
        (GOOD.replace("do: pause, for: 2", "do: crash, for: 2"), "timeline[0].for: 'crash' has no inverse"),
        ("name: [1, 2]\nlesson: x\n", "name: expected a string, got a list"),
        ("- just a list\n", ": expected a mapping, got a list"),
        ("name: t\nlesson: x\nlab: {timeout_ms: 100, interval_ms: 200}\n", "lab.timeout_ms: must exceed"),
        ("name: t\n  lesson: [\n", "line 2: not valid YAML"),
    ],
)
def test_bad_scenarios_name_file_and_key(tmp_path, text, where):
    with pytest.raises(LabError) as ei:
        scenario.load(write(tmp_path, text))
    assert ei.value.code == ExitCode.BAD_SCENARIO
    assert ei.value.what.startswith("s.yaml: ")
    assert where in ei.value.what


def test_validate_cli_exit_codes(tmp_path):
    good = subprocess.run([*LABCTL, "scenarios", "--validate", str(write(tmp_path, GOOD))], capture_output=True,
                          text=True, cwd=ROOT)
    assert good.returncode == 0 and "ok (t: 1 step(s)" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("do: pause", "do: explode"))
    p = subprocess.run([*LABCTL, "scenarios", "--validate", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == ExitCode.BAD_SCENARIO
    assert p.stderr.strip().startswith("labctl: error: bad.yaml: timeline[0].do:")
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["up"], 2, "the following arguments are required"),
        (["up", "scenario-nope"], ExitCode.NOT_FOUND, "no scenario named 'scenario-nope'"),
        (["up", "scenario-pause", "--lab", "Bad_Name"], 2, "bad lab name"),
        (["fault", "explode"], 2, "invalid choice"),
        (["fault", "pause", "--for", "soon"], 2, "wants a duration"),
        (["down", "--lab", "x", "--all"], 2, "not allowed with"),
        (["up", "scenario-pause", "scenario-crash", "--lab", "one"], ExitCode.USAGE, "--lab names one lab"),
    ],
)
def test_cli_argument_errors(args, code, text):
    p = subprocess.run([*LABCTL, *args], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert p.returncode == code
    assert text in p.stderr
    assert "Traceback" not in p.stderr


def test_engine_unreachable_gives_its_exit_code_and_one_line():
    p = subprocess.run([*LABCTL, "up", "scenario-pause"], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert p.returncode == ExitCode.ENGINE_UNREACHABLE
    assert p.stderr.startswith("labctl: error: the Docker engine is not reachable")
    assert "Traceback" not in p.stderr


def test_parse_duration():
    assert parse_duration("30") == 30 and parse_duration("30s") == 30 and parse_duration("2m") == 120
    assert parse_duration("1.5s") == 1.5
    import argparse

    for bad in ("", "x", "-1", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


# ------------------------------------------------------------------ compose


def test_compose_interpolation_and_services():
    assert compose.interpolate("--a=${X:-5}", {}) == "--a=5"
    assert compose.interpolate("--a=${X:-5}", {"X": "7"}) == "--a=7"
    assert compose.interpolate("${X}", {}) == ""
    svcs = compose.services({"LAB_ITEMS": "123", "LAB_RESTART_LIMIT": "4"})
    assert set(svcs) == {"monitor", "worker", "supervisor"}
    assert "--generate=123" in svcs["supervisor"].command
    assert svcs["worker"].restart == {"Name": "on-failure", "MaximumRetryCount": 4}
    for s in svcs.values():
        assert s.read_only and s.cap_drop == ["ALL"] and s.security_opt == ["no-new-privileges:true"]
        assert s.user == "10001:10001" and s.mem_limit and s.pids_limit
        assert s.mount == "/lab" and "/tmp" in s.tmpfs


def test_compose_file_is_hardened_and_never_mounts_the_socket():
    import yaml

    text = (ROOT / "compose.yaml").read_text()
    assert "docker.sock" not in text
    doc = yaml.safe_load(text)
    assert doc["networks"]["lab"]["internal"] is True


# ------------------------------------------------------------------ events and truth


def test_parse_log_lines():
    ts = "2026-11-29T11:00:00.500000000Z"
    ev = observe.parse_log_line("monitor", f'{ts} {{"ts": 1.0, "source": "monitor", "kind": "tick"}}')
    assert ev == {"ts": 1.0, "source": "monitor", "kind": "tick"}
    w = observe.parse_log_line("worker", f"{ts} worker[7]: warn: recovered stale lock of pid 3")
    assert w["source"] == "worker" and w["pid"] == 7 and w["level"] == "warn"
    assert w["ts"] == pytest.approx(1795950000.5)
    e = observe.parse_log_line("worker", f"{ts} ERROR: Corrupted data -10")
    assert e["level"] == "error" and e["message"] == "Corrupted data -10"
    s = observe.parse_log_line("supervisor", f"{ts} 2026-11-29 11:00:00,500 - WARNING - item 3: corrupted")
    assert s["level"] == "warning" and s["message"] == "item 3: corrupted"
    assert observe.parse_log_line("worker", "garbage") is None


def eng(ts, action, **kw):
    return {"ts": ts, "source": "engine", "kind": kw.pop("kind", "container"), "action": action,
            "service": "worker", **kw}


def test_truth_timeline_from_engine_and_journal():
    evs = [
        eng(1, "start"), eng(2, "pause"), eng(3, "unpause"),
        eng(4, "disconnect", kind="network"), eng(5, "connect", kind="network"),
        {"ts": 6, "source": "labctl", "kind": "fault", "phase": "applied", "fault": "sigstop", "target": "worker"},
        {"ts": 7, "source": "labctl", "kind": "fault", "phase": "reverted", "fault": "sigcont", "target": "worker"},
        eng(8, "die", exit_code=139), eng(9, "start"), eng(10, "die", exit_code=0),
        eng(11, "start", service="monitor"),
    ]
    assert observe.truth_timeline(evs) == [
        (1, "RUNNING"), (2, "PAUSED"), (3, "RUNNING"), (4, "PARTITIONED"), (5, "RUNNING"), (6, "SIGSTOPPED"),
        (7, "RUNNING"), (8, "CRASHED"), (9, "RUNNING"), (10, "STOPPED")]
    tl = observe.truth_timeline(evs)
    assert observe.state_at(tl, 2.5) == "PAUSED" and observe.state_at(tl, 0.5) is None


def mon(ts, verdict, naive="ALIVE"):
    return {"ts": ts, "source": "monitor", "kind": "tick", "verdict": verdict, "naive": naive}


def test_judge_windows_latency_and_job(tmp_path):
    sc = scenario.load(write(tmp_path, GOOD))
    evs = [
        eng(0, "start"),
        {"ts": 1.0, "source": "labctl", "kind": "fault", "phase": "intent", "step": 1, "fault": "pause"},
        {"ts": 1.01, "source": "labctl", "kind": "fault", "phase": "applied", "step": 1, "fault": "pause"},
        eng(1.02, "pause"), mon(1.5, "HEALTHY"), mon(2.9, "PAUSED", "DEAD"),
        {"ts": 3.0, "source": "labctl", "kind": "fault", "phase": "reverted", "step": 1, "fault": "unpause"},
    ]
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"processed": 1}')
    evs.append({"ts": 9, "source": "engine", "kind": "container", "action": "die", "service": "supervisor",
                "exit_code": 0})
    checks, _ = check.judge(sc, evs, tmp_path, 10)
    by = {c.name: c for c in checks}
    assert by["step 1 pause: monitor says PAUSED"].ok
    assert by["the job completes"].ok
    late = [e if e.get("verdict") != "PAUSED" else {**e, "ts": 3.0} for e in evs]
    sc.expect.windows[0].within_ms = 1500
    (out / "summary.json").unlink()
    checks, _ = check.judge(sc, late, tmp_path, 10)
    by = {c.name: c for c in checks}
    assert not by["step 1 pause: monitor says PAUSED"].ok and "later than 1.50 s" in by[
        "step 1 pause: monitor says PAUSED"].detail
    assert not by["the job completes"].ok


# ------------------------------------------------------------------ oracle


def test_oracle_catches_lost_duplicated_and_wrong_rows(tmp_path):
    (tmp_path / "input.dat").write_bytes(b"1\n2\n-10\n999\nabc\n3")
    out = tmp_path / "out"
    out.mkdir()

    def put(results, corrupted="3,-10\n", rejected="5,Malformed input: abc\n", dead="4,999,crashed,2\n"):
        (out / "results.csv").write_text("index,n,square\n" + results)
        (out / "corrupted.csv").write_text("index,value\n" + corrupted)
        (out / "rejected.csv").write_text("index,reason\n" + rejected)
        (out / "dead-letter.csv").write_text("index,item,reason,crashes\n" + dead)

    put("1,1,1\n2,2,4\n6,3,9\n")
    assert oracle.compare(out, tmp_path / "input.dat", 999) == []
    put("1,1,1\n6,3,9\n")
    assert any("lost" in p for p in oracle.compare(out, tmp_path / "input.dat", 999))
    put("1,1,1\n2,2,4\n2,2,4\n6,3,9\n")
    assert any("more than once" in p for p in oracle.compare(out, tmp_path / "input.dat", 999))
    put("1,1,1\n2,2,5\n6,3,9\n")
    assert any("squared is 4, not 5" in p for p in oracle.compare(out, tmp_path / "input.dat", 999))
    put("1,1,1\n2,2,4\n6,3,9\n", dead="")
    assert any("dead-letter.csv" in p for p in oracle.compare(out, tmp_path / "input.dat", 999))


# ------------------------------------------------------------------ journal


def test_journal_pending_and_cut_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    faults.append("l1", {"id": "a", "phase": "intent", "fault": "pause", "target": "worker", "inverse": "unpause"})
    faults.append("l1", {"id": "a", "phase": "applied", "fault": "pause", "target": "worker", "inverse": "unpause"})
    faults.append("l1", {"id": "b", "phase": "intent", "fault": "partition", "target": "worker", "inverse": "heal"})
    faults.append("l1", {"id": "c", "phase": "intent", "fault": "crash", "target": "worker", "inverse": None})
    with open(faults.journal_path("l1"), "a") as f:
        f.write('{"ts": 1, "kind": "fault", "phase": "rev')  # a kill -9 mid-write
    assert [p["id"] for p in faults.pending("l1")] == ["b", "a"]
    faults.append("l1", {"id": "a-revert", "of": "a", "phase": "reverted", "fault": "unpause", "target": "worker"})
    assert [p["id"] for p in faults.pending("l1")] == ["b"]
    assert json.loads(faults.journal_path("l1").read_text().splitlines()[0])["source"] == "labctl"


def test_fresh_lab_ids_never_collide(monkeypatch):
    from labctl import cli
    from labctl import labels as L

    seq = iter(["pause-aaaa", "pause-aaaa", "pause-bbbb", "pause-cccc", "pause-dddd"])
    monkeypatch.setattr(L, "new_lab_id", lambda name: next(seq))
    monkeypatch.setattr(cli.lab, "lab_ids", lambda engine: ["pause-bbbb"])
    monkeypatch.setattr(cli.Engine, "open", classmethod(lambda cls, timeout=60: None))
    sc = scenario.resolve("scenario-pause")
    assert cli.fresh_ids([sc, sc, sc]) == ["pause-aaaa", "pause-cccc", "pause-dddd"]
