"""Integration: the bitflip fault (issue 15) on a real engine, live, and its
revert, also after the labctl that applied it was killed with SIGKILL.

The lab runs a long unverified job (test_gray_faults' `live` lab): what the
fault did is read from the lab itself, the results the supervisor wrote with
a wrong square, the control file in the worker's /tmp, and the worker's count."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from test_gray_faults import acked, journal, live  # noqa: F401  (live: the fixture)

from helpers import labctl, labelled, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def wrong_squares(engine, lab: str) -> int:
    """Rows of the supervisor's results.csv whose square is not n*n."""
    code, out = engine.exec(f"labctl-{lab}-supervisor", ["cat", "/lab/out/results.csv"])
    assert code == 0, out
    bad = 0
    for row in out.splitlines()[1:]:
        parts = row.split(",")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            bad += int(parts[2]) != int(parts[1]) ** 2
    return bad


def control_file(engine, lab: str) -> str | None:
    code, out = engine.exec(f"labctl-{lab}-worker", ["cat", "/tmp/bitflip"])
    return out if code == 0 else None


def applied(labs, lab: str) -> bool:
    """The background labctl has journaled the bitflip as applied (no journal yet: not yet)."""
    if not (labs.runs / lab / "journal.jsonl").exists():
        return False
    return any(r["fault"] == "bitflip" and r["phase"] == "applied" for r in journal(labs, lab))


def still(engine, lab: str, wait: float = 2.0) -> bool:
    """No new wrong square over `wait` seconds of a streaming job."""
    before = wrong_squares(engine, lab)
    time.sleep(wait)  # the job streams on at its pace: a window to see no new corruption in
    return wrong_squares(engine, lab) == before


def test_bitflip_live_corrupts_results_silently_and_bitflip_off_stops_it(engine, labs, live):  # noqa: F811
    lab = live
    wait_until(lambda: acked(labs, lab) > 100, 60, interval=0.2, what="the job under way")
    assert wrong_squares(engine, lab) == 0 and control_file(engine, lab) is None
    p = labctl("fault", "bitflip", "0.2", "--lab", lab, runs=labs.runs)
    assert p.returncode == 0, p.stderr
    assert f"lab {lab}: bitflip worker p=0.2" in p.stdout, p.stdout
    rec = next(r for r in journal(labs, lab) if r["fault"] == "bitflip" and r["phase"] == "intent")
    assert rec["params"] == {"p": 0.2} and rec["inverse"] == "bitflip-off"
    assert control_file(engine, lab) == "0.200000"
    wait_until(lambda: wrong_squares(engine, lab) > 20, 30, interval=0.5, what="wrong squares in results.csv")
    # Nothing died and the engine sees nothing: the worker runs, not restarted.
    st = engine.inspect(f"labctl-{lab}-worker")
    assert st.status == "running" and st.restart_count == 0
    # Only the worker answers with squares.
    bad = labctl("fault", "bitflip", "--target", "monitor", "--lab", lab, runs=labs.runs)
    assert bad.returncode != 0 and "sends none" in bad.stderr, bad.stderr
    r = labctl("fault", "bitflip-off", "--lab", lab, runs=labs.runs)
    assert r.returncode == 0 and "reverts the bitflip" in r.stdout, r.stdout + r.stderr
    assert control_file(engine, lab) is None
    time.sleep(0.5)  # answers already in flight when it went off
    assert still(engine, lab)
    logs = engine.logs_text(f"labctl-{lab}-worker")
    assert "bitflip: " in logs and "result(s) flipped while on (p 0.2000)" in logs, logs[-2000:]
    phases = [(r["fault"], r["phase"]) for r in journal(labs, lab) if r["phase"] != "retry"]
    assert ("bitflip", "applied") in phases and ("bitflip-off", "reverted") in phases, phases


def bitflip_then_kill_labctl(labs, lab: str, procs, tmp_path) -> None:
    """A `labctl fault bitflip --for 5m` killed with SIGKILL once its fault is
    journaled as applied: nothing reverts it but the journal."""
    wait_until(lambda: acked(labs, lab) > 100, 60, interval=0.2, what="the job under way")
    env = {**os.environ, "LABCTL_RUNS": str(labs.runs)}
    bg = procs.popen([sys.executable, "-m", "labctl", "fault", "bitflip", "0.2", "--lab", lab, "--for", "5m"],
                     env=env, stdout=(tmp_path / "f.log").open("w"), stderr=(tmp_path / "f.err").open("w"))
    wait_until(lambda: applied(labs, lab), 60, what="bitflip journaled as applied")
    bg.send_signal(signal.SIGKILL)
    bg.wait(10)


def test_a_bitflip_left_by_a_killed_labctl_is_reverted_by_down(engine, labs, live, procs, tmp_path):  # noqa: F811
    lab = live
    bitflip_then_kill_labctl(labs, lab, procs, tmp_path)
    # The killed labctl reverted nothing: the worker still corrupts.
    first = wrong_squares(engine, lab)
    wait_until(lambda: wrong_squares(engine, lab) > first + 10, 30, interval=0.5, what="more wrong squares")
    assert control_file(engine, lab) is not None
    # `down` (what `recover` runs for every lab) reverts the journal's faults
    # before it removes the lab: the journal says the revert did it.
    d = labctl("down", "--lab", lab, runs=labs.runs, timeout=180)
    assert d.returncode == 0, d.stderr
    assert f"lab {lab}: reverted 1 fault(s)" in d.stdout, d.stdout
    done = [(r["fault"], r["phase"]) for r in journal(labs, lab) if r["phase"] != "retry"]
    assert ("bitflip-off", "reverted") in done, done
    assert labelled(engine, lab) == ([], [], [])


def test_a_bitflip_left_by_a_killed_labctl_is_undone_by_its_inverse_by_hand(engine, labs, live, procs,  # noqa: F811
                                                                           tmp_path):
    lab = live
    bitflip_then_kill_labctl(labs, lab, procs, tmp_path)
    wait_until(lambda: wrong_squares(engine, lab) > 10, 30, interval=0.5, what="wrong squares")
    r = labctl("fault", "bitflip-off", "--lab", lab, runs=labs.runs)
    assert r.returncode == 0 and "reverts the bitflip" in r.stdout, r.stdout + r.stderr
    time.sleep(0.5)  # answers already in flight when it went off
    assert still(engine, lab) and control_file(engine, lab) is None
