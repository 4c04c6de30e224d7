"""Scenarios users write: the schema (labctl/schema.py, docs/scenarios.md),
duration_s derived from the job and the timeline, and validation that reports
every problem at once, including those a run would only meet half-way."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from labctl import faults, scenario, schema
from labctl.errors import ExitCode, LabError
from labctl.lab import LabRun

ROOT = Path(__file__).resolve().parent.parent
LABCTL = [sys.executable, "-m", "labctl"]
DOC = ROOT / "docs" / "scenarios.md"


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def labctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABCTL, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


# ------------------------------------------------------------------ the schema and its document


def test_schema_flag_prints_the_table_and_the_doc_holds_it_exactly():
    p = labctl("scenarios", "--schema")
    assert p.returncode == 0, p.stderr
    assert p.stdout == schema.markdown()
    doc = DOC.read_text()
    # The schema is the document's tail, verbatim: regenerate it with `labctl scenarios --schema`.
    assert doc.endswith(p.stdout), "docs/scenarios.md is stale: paste `labctl scenarios --schema` at its end"
    assert "`labctl up path/to/my.yaml`" in doc


def _parser_keys() -> set[str]:
    """Every key the parser takes, from its own tuples and dataclasses."""
    keys = set(scenario.TOP_KEYS)
    keys |= {f"lab.{f.name}" for f in fields(scenario.LabParams)}
    keys |= {f"timeline[].{k}" for k in scenario.STEP_KEYS} | {"timeline[].SETTING"}
    keys |= {f"expect.{k}" for k in scenario.EXPECT_KEYS}
    keys |= {f"expect.windows[].{k}" for k in scenario.WINDOW_KEYS}
    keys |= {f"expect.windows[].flaps.OBSERVER.{k}" for k in scenario.FLAP_KEYS}
    keys |= {f"expect.job.{f.name}" for f in fields(scenario.Job)}
    keys |= {f"expect.lease.{f.name}" for f in fields(scenario.LeaseExpect)}
    keys |= {f"blind.{k}" for k in scenario.BLIND_KEYS}
    return keys


def test_every_key_the_parser_takes_is_in_the_schema_and_no_other():
    documented = [k.path for k in schema.keys()]
    assert len(documented) == len(set(documented))
    assert set(documented) == _parser_keys()
    assert set(scenario.LEASE_EXPECT_KEYS) == {f.name for f in fields(scenario.LeaseExpect)}
    assert {"at", "for_s"} | {"choices"} == {f.name for f in fields(scenario.Blind)}
    assert all(k.kind in (schema.WORKER, schema.LEASE, schema.BOTH) for k in schema.keys())
    lease_lab = {k.path.removeprefix("lab.") for k in schema.keys() if k.path.startswith("lab.")
                 and k.kind == schema.LEASE}
    assert lease_lab == set(scenario.LEASE_KEYS)


def _allowed(errors: list[str], key: str) -> set[str]:
    """What the parser said it takes at KEY, from its unknown-key message."""
    said = next(e for e in errors if f": {key}: unknown key" in e)
    return set(said.split("expected one of ", 1)[1].split(", "))


def test_the_parser_takes_exactly_the_documented_keys_at_each_level(tmp_path):
    worker = """
name: t
lesson: l
zz: 1
lab: {zz: 1}
timeline:
  - {at: 1, do: loss, p: 0.2, for: 2, zz: 1}
expect:
  zz: 1
  windows: [{step: 1, zz: 1, flaps: {phi: {zz: 1}}}]
  job: {zz: 1}
