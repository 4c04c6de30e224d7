"""scenario-blind, the blind-triage game: the seed's fault, the file's `blind:`
key, the supervisor-only view, the answer and its score; and two real games
on the engine (marked docker), the right answer and a wrong one."""
from __future__ import annotations

import builtins
import io
import json
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from helpers import ROOT, assert_timeline_png, checker_verdict, labctl, labelled
from labctl import blind, cli, observe, report, scenario, view
from labctl.errors import LabError

BLIND = scenario.resolve("scenario-blind")


def game(seed: int) -> blind.Game:
    assert BLIND.blind is not None
    return blind.derive(BLIND.blind, seed)


# ------------------------------------------------------------------ the seed's fault


def test_the_builtin_file_is_blind_with_every_fault_and_a_lesson():
    assert BLIND.blind is not None and BLIND.lesson and BLIND.timeline == []
    assert BLIND.blind.choices == list(scenario.BLIND_FAULTS)
    assert set(blind.SOURCES) == set(scenario.BLIND_FAULTS)
    assert "scenario-blind" in {sc.name for sc in scenario.builtin()}


def test_same_seed_same_fault_and_timing():
    for seed in (0, 1, 5, 42, 9999, 123456789):
        assert game(seed) == game(seed)
    # Pinned: a class that wrote a seed on the board gets the same game after an upgrade.
    g = game(5)
    assert (g.fault, g.at, g.for_s, g.source) == ("partition", 1.5, 4.5, "scenario-partition")


def test_seeds_cover_every_choice_within_the_ranges():
    games = [game(s) for s in range(300)]
    assert {g.fault for g in games} == set(scenario.BLIND_FAULTS)
    assert BLIND.blind is not None
    lo, hi = BLIND.blind.at
    flo, fhi = BLIND.blind.for_s
    for g in games:
        assert lo <= g.at <= hi and (g.at * 2).is_integer()
        if g.fault == "crash":
            assert g.for_s is None  # a SIGKILL has no inverse, so no length
        else:
            assert g.for_s is not None and flo <= g.for_s <= fhi and (g.for_s * 2).is_integer()
    assert len({g.at for g in games}) == 5 and len({g.for_s for g in games if g.for_s}) == 5


@pytest.mark.parametrize("fault", scenario.BLIND_FAULTS)
def test_the_concrete_scenario_is_the_faults_own_step_and_checks(tmp_path, fault):
    seed = next(s for s in range(500) if game(s).fault == fault)
    g = game(seed)
    sc = blind.write_concrete(BLIND, g, tmp_path)
    source = scenario.resolve(blind.SOURCES[fault])
    assert sc.name == "scenario-blind" and sc.blind is None and sc.path == tmp_path / "scenario-blind.yaml"
    assert len(sc.timeline) == 1
    step, src_step = sc.timeline[0], source.timeline[0]
    assert (step.do, step.target, step.params, step.at, step.for_s) == (src_step.do, src_step.target,
                                                                      src_step.params, g.at, g.for_s)
    assert sc.expect == source.expect, "the fault's own expectations judge the run"
    assert sc.lab == BLIND.lab and sc.lab.items == 2250
    assert f"seed {seed}" in sc.description
    # What the run directory gets is an ordinary scenario: `labctl scenarios --validate` takes it.
    assert scenario.load(sc.path) == sc


# ------------------------------------------------------------------ parsing `blind:`

GOOD = {"name": "b", "lesson": "l", "lab": {"items": 100}, "blind": {"choices": ["pause", "crash"]}}


