"""The lease lab in labctl: its scenarios parsed, its checker on made-up
events (pure), and both zombie-lease scenarios on the real engine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import checker_verdict, labctl, labelled
from labctl import check, lease, scenario, states
from labctl.errors import ExitCode, LabError

T0 = 1_800_000_000.0


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


LEASE_SC = """name: s
lesson: l
lab: {kind: lease, fencing: true}
timeline:
  - {at: 2, do: pause, target: alice, on_event: alice.read, for: 6}
duration_s: 13
expect:
  lease: {safe: true, zombie: true, min_fenced: 1}
"""


# ---------------------------------------------------------------- scenarios


def test_the_builtin_lease_scenarios_parse_as_lease_labs():
    on = scenario.resolve("zombie-lease")
    off = scenario.resolve("zombie-lease-unfenced")
    assert (on.lab.kind, on.lab.fencing, off.lab.fencing) == ("lease", True, False)
    assert on.timeline[0].on_event == ("alice", "read") and on.timeline[0].target == "alice"
    assert on.expect.lease == scenario.LeaseExpect(safe=True, zombie=True, min_fenced=1)
    assert off.expect.lease.safe is False
    assert on.lab.env()["LAB_FENCING"] == "on" and off.lab.env()["LAB_FENCING"] == "off"
    assert on.lab.services == ("lease", "store", "alice", "bob")


@pytest.mark.parametrize("edit, error", [
    (("fencing: true}", "fencing: true, items: 5}"),
     "s.yaml: lab.items: a lease lab has no worker to set it for; "
     "a lease lab takes fencing, ttl_ms, think_ms, work_ms"),
    (("lab: {kind: lease, fencing: true}", "lab: {fencing: true}"),
     "s.yaml: lab.fencing: only a lease lab takes it (lab.kind: lease)"),
    (("fencing: true}", "fencing: true, think_ms: 2000}"),
     "s.yaml: lab.think_ms: must be less than lab.ttl_ms (2000): a holder that thinks longer than its lease "
     "loses it every time, paused or not"),
    (("target: alice, ", ""),
     "s.yaml: timeline[0].target: is required in a lease lab: one of lease, store, alice, bob"),
    (("target: alice", "target: worker"),
     "s.yaml: timeline[0].target: 'worker' is not one of lease, store, alice, bob"),
    (("do: pause", "do: latency"), "s.yaml: timeline[0].do: 'latency' is not one of crash, kill, start, pause, "
                                  "unpause, sigstop, sigcont, partition, heal, stop, skew, skew-off, drift, "
                                  "drift-off"),
    (("alice.read", "carol.read"), "s.yaml: timeline[0].on_event: expected SERVICE.KIND (e.g. alice.read), SERVICE "
                                   "one of lease, store, alice, bob, got 'carol.read'"),
    (("alice.read", "alice"), "s.yaml: timeline[0].on_event: expected SERVICE.KIND (e.g. alice.read), SERVICE one "
                              "of lease, store, alice, bob, got 'alice'"),
    (("  lease: {safe: true", "  never: {monitor: [CRASHED]}\n  lease: {safe: true"),
     "s.yaml: expect.never: a lease lab is judged by expect.lease (safe, zombie, min_fenced)"),
    (("safe: true,", "safe: maybe,"), "s.yaml: expect.lease.safe: expected true or false, got 'maybe'"),
])
def test_lease_scenario_errors_name_file_and_key(tmp_path, edit, error):
    with pytest.raises(LabError) as ei:
        scenario.load(write(tmp_path, LEASE_SC.replace(*edit)))
    assert ei.value.code == ExitCode.BAD_SCENARIO
    assert ei.value.what == error


def test_a_worker_lab_takes_no_on_event_and_no_lease_expectations(tmp_path):
    base = "name: s\nlesson: l\ntimeline:\n  - {at: 1, do: pause, for: 2, on_event: alice.read}\n"
    with pytest.raises(LabError) as ei:
        scenario.load(write(tmp_path, base))
    assert ei.value.what == "s.yaml: timeline[0].on_event: only a lease lab's steps wait for an event (lab.kind: lease)"
    with pytest.raises(LabError) as ei:
        scenario.load(write(tmp_path, "name: s\nlesson: l\nexpect:\n  lease: {safe: true}\n"))
    assert ei.value.what == "s.yaml: expect.lease: only a lease lab is judged by it (lab.kind: lease)"


# ---------------------------------------------------------------- the checker, on made-up events


def ev(t: float, source: str, kind: str, **fields):
    return {"ts": T0 + t, "source": source, "kind": kind, **fields}


def story(fencing: bool) -> list[dict]:
    """alice holds 33 and writes 1..3; paused from 4 s in her think; the lease
    expires at 6; bob takes 34 at 6.5 and writes 4; alice wakes at 10 and
    writes 4 with token 33 (she read 3): bob's increment is lost."""
    evs = [ev(0.5, "lease", "granted", client="alice", token=33, renewal=False),
           ev(0.5, "holder", "believes", client="alice", holds=True, token=33)]
    for i, t in enumerate((1, 2, 3), 1):
        evs += [ev(t, "holder", "wrote", client="alice", token=33, value=i, ok=True),
                ev(t, "store", "accepted", client="alice", token=33, value=i, highest=33, stale=False)]
    evs += [ev(3.5, "holder", "read", client="alice", token=33, value=3),
            ev(4.0, "engine", "container", action="pause", service="alice"),
            ev(6.0, "lease", "expired", client="alice", token=33),
            ev(6.5, "lease", "granted", client="bob", token=34, renewal=False),
            ev(6.5, "holder", "believes", client="bob", holds=True, token=34),
            ev(7.5, "store", "accepted", client="bob", token=34, value=4, highest=34, stale=False),
            ev(9.5, "lease", "granted", client="bob", token=34, renewal=True),
            ev(10.0, "engine", "container", action="unpause", service="alice"),
            ev(10.0, "holder", "wrote", client="alice", token=33, value=4, ok=not fencing)]
    if fencing:
        evs += [ev(10.0, "store", "fenced", client="alice", token=33, highest=34, key="counter", value=4),
                ev(10.0, "holder", "believes", client="alice", holds=False, token=None)]
    else:
        evs += [ev(10.0, "store", "accepted", client="alice", token=33, value=4, highest=34, stale=True),
                ev(10.1, "holder", "believes", client="alice", holds=False, token=None)]
    evs += [ev(11.0, "store", "accepted", client="bob", token=34, value=5, highest=34, stale=False)]
    return evs


