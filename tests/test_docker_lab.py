"""Integration: the real engine, real containers, real faults.

Marked `docker`: `pytest -m "not docker"` runs without an engine. In CI these
run too (`make test` starts the engine and builds the images first).
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from helpers import ROOT, assert_timeline_png, labctl, labelled

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SCENARIOS = sorted(p.stem for p in (ROOT / "labctl" / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_meets_its_expectations(built, engine, tmp_path, name):
    lab = f"t-{name.removeprefix('scenario-')}-{uuid.uuid4().hex[:4]}"
    p = labctl("up", name, "--lab", lab, runs=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    assert "FAIL" not in out
    run_dirs = list((tmp_path / lab).glob("2*"))
    assert len(run_dirs) == 1
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    assert summary["ok"] is True and summary["checks"], summary
    assert all(c["ok"] for c in summary["checks"])
    events = [json.loads(ln) for ln in (run_dirs[0] / "events.jsonl").read_text().splitlines()]
    assert {e["source"] for e in events} >= {"engine", "monitor", "worker", "supervisor"}
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert labelled(engine, lab) == ([], [], []), "the lab is torn down after the run"
    # The report and the picture, built from this real run; the checker agrees from the files alone.
    report = (run_dirs[0] / "report.md").read_text()
    assert report.startswith(f"# {name}: passed") and "## Checks" in report and "![timeline](timeline.png)" in report

    sc = __import__("labctl.scenario", fromlist=["resolve"]).resolve(name)
    assert_timeline_png(run_dirs[0] / "timeline.png", 1, len(sc.timeline))
    again = labctl("check", str(run_dirs[0]))
    assert again.returncode == 0, again.stdout[-2000:]


def test_two_labs_at_once_do_not_see_each_other(built, engine, tmp_path):
    """A crash in one lab: the other lab's monitor never sees anything but health."""
    p = labctl("up", "scenario-crash", "scenario-corrupt", runs=tmp_path)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    labs = sorted(d.name for d in tmp_path.iterdir() if d.is_dir())
    assert len(labs) == 2 and labs[0].startswith("corrupt-") and labs[1].startswith("crash-")
    corrupt = json.loads(next((tmp_path / labs[0]).glob("2*/summary.json")).read_text())
    crash = json.loads(next((tmp_path / labs[1]).glob("2*/summary.json")).read_text())
    assert corrupt["ok"] and crash["ok"]
    assert crash["worker_restarts"] >= 2 and corrupt["worker_restarts"] == 0
    evs = [json.loads(ln) for ln in next((tmp_path / labs[0]).glob("2*/events.jsonl")).read_text().splitlines()]
    assert not [e for e in evs if e.get("verdict") == "CRASHED"]
    assert not [e for e in evs if e["source"] == "engine" and e.get("action") == "die" and e.get("exit_code")]


def test_keep_then_fault_status_logs_and_down_all_leave_nothing(built, engine, tmp_path):
    lab = f"t-keep-{uuid.uuid4().hex[:4]}"
    p = labctl("up", "scenario-corrupt", "--lab", lab, "--keep", runs=tmp_path)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    containers, networks, volumes = labelled(engine, lab)
    assert len(containers) == 3 and networks == [f"labctl-{lab}-net"] and volumes == [f"labctl-{lab}-lab"]
    # A second lab of the same name is refused, and the first is left alone.
    q = labctl("up", "scenario-corrupt", "--lab", lab, runs=tmp_path)
    assert q.returncode == 4
    assert f"labctl: error: lab '{lab}' already exists" in q.stderr and "Traceback" not in q.stderr
    assert len(labelled(engine, lab)[0]) == 3
    # Live faults: pause the (still running) monitor for a moment; Ctrl-C-free revert by --for.
    f = labctl("fault", "pause", "--lab", lab, "--target", "monitor", "--for", "1s", runs=tmp_path)
    assert f.returncode == 0, f.stderr
    assert engine.inspect(f"labctl-{lab}-monitor").status == "running"
    s = labctl("status")
    assert lab in s.stdout
    lg = labctl("logs", "supervisor", "--lab", lab)
    assert lg.returncode == 0 and "job complete" in lg.stdout
    d = labctl("down", "--all", runs=tmp_path)
    assert d.returncode == 0, d.stderr
    assert labelled(engine) == ([], [], []), "labctl down --all leaves no labelled resource"
    again = labctl("down", "--all", runs=tmp_path)
    assert again.returncode == 0 and "no labs" in again.stdout


def test_docker_compose_up_alone_completes_the_job(built, engine, tmp_path):
    from labctl import images

    project = "labctl"  # compose.yaml's own name: Compose then finds the images labctl built
    env = {**os.environ, "LAB_BASE_IMAGE": images.local_base_ref(), "LAB_ITEMS": "5000"}
    base = ["docker", "compose", "-p", project, "-f", str(ROOT / "compose.yaml")]
    try:
        up = subprocess.run([*base, "up", "--no-build", "--no-color"], capture_output=True, text=True,
                            timeout=240, env=env)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
        cp = subprocess.run([*base, "cp", "supervisor:/lab/out/summary.json", str(tmp_path / "summary.json")],
                            capture_output=True, text=True, env=env)
        assert cp.returncode == 0, cp.stderr
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["read"] == 5000 and summary["dead_lettered"] == 1 and summary["corrupted"] == 2
        assert summary["processed"] == 4997 and summary["worker_crashes"] >= 2
        ps = subprocess.run([*base, "ps", "-a", "--format", "json"], capture_output=True, text=True, env=env)
        assert '"ExitCode":0' in ps.stdout.replace(" ", "")
    finally:
        subprocess.run([*base, "down", "-v", "--remove-orphans"], capture_output=True, env=env, timeout=120)


def test_a_missing_base_image_has_its_exit_code(engine, tmp_path):
    p = labctl("up", "scenario-pause", "--base", "labctl-no-such-base:1", runs=tmp_path)
    assert p.returncode == 5
    assert p.stderr.strip() == ("labctl: error: base image labctl-no-such-base:1 is not present and cannot be pulled; "
                                "build it, or drop --base/LAB_BASE_IMAGE to use labctl's local base")
    assert labelled(engine) == ([], [], []), "nothing was created"
