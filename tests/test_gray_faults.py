"""Integration: the gray faults on a real engine, live, and their reverts.

A lab runs a long job; `labctl fault` cuts one way, drops a share of the
heartbeats and slows the worker; the test reads what each fault did from
inside the lab (the rules in the worker's network namespace, the worker's
process state on the host) and that each revert undid exactly it, also
when the labctl that applied it was killed with SIGKILL.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from helpers import labctl, labelled, start_long_lab, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]



@pytest.fixture
def live(built, engine, labs, procs, tmp_path):
    """A running lab with a job that outlasts the test (helpers.start_long_lab)."""
    from labctl import images

    images.ensure_tools(engine, lambda _: None)
    return start_long_lab(engine, labs, procs, tmp_path, "gray")


def rules(engine, lab: str) -> str:
    """The worker's OUTPUT chain, read from inside its network namespace."""
    from labctl import sidecar

    return sidecar.run_in_network(engine, lab, "test-read", f"labctl-{lab}-worker", "iptables -w 5 -S OUTPUT", [])


def journal(labs, lab: str) -> list[dict]:
    return [json.loads(ln) for ln in (labs.runs / lab / "journal.jsonl").read_text().splitlines()]


def helpers_running(engine, lab: str) -> list[str]:
    from labctl import sidecar

    return sidecar.helpers_of(engine, lab)


def state_share(pid: int, samples: int = 60, every: float = 0.02) -> float:
    """The share of samples in which the process was stopped (T in /proc/PID/stat)."""
    stopped = 0
    for _ in range(samples):
        stat = Path(f"/proc/{pid}/stat").read_text()
        stopped += stat[stat.rindex(")") + 2] == "T"
        time.sleep(every)  # sampling a duty cycle at a fixed rate, not waiting for a condition
    return stopped / samples


def worker_pid(engine, lab: str) -> int:
    """The worker program's host pid: the child of the container's init (tini)."""
    init = engine.inspect(f"labctl-{lab}-worker").pid
    children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    assert children, "tini has no child"
    return int(children[0])


def test_loss_and_oneway_put_their_rules_in_the_worker_namespace_and_take_only_them_out(engine, labs, live):
    lab = live
    monitor_ip = engine.address(f"labctl-{lab}-monitor", f"labctl-{lab}-net")
    p = labctl("fault", "loss", "0.5", "--lab", lab, runs=labs.runs)
    assert p.returncode == 0, p.stderr
    assert f"lab {lab}: loss worker p=0.5 to=monitor" in p.stdout
    q = labctl("fault", "oneway", "worker", "supervisor", "--lab", lab, runs=labs.runs)
    assert q.returncode == 0, q.stderr
    recs = journal(labs, lab)
    loss_id = next(r["id"] for r in recs if r["fault"] == "loss" and r["phase"] == "intent")
    oneway_id = next(r["id"] for r in recs if r["fault"] == "oneway" and r["phase"] == "intent")
    assert next(r for r in recs if r["id"] == loss_id)["params"] == {"p": 0.5, "to": "monitor"}
    out = rules(engine, lab)
    loss_rule = [ln for ln in out.splitlines() if loss_id in ln]
    assert len(loss_rule) == 1 and f"-d {monitor_ip}/32 -p udp" in loss_rule[0], out
    assert "--probability 0.5" in loss_rule[0] and f'"labctl:{lab}:{loss_id}"' in loss_rule[0], out
    assert len([ln for ln in out.splitlines() if oneway_id in ln and "-j DROP" in ln]) == 1, out
    # No helper outlives its rule.
    assert helpers_running(engine, lab) == []
    # loss-off removes the loss's rule and leaves the oneway's.
    r = labctl("fault", "loss-off", "--lab", lab, runs=labs.runs)
    assert r.returncode == 0 and "reverts the loss" in r.stdout, r.stdout + r.stderr
    out = rules(engine, lab)
    assert loss_id not in out and oneway_id in out, out
    r = labctl("fault", "oneway-off", "--lab", lab, runs=labs.runs)
    assert r.returncode == 0, r.stderr
    assert "labctl:" not in rules(engine, lab)
    phases = [(r["fault"], r["phase"]) for r in journal(labs, lab) if r["phase"] != "retry"]
    assert ("loss-off", "reverted") in phases and ("oneway-off", "reverted") in phases, phases
    # The supervisor kept streaming all along: oneway worker->supervisor was
    # on for a moment only, and the job is still running.
    assert engine.inspect(f"labctl-{lab}-supervisor").status == "running"


def test_slow_stops_the_worker_most_of_each_period_and_slow_off_resumes_it(engine, labs, live):
    lab = live
    pid = worker_pid(engine, lab)
    assert state_share(pid, samples=25) == 0.0, "a healthy worker is never stopped"
    p = labctl("fault", "slow", "80", "period_ms=200", "--lab", lab, runs=labs.runs)
    assert p.returncode == 0, p.stderr
    assert f"lab {lab}: slow worker percent=80 period_ms=200" in p.stdout
    helper = helpers_running(engine, lab)
    assert len(helper) == 1
    st = engine.inspect(helper[0])
    assert st.status == "running" and st.user == "10001:10001", st
    share = state_share(pid)
    assert 0.5 <= share <= 0.97, f"stopped {share:.0%} of the samples, want about 80 %"
    r = labctl("fault", "slow-off", "--lab", lab, runs=labs.runs)
    assert r.returncode == 0, r.stderr
    assert helpers_running(engine, lab) == []
    assert state_share(pid, samples=25) == 0.0, "resumed for good"


