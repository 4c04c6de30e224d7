"""A crowd of labs on few cores beats slower (scenario.for_crowd,
cli.crowd_beats), and the run directory records what the run used."""
from __future__ import annotations

import dataclasses

from labctl import cli, scenario


def builtin(name: str) -> scenario.Scenario:
    return scenario.resolve(name)


def test_past_five_labs_a_core_the_engine_is_crowded():
    assert not scenario.crowded(10, 2) and scenario.crowded(11, 2)
    assert not scenario.crowded(40, 8) and scenario.crowded(41, 8)
    assert scenario.crowded(6, 0)  # an engine that says no core count: one


def test_a_crowd_slows_the_default_beats_and_says_so_in_the_run_file(tmp_path):
    sc = builtin("scenario-pause")
    assert not sc.beats_given and sc.lab.heartbeat_ms == 50
    crowded = scenario.for_crowd(sc)
    assert crowded.lab.heartbeat_ms == scenario.CROWD_HEARTBEAT_MS == 200
    assert sc.lab.heartbeat_ms == 50  # the scenario itself is left as it was
    assert crowded.lab.env()["LAB_HEARTBEAT_MS"] == "200"
    text = scenario.run_file_text(crowded)
    assert text.startswith("# scenario-pause.yaml as labctl ran it: lab keys set for this run (heartbeat_ms).")
    f = tmp_path / "scenario.yaml"
    f.write_text(text)
    again = scenario.load(f)  # what `labctl check RUN_DIR` reads
    assert again.lab.heartbeat_ms == 200 and again.beats_given
    assert again.timeline == sc.timeline and again.expect == sc.expect and again.name == sc.name
    assert scenario.run_file_text(sc) == sc.path.read_text()  # no override: the file as written


def test_a_scenario_s_own_beats_and_a_lease_lab_are_left_alone():
    own = builtin("scenario-lossy-heartbeats")
    assert own.beats_given and own.lab.heartbeat_ms == 200
    assert scenario.for_crowd(own) is own
    lease = builtin("scenario-zombie-lease")
    assert scenario.for_crowd(lease) is lease


class FakeEngine:
    def __init__(self, name: str, cores: int):
        self.name, self.cores = name, cores

    def info(self):
        return {"NCPU": self.cores}


def test_a_timeout_too_short_for_ten_slow_beats_keeps_the_fast_ones():
    sc = builtin("scenario-pause")
    for key, value in (("timeout_ms", 1999), ("heartbeat_only_timeout_ms", 450)):
        tight = dataclasses.replace(sc, lab=dataclasses.replace(sc.lab, **{key: value}))
        assert scenario.for_crowd(tight) is tight, key
    roomy = dataclasses.replace(sc, lab=dataclasses.replace(sc.lab, timeout_ms=2000, heartbeat_only_timeout_ms=2000))
    assert scenario.for_crowd(roomy).lab.heartbeat_ms == 200


def test_crowd_beats_counts_the_labs_each_engine_runs(monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(cli, "say", said.append)
    monkeypatch.setattr(cli.lab, "lab_ids", lambda eng: [])
    a, b = FakeEngine("a", 2), FakeEngine("b", 2)
    scs = [builtin("scenario-pause")] * 20
    # 20 labs over two 2-core engines, 10 each: neither is crowded.
    out = cli.crowd_beats(scs, [a, b] * 10)
    assert all(s.lab.heartbeat_ms == 50 for s in out) and not said
    # 11 of them on one engine: those 11 beat slower, the other 9 do not.
    out = cli.crowd_beats(scs, [a] * 11 + [b] * 9)
    assert [s.lab.heartbeat_ms for s in out] == [200] * 11 + [50] * 9
    assert said == ["labctl: 11 labs on 2 cores on engine a: the workers of 11 beat every 200 ms, not 50 "
                    "(a crowd has no CPU to spare for fast beats; silence waits for the fixed timeout)"]


def test_labs_already_on_the_engine_count_too(monkeypatch):
    """A class's server: each student's `labctl up` starts one lab."""
    said: list[str] = []
    monkeypatch.setattr(cli, "say", said.append)
    a = FakeEngine("a", 2)
    monkeypatch.setattr(cli.lab, "lab_ids", lambda eng: [f"pause-{i:04x}" for i in range(10)])
    out = cli.crowd_beats([builtin("scenario-pause")], [a])
    assert out[0].lab.heartbeat_ms == 200
    assert said and said[0].startswith("labctl: 11 labs on 2 cores: the workers of 1 beat every 200 ms")
    monkeypatch.setattr(cli.lab, "lab_ids", lambda eng: [f"pause-{i:04x}" for i in range(9)])
    assert cli.crowd_beats([builtin("scenario-pause")], [a])[0].lab.heartbeat_ms == 50


def test_an_engine_that_will_not_say_its_cores_counts_this_machine_s(monkeypatch):
    class Mute(FakeEngine):
        def info(self):
            raise cli.LabError(cli.ExitCode.ENGINE_ERROR, "engine gone")

    monkeypatch.setattr(cli, "say", lambda s: None)
    monkeypatch.setattr(cli.lab, "lab_ids", lambda eng: [])
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 1)
    out = cli.crowd_beats([builtin("scenario-pause")] * 6, [Mute("m", 0)] * 6)
    assert all(s.lab.heartbeat_ms == 200 for s in out)