def by_name(checks):
    return {c.name: c for c in checks}


def test_fencing_on_passes_every_safety_check_and_shows_the_zombie():
    sc = scenario.resolve("zombie-lease")
    checks = lease.judge(sc, story(fencing=True), T0 + 12, T0)
    assert all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]
    c = by_name(checks)
    assert c["a zombie: two holders believed they held the lease at once"].detail == "3.5 s from +6.5 s"
    assert c["the zombie wrote with a token older than a newer grant"].detail == "alice wrote token 33 at +10.0 s"
    assert c["the store fenced off at least 1 stale write(s)"].detail == "1: first alice's token 33 at +10.0 s"
    assert c["the lease service never granted the lease to two holders at once"].detail == \
        "2 grant(s), tokens 33, 34"


def test_fencing_off_fails_the_safety_checks_exactly_as_the_lesson_says():
    """The unfenced run's events judged as if fencing were expected: the
    stale write and the lost update, and nothing else, fail."""
    fenced_sc = scenario.resolve("zombie-lease")
    checks = lease.judge(fenced_sc, story(fencing=False), T0 + 12, T0)
    failed = {c.name: c.detail for c in checks if not c.ok}
    assert failed == {
        "no accepted write carries a token lower than an earlier accepted one":
            "alice's write with token 33 accepted at +10.0 s after token 34",
        "no two holders' leases overlap in the store's view": "token 33's writes resume after token 34's",
        "no lost update: every accepted write raised the counter":
            "alice's write (token 33) at +10.0 s set the counter to 4 over 4: 1 increment(s) lost",
        "the store fenced off at least 1 stale write(s)": "none",
    }
    # Its own scenario expects exactly that, and says what it found.
    checks = lease.judge(scenario.resolve("zombie-lease-unfenced"), story(fencing=False), T0 + 12, T0)
    assert all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]
    assert by_name(checks)["unsafe without fencing: the checker finds the lost update"].detail == \
        "alice's write (token 33) set the counter to 4 over 4: 1 increment(s) of the new holder lost"


def test_an_unfenced_run_that_lost_nothing_fails_its_own_expectation():
    """If the zombie never wrote (the pause missed the think), the unfenced
    scenario must not pass: the lesson did not happen."""
    evs = [e for e in story(fencing=False) if not (e["source"] in ("store", "holder") and e["ts"] >= T0 + 10)]
    checks = lease.judge(scenario.resolve("zombie-lease-unfenced"), evs, T0 + 12, T0)
    failed = {c.name for c in checks if not c.ok}
    assert failed == {"the zombie wrote with a token older than a newer grant",
                      "unsafe without fencing: the store accepted a write with a token lower than an earlier one",
                      "unsafe without fencing: the checker finds the lost update"}


def test_two_grants_at_once_and_a_token_that_goes_back_are_caught():
    evs = [ev(0.5, "lease", "granted", client="alice", token=34, renewal=False),
           ev(1.0, "lease", "granted", client="bob", token=33, renewal=False)]
    c = by_name(lease.judge(scenario.resolve("zombie-lease"), evs, T0 + 5, T0))
    grants = c["the lease service never granted the lease to two holders at once"]
    assert not grants.ok and grants.detail == "token 33 (bob) granted at +1.0 s while token 34 still held"
    assert not c["its tokens only grow"].ok and c["its tokens only grow"].detail == "34, 33"