def test_faults_left_by_a_killed_labctl_are_reverted_by_down(engine, labs, live, procs, tmp_path):
    lab = live
    env = {**os.environ, "LABCTL_RUNS": str(labs.runs)}
    bg = procs.popen([sys.executable, "-m", "labctl", "fault", "slow", "70", "--lab", lab, "--for", "5m"], env=env,
                     stdout=(tmp_path / "f.log").open("w"), stderr=(tmp_path / "f.err").open("w"))
    wait_until(lambda: helpers_running(engine, lab), 60, interval=0.1, what="the duty cycle's helper")
    wait_until(lambda: any(r["fault"] == "slow" and r["phase"] == "applied" for r in journal(labs, lab)), 30,
               what="slow journaled as applied")
    bg.send_signal(signal.SIGKILL)
    bg.wait(10)
    # The killed labctl reverted nothing: the worker still crawls.
    assert helpers_running(engine, lab)
    assert state_share(worker_pid(engine, lab)) > 0.3
    p = labctl("fault", "loss", "0.3", "--lab", lab, runs=labs.runs)
    assert p.returncode == 0, p.stderr
    pending = [r["fault"] for r in journal(labs, lab) if r["phase"] == "intent"]
    assert pending.count("slow") == 1 and pending.count("loss") == 1
    # `down` reverts what the journal holds before it removes the lab: the
    # journal says each was reverted, so the revert did it, not the removal.
    d = labctl("down", "--lab", lab, runs=labs.runs, timeout=180)
    assert d.returncode == 0, d.stderr
    assert f"lab {lab}: reverted 2 fault(s)" in d.stdout, d.stdout
    done = [(r["fault"], r["phase"]) for r in journal(labs, lab) if r["phase"] != "retry"]
    assert ("slow-off", "reverted") in done and ("loss-off", "reverted") in done, done
    assert labelled(engine, lab) == ([], [], [])


def proxy_toxics(engine, lab: str) -> dict[str, dict]:
    """The toxics on in the worker's proxy, by id, as its control socket lists them."""
    code, out = engine.exec(f"labctl-{lab}-proxy", ["python3", "/app/proxy.py", "ctl", "--control",
                                                    "/tmp/proxy-control.sock", '{"op":"list"}'])
    assert code == 0, out
    return {t["id"]: t for t in json.loads(out)["toxics"]}


@pytest.mark.parametrize("cmd, toxic, fields", [
    (["latency", "300", "jitter=100"], "latency", {"direction": "down", "latency": 300.0, "jitter": 100.0}),
    (["bandwidth", "5", "direction=up"], "bandwidth", {"direction": "up", "rate": 5.0}),
    (["blackhole"], "blackhole", {"direction": "up"}),
    (["slice", "2"], "slice", {"direction": "down", "size": 2, "delay_ms": 10.0}),
    (["reset"], "reset", {}),
    (["delay", "150", "jitter=50"], "delay", {"direction": "udp", "delay": 150.0, "jitter": 50.0}),
    (["duplicate", "0.3"], "duplicate", {"direction": "udp", "p": 0.3}),
    (["reorder", "0.3"], "reorder", {"direction": "udp", "p": 0.3}),
])
def test_each_proxy_toxic_is_set_with_its_settings_and_cleared_by_its_off(engine, labs, live, cmd, toxic, fields):
    lab = live
    p = labctl("fault", *cmd, "--lab", lab, runs=labs.runs)
    assert p.returncode == 0, p.stderr
    fid = next(r["id"] for r in journal(labs, lab) if r["fault"] == toxic and r["phase"] == "intent")
    on = proxy_toxics(engine, lab)
    assert list(on) == [fid] and on[fid]["toxic"] == toxic, on
    assert {k: on[fid][k] for k in fields} == fields, on[fid]
    # Only the worker has a proxy.
    bad = labctl("fault", toxic, *cmd[1:], "--target", "monitor", "--lab", lab, runs=labs.runs)
    assert bad.returncode != 0 and "has no proxy" in bad.stderr, bad.stderr
    r = labctl("fault", f"{toxic}-off", "--lab", lab, runs=labs.runs)
    assert r.returncode == 0 and f"reverts the {toxic}" in r.stdout, r.stdout + r.stderr
    assert proxy_toxics(engine, lab) == {}
    # The stream runs again: the supervisor gets answers (acked climbs) once the toxic is off.
    first = acked(labs, lab)
    wait_until(lambda: acked(labs, lab) > first + 100, 60, interval=0.2, what="the job moving again")


def acked(labs, lab: str) -> int:
    """How far the supervisor's durable checkpoint on the lab's volume has got (its `next`)."""
    from labctl import labels
    from labctl.engine import Engine

    eng = Engine.open()
    try:
        code, out = eng.exec(labels.container_name(lab, "supervisor"), ["cat", "/lab/out/checkpoint.json"])
    finally:
        eng.close()
    return int(json.loads(out)["progress"]["next"]) if code == 0 else 0
