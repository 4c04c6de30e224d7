"""Gray faults' pure logic: settings (faults.Param), scenario steps and window
expectations (holds, flaps, p99_ms_min), `labctl fault`'s values, the checker
and the truth on synthetic events, and the journal records. No engine needed."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from tenacity import wait_none

from labctl import check, cli, faults, journal, runlog, scenario, states
from labctl.engine import ContainerState
from labctl.errors import ExitCode, LabError

SERVICES = "worker, monitor, supervisor"


def usage(fault: str, given: dict, where: str = "") -> LabError:
    with pytest.raises(LabError) as ei:
        faults.get(fault).settings(given, where)
    assert ei.value.code == ExitCode.USAGE
    return ei.value


# ------------------------------------------------------------------ Param and Fault.settings


def test_settings_fill_the_defaults():
    assert faults.get("loss").settings({"p": 0.4}) == {"p": 0.4, "to": "monitor"}
    assert faults.get("loss").settings({"p": "0.25", "to": "supervisor"}) == {"p": 0.25, "to": "supervisor"}
    slow = faults.get("slow").settings({"percent": 80})
    assert slow == {"percent": 80.0, "period_ms": 100.0}
    assert all(isinstance(v, float) for v in slow.values())
    assert faults.get("slow").settings({"percent": "50", "period_ms": "500"}) == {"percent": 50.0,
                                                                                 "period_ms": 500.0}
    assert faults.get("oneway").settings({"to": "supervisor"}) == {"to": "supervisor"}
    # The bounds themselves are allowed.
    assert faults.get("loss").settings({"p": 0})["p"] == 0.0 and faults.get("loss").settings({"p": 1})["p"] == 1.0
    assert faults.get("slow").settings({"percent": 99, "period_ms": 20}) == {"percent": 99.0, "period_ms": 20.0}
    # Faults without settings take none and give none.
    assert faults.get("pause").settings({}) == {} and faults.get("loss-off").settings({}) == {}


@pytest.mark.parametrize("fault, given, what", [
    ("loss", {"p": 1.5}, "p: must be between 0 and 1, got 1.5"),
    ("loss", {"p": -0.1}, "p: must be between 0 and 1, got -0.1"),
    ("slow", {"percent": 0}, "percent: must be between 1 and 99, got 0"),
    ("slow", {"percent": 100}, "percent: must be between 1 and 99, got 100"),
    ("slow", {"percent": 50, "period_ms": 10}, "period_ms: must be between 20 and 1000, got 10"),
    ("slow", {"percent": 50, "period_ms": "inf"}, "period_ms: expected a number, got inf"),
])
def test_settings_out_of_bounds_name_the_key(fault, given, what):
    assert usage(fault, given).what == what


@pytest.mark.parametrize("fault, given, what", [
    ("loss", {"p": "lots"}, "p: expected a number, got 'lots'"),
    ("loss", {"p": True}, "p: expected a number, got True"),
    ("loss", {"p": [0.5]}, "p: expected a number, got [0.5]"),
    ("loss", {"p": None}, "p: expected a number, got None"),
    ("loss", {"p": 0.5, "to": "database"}, f"to: 'database' is not one of {SERVICES}"),
    ("oneway", {"to": 3}, f"to: 3 is not one of {SERVICES}"),
])
def test_settings_of_the_wrong_type_name_the_key(fault, given, what):
    err = usage(fault, given)
    assert err.what == what
    assert err.todo == f"`labctl fault --help` lists {fault}'s settings"


def test_unknown_and_missing_settings_name_the_key():
    err = usage("loss", {"p": 0.5, "q": 1})
    assert err.what == "q: loss takes no 'q'" and err.todo == "loss takes p, to"
    err = usage("pause", {"p": 0.5})
    assert err.what == "p: pause takes no 'p'" and err.todo == "pause takes no settings"
    assert usage("loss", {}).what == "p: loss needs it (the share of packets dropped, 0 to 1)"
    assert usage("loss", {"to": "monitor"}).what.startswith("p: loss needs it")
    assert usage("oneway", {}).what == "to: oneway needs it (the service whose traffic from the target is dropped)"
    assert usage("slow", {"period_ms": 200}).what.startswith("percent: slow needs it (")
    # `where` goes before the key.
    assert usage("loss", {"p": 2}, "timeline[3].").what == "timeline[3].p: must be between 0 and 1, got 2"


def test_param_parse_alone():
    p = faults.Param("x", "a number", lo=1, hi=2)
    assert p.parse("1.5") == 1.5 and p.parse(2) == 2.0
    with pytest.raises(ValueError, match=r"^must be between 1 and 2, got 3$"):
        p.parse(3)
    c = faults.Param("c", "a choice", choices=("a", "b"))
    assert c.parse("b") == "b"
    with pytest.raises(ValueError, match=r"^'z' is not one of a, b$"):
        c.parse("z")


@pytest.mark.parametrize("fault, given", [("loss", {"p": "nan"}), ("slow", {"percent": float("nan")})])
def test_nan_is_not_a_setting(fault, given):
    usage(fault, given)


# ------------------------------------------------------------------ scenarios


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


GRAY = """
name: t
lesson: a lesson
lab: {items: 200, rate: 5}
timeline:
  - {at: 2, do: loss, p: 0.4, for: 10}
  - {at: 14, do: slow, percent: 80, period_ms: 200, for: 3}
  - {at: 20, do: oneway, target: monitor, to: worker, for: 3}