def test_the_checker_dispatches_a_lease_run_to_the_lease_judge(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "scenario.yaml").write_text((scenario.BUILTIN_DIR / "scenario-zombie-lease.yaml").read_text())
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in story(fencing=True)))
    (run / "summary.json").write_text(json.dumps({"started": T0, "ended": T0 + 12, "error": None}))
    v = check.check_run(run)
    assert v.ok and v.latencies == []
    assert "no lost update: every accepted write raised the counter" in (run / "report.md").read_text()


def test_facts_pair_beliefs_and_close_them_at_the_end():
    f = lease.Facts.of(story(fencing=True), T0 + 12)
    assert f.beliefs["alice"] == [(T0 + 0.5, T0 + 10.0, 33)]
    assert f.beliefs["bob"] == [(T0 + 6.5, T0 + 12, 34)]  # still believing at the end
    assert f.overlaps() == [(T0 + 6.5, T0 + 10.0)]
    assert [g.token for g in f.grants] == [33, 34] and f.grants[0].end == T0 + 6.0


def test_the_view_shows_a_lease_lab_in_its_own_rows():
    from rich.console import Console

    from labctl import observe, view

    lv = lease.LeaseLive("zl-1", "scenario-zombie-lease")
    for e in story(fencing=True):
        lv.absorb(e)
    lv.holder_truth = {"alice": states.RUNNING, "bob": states.RUNNING}
    worker = observe.Live("p-1", "scenario-pause")
    con = Console(width=200, record=True)
    con.print(view.table([lv, worker]))
    text = con.export_text()
    assert "lease service: holder (token)" in text and "bob (34)" in text
    assert "waits / RUNNING" in text and "holds 34 / RUNNING" in text
    assert "5 / 1 / 0" in text  # accepted / fenced / stale
    assert "monitor verdict" in text  # the worker lab's rows, beside
    assert lease.cell(lv, "counter") == "5"
    assert "lease=bob (34)" in view.lease_line(lv)


# ---------------------------------------------------------------- the real engine


@pytest.mark.docker
@pytest.mark.slow
def test_both_zombie_lease_scenarios_on_the_real_engine(built, engine, labs):
    """Side by side: fencing on passes; fencing off shows the lost update."""
    on, off = labs.new("zl-on"), labs.new("zl-off")
    p1 = labctl("up", "scenario-zombie-lease", "--lab", on, runs=labs.runs)
    p2 = labctl("up", "scenario-zombie-lease-unfenced", "--lab", off, runs=labs.runs)
    for p in (p1, p2):
        assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    for lab_id, fenced in ((on, True), (off, False)):
        run_dir = next((labs.runs / lab_id).glob("2*"))
        verdict = checker_verdict(run_dir)
        assert verdict["ok"] is True, verdict
        names = {c["name"]: c["detail"] for c in verdict["checks"]}
        assert names["its tokens only grow"] in ("33, 34", "33, 34, 35")
        events = [json.loads(ln) for ln in (run_dir / "events.jsonl").read_text().splitlines()]
        kinds = {(e["source"], e["kind"]) for e in events}
        assert {("lease", "granted"), ("holder", "believes"), ("store", "accepted"),
                ("engine", "container"), ("labctl", "fault")} <= kinds
        if fenced:
            assert any(e["source"] == "store" and e["kind"] == "fenced" and e["client"] == "alice" for e in events)
            assert "lost" not in names["no lost update: every accepted write raised the counter"]
        else:
            assert "increment(s) of the new holder lost" in \
                names["unsafe without fencing: the checker finds the lost update"]
            stale = [json.loads(ln) for ln in (run_dir / "lab" / "store.jsonl").read_text().splitlines()]
            assert any(r["token"] < r["highest"] for r in stale), "the store's own log shows the stale write"
        from PIL import Image

        img = Image.open(run_dir / "timeline.png")
        assert img.text["Lanes"].startswith("lease service (its holder)|alice believes")
        assert int(img.text["FaultWindows"]) == 1 and int(img.text["Overlaps"]) >= 1
        assert labelled(engine, lab_id) == ([], [], []), "the lab is torn down after the run"


def test_the_lease_picture_draws_its_lanes_the_overlap_and_the_fault(tmp_path):
    from PIL import Image

    evs = story(fencing=False)
    evs += [ev(4.0, "labctl", "fault", id="f1", fault="pause", target="alice", step=1, phase="intent"),
            ev(4.0, "labctl", "fault", id="f1", fault="pause", target="alice", step=1, phase="applied"),
            ev(10.0, "labctl", "fault", id="f1-revert", of="f1", fault="unpause", target="alice", step=1,
               phase="reverted")]
    evs.sort(key=lambda e: e["ts"])
    meta = lease.render(lease.Column("scenario-zombie-lease-unfenced", evs, T0, T0 + 12), tmp_path / "t.png")
    img = Image.open(tmp_path / "t.png")
    assert img.text["Lanes"] == meta["Lanes"] and meta["Lanes"].startswith("lease service (its holder)|alice believes")
    assert (meta["FaultWindows"], meta["Overlaps"]) == ("1", "1")
