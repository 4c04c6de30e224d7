"""Integration: the real engine, real containers, real faults.

Marked `docker`: `pytest -m "not docker"` runs without an engine. In CI these
run too (`make test` starts the engine and builds the images first).

Every lab a test creates is named by (or found through) the `labs` fixture,
which takes it down at teardown and checks nothing labelled is left, also
when the test failed; the tests themselves assert what labctl left.
"""
from __future__ import annotations

import json

import pytest

from helpers import ROOT, Labs, assert_timeline_png, checker_verdict, labctl, labelled

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The worker lab's scenarios; the lease lab's are tests/test_lease_lab.py's.
SCENARIOS = sorted(p.stem for p in (ROOT / "labctl" / "scenarios").glob("*.yaml")
                   if "kind: lease" not in p.read_text())


def only_run(runs, lab: str):
    run_dirs = list((runs / lab).glob("2*"))
    assert len(run_dirs) == 1, run_dirs
    return run_dirs[0]


# The scenarios run side by side, a few at a time, as a class would (one
# `labctl up` a batch: a tenth of the suite's time saved); a blind game runs
# alone, as labctl requires.
BATCH = 6
_SOLO = [n for n in SCENARIOS if "blind:" in (ROOT / "labctl" / "scenarios" / f"{n}.yaml").read_text()]
_SHARED = [n for n in SCENARIOS if n not in _SOLO]
BATCHES = [_SHARED[i:i + BATCH] for i in range(0, len(_SHARED), BATCH)] + [[n] for n in _SOLO]


class SideBySide:
    """Runs each batch once, when its first scenario's test asks; keeps what
    `labctl up` said and where each scenario's run went."""

    def __init__(self, labs: Labs):
        self.labs = labs
        self.done: dict[str, tuple[str, str]] = {}  # scenario -> (lab id, labctl's output)

    def run(self, name: str) -> tuple[str, str]:
        if name not in self.done:
            batch = next(b for b in BATCHES if name in b)
            p = labctl("up", *batch, runs=self.labs.runs, timeout=900)
            out = p.stdout + p.stderr
            for lab_id in self.labs.in_runs():
                for rd in (self.labs.runs / lab_id).glob("2*"):
                    sc = json.loads((rd / "summary.json").read_text()).get("scenario")
                    if sc in batch:
                        self.done[sc] = (lab_id, out)
            for n in batch:
                self.done.setdefault(n, ("", out))  # no run directory: the test says so
        return self.done[name]


@pytest.fixture(scope="module")
def side_by_side(built, engine, tmp_path_factory):
    reg = Labs(tmp_path_factory.mktemp("side-by-side") / "runs")
    reg.runs.mkdir()
    yield SideBySide(reg)
    left = {}
    for lab_id in reg.all():
        if labelled(engine, lab_id) != ([], [], []):
            labctl("down", "--lab", lab_id, runs=reg.runs, timeout=180)
            left[lab_id] = labelled(engine, lab_id)
    assert not left, f"labs left behind by the side-by-side runs: {left}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_meets_its_expectations(engine, side_by_side, name):
    lab, out = side_by_side.run(name)
    assert lab, f"{name} left no run directory; labctl said: {out[-4000:]}"
    run_dir = only_run(side_by_side.labs.runs, lab)
    verdict = checker_verdict(run_dir)
    assert verdict["ok"] is True and verdict["checks"], (verdict, out[-3000:])
    assert all(c["ok"] for c in verdict["checks"])
    events = [json.loads(ln) for ln in (run_dir / "events.jsonl").read_text().splitlines()]
    assert {e["source"] for e in events} >= {"engine", "monitor", "worker", "supervisor"}
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert labelled(engine, lab) == ([], [], []), "the lab is torn down after the run"
    # The report and the picture, built from this real run; the checker agrees from the files alone.
    report = (run_dir / "report.md").read_text()
    assert report.startswith(f"# {name}: passed") and "## Checks" in report and "![timeline](timeline.png)" in report
    assert_dependability(run_dir, report, crash_loop=name == "scenario-crash-loop")

    from labctl import scenario

    # The run's own scenario.yaml: a blind scenario's step is the one its seed picked.
    assert_timeline_png(run_dir / "timeline.png", 1, len(scenario.load(run_dir / "scenario.yaml").timeline))
    again = labctl("check", str(run_dir))
    assert again.returncode == 0, again.stdout[-2000:]


