"""bench/tune_detectors.py's replay, on synthetic heartbeats (no engine)."""
from __future__ import annotations

import importlib.util
import sys

import pytest
import yaml

from helpers import ROOT

spec = importlib.util.spec_from_file_location("tune_detectors", ROOT / "bench" / "tune_detectors.py")
assert spec and spec.loader
tune = importlib.util.module_from_spec(spec)
sys.modules["tune_detectors"] = tune  # its dataclasses look their module up there
spec.loader.exec_module(tune)
MON = tune.monitor_module()


def regular(n: int, every: float = 0.2, t0: float = 1000.0) -> list[float]:
    return [t0 + i * every for i in range(n)]


def test_a_fixed_timeout_counts_each_long_gap_once_and_detects_after_the_last_beat():
    beats = regular(50)  # 10 s
    beats = beats + [beats[-1] + 0.7 + 0.2 * i for i in range(20)]  # one 0.7 s gap, well after the warm-up
    t = tune.Trace("x", beats, killed=beats[-1] + 0.05)
    half, one = tune.replay_timeout(t, 0.5), tune.replay_timeout(t, 1.0)
    assert (half.false_alarms, one.false_alarms) == (1, 0)
    assert half.detect_s == pytest.approx(0.45) and one.detect_s == pytest.approx(0.95)
    assert half.alive_s == pytest.approx(beats[-1] - beats[0] - tune.WARMUP_S)


def test_gaps_in_the_warm_up_are_not_judged():
    beats = [1000.0, 1001.0] + regular(40, t0=1001.2)  # a 1 s gap in the first seconds
    t = tune.Trace("x", beats, killed=beats[-1])
    assert tune.replay_timeout(t, 0.5).false_alarms == 0


def test_phi_rides_out_what_it_has_learnt_and_a_lower_threshold_is_sooner():
    beats = regular(100)
    t = tune.Trace("x", beats, killed=beats[-1] + 0.01)
    outs = {f: tune.replay_phi(t, f, MON) for f in (1.0, 8.0, 12.0)}
    assert all(o.false_alarms == 0 for o in outs.values())
    assert outs[1.0].detect_s < outs[8.0].detect_s < outs[12.0].detect_s
    # With 200 ms beats and sigma floored at 100 ms, phi crosses 8 after about 760 ms of silence.
    assert 0.6 < outs[8.0].detect_s < 0.9


def test_phi_counts_a_gap_it_could_not_expect():
    beats = regular(60)
    beats = beats + [beats[-1] + 3.0 + 0.2 * i for i in range(10)]
    t = tune.Trace("x", beats, killed=beats[-1])
    assert tune.replay_phi(t, 8.0, MON).false_alarms == 1


def test_each_level_is_a_valid_scenario_that_kills_after_the_healthy_part(tmp_path):
    from labctl import scenario

    for level in tune.LEVELS:
        p = tmp_path / f"{level}.yaml"
        p.write_text(tune.scenario_text(level, 30))
        sc = scenario.load(p)
        assert sc.lab.log_beats is True and sc.lab.items == 250 * 42
        assert [(s.do, s.at) for s in sc.timeline][-1] == ("kill", 31)
        assert len(sc.timeline) == (1 if tune.LEVELS[level] is None else 2)
        assert yaml.safe_load(p.read_text())["name"] == f"tune-{level}"


def test_the_table_names_each_detector_and_setting():
    t = tune.Trace("loss40", regular(60), killed=1011.9)
    text = tune.table({"loss40": tune.replay(t, MON)}, {"loss40": 60})
    assert "| loss40 (60 beats) | timeout | 0.5 s |" in text and "| loss40 (60 beats) | phi | phi >= 12 |" in text
    assert text.count("\n") == 1 + len(tune.TIMEOUTS_S) + len(tune.PHI_THRESHOLDS)
