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

from harness import Platform, UdpRelay, assert_exactly_once, start_monitor, start_supervisor
from helpers import SUPERVISOR, free_udp_port, wait_until

INTERVAL_MS = 100
TIMEOUT_MS = 1000
SLACK_S = 0.25  # scheduling noise on a loaded 2-core machine


@pytest.fixture
def lab(procs, tmp_path):
    """A monitor and a restarting worker, registered with procs: stopped at
    teardown (the worker SIGCONTed first), also when the test fails."""

    def make(extra=(), relay=False, restart="on-failure"):
        udp = free_udp_port()
        _, mev = start_monitor(procs, tmp_path, udp, INTERVAL_MS, TIMEOUT_MS)
        r = procs.add(UdpRelay(udp)) if relay else None
        plat = procs.add(Platform(tmp_path, udp_port=r.port if r else udp, heartbeat_ms=INTERVAL_MS, extra=extra,
                                  restart=restart))
        plat.start()
        wait_until(lambda: mev.first("verdict", verdict="HEALTHY"), 5, what="monitor HEALTHY")
        return plat, mev, r

    return make


def verdicts_after(mev, t0: float) -> list[dict]:
    return [e for e in mev.of("verdict") if e["ts"] >= t0]


def first_verdict(mev, verdict: str, after: float) -> dict | None:
    for e in mev.of("verdict"):
        if e["ts"] >= after and e["verdict"] == verdict:
            return e
    return None


def runs_of(ticks: list[dict]) -> list[str]:
    """The ticks' verdicts with repeats collapsed: the story the monitor told."""
    out: list[str] = []
    for e in ticks:
        if not out or out[-1] != e["verdict"]:
            out.append(e["verdict"])
    return out


def ticks_between(mev, t0: float, t1: float = float("inf")) -> list[dict]:
    return [e for e in mev.of("tick") if t0 <= e["ts"] < t1]


def more_ticks(mev, after: float, n: int = 3) -> list[dict]:
    """Waits for n more monitor ticks after `after` and returns them."""
    return wait_until(lambda: (t := ticks_between(mev, after + 1e-6)) and len(t) >= n and t, 3,
                      what=f"{n} monitor ticks")


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


def worker_exited_clean(plat) -> None:
    """The job is over: the last worker saw EOF and exited 0, and (restart
    on failure only) nobody started another."""
    # Under restart on failure the platform's thread ends only after an exit 0.
    wait_until(lambda: not plat.running(), 5, what="the worker's exit at the job's end")
    assert plat.exits and plat.exits[-1] == 0, plat.exits
    assert len(plat.start_times) == len(plat.exits), "a clean exit is not restarted"


def assert_lock_seen_by_supervisor(plat, crash: dict, k: int, want: str) -> None:
    """The supervisor's view of the lock right after worker k died: `want`,
    unless the lock could still be held when the supervisor looked (its event
    comes after the look): by the next worker, if the platform had started it,
    or by worker k itself, if it was still exiting. A killed process's
    connection can be reset before the kernel closes its lock file; the
    harness's waitpid time (exit_times) is when it had surely gone."""
    restarted_at = plat.start_times[k + 1] if k + 1 < len(plat.start_times) else float("inf")
    if plat.exit_times[k] <= crash["ts"] < restarted_at:
        assert crash["lock"] == want, (crash, want)
    else:
        assert crash["lock"] in (want, "held"), (crash, want)


