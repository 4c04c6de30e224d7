"""Fast silence: with the lab's 50 ms beats the monitor calls a pause and a
partition within a second, from phi and the volume, without the fixed
timeout; a link that has just turned lossy, or is known to be lossy or
jittery, still waits for the timeout. Pure: simulated beats, no processes."""
from __future__ import annotations

import random

from test_monitor_gray import beats, mon, run

BEAT = 50
FAST = {"PAUSED", "PARTITIONED", "CRASHED"}


def first(out, verdict, after_ms):
    return next((t for t, v, _, _ in out if t >= after_ms and v == verdict), None)


def test_with_200ms_beats_there_is_no_fast_path():
    c = mon.Classifier(200, 2000, beat_ms=200)
    assert c.fast_after_ms is None and c.vol_stale_ms == c.silent_after_ms
    c = mon.Classifier(200, 2000, beat_ms=50)
    assert (c.fast_after_ms, c.vol_stale_ms) == (500, 400)


def test_a_pause_is_called_within_a_second_and_never_partitioned():
    for seed in range(20):
        fault = 3000 + random.Random(seed).uniform(0, 200)  # the fault at any phase of the ticks
        out = run(beats(8000, every_ms=BEAT, seed=seed), 8000, file_until_ms=fault, net_until_ms=fault,
                  beat_ms=BEAT)
        assert {v for t, v, _, _ in out if t < fault} == {"HEALTHY"}
        called = first(out, "PAUSED", fault)
        assert called is not None and called - fault <= 1000, (seed, called)
        assert "PARTITIONED" not in {v for _, v, _, _ in out}


def test_a_partition_is_called_within_a_second_and_never_paused():
    for seed in range(20):
        fault = 3000 + random.Random(seed).uniform(0, 200)
        out = run(beats(8000, every_ms=BEAT, seed=seed), 8000, net_until_ms=fault, beat_ms=BEAT)
        called = first(out, "PARTITIONED", fault)
        assert called is not None and called - fault <= 1000, (seed, called)
        assert "PAUSED" not in {v for _, v, _, _ in out}


def test_the_fast_path_is_faster_than_the_timeout_it_replaces():
    out = run(beats(8000, every_ms=BEAT), 8000, net_until_ms=3010, beat_ms=BEAT)
    slow = run(beats(8000, every_ms=BEAT), 8000, net_until_ms=3010, beat_ms=200)  # no fast path
    assert first(out, "PARTITIONED", 3010) + 1000 <= first(slow, "PARTITIONED", 3010)


def test_a_link_turning_40_percent_lossy_is_never_called_silent():
    # Many onsets: the fast path's risk is the first lossy beats, before any loss is seen.
    for seed in range(40):
        out = run(beats(20_000, every_ms=BEAT, loss=0.4, loss_from_ms=3000, seed=seed), 20_000, beat_ms=BEAT)
        assert not FAST & {v for _, v, _, _ in out}, seed


def test_a_known_lossy_link_waits_for_the_timeout_before_calling_a_partition():
    # 10 % loss: not enough to be SLOW (SLOW_LOSS), too much for the fast path.
    sends = beats(12_000, every_ms=BEAT, loss=0.1, loss_from_ms=1000, seed=3)
    out = run(sends, 12_000, net_until_ms=8000, beat_ms=BEAT)
    last = max(a for _, a, _ in sends if a is not None and a < 8000)
    called = first(out, "PARTITIONED", 8000)
    assert called is not None and called - last >= 1800 - BEAT


def test_a_jittery_link_waits_for_the_timeout_too():
    sends = beats(12_000, every_ms=BEAT, jitter_ms=45, seed=5)  # beats overtaking each other
    out = run(sends, 12_000, net_until_ms=8000, beat_ms=BEAT)
    last = max(a for _, a, _ in sends if a is not None and a < 8000)
    called = first(out, "PARTITIONED", 8000)
    assert called is not None and called - last >= 1800 - BEAT
    assert not FAST & {v for t, v, _, _ in out if t < 8000}


def test_starved_beats_are_not_slow():
    # A loaded machine (30 labs on two cores) spreads a starved worker's
    # beats (gaps' deviation over two 50 ms beats, short of half a second);
    # the spread's floor in ms keeps that from reading as SLOW.
    sends, t = [], 0.0
    for seq in range(1, 400):
        t += 450 if seq % 10 == 0 else 30  # a stall every tenth beat; mean gap 72 ms
        sends.append((t, t + 1, seq))
    out = run(sends, int(t), beat_ms=BEAT)
    assert 2 * BEAT < max(o.gap_std_ms or 0 for _, _, _, o in out) < mon.SLOW_JITTER_MIN_MS
    assert {v for _, v, _, _ in out} == {"HEALTHY"}


