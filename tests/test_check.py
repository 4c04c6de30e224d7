"""The checker on synthetic runs, good and damaged, and the timeline picture."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import LABCTL, ROOT, assert_timeline_png
from labctl import check, rundir, runlog, timeline

T0 = 1_800_000_000.0
SCENARIO = ROOT / "labctl" / "scenarios" / "scenario-pause.yaml"
ITEMS = [5, 7, -10, 3, 12, -25, 9, 4]


def tick(t, verdict, heartbeat_only="ALIVE", processed=0, beats=0):
    return {"ts": T0 + t, "source": "monitor", "kind": "tick", "verdict": verdict, "heartbeat_only": heartbeat_only,
            "lock": "held", "processed": processed, "udp_beats": beats}


def make_run(tmp: Path) -> Path:
    """A run of scenario-pause that went right, written as labctl writes it."""
    rd = tmp / "pause-abcd" / "20261129T000000Z"
    (rd / "lab" / "out").mkdir(parents=True)
    shutil.copyfile(SCENARIO, rd / "scenario.yaml")
    (rd / "lab" / "input.dat").write_text("".join(f"{v}\n" for v in ITEMS))
    good = [(i, v) for i, v in enumerate(ITEMS, 1) if v >= 0]
    out = rd / "lab" / "out"
    (out / "results.csv").write_text("index,n,square\n" + "".join(f"{i},{v},{v * v}\n" for i, v in good))
    (out / "corrupted.csv").write_text("index,value\n3,-10\n6,-25\n")
    (out / "rejected.csv").write_text("index,reason\n")
    (out / "dead-letter.csv").write_text("index,item,reason,crashes\n")
    (out / "summary.json").write_text(json.dumps({"read": 8, "processed": 6, "corrupted": 2, "rejected": 0,
                                                  "dead_lettered": 0}))
    ev = [
        {"ts": T0 + 0.5, "source": "engine", "kind": "container", "action": "start", "service": "worker"},
        {"ts": T0 + 0.9, "source": "supervisor", "kind": "state", "state": "streaming", "acked": 0},
        {"ts": T0 + 3.0, "source": "labctl", "kind": "fault", "phase": "intent", "fault": "pause", "step": 1,
         "target": "worker", "inverse": "unpause", "id": "a"},
        {"ts": T0 + 3.02, "source": "engine", "kind": "container", "action": "pause", "service": "worker"},
        {"ts": T0 + 3.03, "source": "labctl", "kind": "fault", "phase": "applied", "fault": "pause", "step": 1,
         "target": "worker", "inverse": "unpause", "id": "a"},
        {"ts": T0 + 5.0, "source": "supervisor", "kind": "state", "state": "timed_out", "acked": 3},
        {"ts": T0 + 9.0, "source": "engine", "kind": "container", "action": "unpause", "service": "worker"},
        {"ts": T0 + 9.01, "source": "labctl", "kind": "fault", "phase": "reverted", "fault": "unpause", "step": 1,
         "target": "worker", "id": "a-revert", "of": "a"},
        {"ts": T0 + 9.5, "source": "supervisor", "kind": "state", "state": "streaming", "acked": 3},
        {"ts": T0 + 12.0, "source": "engine", "kind": "container", "action": "die", "service": "supervisor",
         "exit_code": 0},
        {"ts": T0 + 12.1, "source": "engine", "kind": "container", "action": "die", "service": "worker",
         "exit_code": 0},
        {"ts": T0 + 12.2, "source": "monitor", "kind": "tick", "verdict": "STOPPED", "heartbeat_only": "ALIVE",
         "lock": "absent"},
    ]
    for k in range(6, 120):  # ticks every 0.1 s from 0.6 s to 11.9 s
        t = k / 10
        if 3.0 <= t < 4.9:
            ev.append(tick(t, "HEALTHY", processed=3, beats=k))
        elif 4.9 <= t < 9.1:
            ev.append(tick(t, "PAUSED", "DEAD", processed=3, beats=30))
        else:
            ev.append(tick(t, "HEALTHY", processed=min(k, 8), beats=k))
    ev.sort(key=lambda e: e["ts"])
    (rd / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    (rd / "summary.json").write_text(json.dumps({"lab": "pause-abcd", "scenario": "scenario-pause",
                                                 "started": T0, "ended": T0 + 12.5, "error": None}))
    return rd


def failed(v: check.Verdict) -> list[check.Check]:
    return [c for c in v.checks if not c.ok]


def test_a_good_run_passes_and_gets_a_report(tmp_path):
    rd = make_run(tmp_path)
    summary_before = (rd / "summary.json").read_bytes()
    v = check.check_run(rd)
    assert v.ok, failed(v)
    report = (rd / "report.md").read_text()
    assert report.startswith("# scenario-pause: passed")
    assert "## Checks" in report and "## Detection latency" in report
    assert "| PAUSED | 6.0 s | 1.88 s (PAUSED) | 1.88 s | 1.98 s |" in report
    verdict = json.loads((rd / "verdict.json").read_text())
    assert verdict["ok"] is True and verdict["scenario"] == "scenario-pause" and verdict["error"] is None
    assert [lat["truth"] for lat in verdict["latencies"]] == ["PAUSED", "STOPPED"]
    assert verdict["latencies"][0]["heartbeat_only_s"] == pytest.approx(1.88, abs=0.001)
    assert len(verdict["checks"]) == len(v.checks) and all(c["ok"] for c in verdict["checks"])
    assert (rd / "summary.json").read_bytes() == summary_before, "the lab's summary.json is the lab's alone"


def test_a_run_from_before_the_rename_still_checks(tmp_path):
    """Runs recorded when the monitor called the heartbeat-only verdict `naive`."""
    rd = make_run(tmp_path)
    evs = [json.loads(ln) for ln in (rd / "events.jsonl").read_text().splitlines()]
    old = [{("naive" if k == "heartbeat_only" else k): v for k, v in e.items()} for e in evs]
    assert not any("heartbeat_only" in e for e in old) and sum("naive" in e for e in old) > 100
    (rd / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in old))
    v = check.check_run(rd)
    assert v.ok, failed(v)
    by = {c.name: c for c in v.checks}
    assert by["step 1 pause: heartbeat_only says DEAD"].detail == "after 1.90 s"
    assert v.latencies[0].heartbeat_only_s == pytest.approx(1.88, abs=0.001)


def test_verdict_of_a_run_from_before_verdict_json(tmp_path):
    """Such a run kept the checker's findings in summary.json: `labctl runs` still shows them."""
    rd = make_run(tmp_path)
    summary = json.loads((rd / "summary.json").read_text())
    (rd / "summary.json").write_text(json.dumps({**summary, "ok": False, "checks": [], "latencies": []}))
    assert rundir.read_verdict(rd) == {"ok": False, "checks": [], "latencies": []}
    check.check_run(rd)
    assert rundir.read_verdict(rd)["ok"] is True, "verdict.json, once written, is the one read"