def test_healthy_job_exactly_once_and_no_false_verdict(lab, procs, tmp_path):
    plat, mev, _ = lab(extra=["--bug-trigger", "none"])
    t0 = time.time()
    # Paced to last about 2 s: unpaced, 200,000 items can end within three
    # monitor ticks, and a healthy verdict needs a run long enough to judge.
    sup, sev = start_supervisor(
        procs, tmp_path, plat.port, tmp_path / "input.dat", "--generate", "200000", "--seed", "3", "--rate", "100000"
    )
    assert sup.wait(60) == 0
    done = sev.first("done")
    assert done and done["exit_code"] == 0
    assert_exactly_once(tmp_path / "out", tmp_path / "input.dat", trigger=None)
    # Until the job ends (then the worker exits 0 on EOF: STOPPED, by design).
    ticks = ticks_between(mev, t0, done["ts"] - 0.05)
    assert len(ticks) >= 10
    assert {e["verdict"] for e in ticks} == {"HEALTHY"}, "a healthy run must never get another verdict"
    assert {e["heartbeat_only"] for e in ticks} == {"ALIVE"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["read"] == 200000 and summary["processed"] == 199998 and summary["corrupted"] == 2
    assert summary["worker_crashes"] == 0 and summary["dead_lettered"] == 0
    worker_exited_clean(plat)
    assert plat.exits == [0] and plat.lock_left == [False], "one worker for the whole job, and it cleaned up"
    # The only clean exit is the one at the job's end.
    stopped = wait_until(lambda: first_verdict(mev, "STOPPED", t0), 3, what="STOPPED after the job")
    assert stopped["lock"] == "absent"


def test_poison_999_crash_is_dead_lettered_and_judged_crashed_at_once(lab, procs, tmp_path):
    plat, mev, _ = lab()
    sup, sev = start_supervisor(procs, tmp_path, plat.port, tmp_path / "input.dat", "--generate", "50000",
                                "--seed", "9")
    assert sup.wait(60) == 0
    assert_exactly_once(tmp_path / "out", tmp_path / "input.dat")
    dead = (tmp_path / "out" / "dead-letter.csv").read_text().splitlines()
    assert len(dead) == 2 and dead[1].split(",")[1] == "999"
    worker_exited_clean(plat)
    # Every exit but the last was a segfault (the poison: two crashes alone
    # in flight, and maybe one more while it was still in a batch), and the
    # supervisor counted each one.
    segv = plat.exit_times[:-1]
    assert plat.exits == [-signal.SIGSEGV] * len(segv) + [0] and len(segv) >= 2, plat.exits
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["worker_crashes"] == len(segv) and summary["dead_lettered"] == 1
    # The platform looked before restarting: the fatal-signal handler removed the lock every time.
    assert plat.lock_left == [False] * len(plat.exits), "a segfault must not leave the lock file"
    # Each segfault: the monitor said CRASHED within two ticks.
    for death in segv:
        v, seen = crashed_verdict_for(mev, death)
        assert v is not None, f"no CRASHED verdict after the death; ticks {seen}"
        assert v["ts"] - death <= 2 * INTERVAL_MS / 1000 + SLACK_S / 2, \
            f"CRASHED {v['ts'] - death:.3f}s after death; ticks {seen}"
    assert first_verdict(mev, "RESTARTED", segv[0]) is not None
    crashes = sev.of("crash")
    assert len(crashes) == len(segv)
    for k, c in enumerate(crashes):
        assert_lock_seen_by_supervisor(plat, c, k, "absent")
    # The job is over and the worker left cleanly: the monitor's last word is STOPPED.
    # (Every earlier exit was a segfault, so a STOPPED can only be this one.)
    v = wait_until(lambda: (vs := mev.of("verdict")) and vs[-1]["verdict"] == "STOPPED" and vs[-1], 3,
                   what="the monitor's STOPPED after the job")
    assert v["lock"] == "absent"
    assert {e["verdict"] for e in more_ticks(mev, v["ts"])} == {"STOPPED"}


def test_sigstop_is_paused_not_crashed_and_nothing_is_lost(lab, procs, tmp_path):
    plat, mev, _ = lab(extra=["--bug-trigger", "none"])
    sup, sev = start_supervisor(procs, tmp_path, plat.port, tmp_path / "input.dat", "--generate", "600000",
                                "--seed", "5", "--timeout-ms", str(TIMEOUT_MS))
    wait_until(lambda: processed(plat) > 1000, 10, what="the job to be under way")
    plat.signal(signal.SIGSTOP)
    t_stop = time.time()
    paused = wait_until(lambda: first_verdict(mev, "PAUSED", t_stop), 5, what="PAUSED verdict")
    # Hold the pause until the supervisor has timed out: its timeout cannot tell a pause from a crash.
    wait_until(lambda: sev.first("timeout"), 10, what="the supervisor's timeout during the pause")
    plat.signal(signal.SIGCONT)
    t_cont = time.time()
    assert sup.wait(60) == 0
    done = sev.first("done")
    assert done and done["exit_code"] == 0
    assert paused["ts"] - t_stop <= TIMEOUT_MS / 1000 + SLACK_S, f"PAUSED after {paused['ts'] - t_stop:.3f}s"
    assert paused["heartbeat_only"] == "DEAD" and paused["lock"] == "held"
    # A pause is not a crash: the same worker lived on and exited 0 at the job's end.
    worker_exited_clean(plat)
    assert plat.exits == [0] and plat.lock_left == [False], plat.exits
    stopped = wait_until(lambda: first_verdict(mev, "STOPPED", t_cont), 3, what="STOPPED after the job")
    # ... and not a restart: no RESTARTED from the SIGSTOP to the end of the job.
    restarted = [e for e in mev.of("verdict") if t_stop <= e["ts"] <= stopped["ts"] and e["verdict"] == "RESTARTED"]
    assert not restarted, restarted
    # The whole story: (HEALTHY until silence), PAUSED, HEALTHY again after the thaw, STOPPED at the end.
    # (Each verdict event comes just before the tick that carries it.)
    story = runs_of(ticks_between(mev, t_stop, stopped["ts"] + INTERVAL_MS / 2000))
    assert story in (["HEALTHY", "PAUSED", "HEALTHY", "STOPPED"], ["PAUSED", "HEALTHY", "STOPPED"]), story
    assert_exactly_once(tmp_path / "out", tmp_path / "input.dat", trigger=None)


def test_sigkill_and_restart_crashed_then_restarted_exactly_once(lab, procs, tmp_path):
    plat, mev, _ = lab(extra=["--bug-trigger", "none"])
    sup, sev = start_supervisor(procs, tmp_path, plat.port, tmp_path / "input.dat", "--generate", "600000",
                                "--seed", "6")
    wait_until(lambda: processed(plat) > 1000, 10, what="the job to be under way")
    old_pid = plat.proc.pid
    plat.signal(signal.SIGKILL)
    assert sup.wait(60) == 0
    done = sev.first("done")
    assert done and done["exit_code"] == 0
    worker_exited_clean(plat)
    # The killed worker left its lock file (no handler runs on SIGKILL); its successor's clean exit removed its own.
    assert plat.exits == [-signal.SIGKILL, 0] and plat.lock_left == [True, False], (plat.exits, plat.lock_left)
    death = plat.exit_times[0]
    crashed, seen = crashed_verdict_for(mev, death)
    assert crashed and crashed["ts"] - death <= 2 * INTERVAL_MS / 1000 + SLACK_S / 2, f"ticks {seen}"
    restarted = first_verdict(mev, "RESTARTED", death)
    assert restarted and restarted["pid"] != old_pid and restarted["pid"] == plat.proc.pid
    following = wait_until(lambda: [e for e in mev.of("verdict") if e["ts"] > restarted["ts"]], 5,
                           what="the verdict after RESTARTED")
    nxt = following[0]
    # STOPPED may come a few ms before the supervisor's `done` (the worker
    # exits before the supervisor writes its summary); what proves the job's
    # end is the successor's clean stop: its lock removed.
    ended = plat.exit_times[-1]  # the successor's clean exit, seen by the harness's waitpid (an upper bound)
    assert nxt["verdict"] == "HEALTHY" or (nxt["verdict"] == "STOPPED" and nxt["lock"] == "absent"
                                           and nxt["ts"] >= ended - SLACK_S), \
        f"RESTARTED, then HEALTHY (or STOPPED once the job has ended, at {ended:.3f}); got {nxt}"
    crashes = sev.of("crash")
    assert len(crashes) == 1, crashes
    assert_lock_seen_by_supervisor(plat, crashes[0], 0, "stale")
    assert "recovered stale lock" in (tmp_path / "worker.log").read_text()
    assert_exactly_once(tmp_path / "out", tmp_path / "input.dat", trigger=None)


def test_supervisor_killed_mid_job_resumes_from_checkpoint(lab, procs, tmp_path):
    # The worker exits 0 when the killed supervisor's connection closes; the
    # second supervisor needs it back.
    plat, mev, _ = lab(restart="always")
    inp = tmp_path / "input.dat"
    # Paced to about 3 s, so the kill surely lands between the first
    # checkpoint (after 0.5 s) and the job's end, however fast the machine.
    sup, _ = start_supervisor(procs, tmp_path, plat.port, inp, "--generate", "1500000", "--seed", "8",
                              "--rate", "500000")

    def checkpointed():
        try:
            return json.loads((tmp_path / "out" / "checkpoint.json").read_text())["progress"]["next"]
        except (OSError, ValueError):
            return 0

    first_next = wait_until(checkpointed, 20, what="a first checkpoint")
    sup.kill()
    assert sup.wait() == -signal.SIGKILL, "the job must not have ended before the kill"
    # Rows written after the last checkpoint are on disk now; the restart must drop them.
    sup2, sev2 = start_supervisor(procs, tmp_path, plat.port, inp)
    assert sup2.wait(90) == 0
    start = sev2.first("start")
    assert first_next <= start["resumed_at"] < 1500000, start
    assert_exactly_once(tmp_path / "out", inp)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["supervisor_restarts"] == 1


def test_heartbeat_path_cut_is_partitioned(lab, tmp_path):
    plat, mev, relay = lab(relay=True)
    # The volume is judged as received: a beat already in the file when the
    # monitor started counts as old, so it needs a window of fresh beats
    # seen before a silent network can read as a partition, not a pause.
    more_ticks(mev, mev.first("verdict", verdict="HEALTHY")["ts"], TIMEOUT_MS // INTERVAL_MS + 2)
    relay.cut.set()
    t_cut = time.time()
    part = wait_until(lambda: first_verdict(mev, "PARTITIONED", t_cut), 5, what="PARTITIONED verdict")
    assert part["ts"] - t_cut <= TIMEOUT_MS / 1000 + SLACK_S
    assert part["heartbeat_only"] == "DEAD" and part["lock"] == "held"
    # Hold the cut for a few ticks past the verdict: it must stay PARTITIONED.
    more_ticks(mev, part["ts"], 3)
    relay.cut.clear()
    t_heal = time.time()
    healed = wait_until(lambda: first_verdict(mev, "HEALTHY", t_heal), 3, what="HEALTHY after heal")
    assert healed["heartbeat_only"] == "ALIVE"
    story = runs_of(ticks_between(mev, t_cut, healed["ts"] + INTERVAL_MS / 2000))
    assert story in (["HEALTHY", "PARTITIONED", "HEALTHY"], ["PARTITIONED", "HEALTHY"]), story
    assert plat.exits == [], "the worker lived through the partition"


def test_graceful_stop_is_stopped_not_crashed(lab, tmp_path):
    plat, mev, _ = lab()
    plat.stop_restarting()
    plat.signal(signal.SIGTERM)
    t = time.time()
    v = wait_until(lambda: first_verdict(mev, "STOPPED", t), 3, what="STOPPED verdict")
    assert v["lock"] == "absent"
    assert plat.proc.wait(5) == 0
    wait_until(lambda: plat.exits, 5, what="the platform to see the exit")
    assert plat.exits == [0] and plat.lock_left == [False]
    # It stays STOPPED: never CRASHED, before or after.
    more_ticks(mev, v["ts"])
    story = runs_of(ticks_between(mev, t))
    assert story in (["HEALTHY", "STOPPED"], ["STOPPED"]), story


def test_supervisor_bad_input_path_and_bad_args(tmp_path):
    p = subprocess.run([sys.executable, str(SUPERVISOR), "--worker", "127.0.0.1:1", "--input",
                        str(tmp_path / "nope.dat"), "--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert p.returncode == 66 and "nope.dat not found" in p.stderr
    p = subprocess.run([sys.executable, str(SUPERVISOR), "--worker", "nohostport", "--input", "x", "--output", "y"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "HOST:PORT" in p.stderr