"""
    errors = scenario.validate(write(tmp_path, worker))
    under = {}
    for k in schema.keys():
        head, _, tail = k.path.rpartition(".")
        under.setdefault(head, set()).add(tail)
    assert _allowed(errors, "zz") == under[""]
    assert _allowed(errors, "lab.zz") == under["lab"]
    loss = {p.name for p in faults.FAULTS["loss"].params}
    assert _allowed(errors, "timeline[0].zz") == under["timeline[]"] - {"SETTING"} | loss
    assert _allowed(errors, "expect.zz") == under["expect"]
    assert _allowed(errors, "expect.windows[0].zz") == under["expect.windows[]"]
    assert _allowed(errors, "expect.windows[0].flaps.phi.zz") == under["expect.windows[].flaps.OBSERVER"]
    assert _allowed(errors, "expect.job.zz") == under["expect.job"]
    blind = scenario.validate(write(tmp_path, "name: t\nlesson: l\nblind: {choices: [pause, crash], zz: 1}\n"))
    assert _allowed(blind, "blind.zz") == under["blind"]
    lease = scenario.validate(write(tmp_path, "name: t\nlesson: l\nlab: {kind: lease}\nexpect: {lease: {zz: 1}}\n"))
    assert _allowed(lease, "expect.lease.zz") == under["expect.lease"]


def test_the_schema_names_every_fault_and_setting():
    md = schema.markdown()
    for f in faults.FAULTS.values():
        assert f"| `{f.name}` |" in md
        for p in f.params:
            assert f"`{p.name}`: " in md.split(f"| `{f.name}` |", 1)[1].split("\n", 1)[0]
    assert "| `lab.items` | whole number, 1 or more | 3000 | worker |" in md
    assert "| `lab.ttl_ms` | whole number, 1 or more | 2000 | lease |" in md


def _doc_examples() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)


def test_the_docs_worked_examples_validate_with_the_durations_they_state(tmp_path):
    examples = _doc_examples()
    assert len(examples) == 2
    kinds = []
    for text in examples:
        doc = yaml.safe_load(text)
        path = write(tmp_path, text, f"{doc['name']}.yaml")
        assert scenario.validate(path) == []
        sc = scenario.load(path)
        kinds.append(sc.lab.kind)
        assert not sc.duration_given
        assert f"derives {sc.duration_s:g} s" in text or f"{sc.duration_s - 5:g} s, plus 5 s" in text
    assert kinds == ["worker", "lease"]


def test_the_docs_broken_example_prints_what_validate_says(tmp_path):
    text = DOC.read_text().split("$ cat broken.yaml\n", 1)[1]
    body, out = text.split("$ labctl scenarios --validate broken.yaml\n", 1)
    shown = [line.removeprefix("labctl: error: ") for line in out.split("$ echo", 1)[0].splitlines()]
    shown[-1] = shown[-1].split("; fix the scenario file", 1)[0]
    assert scenario.validate(write(tmp_path, body, "broken.yaml")) == shown


@pytest.mark.parametrize("path", sorted(scenario.BUILTIN_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_builtin_scenario_validates(path):
    assert scenario.validate(path) == []


# ------------------------------------------------------------------ duration_s


BASE = "name: t\nlesson: l\n"


@pytest.mark.parametrize("text, want", [
    (BASE, 60),  # 3000 items at 250/s: 12 s, twice + 30 is 54: the least, 60
    (BASE + "lab: {items: 14000, rate: 250}\n", 142),  # 56 s of job: 2 x 56 + 30
    (BASE + "lab: {items: 10, rate: 5}\ntimeline:\n  - {at: 1, do: pause, for: 50}\n", 81),  # last end 51 + 30
    (BASE + "lab: {items: 100000, rate: 0}\n", 60),  # unpaced: the documented default
    (BASE + "lab: {rate: 0}\ntimeline:\n  - {at: 20, do: pause, for: 40}\n", 90),
    (BASE + "lab: {kind: lease}\ntimeline:\n  - {at: 2, do: pause, target: alice, for: 6}\n", 13),
    (BASE + "lab: {kind: lease}\n", 10),
    (BASE + "lab: {items: 10, rate: 3}\n", 60),
])
def test_duration_is_derived_from_the_job_and_the_timeline(tmp_path, text, want):
    sc = scenario.load(write(tmp_path, text))
    assert (sc.duration_s, sc.duration_given) == (want, False)


def test_a_given_duration_is_kept_and_said_so(tmp_path):
    sc = scenario.load(write(tmp_path, BASE + "duration_s: 45\n"))
    assert (sc.duration_s, sc.duration_given) == (45, True)


def test_the_instructors_long_job_is_no_longer_cut_at_60_s(tmp_path):
    # 14018 items lost: a job longer than the 60 s nobody had written down.
    sc = scenario.load(write(tmp_path, BASE + "lab: {items: 20000, rate: 250}\ntimeline:\n"
                                              "  - {at: 10, do: pause, for: 6}\n"))
    assert sc.duration_s >= 2 * 20000 / 250


def test_a_cut_off_job_names_duration_s_and_the_file(tmp_path):
    sc = scenario.load(write(tmp_path, BASE, "mine.yaml"))
    run = SimpleNamespace(lab_id="x", cancel=threading.Event(), sc=sc, result=SimpleNamespace(error=None))
    LabRun.wait_for_job(run, deadline=0)  # type: ignore[arg-type]
    assert run.result.error.startswith("labctl: error: the job did not end within duration_s (60 s, derived) of "
                                       "mine.yaml; give a longer duration_s in ")
    assert str(tmp_path / "mine.yaml") in run.result.error


# ------------------------------------------------------------------ what a run would only meet half-way


STEPS = BASE + "lab: {items: 5000, rate: 250}\ntimeline:\n"  # a 20 s job


def steps(*lines: str) -> str:
    return STEPS + "".join(f"  - {line}\n" for line in lines)


@pytest.mark.parametrize("text, what", [
    (steps("{at: 3, do: pause, for: 6}", "{at: 5, do: pause, for: 2}"),
     "timeline[1].at: pause of the worker at 5 s, while step 1's pause of it holds (from 3 s to 9 s): "
     "a second pause cannot stack on the first"),
    (steps("{at: 3, do: sigstop, for: 6}", "{at: 3, do: sigstop, for: 2}"),
     "timeline[1].at: sigstop of the worker at 3 s, while step 1's sigstop of it holds (from 3 s to 9 s): "
     "a second sigstop cannot stack on the first"),
    (steps("{at: 3, do: partition}", "{at: 8, do: partition, for: 2}"),
     "timeline[1].at: partition of the worker at 8 s, while step 1's partition of it holds (from 3 s with no "
     "end): a second partition cannot stack on the first"),
    (steps("{at: 3, do: slow, percent: 50, for: 6}", "{at: 4, do: slow, percent: 20, for: 2}"),
     "timeline[1].at: slow of the worker at 4 s, while step 1's slow of it holds (from 3 s to 9 s): "
     "a second slow cannot stack on the first"),
    (steps("{at: 3, do: sigstop, for: 6}", "{at: 4, do: slow, percent: 20, for: 2}"),
     "timeline[1].at: slow of the worker at 4 s, while step 1's sigstop of it holds (from 3 s to 9 s): "
     "a slow's SIGCONTs would resume what the sigstop holds"),
    (steps("{at: 3, do: slow, percent: 50, for: 6}", "{at: 4, do: sigstop, for: 2}"),
     "timeline[1].at: sigstop of the worker at 4 s, while step 1's slow of it holds (from 3 s to 9 s): "
     "the slow's SIGCONTs would resume what the sigstop holds"),
    (steps("{at: 3, do: stop, for: 6}", "{at: 4, do: kill, for: 2}"),
     "timeline[1].at: kill of the worker at 4 s, while step 1's stop of it holds (from 3 s to 9 s): "
     "a stopped container runs nothing"),
    (steps("{at: 3, do: kill}", "{at: 4, do: crash}"),
     "timeline[1].at: crash of the worker at 4 s, while step 1's kill of it holds (from 3 s with no end): "
     "a stopped container runs nothing"),
    (steps("{at: 3, do: unpause}"), "timeline[0].do: unpause of the worker at 3 s, with no pause of it on to undo"),
    (steps("{at: 3, do: pause, for: 2}", "{at: 6, do: unpause}"),
     "timeline[1].do: unpause of the worker at 6 s, with no pause of it on to undo"),
    (steps("{at: 3, do: pause, target: monitor}", "{at: 6, do: unpause}"),
     "timeline[1].do: unpause of the worker at 6 s, with no pause of it on to undo"),
    (steps("{at: 3, do: crash}", "{at: 6, do: start}"),
     "timeline[1].do: start of the worker at 6 s, with no kill or stop of it on to undo"),
    (steps("{at: 20, do: pause, for: 2}"),
     "timeline[0].at: 20 s is at or after the job's expected end (lab.items 5000 at lab.rate 250/s: about "
     "20 s): the step would act on a finished job"),
    (steps("{at: 3, do: pause, for: 20}") + "duration_s: 20\n",
     "timeline[0].for: the step ends at 23 s, after the run's end, duration_s (20 s)"),
    (BASE + "lab: {items: 5000, rate: 250}\nduration_s: 15\n",
     "duration_s: 15 s is less than the job's expected length (lab.items 5000 at lab.rate 250/s: about 20 s): "
     "the run would cut it off"),
    (BASE + "lab: {kind: lease}\nduration_s: 10\ntimeline:\n  - {at: 10, do: pause, target: bob, for: 1}\n",
     "timeline[0].at: 10 s is at or after the run's end, duration_s (10 s)"),
    (BASE + "lab: {kind: lease}\nduration_s: 10\ntimeline:\n  - {at: 5, do: pause, target: bob, for: 6}\n",
     "timeline[0].for: the step ends at 11 s, after the run's end, duration_s (10 s)"),
    (steps("{at: 3, do: pause, for: 2}") + "expect:\n  windows: [{step: 2, monitor: PAUSED}]\n",
     "expect.windows[0].step: must be 1 or less, got 2"),
])
def test_what_only_failed_at_run_time_is_refused_by_load_and_validate(tmp_path, text, what):
    path = write(tmp_path, text)
    assert scenario.validate(path) == [f"s.yaml: {what}"]
    with pytest.raises(LabError) as ei:
        scenario.load(path)
    assert ei.value.code == ExitCode.BAD_SCENARIO and ei.value.what == f"s.yaml: {what}"


def test_a_job_expected_not_to_complete_may_be_cut_off_by_duration_s(tmp_path):
    """A bench that measures detectors, not jobs, runs a job longer than its run on purpose."""
    text = BASE + "lab: {items: 5000, rate: 250}\nduration_s: 15\nexpect:\n  job: {completes: false}\n"
    assert scenario.validate(write(tmp_path, text)) == []



@pytest.mark.parametrize("text", [
    steps("{at: 3, do: pause, for: 2}", "{at: 5, do: pause, for: 2}"),  # back to back: the first is undone
    steps("{at: 3, do: pause}", "{at: 6, do: unpause}", "{at: 8, do: pause, for: 1}"),
    steps("{at: 3, do: pause, for: 6}", "{at: 4, do: unpause}"),  # undone early by hand; its revert finds it done
    steps("{at: 3, do: pause, for: 6}", "{at: 4, do: pause, target: monitor, for: 2}"),  # another target
    steps("{at: 3, do: kill}", "{at: 5, do: start}", "{at: 7, do: stop, for: 2}"),
    steps("{at: 2, do: latency, ms: 400, for: 8}", "{at: 2, do: delay, ms: 400, for: 8}"),  # toxics stack
    steps("{at: 3, do: sigstop, for: 6}", "{at: 4, do: partition, for: 2}"),
    BASE + "lab: {items: 100, rate: 0}\ntimeline:\n  - {at: 30, do: pause, for: 5}\n",  # unpaced: no end known
])
def test_what_can_stack_or_follow_passes(tmp_path, text):
    assert scenario.validate(write(tmp_path, text)) == []


# ------------------------------------------------------------------ every problem at once


MANY = """
name: t
lesson: l
colour: red
lab: {items: 5000, rate: 250, window: zero}
timeline:
  - {at: 3, do: pause, for: 6}
  - {at: 5, do: pause, for: 2}
  - {at: 1, do: explode}
  - {at: 25, do: crash}