def damage_results(rd: Path, fn) -> None:
    p = rd / "lab" / "out" / "results.csv"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(fn(lines)))


@pytest.mark.parametrize(
    "damage, finding",
    [
        (lambda ls: ls[:2] + ls[3:], "valid item(s) lost"),
        (lambda ls: ls + [ls[2]], "appear more than once"),
        (lambda ls: ls[:1] + ["1,5,26\n"] + ls[2:], "5 squared is 25, not 26"),
        (lambda ls: ls[:1] + ["1,6,36\n"] + ls[2:], "answer another reading"),
    ],
)
def test_damaged_results_are_caught(tmp_path, damage, finding):
    rd = make_run(tmp_path)
    damage_results(rd, damage)
    v = check.check_run(rd)
    assert not v.ok
    assert any(finding in c.detail for c in failed(v)), failed(v)
    assert "**FAIL**" in (rd / "report.md").read_text()


def test_a_verdict_that_never_came_is_caught(tmp_path):
    rd = make_run(tmp_path)
    evs = [json.loads(ln) for ln in (rd / "events.jsonl").read_text().splitlines()]
    evs = [{**e, "verdict": "HEALTHY"} if e.get("verdict") == "PAUSED" else e for e in evs]
    (rd / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    v = check.check_run(rd)
    names = {c.name for c in failed(v)}
    assert "step 1 pause: monitor says PAUSED" in names
    assert "no monitor verdict contradicts the truth" in names


def test_a_missing_negative_or_stale_lock_is_caught(tmp_path):
    rd = make_run(tmp_path)
    (rd / "lab" / "out" / "corrupted.csv").write_text("index,value\n3,-10\n")
    (rd / "lab" / "cworker.lock").write_text("7 abc\n")
    names = {c.name: c.detail for c in failed(check.check_run(rd))}
    assert any("corrupted.csv" in d for d in names.values())
    assert "no stale lock left" in names


def test_check_cli_exit_codes(tmp_path):
    rd = make_run(tmp_path)
    ok = subprocess.run([*LABCTL, "check", str(rd)], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and "passed:" in ok.stdout
    damage_results(rd, lambda ls: ls[:2] + ls[3:])
    bad = subprocess.run([*LABCTL, "check", str(rd)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "FAILED:" in bad.stdout
    assert json.loads((rd / "verdict.json").read_text())["ok"] is False
    js = subprocess.run([*LABCTL, "report", str(rd), "--format", "json"], capture_output=True,
                        text=True, cwd=ROOT)
    doc = json.loads(js.stdout)
    assert js.returncode == 0 and doc["ok"] is False and doc["lab"] == "pause-abcd" and doc["started"] == T0
    runs = subprocess.run([*LABCTL, "runs"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "LABCTL_RUNS": str(tmp_path)})
    row = next(ln for ln in runs.stdout.splitlines() if "20261129T000000Z" in ln)
    assert "pause-abcd" in row and "scenario-pause" in row and "FAILED" in row
    nodir = subprocess.run([*LABCTL, "check", str(tmp_path)], capture_output=True, text=True,
                           cwd=ROOT)
    assert nodir.returncode == 8 and "holds no scenario.yaml" in nodir.stderr


def test_timeline_png_lanes_and_fault_windows(tmp_path):
    rd = make_run(tmp_path)
    evs = runlog.read_events(rd / "events.jsonl")
    meta = timeline.render([timeline.Column("scenario-pause", evs, T0, T0 + 12.5)], tmp_path / "one.png")
    assert meta["FaultWindows"] == "1"
    assert_timeline_png(tmp_path / "one.png", 1, 1)
    quiet = [e for e in evs if e["source"] != "labctl"]
    timeline.render([timeline.Column("a", evs, T0, T0 + 12.5), timeline.Column("b", quiet, T0, T0 + 12.5)],
                    tmp_path / "two.png")
    assert_timeline_png(tmp_path / "two.png", 2, 1)