def test_a_thawing_worker_is_not_called_partitioned():
    # Paused from 3 s to 6 s. On the thaw the volume beat lands first; the
    # network's first beat comes 400 ms later (a loaded machine): for two
    # ticks the volume is fresh and the network silent.
    c = mon.Classifier(200, 2000, beat_ms=BEAT)
    stats = mon.BeatStats(c.silent_after_ms, 8.0, mon.recent_window(BEAT))
    wall0 = 1_700_000_000_000.0
    net_at = [t for t in range(BEAT, 9000, BEAT) if t < 3000 or t >= 6400]
    file_at = [t for t in range(BEAT, 9000, BEAT) if t < 3000 or t >= 6000]
    seq, verdicts = 0, []
    for now in range(0, 9000, 200):
        for t in net_at:
            if now - 200 < t <= now:
                seq += 1  # the worker numbers the beats it sends: a pause skips none
                stats.beat(t, mon.Beat("a", 1, seq, 0, int(wall0 + t)))
        last_net = max(t for t in net_at if t <= now) if now >= BEAT else 0
        last_file = max(t for t in file_at if t <= now) if now >= BEAT else 0
        o = mon.Observation(now / 1000, wall0 + now, mon.LockState("held", 1, "a"), now - last_net,
                            mon.Beat("a", 1, 1, 0, int(wall0 + last_file)), None, stats.phi(now),
                            stats.loss(), stats.mean_gap_ms(), stats.gap_std_ms(), stats.disorder(),
                            file_age_ms=now - last_file)
        verdicts.append((now, c.classify(o)[0]))
    assert [v for t, v in verdicts if t in (6000, 6200)] == ["PAUSED", "PAUSED"]
    assert "PAUSED" in {v for t, v in verdicts if 3000 < t <= 4000}
    assert "PARTITIONED" not in {v for _, v in verdicts}
    assert verdicts[-1][1] == "HEALTHY"


def test_a_starved_monitor_rests_the_fast_path_and_waits_for_the_timeout():
    """30 labs on two cores: the proxy held off the CPU stops the network beats
    for 700 ms while the worker writes its volume. A monitor that saw itself
    late does not call that a partition at once."""
    wall0 = 1_700_000_000_000.0

    def lab():
        c = mon.Classifier(200, 2000, beat_ms=BEAT)
        stats = mon.BeatStats(c.silent_after_ms, 8.0, mon.recent_window(BEAT))
        for seq, t in enumerate(range(BEAT, 3000, BEAT), 1):
            stats.beat(t, mon.Beat("a", 1, seq, 0, int(wall0 + t)))

        def at(now, late_ms=0.0):
            o = mon.Observation(now / 1000, wall0 + now, mon.LockState("held", 1, "a"), now - 2950,
                                mon.Beat("a", 1, 1, 0, int(wall0 + now - 20)), None, stats.phi(now), stats.loss(),
                                stats.mean_gap_ms(), stats.gap_std_ms(), stats.disorder(), None, late_ms,
                                file_age_ms=20)
            return c.classify(o)[0]
        return at

    late = lab()
    assert late(3000) == "HEALTHY"
    assert late(3650, late_ms=175) == "HEALTHY"  # the tick that would call it came late itself: no fast verdict
    starved = lab()
    assert starved(3000, late_ms=150) == "HEALTHY" and starved(3200, late_ms=130) == "HEALTHY"  # two late ticks
    assert starved(3650) == "HEALTHY"  # 700 ms of silence, the volume fresh, a tick on time: still resting
    assert starved(3000 + mon.FAST_LOAD_HOLD_S * 1000 + 1000) == "PARTITIONED"  # the timeout's verdict, much later
    busy = lab()
    assert busy(2000, late_ms=137) == "HEALTHY"  # one late tick a while ago: a busy moment
    assert busy(3000) == "HEALTHY" and busy(3650) == "PARTITIONED"
    on_time = lab()
    assert on_time(3000) == "HEALTHY" and on_time(3650) == "PARTITIONED"  # on time: at once


def test_a_worker_that_has_just_taken_its_lock_is_new_though_its_incarnation_is_not_written_yet():
    """Boot: the monitor has listened 2.6 s to nothing; the worker takes its
    flock a moment before it writes its incarnation into the lock file and
    before its first beat. That tick is no silence of a known worker."""
    c = mon.Classifier(200, 2000, beat_ms=BEAT)
    wall0 = 1_700_000_000_000.0

    def at(now_ms, lock):
        o = mon.Observation(now_ms / 1000, wall0 + now_ms, lock, now_ms, None, None)
        return c.classify(o)[0]

    assert at(2400, mon.LockState("absent")) == "UNKNOWN"
    assert at(2600, mon.LockState("held", None, None)) == "HEALTHY"  # not PAUSED: it has just come
    assert at(2800, mon.LockState("held", 7, "inc-1")) == "HEALTHY"
    # Held on, and silent past the timeout since it came: that is a silence.
    assert at(2600 + 2100, mon.LockState("held", 7, "inc-1")) == "PAUSED"


def test_a_starved_volume_beat_does_not_undo_what_the_timeout_path_knows():
    """A partitioned worker held off the CPU for 600 ms: its volume beat is past
    the fast path's bound for a tick, but well within the timeout's window.
    The timeout path's verdict stays PARTITIONED; it does not start again."""
    c = mon.Classifier(200, 2000, beat_ms=BEAT)
    wall0 = 1_700_000_000_000.0

    def at(now_ms, file_age_ms):
        o = mon.Observation(now_ms / 1000, wall0 + now_ms, mon.LockState("held", 1, "a"), now_ms - 1000,
                            mon.Beat("a", 1, 1, 0, int(wall0 + now_ms - file_age_ms)), None, None,
                            None, None, None, None, None, 0.0, file_age_ms)
        return c.classify(o)[0]

    for t in range(0, 1000, 200):
        at(t, 20)  # healthy-looking: the network's silence starts at 1000 ms
    assert at(3000, 20) == "PARTITIONED"  # the timeout path (phi too young: no fast path)
    assert at(3200, 600) == "PARTITIONED"  # starved for a tick: the volume is still within the window
    assert at(3400, 20) == "PARTITIONED"
