"""`labctl grade` on all four exercises in real sandboxes, in one run of
every submission, two at a time: the lab's own programs (the reference,
made by labctl.grade.reference from the lab's sources) score full marks;
each wrong submission in tests/fixtures/submissions loses exactly the
points of the tests its expect.json names, and passes every other test it
submitted; the hostile ones end within their timeouts and say why; every
system test's run is a timeline picture linked from feedback.md; and
nothing labelled with the run is left on the engine. Every assertion reads
the written results.json, as Gradescope would.

A fixture is a directory with only the files it submits, a README.md line
saying what is wrong with it, and expect.json: "fail", the exact set of
tests it must fail among those it submitted (informational findings
included); "output", {test: a regex its results.json output must match};
"archive" ("empty", "dotdot"): the submission is an archive made here at
test time, and "refused": intake must refuse it.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT
from labctl.grade import reference
from labctl.grade.catalog import CATALOG

FIXTURES = ROOT / "tests" / "fixtures" / "submissions"
SEED = 20261205
JOBS = 2
EXPECT = {d.name: json.loads((d / "expect.json").read_text()) for d in sorted(FIXTURES.iterdir()) if d.is_dir()}
# The longest any one test may take: the stderr flood's limit (ex4_supervisor) and the host's grace.
LONGEST_TEST_S = 60 + 30


def docker(fn):
    """The tests of the grading run: they need the engine and, together, minutes."""
    return pytest.mark.docker(pytest.mark.slow(pytest.mark.timeout(1800)(fn)))


def submitted(files: set[str]) -> set[str]:
    """The tests whose files are all in the submission: the ones it is graded on."""
    return {t.number for t in CATALOG if set(t.files) <= files}


def make_archive(kind: str, path: Path) -> Path:
    if kind == "empty":
        zipfile.ZipFile(path.with_suffix(".zip"), "w").close()
        return path.with_suffix(".zip")
    if kind == "dotdot":
        out = path.with_suffix(".tar.gz")
        with tarfile.open(out, "w:gz") as tar:
            data = b"written outside the submission\n"
            info = tarfile.TarInfo("../escaped.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return out
    raise ValueError(f"unknown archive kind {kind!r}")


def grading_resources(engine, run_id: str | None = None) -> set[str]:
    from labctl import labels

    f = labels.grade_filters(run_id)
    return {c.name for c in engine.containers(f)} | set(engine.volumes(f))


@pytest.fixture(scope="module")
def graded(engine, built, tmp_path_factory):
    """(root, the run, {submission: results.json}) for the reference and every fixture, graded once."""
    from labctl.grade import runner

    root = tmp_path_factory.mktemp("grade-exercises")
    archives = root / "archives"
    archives.mkdir()
    paths: list[Path] = [reference.build(root / "reference")]
    for name, spec in EXPECT.items():
        paths.append(make_archive(spec["archive"], archives / name) if "archive" in spec else FIXTURES / name)
    lines: list[str] = []
    run = runner.grade(paths, runner.Options(exercises="all", out_dir=root / "out", jobs=JOBS, seed=SEED),
                       progress=lines.append, engine=engine)
    results = {d.name: json.loads((d / "results.json").read_text())
               for d in (root / "out").iterdir() if (d / "results.json").exists()}
    try:
        yield root, run, results, lines
    finally:
        # Only this run's own: every resource it makes carries its run id, and
        # another grading run (a bench, a second suite) may be at work beside it.
        left = grading_resources(engine, run.run_id)
        assert not left, f"the grading run left these behind: {sorted(left)}"


def by_number(results: dict) -> dict[str, dict]:
    return {t["number"]: t for t in results["tests"]}


@docker
def test_every_submission_was_graded_without_a_grader_error(graded):
    _, run, results, lines = graded
    assert set(results) == {"reference", *EXPECT}, lines
    broken = {name: r["extra_data"]["grader_error"] for name, r in results.items() if r["extra_data"]["grader_error"]}
    assert not broken, broken
    assert run.exit_code == 1, "some fixtures fail tests; none is a grader error"


@docker
def test_the_reference_scores_full_marks(graded):
    _, _, results, _ = graded
    ref = results["reference"]
    assert ref["score"] == ref["extra_data"]["max_score"] == 400
    # Every test passed, the informational ones too: nothing unsafe in its
    # handlers, and its monitor says "paused" for a SIGSTOPped worker.
    wrong = {n: t["output"][:600] for n, t in by_number(ref).items() if t["status"] != "passed"}
    assert not wrong, wrong
    assert {t["number"] for t in ref["tests"]} == {t.number for t in CATALOG}


@docker
@pytest.mark.parametrize("name", [n for n, s in EXPECT.items() if "archive" not in s])
def test_each_fixture_loses_exactly_the_points_it_declares(graded, name):
    _, _, results, _ = graded
    r, spec = results[name], EXPECT[name]
    files = {p.name for p in (FIXTURES / name).iterdir()}
    graded_on = submitted(files)
    assert set(spec["fail"]) <= graded_on, f"expect.json names tests {name} does not submit"
    tests = by_number(r)
    failed = {n for n in graded_on if tests[n]["status"] == "failed"}
    detail = "\n\n".join(f"{n}:\n{tests[n]['output'][:1500]}" for n in sorted(failed ^ set(spec["fail"])))
    assert failed == set(spec["fail"]), f"{name} failed {sorted(failed)}, expected {sorted(spec['fail'])}\n{detail}"
    points = {t.number: t.points for t in CATALOG}
    assert r["score"] == sum(points[n] for n in graded_on - failed), "a failure scores 0, a pass full points"
    others = set(tests) - graded_on
    assert all("not submitted" in tests[n]["output"] for n in others), f"{name}: tests it did not submit ran"
    for number, pattern in spec.get("output", {}).items():
        assert re.search(pattern, tests[number]["output"]), (number, pattern, tests[number]["output"][:1500])


@docker
def test_every_system_run_is_drawn_into_the_feedback(graded):
    """Each system test's run is a timeline picture beside feedback.md, linked
    from it (passed tests too), naming the tests that judged it."""
    from PIL import Image

    root, _, results, _ = graded
    folder = root / "out" / "reference"
    linked = re.findall(r"!\[timeline\]\(([^)]+)\)", (folder / "feedback.md").read_text())
    assert linked and len(linked) == len(set(linked)), linked
    tests = by_number(results["reference"])
    for t in (t for t in CATALOG if t.kind == "system"):
        images = tests[t.number]["extra_data"]["images"]
        assert images and set(images) <= set(linked), (t.number, images)
        for name in images:
            img = Image.open(folder / name)
            assert img.format == "PNG" and (folder / name).stat().st_size < 200_000
            assert t.number in img.text["Tests"].split(", ") and img.text["Lanes"].startswith("worker (truth)|")
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(linked), "pictures nothing links"
    pause = tests["4.24"]["extra_data"]
    assert [e["fault"] for e in pause["fault_timeline"]] == ["pause", "unpause"]
    assert "paused (docker)" in Image.open(folder / pause["images"][0]).text["States"].split("|")


@docker
def test_hostile_submissions_end_within_their_timeouts_and_say_why(graded):
    _, _, results, _ = graded
    for name in (n for n in EXPECT if n.startswith("hostile-")):
        r = results[name]
        slow = {t["number"]: t["extra_data"]["time_s"] for t in r["tests"]
                if t["extra_data"]["time_s"] > LONGEST_TEST_S}
        assert not slow, f"{name}: tests past the longest time limit: {slow}"
        for t in r["tests"]:
            if t["status"] == "failed":
                assert t["output"].strip(), f"{name} {t['number']} failed without saying why"


@docker
def test_the_network_probe_sees_only_loopback(graded):
    _, _, results, _ = graded
    out = by_number(results["hostile-network-probe"])["1.3"]["output"]
    m = re.search(r"network interfaces seen: (.*)", out)
    assert m and m.group(1).split() == ["lo"], out


@docker
def test_an_empty_archive_is_a_submission_with_nothing_submitted(graded):
    _, _, results, _ = graded
    r = results["hostile-empty-archive"]
    assert r["score"] == 0 and r["extra_data"]["refused"] is None and r["extra_data"]["files"] == []
    assert all("not submitted" in t["output"] for t in r["tests"])


@docker
def test_an_archive_with_dotdot_paths_is_refused_and_writes_nothing(graded):
    root, _, results, _ = graded
    r = results["hostile-dotdot-archive"]
    assert EXPECT["hostile-dotdot-archive"]["refused"]
    assert r["extra_data"]["refused"] and "'..'" in r["extra_data"]["refused"]
    assert r["score"] == 0 and all("refused" in t["output"] for t in r["tests"])
    # Intake reads archives in memory: no file appears beside the archive or above it.
    assert not list(root.rglob("escaped.txt")) and not (root.parent / "escaped.txt").exists()


# ------------------------------------------------------------------ judging, without an engine


class FakeSandbox:
    """Answers ctx.run() with what `program(spec)` makes of the case's files."""

    def __init__(self, program):
        self.program = program

    def run(self, spec, host_actions=()):
        return self.program(spec)


