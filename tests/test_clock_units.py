"""The clock faults (skew, drift) without an engine: their settings and the
file they write, the scenarios that use them, the truth they leave, the
sender-clock observer, and the monitor's volume channel timed as received."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from tenacity import wait_none

from helpers import MONITOR, load_program
from labctl import check, faults, journal, observe, runlog, scenario, states
from labctl.engine import ContainerState
from labctl.errors import ExitCode, LabError

mon = load_program("monitor", MONITOR)
WALL0_MS = 1_700_000_000_000.0


# ------------------------------------------------------------------ settings and the file written


def test_skew_and_drift_settings():
    assert faults.get("skew").settings({"seconds": "-30"}) == {"seconds": -30.0}
    assert faults.get("drift").settings({"ppm": 250}) == {"ppm": 250.0}
    assert faults.get("skew").inverse == "skew-off" and faults.get("drift").inverse == "drift-off"
    assert faults.get("skew").journal_truth == faults.get("drift").journal_truth == states.SKEWED
    assert faults.get("skew").cli_args == ("seconds",) and faults.get("drift").cli_args == ("ppm",)
    with pytest.raises(LabError) as ei:
        faults.get("drift").settings({"ppm": -1e6})
    assert ei.value.what.startswith("ppm: must be between")
    with pytest.raises(LabError) as ei:
        faults.get("skew").settings({})
    assert ei.value.what.startswith("seconds: skew needs it")


def target(params: dict) -> faults.Target:
    return faults.Target("l1", "worker", params, "id-1")


def test_the_setting_libfaketime_reads():
    skew = faults.get("skew")
    assert isinstance(skew, faults.Clock)
    assert skew.setting(target({"seconds": 30.0}))[1:] == ["+30.000 x1"]
    assert skew.setting(target({"seconds": -30.0}))[1:] == ["-30.000 x1"]
    drift, off = faults.get("drift"), faults.get("drift-off")
    assert isinstance(drift, faults.Clock) and isinstance(off, faults.Clock)
    assert drift.setting(target({"ppm": -900000.0}))[1:] == ["0.100000", "-900000"]
    assert off.setting(target({}))[1:] == ["1.000000", "0"]
    assert faults.get("skew-off").setting(target({}))[1:] == ["1.000000", "0"]


def test_the_drift_offset_keeps_the_clock_from_jumping(tmp_path):
    """The script, run by dash against a fake /proc: offset = age * (1 - rate)."""
    import shutil
    import subprocess

    if not shutil.which("dash"):
        pytest.skip("no dash")
    script = faults.CLOCK_SCRIPT.replace("/proc/", f"{tmp_path}/proc/")
    (tmp_path / "proc" / "7").mkdir(parents=True)
    (tmp_path / "proc" / "1").mkdir()
    # The program (ppid 1) started at tick 1000 (10 s after boot); now is 50 s after boot: 40 s old.
    (tmp_path / "proc" / "1" / "stat").write_text("1 (tini) S 0 " + " ".join(["0"] * 18) + " 5 0\n")
    (tmp_path / "proc" / "7" / "stat").write_text("7 (python3 x) S 1 " + " ".join(["0"] * 17) + " 1000 0 0\n")
    (tmp_path / "proc" / "uptime").write_text("50.00 90.00\n")
    f = tmp_path / "clock"
    out = subprocess.run(["dash", "-c", script, "sh", str(f), "0.100000", "-900000"], capture_output=True,
                         text=True, check=True).stdout
    assert out == f.read_text() == "+36.000000 x0.100000\n"  # 40 s * 0.9
    subprocess.run(["dash", "-c", script, "sh", str(f), "1.500000", "500000"], check=True)
    assert f.read_text() == "-20.000000 x1.500000\n"
    subprocess.run(["dash", "-c", faults.SKEW_SCRIPT, "sh", str(f), "-30.000 x1"], check=True)
    assert f.read_text() == "-30.000 x1\n" and not Path(f"{f}.new").exists()


# ------------------------------------------------------------------ journaled apply, clashes and targets


class FakeEngine:
    name = "fake"

    def __init__(self) -> None:
        self.execs: list[tuple[str, list[str]]] = []

    def inspect(self, name):
        return ContainerState("id", name, "running", None, 0, 10, {}, [])

    def exec(self, name, cmd, user=None):
        self.execs.append((name, cmd))
        return 0, cmd[-1]


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    monkeypatch.setattr(faults, "RETRY_WAIT", wait_none())
    return tmp_path


def test_skew_writes_the_file_as_the_target_and_its_revert_restores_the_true_time(runs):
    eng = FakeEngine()
    intent = faults.apply(eng, "l1", "skew", "worker", step=1, params={"seconds": 30})
    name, cmd = eng.execs[-1]
    assert name == "labctl-l1-worker" and cmd[:2] == ["sh", "-c"] and cmd[4:] == [faults.CLOCK_FILE, "+30.000 x1"]
    assert [r["phase"] for r in journal.read("l1")] == ["intent", "applied"]
    faults.revert(eng, "l1", intent)
    assert eng.execs[-1][1][4:] == [faults.CLOCK_FILE, "1.000000", "0"]
    assert journal.pending("l1") == []


def test_one_clock_setting_at_a_time_and_only_where_libfaketime_is(runs):
    eng = FakeEngine()
    faults.apply(eng, "l1", "drift", "alice", params={"ppm": -500000})
    with pytest.raises(LabError) as ei:
        faults.apply(eng, "l1", "skew", "alice", params={"seconds": 5})
    assert "a drift of its clock is still on" in ei.value.what
    with pytest.raises(LabError) as ei:
        faults.apply(eng, "l1", "skew", "monitor", params={"seconds": 5})
    assert "monitor's image does not preload libfaketime" in ei.value.what
    faults.apply(eng, "l1", "skew", "bob", params={"seconds": 5})  # another target: fine


SKEW = """
name: t
lesson: a lesson
lab: {items: 2000, rate: 100}
timeline:
  - {at: 2, do: skew, seconds: -30, for: 4}
  - {at: 8, do: kill, for: 2}