@pytest.mark.parametrize("change, where", [
    ({"blind": {"choices": ["pause", "explode"]}}, "blind.choices[1]: 'explode' is not one of crash, pause"),
    ({"blind": {"choices": ["pause"]}}, "blind.choices: name two or more different faults"),
    ({"blind": {"choices": ["pause", "pause"]}}, "blind.choices: name two or more different faults"),
    ({"blind": {"choices": "pause"}}, "blind.choices: expected a list of faults, got a string"),
    ({"blind": {}}, "blind.choices: is required"),
    ({"blind": ["pause"]}, "blind: expected a mapping, got a list"),
    ({"blind": {"choices": ["pause", "crash"], "colour": 1}}, "blind.colour: unknown key"),
    ({"blind": {"choices": ["pause", "crash"], "at": [3, 1]}}, "blind.at: least (3) is more than most (1)"),
    ({"blind": {"choices": ["pause", "crash"], "at": [1]}}, "blind.at: expected [least, most], got 1 value(s)"),
    ({"blind": {"choices": ["pause", "crash"], "at": [-1, 2]}}, "blind.at[0]: must be 0.0 or more, got -1"),
    ({"blind": {"choices": ["pause", "crash"], "for": [0, 2]}}, "blind.for[0]: must be 0.5 or more, got 0"),
    ({"blind": {"choices": ["pause", "crash"], "for": ["a", 2]}}, "blind.for[0]: expected a number"),
    ({"blind": {"choices": ["pause", "crash"], "at": [1, 30], "for": [4, 40]}, "duration_s": 60},
     "blind.for: the latest fault ends at 70 s, not before duration_s (60)"),
    ({"timeline": [{"at": 1, "do": "pause", "for": 2}]}, "timeline: a blind scenario takes its step"),
    ({"expect": {"job": {"completes": True}}}, "expect: a blind scenario takes its step"),
])
def test_blind_key_errors_name_file_and_key(change, where):
    with pytest.raises(LabError) as e:
        scenario.parse({**GOOD, **change}, Path("my-blind.yaml"))
    assert e.value.what.startswith(f"my-blind.yaml: {where}"), e.value.what


def test_blind_key_defaults_and_ranges():
    sc = scenario.parse({**GOOD, "blind": {"choices": ["slow", "crash"], "at": [0, 0], "for": [2, 3]}}, Path("x.yaml"))
    assert sc.blind == scenario.Blind(["slow", "crash"], (0.0, 0.0), (2.0, 3.0))
    assert scenario.parse(GOOD, Path("x.yaml")).blind == scenario.Blind(["pause", "crash"])
    assert scenario.parse({k: v for k, v in GOOD.items() if k != "blind"}, Path("x.yaml")).blind is None


def test_validate_accepts_the_builtin_file():
    p = labctl("scenarios", "--validate", str(ROOT / "labctl" / "scenarios" / "scenario-blind.yaml"))
    assert p.returncode == 0 and "ok (scenario-blind" in p.stdout, p.stdout + p.stderr


# ------------------------------------------------------------------ the view hides all but the supervisor


def faulted_live() -> observe.Live:
    lv = observe.Live("lab-1", "scenario-blind", phase="running", truth="PAUSED", monitor="PAUSED",
                      heartbeat_only="DEAD", phi=12.5, supervisor="timed_out", acked=400, total=2250,
                      processed=398, crashes=0, timeouts=1, lock="held", step="1: pause worker for 5s", restarts=0)
    for msg in ("item 67: corrupted data -10", "worker unreachable: no response in 2000 ms"):
        lv.absorb({"ts": time.time(), "source": "supervisor", "kind": "log", "level": "warning", "message": msg})
    return lv


def render(thing) -> str:
    out = Console(file=io.StringIO(), width=200, record=True)
    out.print(thing)
    return out.export_text()


def test_blind_view_shows_the_supervisors_rows_only():
    lv = faulted_live()
    text = render(view.blind_table([lv]))
    for label in ("supervisor", "items acked / total", "processed", "crashes / timeouts seen", "worker restarts",
                  "lab", "supervisor log"):
        assert label in text, label
    assert "timed_out" in text and "400 / 2,250" in text and "worker unreachable: no response" in text
    for hidden in ("fault / step", "ground truth", "monitor verdict", "heartbeat-only", "phi", "lock", "PAUSED",
                   "DEAD", "pause worker", "held", "12.5"):
        assert hidden not in text, hidden
    assert [k for k, _ in view.BLIND_ROWS] == ["supervisor", "items", "processed", "seen", "restarts", "phase"]
    # The normal view shows them all: the blind one is a choice, not a loss.
    full = render(view.table([lv]))
    assert "ground truth" in full and "PAUSED" in full and "pause worker" in full
    line = view.blind_line(lv)
    assert "timed_out" in line and not any(w in line for w in ("PAUSED", "DEAD", "pause", "held"))


def test_the_supervisor_log_tail_is_bounded():
    lv = observe.Live("l", "s")
    for i in range(observe.SUPERVISOR_LOG_KEPT + 15):
        lv.absorb({"ts": 0, "source": "supervisor", "kind": "log", "level": "info", "message": f"m{i}"})
    assert lv.supervisor_log_count == observe.SUPERVISOR_LOG_KEPT + 15
    assert len(lv.supervisor_log) == observe.SUPERVISOR_LOG_KEPT
    assert lv.supervisor_log[-1] == f"m{lv.supervisor_log_count - 1}"