def fake_ctx(number: str, seed: int, program, files: dict[str, bytes]):
    from labctl.grade.catalog import BY_NUMBER
    from labctl.grade.runner import Context
    from labctl.grade.submission import Submission

    return Context(BY_NUMBER[number], FakeSandbox(program), Submission("s", Path("s"), dict(files)), {}, seed, 0,
                   Path("."), {})


def process_data(spec, square_negatives: bool = False):
    """processData.py as the sheet wants it (or squaring negatives too), run on the case's input.dat."""
    from labctl.grade.sandbox import RunResult

    log = []
    for raw in spec.files["input.dat"].decode().split():
        n = int(raw)
        stamp = "2026-01-05 10:00:05,025"  # its seconds and milliseconds look like an answer "5,25"
        if n < 0 and not square_negatives:
            log.append(f"{stamp} - WARNING - Corrupted data {n}, skipping")
        elif n == 0:
            log.append(f"{stamp} - CRITICAL - sensor dead at reading 0")
            break
        else:
            log.append(f"{stamp} - INFO - line 3: {n} -> {n * n}")
    err = ("\n".join(log) + "\n").encode()
    return RunResult(pid=7, exit_code=1, elapsed=0.1, stderr=err, stderr_total=len(err))


@pytest.mark.parametrize("seed", range(300))
def test_exercise_1_judges_a_right_processdata_right_whatever_the_seed(seed):
    from labctl.grade import ex1

    for number in ("1.4", "1.5", "1.6", "1.7", "1.8"):
        out = ex1.CHECKS[number](fake_ctx(number, seed, process_data, {"processData.py": b""}))
        assert out.passed, (number, out.seen)
    wrong = ex1.CHECKS["1.5"](fake_ctx("1.5", seed, lambda spec: process_data(spec, square_negatives=True),
                                       {"processData.py": b""}))
    assert not wrong.passed and "squared anyway" in wrong.seen


