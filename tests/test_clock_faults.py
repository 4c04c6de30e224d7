"""Integration: the clock faults on a real engine, live and in scenarios.

A lab runs a long job; `labctl fault skew` moves the worker's wall clock
(libfaketime, in its process only), which the test reads from inside the
lab: the wall time in the worker's volume beat, the monitor's sender-clock
and its verdict; `skew-off` puts it back, and so does `down` from the
journal (as `recover` does) after a SIGKILL of the labctl that applied it.
Then the two clock scenarios run through `labctl up`.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from helpers import labctl, labelled, start_long_lab, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]



@pytest.fixture
def live(built, engine, labs, procs, tmp_path):
    """A running lab with a job that outlasts the test (helpers.start_long_lab), its worker beating."""
    lab = start_long_lab(engine, labs, procs, tmp_path, "clock")
    wait_until(lambda: beat_skew_s(engine, lab) is not None, 30, interval=0.2, what="the worker's first beat")
    return lab


def beat_skew_s(engine, lab: str) -> float | None:
    """The wall time in the worker's volume beat minus the host's, in seconds
    (read from the monitor's container: the worker's own clock is the one faked)."""
    code, out = engine.exec(f"labctl-{lab}-monitor", ["cat", "/lab/worker.heartbeat"])
    parts = out.split()
    if code != 0 or len(parts) < 5:
        return None
    return int(parts[4]) / 1000 - time.time()


def clock_file(engine, lab: str) -> str:
    code, out = engine.exec(f"labctl-{lab}-worker", ["sh", "-c", "cat /tmp/labctl-clock 2>/dev/null || true"])
    assert code == 0, out
    return out.strip()


def last_tick(engine, lab: str) -> dict:
    raw = b"".join(engine.logs(f"labctl-{lab}-monitor", follow=False)).decode(errors="replace")
    ticks = [json.loads(ln[ln.index("{"):]) for ln in raw.splitlines() if '"kind":"tick"' in ln]
    return ticks[-1]


def journal(labs, lab: str) -> list[dict]:
    path = labs.runs / lab / "journal.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def test_skew_moves_only_the_workers_wall_clock_and_skew_off_puts_it_back(engine, labs, live):
    lab = live
    assert abs(beat_skew_s(engine, lab)) < 1.0
    p = labctl("fault", "skew", "30", "--lab", lab, runs=labs.runs)
    assert p.returncode == 0, p.stderr
    assert f"lab {lab}: skew worker seconds=30" in p.stdout, p.stdout
    assert clock_file(engine, lab) == "+30.000 x1"
    wait_until(lambda: 29 < (beat_skew_s(engine, lab) or 0) < 31, 5, interval=0.1, what="beats stamped 30 s ahead")
    # The monitor, which times what it receives, says HEALTHY; the sender-clock trusts the stamp.
    tick = wait_until(lambda: (t := last_tick(engine, lab))["file_wall_age_ms"] < -29000 and t, 5, interval=0.2,
                      what="the monitor reading a beat from the future")
    assert tick["verdict"] == "HEALTHY" and tick["sender_clock"] == "ALIVE" and tick["file_age_ms"] < 500, tick
    # Nothing else moved: the host's clock and the monitor's own are true.
    code, out = engine.exec(f"labctl-{lab}-monitor", ["python3", "-c", "import time; print(time.time())"])
    assert code == 0 and abs(float(out) - time.time()) < 1.0, out
    # A second clock setting on the same process is refused while this one holds.
    q = labctl("fault", "skew", "-30", "--lab", lab, runs=labs.runs)
    assert q.returncode != 0 and "a skew of its clock is still on" in q.stderr, q.stderr
    r = labctl("fault", "skew-off", "--lab", lab, runs=labs.runs)
    assert r.returncode == 0, r.stderr
    assert clock_file(engine, lab) == "+0.000000 x1.000000"
    wait_until(lambda: abs(beat_skew_s(engine, lab) or 99) < 1.0, 5, interval=0.1, what="beats on time again")
    # Behind: the sender-clock calls the live worker dead, the monitor does not.
    s = labctl("fault", "skew", "-30", "--lab", lab, runs=labs.runs)
    assert s.returncode == 0, s.stderr
    tick = wait_until(lambda: (t := last_tick(engine, lab))["sender_clock"] == "DEAD" and t, 5, interval=0.2,
                      what="the sender-clock calling a live worker dead")
    assert tick["verdict"] == "HEALTHY" and tick["heartbeat_only"] == "ALIVE", tick
    r = labctl("fault", "skew-off", "--lab", lab, runs=labs.runs)
    assert r.returncode == 0, r.stderr
    phases = [(r["fault"], r["phase"]) for r in journal(labs, lab) if r["phase"] != "retry"]
    assert phases.count(("skew-off", "reverted")) == 2, phases
    assert engine.inspect(f"labctl-{lab}-supervisor").status == "running"


def test_a_skew_left_by_a_killed_labctl_is_reverted_from_the_journal(engine, labs, live, procs, tmp_path):
    """`down --lab` reverts what the journal holds, as `recover` (down --all) does
    for every lab: the test stays off `recover`, which would take down labs
    other than its own on a shared engine."""
    lab = live
    env = {**os.environ, "LABCTL_RUNS": str(labs.runs)}
    bg = procs.popen([sys.executable, "-m", "labctl", "fault", "skew", "-45", "--lab", lab, "--for", "5m"], env=env,
                     stdout=(tmp_path / "f.log").open("w"), stderr=(tmp_path / "f.err").open("w"))
    wait_until(lambda: any(r["fault"] == "skew" and r["phase"] == "applied" for r in journal(labs, lab)), 60,
               what="skew journaled as applied")
    bg.send_signal(signal.SIGKILL)
    bg.wait(10)
    # The killed labctl reverted nothing: the worker's clock is still 45 s behind.
    wait_until(lambda: -46 < (beat_skew_s(engine, lab) or 0) < -44, 5, interval=0.1, what="beats 45 s behind")
    # Undone by hand first, the clock is true again while the lab runs on.
    r = labctl("fault", "skew-off", "--lab", lab, runs=labs.runs)
    assert r.returncode == 0 and "reverts the skew" in r.stdout, r.stdout + r.stderr
    wait_until(lambda: abs(beat_skew_s(engine, lab) or 99) < 1.0, 5, interval=0.1, what="beats on time again")
    # Killed again with a skew on: `down` reverts it before it removes the lab.
    bg = procs.popen([sys.executable, "-m", "labctl", "fault", "skew", "20", "--lab", lab, "--for", "5m"], env=env,
                     stdout=(tmp_path / "g.log").open("w"), stderr=(tmp_path / "g.err").open("w"))
    wait_until(lambda: sum(r["fault"] == "skew" and r["phase"] == "applied" for r in journal(labs, lab)) == 2, 60,
               what="the second skew journaled as applied")
    bg.send_signal(signal.SIGKILL)
    bg.wait(10)
    wait_until(lambda: 19 < (beat_skew_s(engine, lab) or 0) < 21, 5, interval=0.1, what="beats 20 s ahead")
    p = labctl("down", "--lab", lab, runs=labs.runs, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"lab {lab}: reverted 1 fault(s)" in p.stdout, p.stdout
    done = [(r["fault"], r["phase"]) for r in journal(labs, lab) if r["phase"] != "retry"]
    assert done.count(("skew-off", "reverted")) == 2, done
    assert labelled(engine, lab) == ([], [], [])


def verdict_of(labs, lab: str) -> dict:
    runs = sorted((labs.runs / lab).glob("*/verdict.json"))
    assert runs, f"no verdict.json under {labs.runs / lab}"
    return json.loads(runs[-1].read_text())


def test_scenario_clock_skew_fools_the_sender_clock_and_not_the_monitor(built, labs):
    lab = labs.new("skew")
    p = labctl("up", "scenario-clock-skew", "--lab", lab, runs=labs.runs, timeout=400)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    checks = {c["name"]: c for c in verdict_of(labs, lab)["checks"]}
    assert checks["step 1 skew: sender_clock says DEAD"]["ok"]
    assert checks["step 3 kill: sender_clock says only ALIVE"]["ok"]
    assert checks["no monitor verdict contradicts the truth"]["ok"]


def test_scenario_lease_clock_drift_is_a_zombie_the_fencing_token_stops(built, labs):
    lab = labs.new("drift")
    p = labctl("up", "scenario-lease-clock-drift", "--lab", lab, runs=labs.runs, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    events = [json.loads(ln) for ln in sorted((labs.runs / lab).glob("*/events.jsonl"))[-1].read_text().splitlines()]
    fenced = [e for e in events if e.get("kind") == "wrote" and not e.get("ok") and "fenced" in str(e.get("error"))]
    assert fenced, "alice's late write was not fenced"
    # Stamped by alice's slow clock, her events were put back on the engine's.
    assert any("own_ts" in e for e in events if e.get("client", e.get("source")) == "alice")
