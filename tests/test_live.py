"""Live labs (labctl/live.py): `up --live` runs until stopped and takes faults
by hand, which are judged like scripted steps; `labctl down` asks the live
`up` to stop and judge; `labctl watch` attaches and detaches; `labctl
status` says what each lab's truth and monitor say now."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import LABCTL, ROOT, checker_verdict, labctl, labelled
from labctl import check, live, oracle, scenario, states

T0 = 1_800_000_000.0


# ---------------------------------------------------------------- pure


def test_a_live_scenario_streams_for_hours_at_a_pace_a_class_can_follow():
    sc = scenario.resolve("pause")
    lv = live.make_live(sc)
    assert lv.lab.rate == live.LIVE_RATE and lv.lab.items == int(live.LIVE_RATE * 3600 * live.LIVE_HOURS)
    assert lv.duration_s > 3600 and lv.timeline == sc.timeline
    assert sc.lab.items == 2250 or sc.lab.items != lv.lab.items  # the original is untouched
    slow = scenario.resolve("crash")
    slow.lab.rate = 10
    assert live.make_live(slow).lab.rate == 10  # slower than the cap stays


def ev(t, **f):
    return {"ts": T0 + t, "source": "labctl", "kind": "fault", **f}


def test_faults_by_hand_are_found_with_their_windows():
    evs = [ev(1, id="a", fault="pause", target="worker", step=1, phase="intent"),
           ev(1.1, id="a", fault="pause", target="worker", step=1, phase="applied"),
           ev(5, id="b", fault="partition", target="worker", step=None, phase="intent"),
           ev(5.2, id="b", fault="partition", target="worker", step=None, phase="applied", from_ts=T0 + 5.1),
           ev(9, id="b-revert", of="b", fault="heal", target="worker", step=None, phase="reverted"),
           ev(10, id="c", fault="sigstop", target="worker", step=None, phase="intent"),
           ev(10.1, id="c", fault="sigstop", target="worker", step=None, phase="failed"),
           ev(11, id="d", fault="pause", target="monitor", step=None, phase="intent"),
           ev(11.1, id="d", fault="pause", target="monitor", step=None, phase="applied")]
    got = live.hand_faults(evs, T0 + 20)
    assert [(h.start - T0, h.end - T0, h.fault, h.target) for h in got] == [
        (pytest.approx(5.1), 9, "partition", "worker"), (11, 20, "pause", "monitor")]


def run_with(events, never=None):
    sc = scenario.resolve("pause")
    if never is not None:
        sc.expect.never = never
    return check.Run(sc, events, Path("/nonexistent"), T0 + 30, T0, live=True)


def monitor(t, verdict):
    return {"ts": T0 + t, "source": "monitor", "kind": "verdict", "verdict": verdict, "heartbeat_only": "ALIVE"}


def test_a_fault_by_hand_is_judged_and_what_it_brings_is_not_a_never():
    hand = [ev(5, id="b", fault="partition", target="worker", step=None, phase="intent"),
            ev(5.1, id="b", fault="partition", target="worker", step=None, phase="applied"),
            ev(9, id="b-r", of="b", fault="heal", target="worker", step=None, phase="reverted")]
    events = [monitor(1, "HEALTHY"), *hand, monitor(5.8, "PARTITIONED"), monitor(9.3, "HEALTHY"),
              monitor(20, "PARTITIONED")]
    run = run_with(events, {states.MONITOR: ["PARTITIONED"]})
    hand_checks = check.judge_hand_faults(run)
    assert [(c.name, c.ok, c.detail) for c in hand_checks] == [
        ("partition worker by hand at +5.0 s: monitor says PARTITIONED", True, "after 0.80 s")]
    never = check.judge_never(run)
    # The PARTITIONED at 5.8 s is the hand fault's; the one at 20 s is not.
    assert [(c.name, c.ok, c.detail) for c in never] == [
        ("monitor never says PARTITIONED (outside faults by hand)", False, "1 time(s)")]
    late = run_with([*hand, monitor(1, "HEALTHY"), monitor(8.5, "PARTITIONED")])
    assert check.judge_hand_faults(late)[0].detail.startswith("after 3.50 s, later than")


def test_the_oracle_judges_a_stopped_job_up_to_its_checkpoint(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "input.dat").write_bytes(b"1\n2\n-3\n4\n5\n")
    results = b"index,n,square\n1,1,1\n2,2,4\n4,4,16\n"
    tail = b"5,5,25\n5,5,25\n"  # rows past the checkpoint: items it would send again
    (out / "results.csv").write_bytes(results + tail)
    (out / "corrupted.csv").write_bytes(b"index,value\n3,-3\n")
    (out / "rejected.csv").write_bytes(b"index,reason\n")
    (out / "dead-letter.csv").write_bytes(b"index,item,reason,crashes\n")
    sizes = {"results": len(results), "corrupted": 19, "rejected": 13, "dead": 26}
    assert oracle.compare(out, tmp_path / "input.dat", None, upto=4, sizes=sizes) == []
    assert "results.csv: 1 item(s) appear more than once, first [5]" in oracle.compare(
        out, tmp_path / "input.dat", None)
    lost = oracle.compare(out, tmp_path / "input.dat", None, upto=5, sizes=sizes)
    assert lost == ["results.csv: 1 valid item(s) lost, first [5]"]


def test_a_stop_request_reaches_the_owner_and_a_dead_owner_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LABCTL_STATE", str(tmp_path / "state"))
    live.claim("l1")
    assert live.owner("l1") == os.getpid() and not live.stop_requested("l1")
    assert live.runs_of("l1") == str(tmp_path / "runs" / "l1")
    # Another directory, another runs dir: the owner is found all the same.
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path / "elsewhere"))
    assert live.owner("l1") == os.getpid() and live.runs_of("l1") == str(tmp_path / "runs" / "l1")
    (live.state_dir("l1") / live.OWNER).write_text(json.dumps({"pid": 2 ** 22 + 12345}))  # no such process
    assert live.owner("l1") is None and live.request_stop("l1") is False
    live.claim("l1")
    # The owner (this process) never exits here: the request is made and times out.
    assert live.request_stop("l1", timeout=0.3, poll=0.05) is False and live.stop_requested("l1")
    live.release("l1")
    assert not (live.state_dir("l1") / live.OWNER).exists() and not live.stop_requested("l1")


@pytest.mark.parametrize("extra, what", [
    (["--keep"], "--live runs the lab until it is stopped, then judges and removes it; drop --keep"),
])
def test_live_refuses_what_cannot_go_with_it(extra, what):
    p = labctl("--engine", "unix:///nonexistent.sock", "up", "scenario-pause", "--live", *extra)
    assert p.returncode == 2 and f"labctl: error: {what}" in p.stderr, p.stderr
    p = labctl("--engine", "unix:///nonexistent.sock", "up", "scenario-blind", "--live")
    assert p.returncode == 2 and "a blind game ends with its answer; it cannot run live" in p.stderr, p.stderr


# ---------------------------------------------------------------- the real engine


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s; last saw {last!r}")


@pytest.mark.docker
@pytest.mark.slow
def test_a_live_lab_takes_faults_by_hand_is_watched_and_is_stopped_by_down(built, engine, labs, procs, tmp_path):
    lab = labs.new("live")
    env = {**os.environ, "LABCTL_RUNS": str(labs.runs)}
    log = procs.open(tmp_path / "up.log", "w")
    up = procs.popen([*LABCTL, "up", "scenario-partition", "--live", "--lab", lab], stdout=log,
                     stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    def row() -> str:
        return next((ln for ln in labctl("status", runs=labs.runs).stdout.splitlines() if lab in ln), "")

    # status: the lab's truth and its monitor's verdict now, and that it runs live.
    wait_until(lambda: "RUNNING" in row() and "HEALTHY" in row() and "yes" in row(), 60, "the live lab HEALTHY")
    # The scenario's own partition (1 s in, for 4 s) comes and goes; then the lab waits for faults by hand.
    wait_until(lambda: "PARTITIONED" in row(), 30, "the scripted partition")
    wait_until(lambda: "HEALTHY" in row(), 30, "the lab healthy after the scripted partition")
    p = labctl("fault", "pause", "--lab", lab, runs=labs.runs)
    assert p.returncode == 0, p.stderr
    wait_until(lambda: "PAUSED" in labctl("status", runs=labs.runs).stdout, 20, "PAUSED in status")
    assert labctl("fault", "unpause", "--lab", lab, runs=labs.runs).returncode == 0
    # watch attaches, and detaches on Ctrl-C without touching the lab.
    w = procs.popen([*LABCTL, "watch", lab], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                    cwd=ROOT)
    time.sleep(6)  # one table is printed every few seconds when not on a terminal
    w.send_signal(signal.SIGINT)
    out, err = w.communicate(timeout=30)
    assert w.returncode == 0 and "monitor verdict" in out and "running (watched)" in out, (out, err)
    assert f"detached from {lab}" in out + err
    assert labelled(engine, lab)[0], "the lab still runs after watch detached"
    d = labctl("down", "--lab", lab, runs=labs.runs, timeout=180)
    assert d.returncode == 0 and "stopped and judged by its `labctl up`" in d.stdout, d.stdout + d.stderr
    assert up.wait(60) == 0, (tmp_path / "up.log").read_text()[-3000:]
    run_dir = next((labs.runs / lab).glob("2*"))
    verdict = checker_verdict(run_dir)
    names = {c["name"]: (c["ok"], c["detail"]) for c in verdict["checks"]}
    assert verdict["ok"] is True, verdict
    hand = [n for n in names if n.startswith("pause worker by hand at +")]
    assert hand and names[hand[0]][0] and hand[0].endswith("monitor says PAUSED")
    assert names["the job ran live until stopped"][0]
    assert any(n.startswith("every item acked") for n in names)
    assert json.loads((run_dir / "summary.json").read_text())["live"] is True
    assert labelled(engine, lab) == ([], [], [])
    assert not (live.state_dir(lab) / live.OWNER).exists()


def test_a_stopped_live_job_is_not_judged_by_its_end_of_job_expectations(tmp_path):
    """scenario-process-data expects exit 2 and scenario-stale-lock 69: a job
    stopped live exits by its stop, so those are not judged."""
    sc = scenario.resolve("stale-lock")
    assert sc.expect.job.exit_code is not None
    events = [{"ts": T0 + 5, "source": "engine", "kind": "container", "action": "die", "service": "supervisor",
               "exit_code": 143}]
    run = check.Run(sc, events, tmp_path, T0 + 30, T0, live=True)
    names = [c.name for c in check.judge_job(run)]
    assert not any("exits" in n or "log says" in n for n in names), names
    not_live = check.Run(sc, events, tmp_path, T0 + 30, T0, live=False)
    assert any("exits 69" in c.name and not c.ok for c in check.judge_job(not_live))