def test_monitor_lines_are_read_by_their_words():
    from labctl.grade.ex2 import CRASHED, NONE, PAUSED, RUNNING, STALE, verdict

    said = {
        "Worker 12 is running": RUNNING,
        "12:00:01 monitor: running: worker pid 12 is alive": RUNNING,
        "Worker is alive (PID 12)": RUNNING,
        "Worker 12 is NOT running (crashed)": CRASHED,
        "Worker died! PID 12 no longer exists": CRASHED,
        "Worker 12 CRASHED: stale lock file worker.lock left behind": STALE,
        "monitor: stale lock: worker.lock names pid 4242, which is not running": STALE,
        "monitor: paused: worker pid 12 exists but is stopped (SIGSTOP?)": PAUSED,
        "Worker seems frozen": PAUSED,
        "No worker: worker.lock not found": NONE,
        "Lock file missing": NONE,
        "checking...": None,
    }
    assert {line: verdict(line) for line in said} == said


def test_a_supervisors_answers_are_found_but_not_in_timestamps():
    from labctl.grade.ex4_supervisor import answers_in

    text = ("2026-01-05 10:00:05,025 - INFO - line 1: 5 -> 5,25\nResult: 7,49\nResult: 7, 49\n"
            "worker said 12,145\n0.5,25 and 3,9.5\n")
    assert answers_in(text) == {5: 1, 7: 2}


def test_the_stand_ins_record_is_read_per_incarnation():
    from labctl.grade.ex4_supervisor import first_unfed, incarnations

    record = (b"100 7 start robust\n101 7 line 5\n101 7 line \n102 7 line 999\n102 7 signal SEGV\n"
              b"110 8 start robust\n111 8 line 6\n120 8 signal TERM\n121 8 exit 0\n"
              b"130 9 start naive\n130 9 lock-refused cworker.lock\n130 9 exit 75\ngarbage\n")
    first, second, third = incarnations(record)
    assert (first.pid, first.lines, first.signals, first.crashed) == (7, ["5", "", "999"], ["SEGV"], True)
    assert (second.lines, second.signals, second.exit_code, second.exit_ms, second.crashed) == (["6"], ["TERM"], 0,
                                                                                                121, False)
    assert third.refused and third.exit_code == 75 and not third.crashed
    assert first_unfed(["5", "999", "6"], ["5", "999", "999", "6"]) is None
    assert first_unfed(["5", "999", "6", "7"], ["5", "999", "7"]) == 2
