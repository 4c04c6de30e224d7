"""Worker, supervisor and monitor as local processes, with real faults by signal.

No Docker: the test plays the platform (it restarts the worker) and cuts the
heartbeat path with a relay. In every case the outputs match an independent
oracle and the monitor gives the expected verdict within its target.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from helpers import SUPERVISOR, free_udp_port, wait_until
from harness import (Platform, UdpRelay, assert_exactly_once, start_monitor, start_supervisor, stop)

INTERVAL_MS = 100
TIMEOUT_MS = 1000
SLACK_S = 0.25  # scheduling noise on a loaded 2-core machine


@pytest.fixture
def lab(tmp_path):
    """A monitor and a restarting worker; yields them, then stops everything."""
    started = []

    def make(extra=(), relay=False):
        udp = free_udp_port()
        mon, mev = start_monitor(tmp_path, udp, INTERVAL_MS, TIMEOUT_MS)
        started.append(mon)
        r = UdpRelay(udp) if relay else None
        plat = Platform(tmp_path, udp_port=r.port if r else udp, heartbeat_ms=INTERVAL_MS, extra=extra).start()
        started.append(plat)
        if r:
            started.append(r)
        wait_until(lambda: mev.first("verdict", verdict="HEALTHY"), 5, what="monitor HEALTHY")
        return plat, mev, r

    yield make
    for thing in reversed(started):
        thing.stop() if isinstance(thing, Platform) else (thing.close() if isinstance(thing, UdpRelay) else stop(thing))


def verdicts_after(mev, t0: float) -> list[dict]:
    return [e for e in mev.of("verdict") if e["ts"] >= t0]


def first_verdict(mev, verdict: str, after: float) -> dict | None:
    for e in mev.of("verdict"):
        if e["ts"] >= after and e["verdict"] == verdict:
            return e
    return None


def crashed_verdict_for(mev, death: float) -> tuple[dict | None, list]:
    """The CRASHED tick that judged a death, and the ticks around it.

    `death` is when the harness's waitpid returned, an upper bound: on a
    loaded machine that thread can wake a few hundred ms after the worker
    died, and the monitor, which sees the lock turn free, may rightly judge
    the crash first. So the verdict is sought from the last tick that still
    saw the worker's lock held before the recorded death."""
    ticks = mev.of("tick")
    alive = [e["ts"] for e in ticks if e["ts"] < death and e.get("lock") == "held"]
    since = alive[-1] if alive else death - 1.0
    v = next((e for e in ticks if e["ts"] > since and e["verdict"] == "CRASHED"), None)
    seen = [(round(e["ts"] - death, 3), e["verdict"], e.get("lock")) for e in ticks if -0.5 <= e["ts"] - death <= 1.0]
    return v, seen


def processed(plat) -> int:
    try:
        return int(plat.hb.read_text().split()[3])
    except (OSError, IndexError, ValueError):
        return 0


