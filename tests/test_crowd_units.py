"""A crowd of labs on few cores beats slower (scenario.for_crowd,
cli.crowd_beats), and the run directory records what the run used."""
from __future__ import annotations

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


def test_crowd_beats_counts_the_labs_each_engine_runs(monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(cli, "say", said.append)
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
