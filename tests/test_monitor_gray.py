"""The gray failure: a worker alive but whose UDP beats come late or sparse
(a lossy link, a crawling worker). The monitor calls it SLOW, never a crash,
and keeps calling clean pauses and partitions as fast as before; the
heartbeat-only verdict keeps flapping, which is the lesson. Pure: the loop's
BeatStats and the Classifier driven by simulated beats, no processes."""
from __future__ import annotations

import random

from helpers import MONITOR, load_program

mon = load_program("monitor", MONITOR)

WALL0_MS = 1_700_000_000_000.0
BEAT_MS = 200
SILENT = {"CRASHED", "PAUSED", "PARTITIONED"}


def run(sends, end_ms, timeout_ms=2000, interval_ms=200, file_until_ms=None, net_until_ms=None, before=False,
        beat_ms=None):
    """Tick as the loop does, every interval_ms up to end_ms. sends: (sent ms,
    arrival ms or None if lost, seq). The volume gets every beat at its send
    time up to file_until_ms, the network its arrivals up to net_until_ms.
    before: observations without phi, loss and mean gap, judged as before SLOW.
    Returns [(t ms, verdict, heartbeat_only, observation)]."""
    c = mon.Classifier(interval_ms, timeout_ms, beat_ms=beat_ms)
    stats = mon.BeatStats(c.silent_after_ms, 8.0, mon.recent_window(beat_ms or interval_ms))
    arrivals = sorted((a, seq) for _, a, seq in sends if a is not None and (net_until_ms is None or a < net_until_ms))
    files = sorted((s, seq) for s, _, seq in sends if file_until_ms is None or s < file_until_ms)
    ai = fi = 0
    last_arrival, file_beat, out = None, None, []
    for k in range(end_ms // interval_ms + 1):
        now = k * interval_ms
        while ai < len(arrivals) and arrivals[ai][0] <= now:
            at, seq = arrivals[ai]
            stats.beat(at, mon.Beat("a", 1, seq, 0, int(WALL0_MS + at)))
            last_arrival, ai = at, ai + 1
        while fi < len(files) and files[fi][0] <= now:
            file_beat, fi = mon.Beat("a", 1, files[fi][1], 0, int(WALL0_MS + files[fi][0])), fi + 1
        o = mon.Observation(now / 1000, WALL0_MS + now, mon.LockState("held", 1, "a"),
                            now - (last_arrival if last_arrival is not None else 0), file_beat, None,
                            *((None, None, None) if before else (stats.phi(now), stats.loss(), stats.mean_gap_ms())),
                            None if before else stats.gap_std_ms(), None if before else stats.disorder(),
                            file_age_ms=now - (file_beat.unix_ms - WALL0_MS) if file_beat else None)
        out.append((now, *c.classify(o), o))
    return out


def beats(end_ms, every_ms=BEAT_MS, loss=0.0, loss_from_ms=0, jitter_ms=0.0, seed=1):
    r = random.Random(seed)
    sends = []
    for seq in range(1, end_ms // every_ms + 1):
        t = seq * every_ms
        lost = t >= loss_from_ms and r.random() < loss
        sends.append((t, None if lost else t + r.uniform(-jitter_ms, jitter_ms) + 2, seq))
    return sends


def test_a_lossy_link_is_slow_not_dead_while_the_heartbeat_only_verdict_flaps():
    # 3 s healthy (phi needs MIN_PHI_SAMPLES gaps to judge), then 10 s of 40 % loss.
    out = run(beats(13_000, loss=0.4, loss_from_ms=3000, seed=1), 13_000, timeout_ms=600)
    lossy = [(v, h) for t, v, h, _ in out if t >= 3000]
    verdicts = [v for v, _ in lossy]
    assert "CRASHED" not in verdicts and "SLOW" in verdicts
    dead = sum(h == "DEAD" for _, h in lossy)
    assert dead >= 3, "the heartbeat-only verdict must flap under loss"
    # Phi vetoes most of the timeout's false silences. Not all: it learns the
    # lossy gaps only as they come (see the report); so fewer, not none.
    silent = sum(v in SILENT for v in verdicts)
    assert silent * 2 <= dead, (silent, dead)
    assert max(o.loss for t, _, _, o in out if t >= 6000) >= mon.SLOW_LOSS


def test_a_lossy_link_with_the_default_timeout_is_never_called_silent():
    for seed in range(20):
        out = run(beats(13_000, loss=0.4, loss_from_ms=3000, seed=seed), 13_000)
        verdicts = [v for t, v, _, _ in out]
        assert not SILENT & set(verdicts), (seed, verdicts)
        assert "SLOW" in verdicts, seed


def test_healthy_beats_with_jitter_are_never_slow():
    for seed in range(20):
        out = run(beats(20_000, jitter_ms=60, seed=seed), 20_000)
        verdicts = {v for t, v, _, _ in out if t > 0}
        assert verdicts == {"HEALTHY"}, (seed, verdicts)
        assert all(o.loss == 0.0 for t, _, _, o in out if t >= 1000)


def test_slow_needs_a_lasting_degradation_and_clears_after_one():
    c = mon.Classifier(interval_ms=200, timeout_ms=2000)

    def at(t, loss):
        return c.classify(mon.Observation(t, WALL0_MS + t * 1000, mon.LockState("held", 1, "a"), 100,
                                          mon.Beat("a", 1, 1, 0, int(WALL0_MS + t * 1000 - 100)), None,
                                          1.0, loss, 200.0, file_age_ms=100))[0]

    assert [at(t / 10, 0.3) for t in range(0, 10, 2)] == ["HEALTHY"] * 5  # under SLOW_HOLD_S
    assert at(1.0, 0.3) == "SLOW"
    assert at(1.2, 0.0) == "SLOW" and at(2.0, 0.0) == "SLOW"
    assert at(2.2, 0.0) == "HEALTHY"


def test_a_clean_pause_and_partition_are_called_as_fast_as_before():
    # As in tests/test_units.py: the first tick past silent_after (1800 ms)
    # calls it. The last beat lands at 4802 ms, so the tick at 6800 ms.
    sends = beats(12_000)
    for fault, kw in (("PAUSED", dict(file_until_ms=5001, net_until_ms=5001)),
                      ("PARTITIONED", dict(net_until_ms=5001))):
        now = [(t, v, h) for t, v, h, _ in run(sends, 12_000, **kw)]
        assert now == [(t, v, h) for t, v, h, _ in run(sends, 12_000, before=True, **kw)]
        assert next(t for t, v, _ in now if v != "HEALTHY") == 6800
        assert next(t for t, _, h in now if h == "DEAD") == 6800
        assert {v for t, v, _ in now if t >= 6800} == {fault}
    # The same after an earlier partition healed: its gap taught phi nothing.
    healed = [(s, None if 3000 <= s < 6000 else a, seq) for s, a, seq in beats(20_000)]
    again = [(t, v, h) for t, v, h, _ in run(healed, 20_000, net_until_ms=13_001)]
    assert again == [(t, v, h) for t, v, h, _ in run(healed, 20_000, net_until_ms=13_001, before=True)]
    assert [v for t, v, _ in again if 4600 <= t < 6200] == ["HEALTHY"] + ["PARTITIONED"] * 7
    assert {v for t, v, _ in again if 6200 <= t < 14_800} == {"HEALTHY"}
    assert {v for t, v, _ in again if t >= 14_800} == {"PARTITIONED"}


def test_a_crawling_worker_is_slow_not_paused():
    out = run(beats(10_000, every_ms=600), 10_000)
    verdicts = [v for t, v, _, _ in out if t >= 600]
    assert not SILENT & set(verdicts)
    assert verdicts[-20:] == ["SLOW"] * 20
    assert out[-1][3].mean_gap_ms == 600


def observe(t, net_age, phi, loss=0.0, mean_gap=200.0, file_age=100):
    return mon.Observation(t, WALL0_MS + t * 1000, mon.LockState("held", 1, "a"), net_age,
                           mon.Beat("a", 1, 1, 0, int(WALL0_MS + t * 1000 - file_age)), None, phi, loss, mean_gap,
                           file_age_ms=file_age)


def test_silence_needs_phi_too_unless_phi_is_too_young_to_judge():
    c = mon.Classifier(interval_ms=200, timeout_ms=600)  # silent after 400 ms
    assert c.classify(observe(0.0, 100, 0.1)) == ("HEALTHY", "ALIVE")
    # Past the timeout, phi not suspecting: not silent, and degraded; SLOW once that lasts.
    assert c.classify(observe(2.0, 500, 3.0)) == ("HEALTHY", "DEAD")
    assert c.classify(observe(2.8, 500, 3.0)) == ("HEALTHY", "DEAD")
    assert c.classify(observe(3.2, 500, 3.0)) == ("SLOW", "DEAD")
    # Phi suspecting as well: silent.
    assert c.classify(observe(3.4, 900, 9.0, file_age=900)) == ("PAUSED", "DEAD")
    # Too few samples (phi None): the timeout alone, as before.
    c = mon.Classifier(interval_ms=200, timeout_ms=600)
    assert c.classify(observe(0.0, 100, None)) == ("HEALTHY", "ALIVE")
    assert c.classify(observe(2.0, 500, None, file_age=500)) == ("PAUSED", "DEAD")


def test_beat_stats_count_missing_seqs_per_incarnation():
    st = mon.BeatStats(silent_after_ms=1800, phi_threshold=8.0)

    def beat(at, seq, inc="a"):
        st.beat(at, mon.Beat(inc, 1, seq, 0, 0))

    for seq in (1, 2, 4, 5, 5, 3, 8):  # 3, 6 and 7 lost (3 came late: overtaken, not counted)
        beat(seq * 200.0, seq)
    assert st.loss() == 1 - 5 / 8
    assert st.mean_gap_ms() == (1600 - 200) / 4
    assert st.phi(1700) is None  # 4 gaps: too few to judge
    assert st.phi_value(1700) > 0
    # A new incarnation restarts seq: its stats start afresh.
    for i, seq in enumerate((1, 2)):
        beat(2000.0 + i * 200, seq, inc="b")
    assert st.loss() is None and st.mean_gap_ms() is None
    beat(2400.0, 3, inc="b")
    assert st.loss() == 0.0 and st.mean_gap_ms() == 200
    for seq in range(4, 4 + mon.MIN_PHI_SAMPLES):
        beat(2000.0 + (seq - 1) * 200, seq, inc="b")
    assert st.phi(st.detector.last + 200) is not None
    # Only the last RECENT_BEATS seq numbers count.
    for seq in range(20, 20 + mon.RECENT_BEATS):
        beat(seq * 200.0 + 2000, seq, inc="b")
    assert st.loss() == 0.0


def test_beats_that_come_twice_or_late_are_disorder_and_make_a_live_worker_slow():
    st = mon.BeatStats(silent_after_ms=1800, phi_threshold=8.0)
    for seq in range(1, 21):
        st.beat(seq * 200.0, mon.Beat("a", 1, seq, 0, 0))
    assert st.disorder() == 0.0
    st.beat(4200.0, mon.Beat("a", 1, 21, 0, 0))
    st.beat(4210.0, mon.Beat("a", 1, 21, 0, 0))  # a duplicate
    st.beat(4400.0, mon.Beat("a", 1, 23, 0, 0))
    st.beat(4420.0, mon.Beat("a", 1, 22, 0, 0))  # overtaken by 23
    assert st.disorder() == 2 / 22
    # Gone from the window, they count no more.
    for seq in range(24, 24 + mon.RECENT_BEATS):
        st.beat(seq * 200.0, mon.Beat("a", 1, seq, 0, 0))
    assert st.disorder() == 0.0
    # The classifier: a fresh volume, the lock held, beats flowing but disordered: SLOW after the hold.
    c = mon.Classifier(200, 2000)
    lock = mon.LockState("held", 7, "a")
    verdicts = []
    for i in range(15):
        t = i * 0.2
        o = mon.Observation(t, WALL0_MS + t * 1000, lock, 50, mon.Beat("a", 1, i, 0, int(WALL0_MS + t * 1000 - 50)),
                            None, 1.0, 0.0, 200.0, 20.0, 0.1, file_age_ms=50)
        verdicts.append(c.classify(o)[0])
    assert verdicts[0] == "HEALTHY" and verdicts[-1] == "SLOW"


def test_after_its_own_pause_the_monitor_forgets_the_burst_and_learns_the_link_again():
    st = mon.BeatStats(silent_after_ms=1800, phi_threshold=8.0)
    for seq in range(1, 40):
        st.beat(seq * 200.0, mon.Beat("a", 1, seq, 0, 0))
    assert st.phi(40 * 200.0) is not None and st.loss() == 0.0
    # Frozen for 5 s: 25 beats waited in the socket and are drained at once.
    for seq in range(40, 65):
        st.beat(13000.0, mon.Beat("a", 1, seq, 0, 0))
    st.forget()
    assert st.loss() is None and st.mean_gap_ms() is None and st.disorder() is None
    assert st.phi(13200.0) is None, "nothing learnt: the timeout alone judges"
    for seq in range(65, 70):
        st.beat(13200.0 + (seq - 65) * 200, mon.Beat("a", 1, seq, 0, 0))
    assert st.loss() == 0.0 and st.mean_gap_ms() == 200.0 and st.gap_std_ms() == 0.0
