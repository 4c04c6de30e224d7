"""labctl/dependability.py on made-up events: failures, MTTF, MTTR,
availability per observer, and the job's downtime."""
from __future__ import annotations

import pytest

from labctl import dependability, report, states
from labctl.dependability import DOWN, UP, job_downtime, numbers


def engine(ts: float, action: str, **kw: object) -> dict:
    return {"ts": ts, "source": "engine", "kind": "container", "action": action, "service": "worker", **kw}


def sup(ts: float, kind: str, **kw: object) -> dict:
    return {"ts": ts, "source": "supervisor", "kind": kind, **kw}


def verdict(ts: float, v: str, hb: str = states.ALIVE) -> dict:
    return {"ts": ts, "source": "monitor", "kind": "verdict", "verdict": v, "heartbeat_only": hb}


def test_two_crashes_give_mttf_mttr_and_availability():
    seen = [(0.0, states.RUNNING), (10.0, states.CRASHED), (11.0, states.RUNNING), (20.0, states.CRASHED),
            (23.0, states.RUNNING)]
    n = numbers(seen, UP[states.TRUTH], DOWN[states.TRUTH], end=30.0)
    assert (n.failures, n.up_s, n.down_s) == (2, 26.0, 4.0)
    assert n.mttf_s == 13.0 and n.mttr_s == 2.0
    assert n.availability == pytest.approx(13.0 / (13.0 + 2.0))


def test_no_failure_has_no_mttf_or_mttr_and_full_availability():
    n = numbers([(5.0, states.RUNNING)], UP[states.TRUTH], DOWN[states.TRUTH], end=15.0)
    assert n.to_json() == {"failures": 0, "up_s": 10.0, "down_s": 0.0, "mttf_s": None, "mttr_s": None,
                           "availability": 1.0}
    assert numbers([], UP[states.TRUTH], DOWN[states.TRUTH], end=1.0).availability is None


def test_boot_before_the_first_up_word_is_no_outage():
    seen = [(0.0, states.UNKNOWN), (1.0, states.CRASHED), (2.0, states.HEALTHY), (6.0, states.PAUSED)]
    n = numbers(seen, UP[states.MONITOR], DOWN[states.MONITOR], end=8.0)
    assert (n.failures, n.up_s, n.down_s) == (1, 4.0, 2.0)


def test_repeated_words_of_the_ticks_count_once():
    seen = [(t, states.HEALTHY) for t in (0.0, 1.0, 2.0)] + [(t, states.CRASHED) for t in (3.0, 4.0)]
    n = numbers(seen, UP[states.MONITOR], DOWN[states.MONITOR], end=5.0)
    assert (n.failures, n.up_s, n.down_s) == (1, 3.0, 2.0)


def test_a_clean_stop_as_last_word_ends_the_time_but_one_come_back_from_is_an_outage():
    end_of_job = [(0.0, states.RUNNING), (10.0, states.STOPPED)]
    n = numbers(end_of_job, UP[states.TRUTH], DOWN[states.TRUTH], end=20.0)
    assert (n.failures, n.up_s, n.down_s) == (0, 10.0, 0.0)
    stop_fault = [(0.0, states.RUNNING), (4.0, states.STOPPED), (7.0, states.RUNNING), (10.0, states.STOPPED)]
    n = numbers(stop_fault, UP[states.TRUTH], DOWN[states.TRUTH], end=20.0)
    assert (n.failures, n.up_s, n.down_s) == (1, 7.0, 3.0)


def test_words_after_the_end_are_not_counted():
    seen = [(0.0, states.ALIVE), (12.0, states.DEAD)]  # heartbeat-only, after the worker's clean end at 10
    n = numbers(seen, UP[states.HEARTBEAT_ONLY], DOWN[states.HEARTBEAT_ONLY], end=10.0)
    assert (n.failures, n.up_s) == (0, 10.0)


def test_the_supervisor_is_up_while_it_streams_and_down_while_it_reconnects():
    seen = [(0.0, states.CONNECTING), (1.0, states.STREAMING), (5.0, states.RECONNECTING), (5.1, states.CONNECTING),
            (6.0, states.ISOLATING), (6.1, states.STREAMING), (9.0, states.DONE)]
    n = numbers(seen, UP[states.SUPERVISOR], DOWN[states.SUPERVISOR], end=20.0)
    assert n.failures == 1
    assert n.up_s == pytest.approx(7.0) and n.down_s == pytest.approx(1.0)