def test_blind_lines_without_a_terminal_tell_nothing_of_the_fault(capsys):
    lv = faulted_live()
    t = threading.Thread(target=time.sleep, args=(0.6,))
    t.start()
    cli.watch([t], [lv], threading.Event(), blind_run=True)
    out = capsys.readouterr().out
    assert "supervisor=timed_out" in out and "supervisor log: worker unreachable" in out
    for hidden in ("PAUSED", "DEAD", "pause worker", "truth", "monitor", "step="):
        assert hidden not in out, hidden


# ------------------------------------------------------------------ the answer, the score, the record


def test_score_and_answers():
    assert blind.score("pause", "pause") == 1
    assert blind.score("sigstop", "pause") == 0  # the monitor says PAUSED to both; the game asks which
    assert blind.score(None, "pause") == 0
    choices = list(scenario.BLIND_FAULTS)
    assert blind.normalise(" Pause\n", choices) == "pause" and blind.normalise("3", choices) == "partition"
    assert blind.normalise("6", choices) is None and blind.normalise("", choices) is None
    assert blind.normalise("paus", choices) is None


@pytest.mark.parametrize("answer, correct", [("partition", True), ("crash", False), (None, False)])
def test_record_and_report(tmp_path, answer, correct):
    g = game(5)
    doc = blind.record(tmp_path, g, answer, "flag" if answer else "none")
    assert json.loads((tmp_path / blind.FILE).read_text()) == doc == blind.read(tmp_path)
    assert doc == {"seed": 5, "choices": list(scenario.BLIND_FAULTS), "fault": "partition", "at": 1.5,
                   "source": "scenario-partition", "for": 4.5, "answer": answer,
                   "answered": "flag" if answer else "none", "correct": correct, "score": int(correct)}
    section = "\n".join(report._blind(tmp_path))
    assert "## Blind triage" in section and "`partition`" in section and f"score {int(correct)}" in section
    assert report._blind(tmp_path / "nothing") == []


def test_reveal_lines_give_truth_lanes_then_the_score():
    evs = [{"ts": 1.0, "source": "monitor", "kind": "tick", "verdict": "HEALTHY"},
           {"ts": 2.0, "source": "monitor", "kind": "tick", "verdict": "HEALTHY"},
           {"ts": 3.0, "source": "monitor", "kind": "verdict", "verdict": "PARTITIONED"},
           {"ts": 4.0, "source": "supervisor", "kind": "state", "state": "timed_out"}]
    lines = blind.reveal_lines(game(5), "crash", evs)
    assert lines[0].startswith("the fault (seed 5): partition of the worker at +1.5 s for 4.5 s")
    assert "  monitor:        HEALTHY -> PARTITIONED" in lines and "  supervisor:     timed_out" in lines
    assert lines[-1] == "your answer: crash: wrong, it was partition; score 0"
    assert blind.reveal_lines(game(5), "partition", evs)[-1] == "your answer: partition: right; score 1"
    assert blind.reveal_lines(game(5), None, [])[-1] == "no answer: score 0 (it was partition)"
    assert "FAIL" not in "\n".join(lines)


class Args:
    answer: str | None = None


@pytest.mark.parametrize("typed, want", [
    (["bogus", "", "3"], ("partition", "prompt")),
    (["  SLOW "], ("slow", "prompt")),
    ([EOFError], (None, "none")),
    (["nope", KeyboardInterrupt], (None, "none")),
])
def test_the_prompt_reasks_until_an_answer(monkeypatch, capsys, typed, want):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    feed = iter(typed)
    prompts: list[str] = []

    def fake_input(prompt: str = "") -> str:
        prompts.append(prompt)
        got = next(feed)
        if isinstance(got, type) and issubclass(got, BaseException):
            raise got
        return got

    monkeypatch.setattr(builtins, "input", fake_input)
    assert cli.blind_answer(Args(), game(5), interrupted=False) == want
    assert all("1 crash, 2 pause, 3 partition, 4 sigstop, 5 slow" in p for p in prompts)
    if typed[0] == "bogus":
        assert "'bogus' is not one of crash, pause, partition, sigstop, slow" in capsys.readouterr().out


def test_no_terminal_no_flag_no_answer(monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail("asked without a terminal"))
    assert cli.blind_answer(Args(), game(5), interrupted=False) == (None, "none")
    a = Args()
    a.answer = "pause"
    assert cli.blind_answer(a, game(5), interrupted=False) == ("pause", "flag")
    assert cli.blind_answer(a, game(5), interrupted=True) == (None, "interrupted")