def assert_dependability(run_dir, report: str, crash_loop: bool) -> None:
    """Every run's summary and report carry the dependability numbers; scenario-crash-loop's show its failures."""
    dep = json.loads((run_dir / "summary.json").read_text())["dependability"]
    assert set(dep["observers"]) == {"truth", "monitor", "heartbeat_only", "supervisor"}, dep
    assert "## Dependability" in report and "| truth |" in report
    if not crash_loop:
        return
    truth, monitor, sup = (dep["observers"][w] for w in ("truth", "monitor", "supervisor"))
    restarts = json.loads((run_dir / "summary.json").read_text())["worker_restarts"]
    assert truth["failures"] == restarts >= 3, (dep, restarts)
    assert monitor["failures"] >= 3 and sup["failures"] >= 3, dep
    for n in (truth, monitor, sup):
        assert n["mttf_s"] > 0 and n["mttr_s"] > 0 and 0 < n["availability"] < 1, n
        assert abs(n["availability"] - n["mttf_s"] / (n["mttf_s"] + n["mttr_s"])) < 0.01, n
    # The start delay (0.5 s) is repair time the engine cannot see: the monitor's MTTR includes it.
    assert monitor["mttr_s"] > truth["mttr_s"], dep
    assert dep["job"]["stalls"] >= 3 and dep["job"]["downtime_s"] > 0, dep
    assert "MTTF" in report and "The job's own downtime" in report


def test_two_labs_at_once_do_not_see_each_other(built, engine, labs):
    """A crash in one lab: the other lab's monitor never sees anything but health."""
    p = labctl("up", "scenario-crash", "scenario-corrupt", runs=labs.runs)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    ids = labs.in_runs()
    assert len(ids) == 2 and ids[0].startswith("corrupt-") and ids[1].startswith("crash-"), ids
    corrupt_dir, crash_dir = (only_run(labs.runs, lab) for lab in ids)
    assert checker_verdict(corrupt_dir)["ok"] is True and checker_verdict(crash_dir)["ok"] is True
    corrupt = json.loads((corrupt_dir / "summary.json").read_text())
    crash = json.loads((crash_dir / "summary.json").read_text())
    assert crash["worker_restarts"] >= 2 and corrupt["worker_restarts"] == 0
    evs = [json.loads(ln) for ln in (corrupt_dir / "events.jsonl").read_text().splitlines()]
    assert [e for e in evs if e["source"] == "monitor" and e.get("verdict") == "HEALTHY"], "the monitor judged"
    assert not [e for e in evs if e.get("verdict") == "CRASHED"]
    assert not [e for e in evs if e["source"] == "engine" and e.get("action") == "die" and e.get("exit_code")]
    for lab in ids:
        assert labelled(engine, lab) == ([], [], []), f"{lab} is torn down after the run"


def test_keep_then_fault_status_logs_and_down(built, engine, labs):
    lab = labs.new("keep")
    p = labctl("up", "scenario-corrupt", "--lab", lab, "--keep", runs=labs.runs)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    containers, networks, volumes = labelled(engine, lab)
    assert len(containers) == 4 and networks == [f"labctl-{lab}-net"] and volumes == [f"labctl-{lab}-lab"]
    # A second lab of the same name is refused, and the first is left alone.
    q = labctl("up", "scenario-corrupt", "--lab", lab, runs=labs.runs)
    assert q.returncode == 4
    assert f"labctl: error: lab '{lab}' already exists" in q.stderr and "Traceback" not in q.stderr
    assert len(labelled(engine, lab)[0]) == 4
    # A live fault, reverted by --for: the monitor is paused for a moment and then runs again.
    f = labctl("fault", "pause", "--lab", lab, "--target", "monitor", "--for", "1s", runs=labs.runs)
    assert f.returncode == 0, f.stderr
    assert engine.inspect(f"labctl-{lab}-monitor").status == "running"
    # Journaled with its inverse before it was applied, then reverted (retries aside, which load may cause).
    journal = [json.loads(ln) for ln in (labs.runs / lab / "journal.jsonl").read_text().splitlines()]
    steps = [(r["phase"], r["fault"]) for r in journal if r.get("phase") != "retry"]
    assert steps == [("intent", "pause"), ("applied", "pause"), ("reverted", "unpause")], journal
    assert journal[0]["inverse"] == "unpause" and journal[-1]["of"] == journal[0]["id"], journal
    s = labctl("status")
    assert s.returncode == 0 and lab in s.stdout
    lg = labctl("logs", "supervisor", "--lab", lab)
    assert lg.returncode == 0 and "job complete" in lg.stdout
    # `down --lab` removes this lab alone (`down --all` is test_hardening's
    # recover test: on a shared engine it would take other people's labs).
    d = labctl("down", "--lab", lab, runs=labs.runs)
    assert d.returncode == 0, d.stderr
    assert f"lab {lab}: reverted 0 fault(s), removed 4 container(s), 1 network(s), 1 volume(s)" in d.stdout, d.stdout
    assert labelled(engine, lab) == ([], [], []), "labctl down leaves no labelled resource"
    again = labctl("down", "--lab", lab, runs=labs.runs)
    assert again.returncode == 0 and f"lab {lab}: nothing to remove" in again.stdout, again.stdout


def test_a_missing_base_image_has_its_exit_code(engine, labs):
    lab = labs.new("nobase")
    p = labctl("up", "scenario-pause", "--lab", lab, "--base", "labctl-no-such-base:1", runs=labs.runs)
    assert p.returncode == 5
    assert p.stderr.strip() == ("labctl: error: base image labctl-no-such-base:1 is not present and cannot be pulled; "
                                "build it, or drop --base/LAB_BASE_IMAGE to use labctl's local base")
    assert labelled(engine, lab) == ([], [], []), "nothing was created"