expect:
  windows:
    - step: 1
      truth: DEGRADED
      holds: {supervisor: [streaming], monitor: [HEALTHY, SLOW]}
      flaps: {heartbeat_only: {min: 2}, phi: {max: 1}}
      p99_ms_min: 40
    - {step: 3, phi: DEAD, flaps: {phi: {min: 0, max: 3}}}
"""


def bad_scenario(tmp_path: Path, text: str) -> str:
    with pytest.raises(LabError) as ei:
        scenario.load(write(tmp_path, text))
    assert ei.value.code == ExitCode.BAD_SCENARIO
    return ei.value.what


def test_gray_steps_parse_into_params_with_defaults(tmp_path):
    sc = scenario.load(write(tmp_path, GRAY))
    loss, slow, oneway = sc.timeline
    assert (loss.do, loss.target, loss.for_s, loss.params, loss.inverse) == (
        "loss", "worker", 10, {"p": 0.4, "to": "monitor"}, "loss-off")
    assert slow.params == {"percent": 80.0, "period_ms": 200.0} and slow.inverse == "slow-off"
    assert (oneway.target, oneway.params, oneway.inverse) == ("monitor", {"to": "worker"}, "oneway-off")
    w1, w3 = sc.expect.windows
    assert w1.truth == "DEGRADED"
    assert w1.holds == {"supervisor": ["streaming"], "monitor": ["HEALTHY", "SLOW"]}
    assert w1.flaps == {"heartbeat_only": (2, None), "phi": (None, 1)}
    assert w1.p99_ms_min == 40
    assert (w3.step, w3.phi, w3.flaps, w3.holds, w3.p99_ms_min) == (3, "DEAD", {"phi": (0, 3)}, {}, None)


def test_a_step_without_settings_has_none(tmp_path):
    sc = scenario.load(write(tmp_path, GRAY.replace("do: loss, p: 0.4", "do: pause")))
    assert sc.timeline[0].params == {}


@pytest.mark.parametrize("old, new, what", [
    ("p: 0.4", "p: 1.5", "s.yaml: timeline[0].p: must be between 0 and 1, got 1.5"),
    ("p: 0.4", "p: lots", "s.yaml: timeline[0].p: expected a number, got 'lots'"),
    ("p: 0.4", "p: 0.4, to: db", f"s.yaml: timeline[0].to: 'db' is not one of {SERVICES}"),
    ("do: loss, p: 0.4", "do: loss", "s.yaml: timeline[0].p: loss needs it (the share of packets dropped, 0 to 1)"),
    ("percent: 80", "percent: 0", "s.yaml: timeline[1].percent: must be between 1 and 99, got 0"),
    ("period_ms: 200", "period_ms: 10", "s.yaml: timeline[1].period_ms: must be between 20 and 1000, got 10"),
    ("target: monitor, to: worker", "target: monitor",
     "s.yaml: timeline[2].to: oneway needs it (the service whose traffic from the target is dropped)"),
])
def test_a_bad_setting_names_file_step_and_key(tmp_path, old, new, what):
    assert old in GRAY
    assert bad_scenario(tmp_path, GRAY.replace(old, new, 1)) == what


def test_a_setting_on_a_fault_that_takes_none_is_an_unknown_key(tmp_path):
    what = bad_scenario(tmp_path, GRAY.replace("do: loss, p: 0.4", "do: pause, p: 0.4"))
    assert what == "s.yaml: timeline[0].p: unknown key; expected one of at, do, target, for, on_event"
    # A setting of another fault is unknown too, and the error lists the step's own.
    what = bad_scenario(tmp_path, GRAY.replace("p: 0.4", "p: 0.4, percent: 5"))
    assert what == "s.yaml: timeline[0].percent: unknown key; expected one of at, do, target, for, on_event, p, to"


@pytest.mark.parametrize("old, new, what", [
    ("flaps: {heartbeat_only: {min: 2}, phi: {max: 1}}", "flaps: {monitor: {min: 1}}",
     "s.yaml: expect.windows[0].flaps.monitor: unknown key; expected one of heartbeat_only, phi, sender_clock"),
    ("{heartbeat_only: {min: 2}", "{heartbeat_only: {least: 2}",
     "s.yaml: expect.windows[0].flaps.heartbeat_only.least: unknown key; expected one of min, max"),
    ("{heartbeat_only: {min: 2}", "{heartbeat_only: {min: -1}",
     "s.yaml: expect.windows[0].flaps.heartbeat_only.min: must be 0 or more, got -1"),
    ("{heartbeat_only: {min: 2}", "{heartbeat_only: {min: 1.5}",
     "s.yaml: expect.windows[0].flaps.heartbeat_only.min: expected a whole number, got float 1.5"),
    ("phi: {max: 1}}", "phi: 3}", "s.yaml: expect.windows[0].flaps.phi: expected a mapping, got int"),
    ("monitor: [HEALTHY, SLOW]", "monitor: [HEALTHY, ALIVE]",
     "s.yaml: expect.windows[0].holds.monitor[1]: 'ALIVE' is not one of UNKNOWN, HEALTHY, CRASHED, PAUSED, "
     "PARTITIONED, RESTARTED, STOPPED, SLOW"),
    ("supervisor: [streaming]", "supervisor: streaming",
     "s.yaml: expect.windows[0].holds.supervisor: expected a list, got a string"),
    ("supervisor: [streaming]", "lock: [held]",
     "s.yaml: expect.windows[0].holds.lock: unknown key; expected one of truth, monitor, heartbeat_only, "
     "supervisor, phi, sender_clock"),
    ("p99_ms_min: 40", "p99_ms_min: -5", "s.yaml: expect.windows[0].p99_ms_min: must be 0 or more, got -5"),
    ("p99_ms_min: 40", "p99_ms_min: fast",
     "s.yaml: expect.windows[0].p99_ms_min: expected a number, got a string 'fast'"),
    ("phi: DEAD", "phi: SLOW", "s.yaml: expect.windows[1].phi: 'SLOW' is not one of ALIVE, DEAD"),
])
def test_bad_window_expectations_name_the_key(tmp_path, old, new, what):
    assert old in GRAY
    assert bad_scenario(tmp_path, GRAY.replace(old, new, 1)) == what


def test_the_gray_builtin_scenarios_load():
    lossy = scenario.resolve("scenario-lossy-heartbeats")
    assert lossy.timeline[0].do == "loss" and lossy.timeline[0].params == {"p": 0.4, "to": "monitor"}
    assert lossy.timeline[0].for_s == 10 and lossy.lab.heartbeat_only_timeout_ms == 600
    w = lossy.expect.windows[0]
    assert w.flaps == {"heartbeat_only": (2, None), "phi": (None, 1)} and w.holds == {"supervisor": ["streaming"]}
    one = scenario.resolve("one-way")
    assert (one.timeline[0].do, one.timeline[0].target, one.timeline[0].params) == ("oneway", "worker",
                                                                                    {"to": "monitor"})
    assert one.expect.windows[0].truth == "ONEWAY"
    gray = scenario.resolve("gray-worker")
    assert gray.timeline[0].params == {"percent": 80.0, "period_ms": 100.0}
    assert gray.expect.windows[0].p99_ms_min == 40
    assert gray.expect.windows[0].holds == {"monitor": ["HEALTHY", "SLOW"], "supervisor": ["streaming"]}
    names = {s.name for s in scenario.builtin()}
    assert {"scenario-lossy-heartbeats", "scenario-one-way", "scenario-gray-worker"} <= names


# ------------------------------------------------------------------ labctl fault NAME VALUE...


@pytest.mark.parametrize("fault, values, target, want", [
    ("loss", ["0.4"], "worker", ("worker", {"p": "0.4"})),
    ("loss", ["p=0.4", "to=supervisor"], "worker", ("worker", {"p": "0.4", "to": "supervisor"})),
    ("loss", ["0.4", "to=supervisor"], "monitor", ("monitor", {"p": "0.4", "to": "supervisor"})),
    ("slow", ["80", "period_ms=500"], "worker", ("worker", {"percent": "80", "period_ms": "500"})),
    ("slow", ["period_ms=500", "80"], "worker", ("worker", {"period_ms": "500", "percent": "80"})),
    ("oneway", ["worker", "monitor"], "worker", ("worker", {"to": "monitor"})),
    ("oneway", ["monitor", "worker"], "worker", ("monitor", {"to": "worker"})),
    ("oneway", ["to=supervisor"], "monitor", ("monitor", {"to": "supervisor"})),
    ("oneway", ["target=supervisor", "worker"], "worker", ("supervisor", {"to": "worker"})),
    ("loss", ["target=supervisor", "0.1"], "worker", ("supervisor", {"p": "0.1"})),
    ("pause", [], "monitor", ("monitor", {})),
])
def test_fault_values_positional_and_key_value(fault, values, target, want):
    assert cli.fault_settings(faults.get(fault), values, target) == want


@pytest.mark.parametrize("fault, values, what", [
    ("loss", ["0.4", "0.5"], "loss takes no more values, got '0.5'"),
    ("slow", ["percent=80", "90"], "slow takes no more values, got '90'"),
    ("pause", ["now"], "pause takes no more values, got 'now'"),
    ("oneway", ["worker", "monitor", "supervisor"], "oneway takes no more values, got 'supervisor'"),
    ("oneway", ["database", "monitor"], f"target 'database' is not one of {SERVICES}"),
    ("loss", ["target=db", "0.4"], f"target 'db' is not one of {SERVICES}"),
])
def test_fault_values_errors_are_usage(fault, values, what):
    with pytest.raises(LabError) as ei:
        cli.fault_settings(faults.get(fault), values, "worker")
    assert ei.value.code == ExitCode.USAGE and ei.value.what == what


def test_fault_values_then_settings_reject_a_bad_value():
    f = faults.get("loss")
    _, params = cli.fault_settings(f, ["1.5"], "worker")
    with pytest.raises(LabError) as ei:
        f.settings(params)
    assert ei.value.code == ExitCode.USAGE and ei.value.what == "p: must be between 0 and 1, got 1.5"
    assert f.settings(cli.fault_settings(f, ["0.4"], "worker")[1]) == {"p": 0.4, "to": "monitor"}


# ------------------------------------------------------------------ the checker on synthetic events


def mon(ts, verdict="HEALTHY", heartbeat_only="ALIVE", **kw):
    return {"ts": ts, "source": "monitor", "kind": "tick", "verdict": verdict, "heartbeat_only": heartbeat_only,
            **kw}


def phi(ts, suspect):
    return {"ts": ts, "source": "monitor", "kind": "tick", "verdict": "HEALTHY", "phi_suspect": suspect}


def sup(ts, state):
    return {"ts": ts, "source": "supervisor", "kind": "state", "state": state}


def lat(ts, p99, p50=1.0):
    return {"ts": ts, "source": "supervisor", "kind": "latency", "p50_ms": p50, "p99_ms": p99}


def rec(ts, phase, fault, target="worker", step=1, **kw):
    return {"ts": ts, "source": "labctl", "kind": "fault", "phase": phase, "fault": fault, "target": target,
            "step": step, **kw}


def start(ts, service="worker"):
    return {"ts": ts, "source": "engine", "kind": "container", "action": "start", "service": service}


def run_of(events, sc=None, end=100.0):
    return check.Run(sc or scenario.resolve("lossy-heartbeats"), events, Path("/nonexistent"), end)


WINDOW = (10.0, 20.0)


def test_holds_passes_when_only_allowed_words_are_said():
    # The PAUSED at 10.5 is inside `within` (the time to notice) and SLOW replaced it by 11.
    evs = [mon(9, "HEALTHY"), mon(10.5, "PAUSED"), mon(10.8, "SLOW"), mon(12, "HEALTHY"), mon(19, "SLOW"),
           mon(21, "CRASHED")]
    c = check._holds_check(run_of(evs), "n", "monitor", ["HEALTHY", "SLOW"], WINDOW, 1.0)
    assert (c.name, c.ok, c.detail) == ("n", True, "3 word(s), all HEALTHY or SLOW")


def test_holds_fails_naming_the_value_and_the_time():
    evs = [mon(9, "HEALTHY"), mon(12, "SLOW"), mon(15.5, "PAUSED"), mon(16, "HEALTHY"), mon(17, "PARTITIONED")]
    c = check._holds_check(run_of(evs), "n", "monitor", ["HEALTHY", "SLOW"], WINDOW, 1.0)
    assert not c.ok and c.detail == "said PAUSED 5.50 s into the window (2 time(s) in all)"
    # What was said before the window and still stands at start + within counts, at that moment.
    c = check._holds_check(run_of([mon(5, "PAUSED"), mon(14, "HEALTHY")]), "n", "monitor", ["HEALTHY"], WINDOW, 2.0)
    assert not c.ok and c.detail == "said PAUSED 2.00 s into the window (1 time(s) in all)"


def test_holds_fails_when_nothing_is_said():
    c = check._holds_check(run_of([sup(25, "streaming")]), "n", "supervisor", ["streaming"], WINDOW, 1.0)
    assert not c.ok and c.detail == "it said nothing in the window"


def test_holds_on_the_supervisor_and_phi():
    evs = [sup(1, "streaming"), phi(9, False), phi(12, False), phi(13, True)]
    c = check._holds_check(run_of(evs), "n", "supervisor", ["streaming"], WINDOW, 1.0)
    assert c.ok and c.detail == "1 word(s), all streaming"
    c = check._holds_check(run_of(evs), "n", "phi", ["ALIVE"], WINDOW, 1.0)
    assert not c.ok and c.detail == "said DEAD 3.00 s into the window (1 time(s) in all)"


def test_holds_on_the_truth_through_a_journaled_gray_fault():
    evs = [start(0), rec(10.0, "intent", "loss", params={"p": 0.4, "to": "monitor"}),
           rec(10.02, "applied", "loss", params={"p": 0.4, "to": "monitor"}),
           rec(20.0, "reverted", "loss-off", id="x-revert")]
    c = check._holds_check(run_of(evs), "n", "truth", ["DEGRADED"], runlog.fault_windows(evs, 100)[1], 5.0)
    assert c.ok, c.detail


def test_flaps_counts_turns_to_dead_inside_the_window_only():
    evs = [phi(5, True), phi(6, False),  # a DEAD before the window: not counted
           phi(9, True), phi(10, True), phi(11, True),  # DEAD at the start, continuing: not a turn
           phi(12, False), phi(13, True),  # 1
           phi(14, False), phi(15, True), phi(15.5, True),  # 2 (DEAD again while DEAD is not another turn)
           phi(16, False), phi(20, True),  # 3, at the window's end
           phi(21, False), phi(22, True)]  # after the window: not counted
    run = run_of(evs)
    c = check._flaps_check(run, "phi", 1, 3, WINDOW, "step 1 loss")
    assert (c.name, c.ok, c.detail) == ("step 1 loss: phi turns DEAD at least 1 and at most 3 time(s)", True,
                                        "3 time(s)")
    c = check._flaps_check(run, "phi", None, 2, WINDOW, "step 1 loss")
    assert (c.name, c.ok, c.detail) == ("step 1 loss: phi turns DEAD at most 2 time(s)", False, "3 time(s)")
    c = check._flaps_check(run, "phi", 4, None, WINDOW, "step 1 loss")
    assert (c.name, c.ok, c.detail) == ("step 1 loss: phi turns DEAD at least 4 time(s)", False, "3 time(s)")


def test_flaps_of_the_heartbeat_only_detector():
    evs = [mon(10, heartbeat_only="DEAD"),  # at the start exactly: the state before, not a turn
           mon(11, heartbeat_only="ALIVE"), mon(12, heartbeat_only="DEAD"), mon(13, heartbeat_only="ALIVE")]
    c = check._flaps_check(run_of(evs), "heartbeat_only", 2, None, WINDOW, "s")
    assert not c.ok and c.detail == "1 time(s)"
    c = check._flaps_check(run_of([mon(11)]), "heartbeat_only", None, 0, WINDOW, "s")
    assert c.ok and c.detail == "0 time(s)"


def test_p99_check():
    evs = [lat(9.5, 500), lat(15, 30), lat(20.5, 45), lat(22, 900)]  # only 15 and 20.5 (end + 1 s) count
    c = check._p99_check(run_of(evs), "n", 40, WINDOW)
    assert (c.ok, c.detail) == (True, "highest p99 45.0 ms in the window")
    c = check._p99_check(run_of(evs), "n", 50, WINDOW)
    assert (c.ok, c.detail) == (False, "highest p99 45.0 ms in the window")
    c = check._p99_check(run_of([lat(5, 80), lat(30, 80), sup(12, "streaming")]), "n", 1, WINDOW)
    assert (c.ok, c.detail) == (False, "no latency reported in the window")


def test_judge_windows_reads_holds_flaps_and_p99(tmp_path):
    sc = scenario.load(write(tmp_path, GRAY))
    evs = [start(0), sup(1, "streaming"), mon(1), phi(1, False),
           rec(2.0, "intent", "loss", params={"p": 0.4, "to": "monitor"}),
           rec(2.01, "applied", "loss", params={"p": 0.4, "to": "monitor"}),
           mon(3, "SLOW", "DEAD"), mon(4, "SLOW", "ALIVE"), mon(5, "HEALTHY", "DEAD"), lat(6, 55),
           phi(6, True), phi(7, False),
           rec(12.0, "reverted", "loss-off", id="a-revert")]
    by = {c.name: c for c in check.judge_windows(run_of(evs, sc))}
    assert by["step 1 loss: supervisor says only streaming"].ok
    assert by["step 1 loss: monitor says only HEALTHY, SLOW"].ok
    assert by["step 1 loss: heartbeat_only turns DEAD at least 2 time(s)"].ok
    assert by["step 1 loss: phi turns DEAD at most 1 time(s)"].ok
    p99 = by["step 1 loss: supervisor's p99 round trip reaches 40 ms"]
    assert p99.ok and p99.detail == "highest p99 55.0 ms in the window"
    assert by["step 1 loss: truth says DEGRADED"].ok
    # Steps 2 and 3 never ran.
    assert not by["step 3 (oneway)"].ok and by["step 3 (oneway)"].detail == "the fault was never applied"


def test_observed_phi_from_the_monitors_phi_suspect():
    evs = [phi(1, False), mon(2), phi(3, True), {**phi(4, 0), "kind": "verdict"},
           {"ts": 5, "source": "supervisor", "kind": "state", "state": "streaming", "phi_suspect": True}]
    assert runlog.observed(evs, states.PHI) == [(1, "ALIVE"), (3, "DEAD"), (4, "ALIVE")]


def test_truth_of_journaled_gray_faults():
    evs = [start(0),
           rec(10, "intent", "loss"), rec(10.01, "applied", "loss", params={"p": 0.4, "to": "monitor"}),
           rec(20, "reverted", "loss-off"),
           rec(30, "applied", "oneway", params={"to": "monitor"}), rec(40, "reverted", "oneway-off"),
           rec(50, "applied", "oneway", target="supervisor", params={"to": "worker"}),
           rec(55, "reverted", "oneway-off", target="supervisor"),
           rec(60, "applied", "slow", params={"percent": 80.0, "period_ms": 100.0}),
           rec(65, "failed", "slow-off"),  # neither applied nor reverted: no change
           rec(70, "reverted", "slow-off"),
           start(80, "monitor")]
    assert runlog.truth_timeline(evs) == [(0, "RUNNING"), (10.01, "DEGRADED"), (20, "RUNNING"), (30, "ONEWAY"),
                                          (40, "RUNNING"), (60, "DEGRADED"), (70, "RUNNING")]
    # The supervisor's own timeline sees its oneway; the worker's never did.
    assert runlog.truth_timeline(evs, "supervisor") == [(50, "ONEWAY"), (55, "RUNNING")]


def test_an_inverse_undoes_only_the_state_its_fault_made():
    # loss-off while the worker is ONEWAY is not the end of the oneway.
    evs = [start(0), rec(1, "applied", "oneway"), rec(2, "reverted", "loss-off"), rec(3, "reverted", "oneway-off")]
    assert runlog.truth_timeline(evs) == [(0, "RUNNING"), (1, "ONEWAY"), (3, "RUNNING")]


def test_fault_names_show_settings():
    evs = [rec(1, "intent", "loss", step=1, params={"p": 0.4, "to": "monitor"}),
           rec(1.1, "applied", "loss", step=1, params={"p": 0.4, "to": "monitor"}),
           rec(2, "intent", "slow", step=2, params={"percent": 80.0, "period_ms": 100.0}),
           rec(3, "intent", "oneway", step=3, target="monitor", params={"to": "worker"}),
           rec(4, "intent", "pause", step=4),
           rec(5, "intent", "loss", step=None, params={"p": 0.1})]
    assert runlog.fault_names(evs) == {1: "loss p=0.4 to=monitor", 2: "slow percent=80 period_ms=100",
                                       3: "oneway to=worker", 4: "pause"}


def test_latencies_are_the_supervisors_latency_events():
    evs = [lat(1, 12, 2), sup(2, "streaming"), {**lat(3, 5), "source": "monitor"}, lat(4, "7.5", "1")]
    assert runlog.latencies(evs) == [(1, 2.0, 12.0), (4, 1.0, 7.5)]


def test_gray_truths_agree_with_alive_verdicts_only():
    assert check.AGREES["DEGRADED"] >= {"HEALTHY", "SLOW"}
    assert not check.AGREES["DEGRADED"] & {"CRASHED", "PAUSED", "PARTITIONED", "STOPPED"}
    assert check.AGREES["ONEWAY"] >= {"PARTITIONED", "HEALTHY", "SLOW"}
    assert not check.AGREES["ONEWAY"] & {"CRASHED", "PAUSED", "STOPPED"}
    truth = [(0.0, "RUNNING"), (10.0, "DEGRADED")]
    ok = check.agreement([(15.0, "SLOW"), (16.0, "HEALTHY")], truth, 0.2, 2.0)
    assert ok.ok
    bad = check.agreement([(15.0, "PAUSED")], truth, 0.2, 2.0)
    assert not bad.ok and bad.detail == "1 tick(s) disagree; first: PAUSED while the worker was DEGRADED (at 15.0)"


# ------------------------------------------------------------------ journaled apply and revert


class FakeEngine:
    name = "fake"

    def inspect(self, name):
        return ContainerState("id", name, "running", None, 0, 10, {}, [])


@pytest.fixture
def seen_targets(tmp_path, monkeypatch):
    """The Target each gray mechanism is given, by fault name; no helper runs."""
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    monkeypatch.setattr(faults, "RETRY_WAIT", wait_none())
    monkeypatch.setattr(faults, "REACH_S", 0.3)
    monkeypatch.setattr(faults, "REACH_POLL_S", 0.02)
    got: list[tuple[str, faults.Target]] = []
    for cls in (faults.NetRule, faults.NetRuleOff, faults.DutyCycle, faults.DutyCycleOff):
        monkeypatch.setattr(cls, "apply", lambda self, engine, t: got.append((self.name, t)))
    monkeypatch.setattr(faults.DutyCycle, "reached", lambda self, engine, t: None)
    return got


def test_apply_journals_the_settings_with_defaults_and_revert_gets_them(seen_targets):
    intent = faults.apply(FakeEngine(), "l1", "loss", "worker", step=1, params={"p": "0.4"})
    assert intent["params"] == {"p": 0.4, "to": "monitor"}
    assert (intent["phase"], intent["fault"], intent["inverse"], intent["engine"]) == (
        "intent", "loss", "loss-off", "fake")
    assert intent["id"].endswith("-loss")
    recs = journal.read("l1")
    assert [r["phase"] for r in recs] == ["intent", "applied"]
    assert all(r["params"] == {"p": 0.4, "to": "monitor"} and r["id"] == intent["id"] for r in recs)
    assert seen_targets == [("loss", faults.Target("l1", "worker", {"p": 0.4, "to": "monitor"}, intent["id"]))]
    assert seen_targets[0][1].params == {"p": 0.4, "to": "monitor"}  # params do not take part in ==

    faults.revert(FakeEngine(), "l1", journal.read("l1")[0])
    name, t = seen_targets[-1]
    assert name == "loss-off"
    assert (t.lab_id, t.service, t.params, t.fault_id) == ("l1", "worker", {"p": 0.4, "to": "monitor"},
                                                           intent["id"])
    last = journal.read("l1")[-1]
    assert (last["phase"], last["fault"], last["of"], last["id"]) == ("reverted", "loss-off", intent["id"],
                                                                      intent["id"] + "-revert")
    assert journal.pending("l1") == []


def test_slow_and_oneway_through_apply_and_revert(seen_targets):
    slow = faults.apply(FakeEngine(), "l1", "slow", "worker", step=2, params={"percent": 80})
    oneway = faults.apply(FakeEngine(), "l1", "oneway", "monitor", params={"to": "worker"})
    assert slow["params"] == {"percent": 80.0, "period_ms": 100.0} and oneway["params"] == {"to": "worker"}
    assert [p["id"] for p in journal.pending("l1")] == [oneway["id"], slow["id"]]
    for intent in journal.pending("l1"):
        faults.revert(FakeEngine(), "l1", intent)
    assert [(n, t.service, t.params, t.fault_id) for n, t in seen_targets] == [
        ("slow", "worker", {"percent": 80.0, "period_ms": 100.0}, slow["id"]),
        ("oneway", "monitor", {"to": "worker"}, oneway["id"]),
        ("oneway-off", "monitor", {"to": "worker"}, oneway["id"]),
        ("slow-off", "worker", {"percent": 80.0, "period_ms": 100.0}, slow["id"]),
    ]
    assert journal.pending("l1") == []


def test_a_fault_without_settings_journals_none(seen_targets):
    class Pausable(FakeEngine):
        def pause(self, name):
            self.paused = True

        def inspect(self, name):
            return ContainerState("id", name, "paused", None, 0, 10, {}, [])

    intent = faults.apply(Pausable(), "l1", "pause", "worker")
    assert "params" not in intent and all("params" not in r for r in journal.read("l1"))


def test_bad_settings_fail_before_anything_is_journaled(seen_targets):
    with pytest.raises(LabError) as ei:
        faults.apply(FakeEngine(), "l1", "loss", "worker", params={"p": 1.5})
    assert ei.value.code == ExitCode.USAGE and ei.value.what == "p: must be between 0 and 1, got 1.5"
    with pytest.raises(LabError) as ei:
        faults.apply(FakeEngine(), "l1", "pause", "worker", params={"p": 0.5})
    assert ei.value.what == "p: pause takes no 'p'"
    assert journal.read("l1") == [] and seen_targets == []


def test_loss_adds_a_tagged_udp_rule_with_its_probability(tmp_path, monkeypatch):
    """The real NetRule.apply against a fake engine and a fake helper run."""
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    calls = []

    class Eng(FakeEngine):
        def address(self, name, network):
            calls.append(("address", name, network))
            return "10.9.0.3"

    def run_in_network(engine, lab_id, fault_id, target, script, args):
        calls.append(("run", lab_id, fault_id, target, script, args))
        return f'-A OUTPUT -m comment --comment "{args[0]}" -j DROP'

    monkeypatch.setattr(faults.sidecar, "run_in_network", run_in_network)
    t = faults.Target("l1", "worker", {"p": 0.4, "to": "monitor"}, "f1-loss")
    faults.get("loss").apply(Eng(), t)
    assert calls == [("address", "labctl-l1-monitor", "labctl-l1-net"),
                     ("run", "l1", "f1-loss", "labctl-l1-proxy", faults.sidecar.ADD_RULE,
                      ["labctl:l1:f1-loss", "-p", "udp", "-d", "10.9.0.3", "-m", "statistic", "--mode", "random",
                       "--probability", "0.4000"])]
    calls.clear()
    faults.get("oneway").apply(Eng(), faults.Target("l1", "worker", {"to": "supervisor"}, "f2-oneway"))
    assert calls[-1][-1] == ["labctl:l1:f2-oneway", "-d", "10.9.0.3"]
    with pytest.raises(LabError) as ei:
        faults.get("oneway").apply(Eng(), faults.Target("l1", "worker", {"to": "worker"}, "f3-oneway"))
    assert ei.value.code == ExitCode.USAGE and ei.value.what == "oneway: worker to itself"


def test_a_rule_fault_is_timed_from_the_helpers_stamp_not_from_the_intent(tmp_path, monkeypatch):
    """A helper container can take a second to start on a loaded engine: the
    window (and the checker's time limits) start when the rule went in."""
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    assert faults.sidecar.stamp("x\nlabctl-stamp 1796029905.021 \n-A OUTPUT") == 1796029905.021
    assert faults.sidecar.stamp("-A OUTPUT") is None and faults.sidecar.stamp("labctl-stamp soon") is None
    assert "date +%s.%N" in faults.sidecar.ADD_RULE
    stamped = []

    class Eng(FakeEngine):
        def address(self, name, network):
            return "10.9.0.3"

    def run_in_network(engine, lab_id, fault_id, target, script, args):
        stamped.append(time.time() + 1.5)  # the rule went in 1.5 s after the ask
        return f'labctl-stamp {stamped[-1]:.6f}\n-A OUTPUT -m comment --comment "{args[0]}" -j DROP'

    monkeypatch.setattr(faults.sidecar, "run_in_network", run_in_network)
    monkeypatch.setattr(faults, "confirm", lambda *a: None)
    faults.apply(Eng(), "l1", "oneway", "worker", step=1, params={"to": "monitor"})
    recs = journal.read("l1")
    assert recs[-1]["phase"] == "applied" and recs[-1]["from_ts"] == pytest.approx(stamped[0], abs=1e-5)
    events = [{"source": "labctl", "kind": "fault", **r} for r in recs]
    assert runlog.fault_windows(events, run_end=recs[-1]["ts"] + 60)[1][0] == pytest.approx(stamped[0], abs=1e-5)


def test_a_oneway_to_its_own_target_and_empty_or_crossed_flaps_are_refused(tmp_path):
    base = "name: s\nlesson: l\ntimeline:\n  - {at: 1, do: oneway, target: worker, to: TO, for: 2}\n"
    with pytest.raises(LabError) as ei:
        scenario.load(write(tmp_path, base.replace("TO", "worker")))
    assert ei.value.code == ExitCode.BAD_SCENARIO
    assert ei.value.what == "s.yaml: timeline[0].to: is the target itself (worker); name another service"
    ok = base.replace("TO", "monitor")
    for flaps, msg in (("{}", "expect.windows[0].flaps.phi: give min, max or both"),
                       ("{min: 3, max: 1}", "expect.windows[0].flaps.phi.min: is more than max (1)")):
        text = ok + f"expect:\n  windows:\n    - {{step: 1, flaps: {{phi: {flaps}}}}}\n"
        with pytest.raises(LabError) as ei:
            scenario.load(write(tmp_path, text))
        assert ei.value.what == f"s.yaml: {msg}"


def test_the_checker_knows_how_long_the_monitor_judges_slow_over():
    from helpers import MONITOR, load_program

    mon = load_program("monitor", MONITOR)
    assert (check.SLOW_BEATS, check.SLOW_WINDOW_S * 1000, check.SLOW_HOLD_S) == (
        mon.RECENT_BEATS, mon.RECENT_MS, mon.SLOW_HOLD_S)


def test_slow_lingering_after_a_gray_fault_agrees_but_not_after_a_clean_run():
    truth = [(0.0, "RUNNING"), (10.0, "DEGRADED"), (20.0, "RUNNING")]
    mon = [(5.0, "HEALTHY"), (15.0, "SLOW"), (24.0, "SLOW"), (40.0, "HEALTHY")]
    assert check.agreement(mon, truth, 0.2, 2.0).ok
    late = mon + [(27.0, "SLOW")]  # 7 s after: past 25 beats of 0.2 s, the hold and the slack
    c = check.agreement(sorted(late), truth, 0.2, 2.0)
    assert not c.ok and c.detail.startswith("1 tick(s) disagree; first: SLOW while the worker was RUNNING")
    clean = [(0.0, "RUNNING")]
    assert not check.agreement([(15.0, "SLOW")], clean, 0.2, 2.0).ok


def test_a_lock_fact_may_run_ahead_of_the_engine_by_the_grace_but_a_silence_may_not():
    truth = [(0.0, "RUNNING"), (21.5, "STOPPED")]
    # The worker removed its lock at 20.0; under load the engine reaped it 1.5 s later.
    assert check.agreement([(5.0, "HEALTHY"), (20.0, "STOPPED")], truth, 0.2, 2.0).ok
    c = check.agreement([(5.0, "HEALTHY"), (20.0, "PAUSED")], [(0.0, "RUNNING"), (21.5, "PAUSED")], 0.2, 2.0)
    assert not c.ok and "PAUSED while the worker was RUNNING" in c.detail
    # Further ahead than the grace is a contradiction again.
    assert not check.agreement([(5.0, "HEALTHY"), (17.0, "STOPPED")], truth, 0.2, 2.0).ok


def test_the_truth_keeps_what_outlasts_a_restart_and_each_fault_until_its_own_undoing():
    def j(ts, phase, fault, id_, of=None, target="worker"):
        return {"ts": ts, "source": "labctl", "kind": "fault", "phase": phase, "fault": fault, "id": id_,
                "target": target, **({"of": of} if of else {})}

    def eng(ts, kind, action, service="worker", **kw):
        return {"ts": ts, "source": "engine", "kind": kind, "action": action, "service": service, **kw}

    evs = [eng(1, "container", "start"),
           j(2, "applied", "latency", "L"), j(3, "applied", "delay", "D"),
           j(4, "reverted", "latency-off", "L-revert", of="L"),  # the delay is still on
           eng(5, "container", "die", exit_code=137), eng(6, "container", "start"),  # it outlives the restart
           j(7, "applied", "sigstop", "S"),
           eng(8, "container", "die", exit_code=137), eng(9, "container", "start"),  # the stop died with the process
           eng(10, "network", "disconnect", service="proxy"),  # the worker's namespace owner cut off
           eng(11, "container", "die", exit_code=137), eng(12, "container", "start"),  # still cut off
           eng(13, "network", "connect", service="proxy"),
           j(14, "reverted", "delay-off", "D-revert", of="D")]
    assert runlog.truth_timeline(evs) == [
        (1, "RUNNING"), (2, "DEGRADED"), (5, "CRASHED"), (6, "DEGRADED"), (7, "SIGSTOPPED"), (8, "CRASHED"),
        (9, "DEGRADED"), (10, "PARTITIONED"), (11, "CRASHED"), (12, "PARTITIONED"), (13, "DEGRADED"),
        (14, "RUNNING")]
    # A sigcont by hand, with nothing naming the sigstop, ends it too.
    evs = [eng(1, "container", "start"), j(2, "applied", "sigstop", "S"), j(3, "applied", "sigcont", "C")]
    assert runlog.truth_timeline(evs) == [(1, "RUNNING"), (2, "SIGSTOPPED"), (3, "RUNNING")]


def test_a_gray_fault_that_fails_part_way_is_undone_and_revert_pending_tries_them_all(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    calls: list[str] = []

    def half_then_fail(self, engine, t):
        calls.append(f"{self.name} {t.fault_id}")
        raise LabError(ExitCode.ENGINE_ERROR, "the helper started, then the check failed")

    def off(self, engine, t):
        calls.append(f"{self.name} of {t.fault_id}")

    monkeypatch.setattr(faults.DutyCycle, "apply", half_then_fail)
    monkeypatch.setattr(faults.DutyCycleOff, "apply", off)
    with pytest.raises(LabError):
        faults.apply(object(), "l1", "slow", "worker", params={"percent": 50})
    fid = calls[0].split()[1]
    assert calls == [f"slow {fid}", f"slow-off of {fid}"], "its inverse ran at once"
    phases = [(r["fault"], r["phase"]) for r in journal.read("l1")]
    assert phases == [("slow", "intent"), ("slow", "failed"), ("slow-off", "reverted")], phases
    # A pause that fails is not "undone" by an unpause nobody asked for.
    monkeypatch.setattr(faults.Freezer, "apply", half_then_fail)
    calls.clear()
    with pytest.raises(LabError):
        faults.apply(object(), "l1", "pause", "worker")
    assert calls == [calls[0]] and calls[0].startswith("pause ")
    # revert_pending: one revert failing does not leave the next in force.
    for fid, fault, inverse in (("a", "loss", "loss-off"), ("b", "slow", "slow-off")):
        journal.append("l1", {"id": fid, "phase": "intent", "fault": fault, "target": "worker", "inverse": inverse})
        journal.append("l1", {"id": fid, "phase": "applied", "fault": fault, "target": "worker", "inverse": inverse})
    monkeypatch.setattr(faults.NetRuleOff, "apply", half_then_fail)
    calls.clear()
    with pytest.raises(LabError, match="then the check failed"):
        faults.revert_pending(object(), "l1")
    assert sorted(c.split()[0] for c in calls) == ["loss-off", "slow-off"]