# ------------------------------------------------------------------ usage errors (no engine needed)


@pytest.mark.parametrize("argv, msg", [
    (["up", "scenario-crash", "--answer", "pause"],
     "labctl: error: --answer plays a blind scenario, and scenario-crash is not one; "),
    (["up", "scenario-crash", "--seed", "3"], "labctl: error: --seed plays a blind scenario, and scenario-crash"),
    (["up", "scenario-crash", "scenario-pause", "--seed", "3", "--answer", "x"],
     "labctl: error: --seed and --answer play a blind scenario, and none of the scenarios given is one"),
    (["up", "scenario-blind", "--answer", "bogus"],
     "labctl: error: --answer 'bogus' is not one of crash, pause, partition, sigstop, slow; "),
    (["up", "scenario-blind", "--seed", "-1"], "labctl: error: --seed wants a whole number, 0 or more, got -1"),
    (["up", "scenario-blind", "scenario-crash"], "labctl: error: scenario-blind is a blind scenario and runs alone"),
])
def test_up_refuses_blind_options_out_of_place(capsys, argv, msg):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(msg) and err.count("\n") == 1, err


def test_blind_options_are_in_ups_help():
    p = labctl("up", "--help")
    assert "--seed N" in p.stdout and "--answer FAULT" in p.stdout


# ------------------------------------------------------------------ real games on the engine

# Seed 5: a partition at +1.5 s for 4.5 s (pinned above), the shortest job of the five.
SEED = 5


def play(labs, answer: str) -> tuple[object, Path]:
    lab = labs.new("blind")
    p = labctl("up", "scenario-blind", "--seed", str(SEED), "--answer", answer, "--lab", lab, runs=labs.runs)
    run_dirs = list((labs.runs / lab).glob("2*"))
    assert len(run_dirs) == 1, (run_dirs, (p.stdout + p.stderr)[-3000:])
    return p, run_dirs[0]


@pytest.mark.docker
@pytest.mark.slow
def test_a_blind_game_right_then_wrong(built, engine, labs):
    g = game(SEED)
    p, run_dir = play(labs, g.fault)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    doc = json.loads((run_dir / blind.FILE).read_text())
    assert doc == {"seed": SEED, "choices": list(scenario.BLIND_FAULTS), "fault": g.fault, "at": g.at,
                   "source": g.source, "for": g.for_s, "answer": g.fault, "answered": "flag", "correct": True,
                   "score": 1}
    # Nothing of the fault before the reveal; the reveal, then the checks, after it.
    reveal_at = out.index("the fault (seed")
    before = out[:reveal_at]
    for hidden in ("PARTITIONED", "monitor=", "truth=", "step=", "partition worker", "heal", "expectations"):
        assert hidden not in before, hidden
    assert f"your answer: {g.fault}: right; score 1" in out
    assert out.index("expectations") > reveal_at and "FAIL" not in out
    # Judged as the fault's own scenario would be, from the files alone.
    verdict = checker_verdict(run_dir)
    assert verdict["ok"] is True and any("monitor says PARTITIONED" in c["name"] for c in verdict["checks"])
    ran = yaml.safe_load((run_dir / "scenario.yaml").read_text())
    assert ran["timeline"][0] == {"at": g.at, "do": g.fault, "target": "worker", "for": g.for_s}
    assert_timeline_png(run_dir / "timeline.png", 1, 1)
    report_md = (run_dir / "report.md").read_text()
    assert "## Blind triage" in report_md and "score 1" in report_md
    assert labelled(engine, labs.ids[-1]) == ([], [], [])

    # The same seed again, a wrong answer: the same fault at the same time, score 0, the lab still passes.
    p2, run_dir2 = play(labs, "crash")
    assert p2.returncode == 0, (p2.stdout + p2.stderr)[-4000:]
    doc2 = json.loads((run_dir2 / blind.FILE).read_text())
    assert {k: doc2[k] for k in ("fault", "at", "for")} == {k: doc[k] for k in ("fault", "at", "for")}
    assert (doc2["answer"], doc2["correct"], doc2["score"]) == ("crash", False, 0)
    assert f"your answer: crash: wrong, it was {g.fault}; score 0" in p2.stdout
    assert "score 0" in (run_dir2 / "report.md").read_text()
    again = labctl("report", str(run_dir2), "--format", "json", runs=labs.runs)
    assert json.loads(again.stdout)["blind"] == doc2
