"""The supervisor's end-to-end check (--verify, issue 15) against the real C
worker with its bitflip fault on: local, no Docker. Verified, every corrupt
result is detected, counted and sent again, and the job ends exactly once and
right; unverified, the oracle finds the wrong squares, as many as were flipped."""
from __future__ import annotations

import json
import re
import signal
import time

import pytest

from harness import start_supervisor
from helpers import SUPERVISOR, WORKER, free_port, load_program, wait_until
from labctl import oracle

sup = load_program("supervisor", SUPERVISOR)
FLIPPED = re.compile(rb"bitflip: (\d+) result\(s\) flipped while on")


def run_job(procs, tmp_path, p: float, items: int, *extra: str) -> tuple[dict, int, list[dict]]:
    """A listen-mode worker with the fault on at p, the supervisor over it:
    (the supervisor's summary, the flips the worker counted, its events)."""
    control = tmp_path / "bitflip"
    control.write_text(str(p))
    port = free_port()
    worker = procs.popen([str(WORKER), "--listen", f"127.0.0.1:{port}", "--lock", str(tmp_path / "cworker.lock"),
                          "--bug-trigger", "none", "--bitflip-control", str(control)],
                         stdout=procs.open(tmp_path / "worker.out", "wb"), stderr=procs.open(tmp_path / "w.err", "wb"))
    wait_until(lambda: (tmp_path / "cworker.lock").exists(), 5, what="the worker's lock")
    worker.send_signal(signal.SIGUSR1)
    time.sleep(0.1)
    inp = tmp_path / "input.dat"
    proc, ev = start_supervisor(procs, tmp_path, port, inp, "--generate", str(items), "--window", "64", *extra)
    assert proc.wait(timeout=120) == 0, (tmp_path / "supervisor.log").read_text()[-2000:]
    assert worker.wait(timeout=10) == 0  # EOF after the job: it logs its count at exit
    flips = [int(n) for n in FLIPPED.findall((tmp_path / "w.err").read_bytes())]
    wait_until(lambda: ev.first("done"), 5, what="the done event")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    return summary, sum(flips), list(ev.events)


def test_verified_every_corruption_is_detected_and_the_job_is_exactly_once(procs, tmp_path):
    summary, flipped, events = run_job(procs, tmp_path, 0.05, 3000, "--verify", "on")
    assert flipped > 50
    assert oracle.compare(tmp_path / "out", tmp_path / "input.dat", None) == []
    detected = [e for e in events if e["kind"] == "corrupt_result"]
    assert summary["corrupt_results"] == len(detected) == flipped  # coverage 1.0
    assert {e["action"] for e in detected} <= {"resent", "dropped"}
    assert "resent" in {e["action"] for e in detected}
    assert summary["dead_lettered"] == 0
    done = next(e for e in events if e["kind"] == "done")
    assert done["corrupt_results"] == flipped
    log = (tmp_path / "supervisor.log").read_text()
    assert "corrupt result" in log and "sent again" in log


def test_unverified_the_oracle_finds_every_flip_as_a_wrong_square(procs, tmp_path):
    summary, flipped, events = run_job(procs, tmp_path, 0.05, 3000)
    assert flipped > 50
    problems = oracle.compare(tmp_path / "out", tmp_path / "input.dat", None)
    assert len(oracle.wrong_squares(tmp_path / "out")) == flipped
    assert problems and all("squared is" in p for p in problems)
    assert oracle.compare(tmp_path / "out", tmp_path / "input.dat", None, squares=False) == []
    assert summary["corrupt_results"] == 0 and not [e for e in events if e["kind"] == "corrupt_result"]


def test_an_item_corrupted_every_time_is_dead_lettered_with_a_reason(procs, tmp_path):
    summary, flipped, events = run_job(procs, tmp_path, 1.0, 4, "--verify", "on", "--max-corrupt-results", "3")
    lines = oracle.input_lines((tmp_path / "input.dat").read_bytes())
    valid = len(oracle.expected(lines, None).results)
    assert summary["dead_lettered"] == valid
    dead = (tmp_path / "out" / "dead-letter.csv").read_text().splitlines()[1:]
    assert len(dead) == valid and all(",3 corrupt results,3" in row for row in dead)
    letters = [e for e in events if e["kind"] == "dead_letter"]
    assert all(e["reason"] == "3 corrupt results" and e["crashes"] == 0 for e in letters)
    assert summary["corrupt_results"] >= 3 * valid and flipped >= 3 * valid


@pytest.mark.parametrize(("line", "item", "corrupt"), [
    (b"12,144", b"12", False), (b"12,145", b"12", True), (b"12,x", b"12", True),
    (b"12,145", b" 12 ", True), (b"12,144", b" 12 ", False), (b"ERROR: Corrupted data -3", b"-3", False),
    (b"13,169", b"12", False),  # another item's answer: absorb's ProtocolError, not a corrupt square
])
def test_is_corrupt(line, item, corrupt):
    assert sup.Supervisor.is_corrupt(line, item) is corrupt