expect:
  windows: [{step: 9, monitor: PAUSED}, {step: 1, monitor: SLEEPY}]
  job: {completes: 1}
"""


def test_validate_reports_every_problem_and_load_the_first(tmp_path):
    path = write(tmp_path, MANY)
    problems = scenario.validate(path)
    assert [p.split(": ")[1] for p in problems] == [
        "colour", "lab.window", "timeline[2].do", "expect.windows[0].step", "expect.windows[1].monitor",
        "expect.job.completes", "timeline[1].at", "timeline[3].at"]
    assert all(p.startswith("s.yaml: ") for p in problems)
    with pytest.raises(LabError) as ei:
        scenario.load(path)
    assert ei.value.what == problems[0]


def test_a_problem_in_the_lab_or_duration_skips_the_checks_that_read_them(tmp_path):
    # A default in place of the lab.items the file got wrong would make up a job end.
    text = steps("{at: 30, do: pause, for: 2}").replace("items: 5000", "items: lots")
    assert [p.split(": ")[1] for p in scenario.validate(write(tmp_path, text))] == ["lab.items"]


def test_validate_cli_prints_every_problem_one_a_line(tmp_path):
    p = labctl("scenarios", "--validate", str(write(tmp_path, MANY, "many.yaml")))
    assert p.returncode == ExitCode.BAD_SCENARIO
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 8 and all(line.startswith("labctl: error: many.yaml: ") for line in lines)
    assert lines[-1].endswith("; fix the scenario file; docs/scenarios.md (`labctl scenarios --schema`) has every key")
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_validate_cli_ok_line_says_the_duration(tmp_path):
    p = labctl("scenarios", "--validate", str(write(tmp_path, BASE + "lab: {items: 14000, rate: 250}\n")))
    said = " ".join(p.stdout.split())  # rich wraps the line at 80 columns off a terminal
    assert p.returncode == 0 and said.endswith("; duration_s 142 s, derived)"), p.stdout + p.stderr


def test_validate_of_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(LabError) as ei:
        scenario.validate(tmp_path / "nope.yaml")
    assert ei.value.code == ExitCode.NOT_FOUND
    assert scenario.validate(write(tmp_path, "name: t\n  lesson: [\n"))[0].startswith("s.yaml: line 2: not valid YAML")