expect:
  windows:
    - {step: 1, truth: SKEWED, sender_clock: DEAD, holds: {sender_clock: [DEAD]}}
  never: {sender_clock: [ALIVE]}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_a_scenario_takes_clock_steps_and_sender_clock_expectations(tmp_path):
    sc = scenario.load(write(tmp_path, SKEW))
    assert sc.timeline[0].params == {"seconds": -30.0}
    assert sc.expect.windows[0].sender_clock == "DEAD"
    assert sc.expect.windows[0].holds == {"sender_clock": ["DEAD"]}
    assert sc.expect.never == {"sender_clock": ["ALIVE"]}


@pytest.mark.parametrize("old, new, what", [
    ("do: skew, seconds: -30, for: 4", "do: skew, seconds: -30, target: monitor, for: 4",
     "timeline[0].target: skew acts on a clock libfaketime fakes"),
    ("do: kill, for: 2", "do: drift, ppm: 100, for: 2", "timeline[1].at: drift of the worker at 8 s"),
    ("sender_clock: DEAD,", "sender_clock: SKEWED,", "sender_clock"),
])
def test_bad_clock_steps_are_refused(tmp_path, old, new, what):
    text = SKEW.replace(old, new)
    if "drift" in new:
        text = text.replace("for: 4}", "for: 9}")
    with pytest.raises(LabError) as ei:
        scenario.load(write(tmp_path, text))
    assert ei.value.code == ExitCode.BAD_SCENARIO and what in ei.value.what, ei.value.what


def test_the_built_in_clock_scenarios_load():
    for name in ("scenario-clock-skew", "scenario-lease-clock-drift"):
        assert scenario.resolve(name).name == name


# ------------------------------------------------------------------ the truth and the checker


def fault(ts, phase, name, fid, **kw):
    return {"ts": ts, "source": "labctl", "kind": "fault", "phase": phase, "fault": name, "id": fid,
            "target": "worker", **kw}


def test_a_skew_is_skewed_until_reverted_or_the_process_restarts():
    evs = [fault(1.0, "intent", "skew", "a", inverse="skew-off", step=1),
           fault(1.1, "applied", "skew", "a", inverse="skew-off", step=1),
           fault(5.0, "reverted", "skew-off", "a-revert", of="a", step=1),
           fault(6.0, "applied", "skew", "b", inverse="skew-off"),
           {"ts": 7.0, "source": "engine", "kind": "container", "action": "die", "service": "worker",
            "exit_code": 137},
           {"ts": 8.0, "source": "engine", "kind": "container", "action": "start", "service": "worker"}]
    assert runlog.truth_timeline(evs) == [(1.1, "SKEWED"), (5.0, "RUNNING"), (6.0, "SKEWED"), (7.0, "CRASHED"),
                                          (8.0, "RUNNING")]
    # The monitor that stays HEALTHY through a skew agrees with the truth.
    assert check.agreement([(4.0, "HEALTHY"), (7.5, "CRASHED")], runlog.truth_timeline(evs), 0.2, 2.0).ok


def test_the_sender_clock_observer_is_read_from_the_monitors_ticks():
    evs = [{"ts": 1.0, "source": "monitor", "kind": "tick", "verdict": "HEALTHY", "sender_clock": "ALIVE"},
           {"ts": 1.2, "source": "monitor", "kind": "verdict", "verdict": "HEALTHY", "sender_clock": "DEAD"},
           {"ts": 1.4, "source": "monitor", "kind": "tick", "verdict": "HEALTHY"}]
    assert runlog.observed(evs, states.SENDER_CLOCK) == [(1.0, "ALIVE"), (1.2, "DEAD")]
    assert states.SENDER_CLOCK in states.OBSERVERS


