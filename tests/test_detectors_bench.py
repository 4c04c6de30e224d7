"""The pure parts of bench/detectors.py: the emulated probes' state machines
and schedules, and the scores from a synthetic run's events. No Docker."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_detectors", ROOT / "bench" / "detectors.py")
assert _spec and _spec.loader
det = importlib.util.module_from_spec(_spec)
sys.modules["bench_detectors"] = det
_spec.loader.exec_module(det)

DOCKER_DEFAULT = det.Probe("docker", 30.0, 30.0, 3)
DOCKER_TUNED = det.Probe("docker", 1.0, 1.0, 3)
K8S = det.Probe("k8s", 10.0, 1.0, 3)
ALIVE, DEAD = det.ALIVE, det.DEAD


def probes(*spec: tuple[float, float, bool]) -> list:
    return [det.ProbeResult(start, dur, ok) for start, dur, ok in spec]


def first_dead(verdicts: list) -> float | None:
    return next((ts for ts, v in verdicts if v == DEAD), None)


# ----------------------------------------------------------------------- Docker HEALTHCHECK


def test_docker_starting_until_first_result_then_healthy():
    v = det.probe_verdicts(probes((30, 0.01, True), (60.01, 0.01, True)), DOCKER_DEFAULT)
    assert [s for _, s in v] == [ALIVE, ALIVE]
    v = det.probe_verdicts(probes((30, 0.01, False)), DOCKER_DEFAULT)
    assert [s for _, s in v] == [None]  # one failure of three: still starting


def test_docker_unhealthy_after_retries_consecutive_failures():
    ps = probes((0, 0.1, True), (10, 0.1, False), (20, 0.1, False), (30, 0.1, False))
    v = det.probe_verdicts(ps, DOCKER_TUNED)
    assert [s for _, s in v] == [ALIVE, ALIVE, ALIVE, DEAD]
    assert first_dead(v) == pytest.approx(30.1)


def test_docker_success_resets_the_count():
    ps = probes((0, 0.1, False), (2, 0.1, False), (4, 0.1, True), (6, 0.1, False), (8, 0.1, False))
    v = det.probe_verdicts(ps, DOCKER_TUNED)
    assert first_dead(v) is None
    v = det.probe_verdicts(ps + probes((10, 0.1, False)), DOCKER_TUNED)
    assert first_dead(v) == pytest.approx(10.1)


def test_docker_probe_longer_than_timeout_fails_at_the_timeout():
    # The connect succeeded, but after 1.5 s: past the tuned 1 s timeout, a failure, known at 1 s.
    ps = probes((0, 1.5, True), (2.5, 1.5, True), (5, 1.5, True))
    v = det.probe_verdicts(ps, DOCKER_TUNED)
    assert first_dead(v) == pytest.approx(6.0)
    # The same probes are fine under Docker's default 30 s timeout.
    assert first_dead(det.probe_verdicts(ps, DOCKER_DEFAULT)) is None
    assert [s for _, s in det.probe_verdicts(ps, DOCKER_DEFAULT)] == [ALIVE] * 3


def test_docker_schedule_waits_interval_after_the_end():
    r = det.ProbeResult(100.0, 0.4, True)
    assert det.docker_next_start(r, DOCKER_DEFAULT) == pytest.approx(130.4)
    slow = det.ProbeResult(100.0, 45.0, True)  # cut at the 30 s timeout
    assert det.docker_next_start(slow, DOCKER_DEFAULT) == pytest.approx(160.0)


def test_docker_defaults_detect_an_immediate_fault_in_60_to_90_s():
    """Probes that fail at once from the fault on: at most 3 intervals, at least 2."""
    for phase in (0.0, 10.0, 29.9):
        ps, t, fault = [], phase, 50.0
        while t < 300:
            r = det.ProbeResult(t, 0.05, t < fault)
            ps.append(r)
            t = det.docker_next_start(r, DOCKER_DEFAULT)
        dead = first_dead(det.probe_verdicts(ps, DOCKER_DEFAULT))
        assert dead is not None and 60 <= dead - fault <= 90.2


# ----------------------------------------------------------------------- Kubernetes liveness


def test_k8s_liveness_is_success_until_failure_threshold():
    ps = probes((0, 0.01, False), (10, 0.01, False))
    assert [s for _, s in det.probe_verdicts(ps, K8S)] == [ALIVE, ALIVE]
    v = det.probe_verdicts(ps + probes((20, 0.01, False)), K8S)
    assert first_dead(v) == pytest.approx(20.01)


def test_k8s_timeout_is_one_second():
    ps = probes((0, 1.2, True), (10, 1.2, True), (20, 1.2, True))
    v = det.probe_verdicts(ps, K8S)
    assert first_dead(v) == pytest.approx(21.0)  # the third probe, cut at its 1 s timeout
    ok = probes((0, 0.9, True), (10, 0.9, True), (20, 0.9, True))
    assert first_dead(det.probe_verdicts(ok, K8S)) is None


def test_k8s_ticker_is_start_to_start_and_skips_missed_ticks():
    assert det.k8s_next_start(100.0, K8S, now=100.5) == pytest.approx(110.0)
    assert det.k8s_next_start(100.0, K8S, now=125.0) == pytest.approx(130.0)


# ----------------------------------------------------------------------- the scores


def ev(ts, source, kind, **kw):
    return {"ts": ts, "source": source, "kind": kind, **kw}


def tick(ts, verdict, hb="ALIVE", phi=False):
    return ev(ts, "monitor", "tick", verdict=verdict, heartbeat_only=hb, phi_suspect=phi)


def journal(fault, start, end, from_ts=None):
    out = [ev(start, "labctl", "fault", id="f1", fault=fault, phase="intent"),
           ev(start + 0.05, "labctl", "fault", id="f1", fault=fault, phase="applied",
              **({"from_ts": from_ts} if from_ts else {}))]
    if end is not None:
        out.append(ev(end, "labctl", "fault", id="f1-revert", of="f1", fault="x", phase="reverted"))
    return out


def test_fault_window_from_the_journal():
    w = det.fault_window(journal("pause", 10.0, 30.0))
    assert (w.fault, w.start, w.end) == ("pause", 10.0, 30.0)
    w = det.fault_window(journal("pause", 10.0, 30.0, from_ts=11.5))
    assert w.start == 11.5
    assert det.fault_window(journal("kill", 10.0, None)).end is None
    assert det.fault_window([tick(1, "HEALTHY")]) is None


def pause_run():
    return [tick(9.8, "HEALTHY"), *journal("pause", 10.0, 30.0),
            tick(10.2, "HEALTHY"), tick(11.0, "HEALTHY", hb="DEAD"), tick(11.4, "HEALTHY", hb="DEAD", phi=True),
            tick(11.8, "PARTITIONED", "DEAD", True), tick(12.0, "PAUSED", "DEAD", True),
            tick(20.0, "PAUSED", "ALIVE", True), tick(20.2, "PAUSED", "DEAD", True),
            tick(30.4, "HEALTHY"), tick(31.0, "CRASHED")]


def test_scores_of_a_pause():
    events = pause_run()
    w = det.fault_window(events)
    mon = det.score(det.monitor_verdicts(events, "verdict"), "pause", w.start, w.end, False)
    assert mon.time_to_right_s == pytest.approx(2.0)
    assert mon.wrong == 1 and mon.wrong_said[0].startswith("PARTITIONED")  # after the window: not counted
    hb = det.score(det.monitor_verdicts(events, "heartbeat_only"), "pause", w.start, w.end, True)
    assert hb.time_to_right_s == pytest.approx(1.0)
    assert hb.wrong == 1  # the flap back to ALIVE at 20.0
    phi = det.score(det.monitor_verdicts(events, "phi"), "pause", w.start, w.end, True)
    assert phi.time_to_right_s == pytest.approx(1.4) and phi.wrong == 0


def test_scores_of_a_slow_worker():
    events = [tick(9.0, "HEALTHY"), *journal("slow", 10.0, 30.0), tick(12.0, "SLOW"), tick(14.0, "HEALTHY"),
              tick(15.0, "PAUSED", hb="DEAD"), tick(15.2, "SLOW"), tick(16.0, "SLOW", hb="DEAD"),
              tick(16.4, "SLOW")]
    w = det.fault_window(events)
    mon = det.score(det.monitor_verdicts(events, "verdict"), "slow", w.start, w.end, False)
    assert mon.time_to_right_s == 0.0 and mon.first_slow_s == pytest.approx(2.0)
    assert mon.wrong == 1 and mon.wrong_said == ["PAUSED@5.0s"]
    hb = det.score(det.monitor_verdicts(events, "heartbeat_only"), "slow", w.start, w.end, True)
    assert hb.time_to_right_s == 0.0 and hb.wrong == 2


def test_a_detector_never_right_and_a_probe_detector_score():
    ps = probes((5.0, 0.01, True), (15.0, 0.01, True), (25.0, 0.01, True))  # a tcpSocket probe through a pause
    s = det.score(det.probe_verdicts(ps, K8S), "pause", 10.0, 30.0, True)
    assert s.time_to_right_s is None and s.wrong == 0
    failing = probes((5.0, 0.01, True), (15.0, 0.01, False), (25.0, 0.01, False), (35.0, 0.01, False))
    s = det.score(det.probe_verdicts(failing, K8S), "crash", 10.0, 40.0, True)
    assert s.time_to_right_s == pytest.approx(25.01)
    # On a slow worker, a probe that turns unhealthy is wrong.
    s = det.score(det.probe_verdicts(failing, K8S), "slow", 10.0, 40.0, True)
    assert s.time_to_right_s == 0.0 and s.wrong == 1
    # Staying unhealthy probe after probe is one wrong verdict, not one per probe.
    more = failing + probes((45.0, 0.01, False), (55.0, 0.01, False))
    s = det.score(det.probe_verdicts(more, K8S), "slow", 10.0, 60.0, True)
    assert s.wrong == 1 and s.wrong_said == ["DEAD@25.0s"]


def test_the_verdict_at_the_faults_start_counts_and_later_ones_do_not():
    v = [(5.0, ALIVE), (10.0, DEAD), (20.0, ALIVE), (30.0, DEAD)]
    s = det.score(v, "crash", 10.0, 25.0, True)
    assert s.time_to_right_s == 0.0 and s.wrong == 1  # the flap at 20; 30 is past the end
    s = det.score(v, "slow", 10.0, 25.0, True)
    assert s.time_to_right_s == pytest.approx(10.0) and s.wrong_said == ["DEAD@0.0s"]


def test_scores_of_from_events_and_probes_and_the_table():
    events = pause_run()
    ok = probes((9.0, 0.01, True), (19.0, 0.01, True), (29.0, 0.01, True))
    scores, w = det.scores_of(events, {"docker-default": ok, "docker-tuned": ok, "k8s-liveness": ok}, "pause", 100)
    assert w.start == 10.0 and w.intent == 10.0
    assert scores["monitor"].time_to_right_s == pytest.approx(2.0)
    assert scores["k8s-liveness"].time_to_right_s is None
    text = det.table({"pause": scores}, 100)
    assert text.count("\n") == 2
    assert "| pause | 2.00 s; 1 wrong (PARTITIONED@1.8s) |" in text
    assert "never (> 100 s)" in text
    assert "1.00 s (0.5x)" in text  # heartbeat-only against the baseline


def test_scenario_outlives_the_fault():
    import json
    doc = json.loads(det.scenario_yaml("slow", 100, 6))
    step = doc["timeline"][0]
    assert step == {"at": det.FAULT_AT_S, "do": "slow", "for": 100, "percent": 80}
    assert doc["duration_s"] == det.FAULT_AT_S + 106
    assert doc["lab"]["items"] / doc["lab"]["rate"] > doc["duration_s"]
    assert doc["lab"]["give_up_s"] > 100
    assert json.loads(det.scenario_yaml("crash", 100, 6))["timeline"][0]["do"] == "kill"


def test_scenario_parses_with_labctl(tmp_path):
    from labctl import scenario
    for f in det.FAULTS:
        p = tmp_path / f"{f}.yaml"
        p.write_text(det.scenario_yaml(f, 100, 6))
        sc = scenario.parse(__import__("yaml").safe_load(p.read_text()), p)
        assert sc.timeline[0].for_s == 100 and sc.duration_s == det.FAULT_AT_S + 106


def test_plot_writes_a_png(tmp_path):
    events = pause_run()
    scores, _ = det.scores_of(events, {}, "pause", 100)
    det.plot({"pause": scores}, 100, tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_cell_says_what_a_slow_worker_got():
    S = det.Score
    assert det.cell(S(0.0, 0), "slow", None, 100, "k8s-liveness") == "right from the start; 0 wrong"
    assert det.cell(S(24.3, 0), "slow", None, 100, "docker-default").startswith("first verdict at 24.30 s")
    assert det.cell(S(0.0, 1, ["DEAD@3.0s"]), "slow", None, 100, "phi") == "right at the start; 1 wrong (DEAD@3.0s)"
    assert det.cell(S(0.0, 0, first_slow_s=2.5), "slow", None, 100, "monitor") == \
        "right from the start (SLOW at 2.5 s); 0 wrong"
    assert det.cell(S(None, 0), "pause", S(1.0, 0), 130, "k8s-liveness") == "never (> 130 s); 0 wrong"
    assert det.cell(S(30.0, 0), "crash", S(1.0, 0), 130, "k8s-liveness") == "30.00 s (30x); 0 wrong"


def test_the_window_closes_when_the_revert_begins_not_when_it_is_recorded():
    # The unpause took 0.5 s: the monitor said HEALTHY before `reverted` was written.
    events = [tick(9.0, "HEALTHY"), *journal("pause", 10.0, 30.5), tick(12.0, "PAUSED"), tick(30.2, "HEALTHY")]
    scores, w = det.scores_of(events, {}, "pause", 20.0)
    assert w.end == 30.5
    assert scores["monitor"].time_to_right_s == pytest.approx(2.0) and scores["monitor"].wrong == 0
    scores, _ = det.scores_of(events, {}, "pause", 25.0)  # a longer window would count it
    assert scores["monitor"].wrong == 1