def test_the_jobs_downtime_is_a_stall_of_the_acknowledged_count_while_items_remain():
    evs = [sup(0.0, "start", total=1000)]
    evs += [sup(0.5 * i, "progress", acked=100 * i) for i in range(1, 5)]  # 100..400, moving
    evs += [sup(2.1, "crash", acked=400), sup(2.5, "progress", acked=400), sup(3.0, "progress", acked=400),
            sup(3.2, "connected", acked=400), sup(3.5, "progress", acked=500)]
    evs += [sup(4.0, "progress", acked=1000), sup(4.5, "progress", acked=1000)]  # done: no stall after it
    got = job_downtime(evs, rate=250)
    assert got == {"downtime_s": 1.2, "stalls": 1, "longest_s": 1.2, "threshold_s": 0.5}


def test_a_short_stall_and_a_slow_rate_set_the_threshold():
    evs = [sup(0.0, "start", total=100), sup(0.5, "progress", acked=1), sup(1.0, "progress", acked=1),
           sup(1.5, "progress", acked=2)]
    assert job_downtime(evs, rate=250)["stalls"] == 0  # stuck 0.5 s: not more than the threshold
    assert job_downtime(evs, rate=2)["threshold_s"] == 1.5  # 3 inter-item times at 2 items/s
    assert job_downtime([sup(0.0, "progress", acked=1)], rate=250) is None  # no start event: no job


def test_a_job_stuck_to_the_end_counts_to_its_last_event():
    evs = [sup(0.0, "start", total=10), sup(0.5, "progress", acked=5), sup(1.0, "progress", acked=5),
           sup(3.0, "progress", acked=5)]
    assert job_downtime(evs, rate=250)["downtime_s"] == 2.5


def test_of_run_reads_the_truth_and_every_observer_and_the_report_shows_them():
    evs = [engine(0.0, "start"), verdict(0.2, states.HEALTHY), sup(0.3, "start", total=100),
           sup(0.3, "state", state=states.STREAMING, acked=0), sup(0.8, "progress", acked=40),
           engine(4.0, "die", exit_code=139), verdict(4.1, states.CRASHED),
           sup(4.1, "state", state=states.RECONNECTING, acked=40), sup(4.5, "progress", acked=40),
           engine(5.0, "start"), verdict(5.5, states.RESTARTED), sup(6.0, "state", state=states.STREAMING, acked=40),
           sup(6.5, "progress", acked=100), sup(6.6, "state", state=states.DONE, acked=100),
           engine(7.0, "die", exit_code=0), verdict(7.1, states.STOPPED)]
    dep = dependability.of_run(evs, rate=250, run_end=9.0)
    assert dep["end"] == 7.0  # the worker's clean end
    truth, monitor, super_ = (dep["observers"][w] for w in (states.TRUTH, states.MONITOR, states.SUPERVISOR))
    assert (truth["failures"], truth["mttf_s"], truth["mttr_s"]) == (1, 6.0, 1.0)
    assert (monitor["failures"], monitor["down_s"]) == (1, 1.4)
    assert super_["failures"] == 1 and super_["mttr_s"] == pytest.approx(1.9)
    assert dep["job"]["stalls"] == 1
    lines = dependability.report_lines(dep)
    assert "## Dependability" in lines
    assert "| truth | 1 | 6.00 s | 1.00 s | 6.00 s | 1.00 s | 0.857 |" in lines
    assert any(ln.startswith("The job's own downtime:") for ln in lines)
    assert report.fmt_s(None) == "never"  # the report module imports the section's writer


def test_a_lease_lab_gives_each_holders_truth():
    evs = [{"ts": 0.0, "source": "engine", "kind": "container", "action": "start", "service": "alice"},
           {"ts": 0.0, "source": "engine", "kind": "container", "action": "start", "service": "bob"},
           {"ts": 2.0, "source": "engine", "kind": "container", "action": "pause", "service": "alice"},
           {"ts": 3.0, "source": "engine", "kind": "container", "action": "unpause", "service": "alice"}]
    dep = dependability.of_holders(evs, ("alice", "bob"), run_end=10.0)
    assert dep["observers"]["truth alice"]["failures"] == 1
    assert dep["observers"]["truth alice"]["availability"] == 0.9
    assert dep["observers"]["truth bob"]["failures"] == 0
    assert dep["job"] is None


def test_every_word_is_up_or_down_but_unknown():
    for who in dependability.OBSERVERS:
        assert UP[who] | DOWN[who] | {states.UNKNOWN} >= set(states.SAYS[who]), who
        assert not UP[who] & DOWN[who], who
    assert states.RUNNING in UP[states.TRUTH] and states.SLOW in UP[states.MONITOR]
    assert UP[states.SUPERVISOR] == {states.STREAMING, states.ISOLATING}