def test_an_event_stamped_by_a_faked_clock_is_put_on_the_engines():
    line = '2026-01-01T00:00:10.000000000Z {"ts": 1767225640.0, "source": "alice", "kind": "wrote"}'
    ev = observe.parse_log_line("alice", line)
    assert ev is not None and ev["ts"] == 1767225610.0 and ev["own_ts"] == 1767225640.0
    close = '2026-01-01T00:00:10.000000000Z {"ts": 1767225610.1, "source": "alice", "kind": "wrote"}'
    assert observe.parse_log_line("alice", close) == {"ts": 1767225610.1, "source": "alice", "kind": "wrote"}
    # The monitor's clock is never faked: its stamps stand as they are.
    mline = '2026-01-01T00:00:10.000000000Z {"ts": 1767225640.0, "source": "monitor", "kind": "tick"}'
    assert observe.parse_log_line("monitor", mline)["ts"] == 1767225640.0


# ------------------------------------------------------------------ the monitor


def beat(seq, unix_ms, inc="a", stopped=False):
    return mon.Beat(inc, 1, seq, 0, int(unix_ms), stopped)


def test_the_receive_clock_times_a_beat_from_when_it_was_first_seen():
    rc = mon.ReceiveClock()
    rc.see(0.0, beat(1, 0))  # there before watching began: its age is unknown, so old
    assert math.isinf(rc.age_ms(0.5))
    rc.see(1.0, beat(2, -30_000))  # a new beat, whatever its own stamp says
    assert rc.age_ms(1.25) == pytest.approx(250)
    rc.see(1.1, beat(2, -30_000))  # the same beat again: still timed from its first sight
    assert rc.age_ms(1.5) == pytest.approx(500)
    rc.see(1.6, None)  # a read that found nothing changes nothing
    assert rc.age_ms(1.6) == pytest.approx(600)
    rc.see(2.0, beat(2, -30_000, stopped=True))  # the last beat, rewritten as "stopped": new
    assert rc.age_ms(2.0) == 0


def obs(t, unix_ms, file_age_ms, net_age=50.0, lock="held", stopped=False, net_beat=None):
    b = beat(1, unix_ms, stopped=stopped)
    return mon.Observation(t, WALL0_MS + t * 1000, mon.LockState(lock, 1, "a" if lock == "held" else None),
                           net_age, b, net_beat, file_age_ms=file_age_ms)


def test_a_skewed_worker_stays_healthy_and_the_sender_clock_is_fooled_both_ways():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    for t in (0.0, 0.2, 0.4):
        now = WALL0_MS + t * 1000
        behind = obs(t, now - 30_000, 20)  # beats stamped 30 s in the past, received 20 ms ago
        assert c.classify(behind) == ("HEALTHY", "ALIVE")
        assert c.sender_clock(behind) == "DEAD"
    ahead = obs(1.0, WALL0_MS + 1000 + 30_000, 20)
    assert c.classify(ahead)[0] == "HEALTHY" and c.sender_clock(ahead) == "ALIVE"
    # Killed while ahead: the lock is free, no beat comes; the last one still looks young.
    dead = obs(6.0, WALL0_MS + 1000 + 30_000, 5000, net_age=5000, lock="free")
    assert c.classify(dead) == ("CRASHED", "DEAD")
    assert c.sender_clock(dead) == "ALIVE"
    assert c.sender_clock(obs(40.0, WALL0_MS + 1000 + 30_000, 39_000, lock="free")) == "DEAD"


def test_a_paused_worker_whose_clock_runs_ahead_is_still_paused():
    """A frozen worker's last volume beat stamped in the future: timed as
    received it goes stale all the same (its own stamp would keep it fresh)."""
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    c.classify(obs(0.0, WALL0_MS + 30_000, 10))
    v = c.classify(obs(2.0, WALL0_MS + 30_000, 1950, net_age=1950))
    assert v == ("PAUSED", "DEAD")


def test_a_clean_stop_is_judged_by_when_the_stopped_beat_came_not_its_stamp():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)
    assert c.classify(obs(0.0, WALL0_MS, 10))[0] == "HEALTHY"
    # A later incarnation's "stopped" beat, stamped 30 s in the past, received after the held tick: STOPPED.
    later = mon.Observation(0.4, WALL0_MS + 400, mon.LockState("absent", None, None), 50,
                            mon.Beat("b", 2, 3, 0, int(WALL0_MS - 30_000), True), None, file_age_ms=100)
    assert c.classify(later)[0] == "STOPPED"
    c2 = mon.Classifier(interval_ms=200, timeout_ms=2000)
    assert c2.classify(obs(0.0, WALL0_MS, 10))[0] == "HEALTHY"
    # An older one's, stamped 30 s in the future but received before the held tick: not this stop.
    older = mon.Observation(0.4, WALL0_MS + 400, mon.LockState("absent", None, None), 3000,
                            mon.Beat("z", 2, 3, 0, int(WALL0_MS + 30_000), True), None, file_age_ms=3000)
    assert c2.classify(older)[0] == "CRASHED"
