"""docs/events.md against what the real programs emit.

The supervisor, the worker and the monitor run locally on loopback (the test
plays Docker's restart policy) on a short job with a crash (999) and negative
readings. Every kind, supervisor state, monitor verdict and heartbeat-only
value they print must be documented, and every kind (and state) documented
for the supervisor and the monitor must show up in the run, or be listed
below with the reason the run cannot reach it.
"""
from __future__ import annotations

import re

import pytest

from harness import Platform, assert_exactly_once, start_monitor, start_supervisor
from helpers import ROOT, free_udp_port, wait_until

DOC = ROOT / "docs" / "events.md"
INTERVAL_MS = 100
TIMEOUT_MS = 1000

# Documented, but this run (a healthy loopback, one poison item, negative
# readings) cannot reach them.
NOT_REACHED = {
    ("supervisor", "kind", "timeout"): "no pause or partition: the worker always answers in time",
    ("supervisor", "kind", "protocol_error"): "the real worker answers every line in the protocol",
    ("supervisor", "kind", "error"): "the job neither stalls past --give-up-s nor fills the volume",
    ("supervisor", "state", "timed_out"): "no pause or partition, so no timeout",
    ("monitor", "verdict", "PAUSED"): "nothing freezes the worker",
    ("monitor", "verdict", "PARTITIONED"): "nothing cuts the heartbeat path",
    ("monitor", "verdict", "SLOW"): "the loopback never loses or delays beats",
    ("monitor", "kind", "beat"): "only with --log-beats 1, which this run does not set",
    ("supervisor", "kind", "corrupt_result"): "the end-to-end check is off (--verify); test_bitflip_supervisor.py",
    ("worker", "kind", "log"): "this run reads the supervisor's and the monitor's events, not the worker's log",
    ("worker", "kind", "bitflip"): "no bitflip fault; tests/test_bitflip_worker.py",
    ("monitor", "kind", "late"): "the monitor is never starved on a quiet loopback (tests/test_units.py starves it)",
}


def documented() -> dict[tuple[str, str], set[str]]:
    """{(section, first column header): the first column's values} for every
    table of events.md; a section is the first word of a `## ` heading."""
    out: dict[tuple[str, str], set[str]] = {}
    section = ""
    header: str | None = None  # the table's first column, once its separator row confirmed it
    above: str | None = None  # the previous line's first cell, if it was a table row
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section, header, above = line[3:].split()[0], None, None
            continue
        if not line.startswith("|"):
            header = above = None
            continue
        first = line.strip("|").split("|")[0].strip()
        if header is None and above is not None and re.fullmatch(r":?-+:?", first):
            header = above.strip("`")
            out.setdefault((section, header), set())
        elif header is not None:
            out[(section, header)].add(first.strip("`"))
        above = first
    return out


@pytest.fixture
def run(procs, tmp_path):
    """The events of one job: monitor first (it sees the worker arrive), then
    a restarting worker, then the supervisor; every process registered with
    procs, so all are stopped at teardown, also when an assertion fails."""
    udp = free_udp_port()
    mon_p, mev = start_monitor(procs, tmp_path, udp, INTERVAL_MS, TIMEOUT_MS)
    wait_until(lambda: mev.first("tick"), 10, what="the monitor's first tick")
    plat = procs.add(Platform(tmp_path, udp_port=udp, heartbeat_ms=INTERVAL_MS, extra=["--bug-trigger", "999"]))
    plat.start()
    wait_until(lambda: mev.first("verdict", verdict="HEALTHY"), 10, what="monitor HEALTHY")
    inp = tmp_path / "input.dat"
    sup_p, sev = start_supervisor(procs, tmp_path, plat.port, inp, "--generate", "20000", "--seed", "9")
    assert sup_p.wait(60) == 0, (tmp_path / "supervisor.log").read_text()[-2000:]
    assert_exactly_once(tmp_path / "out", inp)
    # The worker exits 0 at the job's end and stays down: STOPPED, then the
    # heartbeat-only view goes DEAD once the beats have been silent long enough.
    wait_until(lambda: mev.first("verdict", verdict="STOPPED"), 5, what="STOPPED after the job")
    wait_until(lambda: mev.first("verdict", heartbeat_only="DEAD"), 5, what="heartbeat-only DEAD")
    mev.close()  # SIGTERM: the monitor's `stop` event, and EOF for the reader
    sev.close()
    assert mon_p.returncode == 0
    return mev.events + sev.events


def emitted(events: list[dict]) -> dict[tuple[str, str], set[str]]:
    """{(source, field): values} for kind, the supervisor's state and the
    monitor's verdict and heartbeat_only, the previous_* fields included."""
    out: dict[tuple[str, str], set[str]] = {}

    def add(source, field, value):
        if value is not None:
            out.setdefault((source, field), set()).add(value)

    for e in events:
        add(e["source"], "kind", e["kind"])
        if e["source"] == "supervisor" and e["kind"] in ("state", "progress"):
            add("supervisor", "state", e["state"])
        if e["source"] == "monitor":
            add("monitor", "verdict", e.get("verdict"))
            add("monitor", "verdict", e.get("previous"))
            add("monitor", "heartbeat_only", e.get("heartbeat_only"))
            add("monitor", "heartbeat_only", e.get("previous_heartbeat_only"))
    return out


def test_the_doc_has_the_tables_this_test_reads():
    doc = documented()
    for key in [("supervisor", "kind"), ("supervisor", "state"), ("monitor", "kind"), ("monitor", "verdict"),
                ("monitor", "heartbeat_only")]:
        assert doc.get(key), f"events.md has no table headed {key[1]!r} under '## {key[0]}'"
    assert "done" in doc[("supervisor", "state")] and "done" in doc[("supervisor", "kind")]
    for source, field, value in NOT_REACHED:
        assert value in doc[(source, field)], f"NOT_REACHED lists {value!r}, which events.md does not document"


def test_every_emitted_kind_and_value_is_documented_and_every_documented_one_emitted(run):
    doc = documented()
    got = emitted(run)
    assert {s for s, _ in got} == {"supervisor", "monitor"}, sorted(got)
    undocumented = {(source, field): sorted(values - doc.get((source, field), set()))
                    for (source, field), values in got.items() if values - doc.get((source, field), set())}
    assert not undocumented, f"emitted but not in docs/events.md: {undocumented}"
    missing = {}
    for (source, field), values in doc.items():
        if source not in ("supervisor", "monitor"):
            continue
        unseen = {v for v in values - got.get((source, field), set()) if (source, field, v) not in NOT_REACHED}
        if unseen:
            missing[(source, field)] = sorted(unseen)
    assert not missing, f"documented but neither emitted in this run nor listed in NOT_REACHED: {missing}"


def test_the_fault_journal_row_names_every_phase_and_fault():
    """labctl's own events: every journal phase and every fault kind is in the doc's `fault` row."""
    from labctl import faults, journal

    doc = (ROOT / "docs" / "events.md").read_text()
    row = next(ln for ln in doc.splitlines() if ln.startswith("| `fault` |"))
    phases = [journal.INTENT, journal.RETRY, journal.APPLIED, journal.FAILED, journal.REVERTED, journal.REVERT_FAILED]
    missing = [p for p in phases if f"`{p}`" not in row] + [k for k in faults.FAULTS if f"`{k}`" not in row]
    assert not missing, f"docs/events.md's fault row lacks {missing}"