def test_healthy_job_exactly_once_and_no_false_verdict(lab, tmp_path):
    plat, mev, _ = lab(extra=["--bug-trigger", "none"])
    t0 = time.time()
    # Paced to last about 2 s: unpaced, 200,000 items can end within three
    # monitor ticks, and a healthy verdict needs a run long enough to judge.
    sup, sev = start_supervisor(
        tmp_path, plat.port, tmp_path / "input.dat", "--generate", "200000", "--seed", "3", "--rate", "100000"
    )
    assert sup.wait(60) == 0
    done = sev.first("done")
    assert done and done["exit_code"] == 0
    assert_exactly_once(tmp_path / "out", tmp_path / "input.dat", trigger=None)
    # Until the job ends (then the worker exits 0 on EOF: STOPPED, by design).
    ticks = [e for e in mev.of("tick") if t0 <= e["ts"] < done["ts"] - 0.05]
    assert len(ticks) >= 10
    assert {e["verdict"] for e in ticks} == {"HEALTHY"}, "a healthy run must never get another verdict"
    assert {e["naive"] for e in ticks} == {"ALIVE"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["read"] == 200000 and summary["processed"] == 199998 and summary["corrupted"] == 2
    assert summary["worker_crashes"] == 0 and summary["dead_lettered"] == 0
    stopped = wait_until(lambda: first_verdict(mev, "STOPPED", done["ts"] - 0.05), 3, what="STOPPED after the job")
    assert stopped["lock"] == "absent"


def test_poison_999_crash_is_dead_lettered_and_judged_crashed_at_once(lab, tmp_path):
    plat, mev, _ = lab()
    sup, sev = start_supervisor(tmp_path, plat.port, tmp_path / "input.dat", "--generate", "50000", "--seed", "9")
    assert sup.wait(60) == 0
    assert_exactly_once(tmp_path / "out", tmp_path / "input.dat")
    dead = (tmp_path / "out" / "dead-letter.csv").read_text().splitlines()
    assert len(dead) == 2 and dead[1].split(",")[1] == "999"
    # Each segfault: signal 11, and the monitor said CRASHED within two ticks.
    segv = [t for rc, t in zip(plat.exits, plat.exit_times) if rc == -signal.SIGSEGV]
    assert len(segv) >= 2
    for death in segv:
        v, seen = crashed_verdict_for(mev, death)
        assert v is not None, f"no CRASHED verdict after the death; ticks {seen}"
        assert v["ts"] - death <= 2 * INTERVAL_MS / 1000 + SLACK_S / 2, f"CRASHED {v['ts'] - death:.3f}s after death; ticks {seen}"
    assert first_verdict(mev, "RESTARTED", segv[0]) is not None
    crashes = sev.of("crash")
    assert crashes and all(c["lock"] in ("absent", "held") for c in crashes), "the handler removed the lock"
    wait_until(lambda: mev.of("verdict")[-1]["verdict"] in ("HEALTHY", "RESTARTED", "STOPPED", "CRASHED"), 2)


def test_sigstop_is_paused_not_crashed_and_nothing_is_lost(lab, tmp_path):
    plat, mev, _ = lab(extra=["--bug-trigger", "none"])
    sup, sev = start_supervisor(tmp_path, plat.port, tmp_path / "input.dat", "--generate", "600000", "--seed", "5",
                                "--timeout-ms", str(TIMEOUT_MS))
    wait_until(lambda: processed(plat) > 1000, 10, what="the job to be under way")
    plat.signal(signal.SIGSTOP)
    t_stop = time.time()
    paused = wait_until(lambda: first_verdict(mev, "PAUSED", t_stop), 5, what="PAUSED verdict")
    time.sleep(1.0)  # hold the pause past the supervisor's timeout
    plat.signal(signal.SIGCONT)
    t_cont = time.time()
    assert sup.wait(60) == 0
    assert paused["ts"] - t_stop <= TIMEOUT_MS / 1000 + SLACK_S, f"PAUSED after {paused['ts'] - t_stop:.3f}s"
    assert paused["naive"] == "DEAD" and paused["lock"] == "held"
    during = [e for e in mev.of("verdict") if t_stop <= e["ts"] < t_cont]
    assert all(e["verdict"] in ("HEALTHY", "PAUSED") for e in during), during
    assert first_verdict(mev, "HEALTHY", t_cont) is not None
    assert sev.of("timeout"), "the supervisor must have timed out"
    # A pause is not a crash: the same worker lived on and exited 0 at the job's end.
    assert plat.exits[:1] in ([], [0]) and all(rc == 0 for rc in plat.exits)
    assert first_verdict(mev, "RESTARTED", t_stop) is None or first_verdict(mev, "STOPPED", t_stop) is not None
    assert_exactly_once(tmp_path / "out", tmp_path / "input.dat", trigger=None)


def test_sigkill_and_restart_crashed_then_restarted_exactly_once(lab, tmp_path):
    plat, mev, _ = lab(extra=["--bug-trigger", "none"])
    sup, sev = start_supervisor(tmp_path, plat.port, tmp_path / "input.dat", "--generate", "600000", "--seed", "6")
    wait_until(lambda: processed(plat) > 1000, 10, what="the job to be under way")
    old_pid = plat.proc.pid
    plat.signal(signal.SIGKILL)
    assert sup.wait(60) == 0
    death = plat.exit_times[0]
    assert plat.exits[0] == -signal.SIGKILL
    crashed, seen = crashed_verdict_for(mev, death)
    assert crashed and crashed["ts"] - death <= 2 * INTERVAL_MS / 1000 + SLACK_S / 2, f"ticks {seen}"
    restarted = first_verdict(mev, "RESTARTED", death)
    assert restarted and restarted["pid"] != old_pid
    following = wait_until(lambda: [e for e in mev.of("verdict") if e["ts"] > restarted["ts"]], 5,
                           what="the verdict after RESTARTED")
    assert following[0]["verdict"] in ("HEALTHY", "STOPPED"), "RESTARTED, then HEALTHY (or the job ended)"
    crash = sev.first("crash")
    assert crash and crash["lock"] in ("stale", "held"), "SIGKILL leaves the lock file behind"
    assert "recovered stale lock" in (tmp_path / "worker.log").read_text()
    assert_exactly_once(tmp_path / "out", tmp_path / "input.dat", trigger=None)


def test_supervisor_killed_mid_job_resumes_from_checkpoint(lab, tmp_path):
    plat, mev, _ = lab()
    inp = tmp_path / "input.dat"
    # Paced to about 3 s, so the kill surely lands between the first
    # checkpoint (after 0.5 s) and the job's end, however fast the machine.
    sup, _ = start_supervisor(tmp_path, plat.port, inp, "--generate", "1500000", "--seed", "8", "--rate", "500000")

    def checkpointed():
        try:
            return json.loads((tmp_path / "out" / "checkpoint.json").read_text())["progress"]["next"] > 0
        except (OSError, ValueError):
            return False

    wait_until(checkpointed, 20, what="a first checkpoint")
    sup.kill()
    sup.wait()
    # Rows written after the last checkpoint are on disk now; the restart must drop them.
    sup2, sev2 = start_supervisor(tmp_path, plat.port, inp)
    assert sup2.wait(90) == 0
    start = sev2.first("start")
    assert start["resumed_at"] > 0
    assert_exactly_once(tmp_path / "out", inp)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["supervisor_restarts"] == 1


def test_heartbeat_path_cut_is_partitioned(lab, tmp_path):
    plat, mev, relay = lab(relay=True)
    relay.cut.set()
    t_cut = time.time()
    part = wait_until(lambda: first_verdict(mev, "PARTITIONED", t_cut), 5, what="PARTITIONED verdict")
    assert part["ts"] - t_cut <= TIMEOUT_MS / 1000 + SLACK_S
    assert part["naive"] == "DEAD" and part["lock"] == "held"
    assert all(e["verdict"] in ("HEALTHY", "PARTITIONED") for e in verdicts_after(mev, t_cut))
    time.sleep(0.5)
    relay.cut.clear()
    t_heal = time.time()
    healed = wait_until(lambda: first_verdict(mev, "HEALTHY", t_heal), 3, what="HEALTHY after heal")
    assert healed["naive"] == "ALIVE"


def test_graceful_stop_is_stopped_not_crashed(lab, tmp_path):
    plat, mev, _ = lab()
    plat._stop.set()  # the platform must not restart it
    plat.signal(signal.SIGTERM)
    t = time.time()
    v = wait_until(lambda: first_verdict(mev, "STOPPED", t), 3, what="STOPPED verdict")
    assert v["lock"] == "absent"
    assert first_verdict(mev, "CRASHED", t) is None
    assert plat.proc.wait(5) == 0


def test_supervisor_bad_input_path_and_bad_args(tmp_path):
    p = subprocess.run([sys.executable, str(SUPERVISOR), "--worker", "127.0.0.1:1", "--input",
                        str(tmp_path / "nope.dat"), "--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert p.returncode == 66 and "nope.dat not found" in p.stderr
    p = subprocess.run([sys.executable, str(SUPERVISOR), "--worker", "nohostport", "--input", "x", "--output", "y"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "HOST:PORT" in p.stderr
