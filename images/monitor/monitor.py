#!/usr/bin/env python3
"""Monitor: a failure detector that tells crash, pause and partition apart.

It watches the worker through three channels (README.md, "Why the monitor
can tell them apart"):

* network: UDP heartbeats, judged by a fixed timeout and by a phi accrual
  detector (Hayashibara et al., 2004);
* volume: the heartbeat file's freshness (a paused process stops writing it,
  a partitioned one does not), timed as it is received: how long ago this
  monitor first saw the current beat, on its own monotonic clock, never by
  the wall time written inside it (the sender's clock, which can be off);
* kernel: the worker's flock on the lock file, probed with a momentary
  non-blocking shared flock. A frozen process still holds its lock; a dead one
  cannot. A free lock is a fact, not a guess: no timeout is needed.

Each tick it gives one verdict from the classification table:

    lock free/absent                           -> CRASHED   (STOPPED after a clean exit,
                                                  UNKNOWN if no worker was seen yet)
    lock held, new incarnation                 -> RESTARTED, then HEALTHY
    lock held, net beats flowing               -> HEALTHY
    lock held, net beats flowing but degraded, -> SLOW      (degraded for SLOW_HOLD_S,
      volume beat fresh                                      and HEALTHY again only
                                                             once not for as long)
    lock held, net silent, volume beat fresh   -> PARTITIONED (fresh for a whole
                                                  window, and clearly younger than
                                                  the network's silence)
    lock held, net silent, volume beat stale   -> PAUSED

and beside it the heartbeat-only verdict (ALIVE/DEAD): the exercise's monitor
that listens to heartbeats alone, and calls every one of these failures "dead";
and the sender-clock verdict (ALIVE/DEAD): a detector that trusts the wall
time written inside the newest beat and compares it with this monitor's own
wall clock. Wrong whenever the two clocks disagree (scenario-clock-skew): a
live worker whose clock is behind looks dead, a dead one whose clock was
ahead looks alive. Kept to show why the monitor itself times what it
receives.
Precedence: CRASHED/STOPPED/UNKNOWN/RESTARTED, then PAUSED/PARTITIONED, then
SLOW, then HEALTHY.

"Net silent" is silent by the fixed timeout AND suspected by phi (below);
while phi has too few samples (a new incarnation's first beats) the timeout
alone. The heartbeat-only verdict keeps the timeout alone: under loss it
flaps to DEAD and back, the lesson, while phi, once it has learnt the longer
gaps, rides most of it out. Only most: it learns them as they come, and its
normal curve is thinner-tailed than a lossy link's runs of lost beats, so
with a timeout of a few beats a link just turned lossy can still be called
silent for a tick or two.

SLOW is the gray failure: alive (lock held, volume beat fresh, network not
silent) but its UDP beats come late or sparse, from a lossy link or a
crawling worker. Degraded, over the last RECENT_BEATS seq numbers: loss
(missing seqs) >= SLOW_LOSS, or mean gap >= SLOW_GAP_FACTOR beats, or the
gaps' standard deviation >= SLOW_JITTER_FACTOR beats (late, jittered beats), or
a share >= SLOW_DISORDER of them arriving twice or out of order, or the
fixed timeout calling silence that phi does not share.

A clean exit. The worker's last beat says "stopped", then it removes its
lock. That beat counts for the incarnation last seen holding the lock, and
also for one never seen: after a crash Docker restarts the worker, and the
last incarnation can finish the job and leave between two ticks. Judged by
incarnation alone, that exit read as CRASHED for good, and a monitor told to
exit after a clean stop (--linger-after-stop-s) never did, so `docker compose
up` never returned. So a "stopped" beat also counts if it was received (first
seen, on this monitor's clock) no earlier than the last tick that saw the
lock held (before any, after watching began): an older worker's last beat,
or one an earlier run left on the volume, was not.

Timing. --timeout-ms is the longest a verdict may take after a fault. A
channel is silent once it has gone (timeout - interval) without a beat; with
ticks one interval apart the verdict then lands within the timeout. A crash
needs no timeout: between ticks the lock alone is probed every LOCK_PROBE_S,
and a lock found free is judged at once (CRASHED within a probe, not a tick).

Fast silence. With beats fast enough that FAST_MIN_BEATS of them fit well
inside the timeout (the lab beats every 50 ms), a pause and a partition are
called without waiting for the fixed timeout, from what phi and the volume
already know, once phi suspects and FAST_MIN_BEATS beats are missing in a
row, on a link that has been clean (loss under FAST_MAX_LOSS, nothing
reordered or doubled, not SLOW) over the recent window:

    volume beat stale too (VOL_STALE_BEATS)       -> PAUSED: both channels
                                                     stopped, and the volume
                                                     is no lossy network
    volume beat fresh for the whole silence,      -> PARTITIONED
      and clearly younger than it

Anything else (a lossy or jittery link, phi still learning, a volume beat
that has only just come back, a monitor that came late to one of its last
ticks: a starved machine) waits for the fixed timeout as above. About
0.6 to 0.8 s instead of 1.8 to 2 s; the price is that a link which drops
everything for over half a second and then recovers, or delays beats by
that much all at once, is called partitioned for that while.

Phi accrual. Over the last WINDOW inter-arrival times (mean mu, standard
deviation sigma, sigma floored at MIN_STD_MS so a very regular sender does not
make a few milliseconds of jitter look fatal), the suspicion after t ms of
silence is

    phi(t) = -log10(1 - F(t)),   F(t) = 1/2 * erfc(-(t - mu) / (sigma * sqrt 2))

the normal CDF. phi = 1 means a 10 % chance that a beat this late would still
come, phi = 8 one in 10^8. With the defaults (200 ms beats, sigma floored at
100 ms) phi crosses 8 after about mu + 5.6 sigma = 760 ms of silence, well
before the default timeout's 1800: the timeout sets the latency of a clean
fault, and phi only vetoes a silence that this link's history makes ordinary.

Standard library only. Events as JSON lines on stdout (docs/events.md).

Exercise 2's monitor. Run without arguments, as the exercise sheet runs it
(`python3 monitor.py`), or with --pidfile PATH, it is the exercise's monitor:
it reads the PID in the worker's lock file (worker.lock) once a tick and
asks the kernel whether that process runs, and prints one line a tick for a
person: running, paused (the process exists but is stopped, or its
heartbeat file went stale), crashed (the process is gone and its lock file
stayed behind: a stale lock), or no worker. A lock file read while the
worker is still writing it can be empty, so a lock without a PID is read
again before it is called stale.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import selectors
import signal
import socket
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

WINDOW = 100
MIN_STD_MS = 100.0
# Late ticks in a row (the monitor starved itself) whose verdict change is held.
MAX_HELD = 2
PHI_CAP = 300.0  # 1 - F underflows past this; the cap keeps JSON finite
RESTARTED_HOLD_S = 1.0
# Fewer inter-arrival times than this and phi is no judge: a mean and a
# deviation of a handful of gaps say little about the next one.
MIN_PHI_SAMPLES = 10
# A gap is an outage, not a sample, once phi at its end is this many times
# its threshold: far past suspicion, not the tail of a lossy link's gaps.
OUTAGE_PHI_FACTOR = 2.0
# The recent window of beats (by seq) that loss and mean gap are taken over:
# at least RECENT_BEATS and at least RECENT_MS of beats (5 s: 25 beats at
# 200 ms, 100 at the lab's 50 ms), long enough that a lossy link's dips do
# not look healthy, short enough that a healed one stops looking slow soon.
RECENT_BEATS = 25
RECENT_MS = 5000.0
# Fewer beats than this in the window and loss and mean gap are not judged.
MIN_RECENT_BEATS = 3
SLOW_LOSS = 0.2
SLOW_GAP_FACTOR = 1.5
# With fast beats a factor of a beat is a few scheduling hiccups: the mean
# gap and the spread that call SLOW have floors in ms too (a starved worker's
# beats spread to 150 ms with 30 labs on two cores, all being well).
SLOW_GAP_MIN_MS = 150.0
SLOW_JITTER_MIN_MS = 300.0
# Beats as irregular as this (the gaps' standard deviation, in beats) are
# late beats: a wildly jittering network. Not less: with 30 labs on two
# cores a starved worker's beats spread to 0.75 of a beat (150 ms) while
# all is well; a delaying network is told by the beats it reorders instead.
SLOW_JITTER_FACTOR = 2.0
# A share of beats this large arriving twice or behind a later one is a
# jittering or duplicating link (delay with jitter reorders; a healthy bridge
# never does).
SLOW_DISORDER = 0.05
# Between ticks the lock alone is probed this often (a non-blocking shared
# flock: microseconds); once it is free the monitor ticks at once.
LOCK_PROBE_S = 0.025
# How long a degradation must last before SLOW, and be gone before HEALTHY:
# a loaded machine's jitter comes and goes within a beat or two.
SLOW_HOLD_S = 1.0
# The fast verdicts of silence (see "Fast silence" above). A silence counts
# only once this many beats are missing in a row, so a link that has just
# turned lossy does not pass for a cut one: at 40 % loss ten beats lost in a
# row happen one time in 10^4, twelve (phi's 610 ms at 50 ms beats) one in
# 6 * 10^4. With fewer beats in the fixed timeout than this (the 200 ms
# beats of the exercise), there is no fast path: the timeout decides.
FAST_MIN_BEATS = 10
# A link that lost more than this share of its recent beats, or reordered
# or doubled any, is no clean link: its silence waits for the fixed timeout.
FAST_MAX_LOSS = 0.05
# The volume beat is stale after this many beats (and at least VOL_STALE_MIN_MS):
# a local file rename, no network in between, so a tight bound is safe.
VOL_STALE_BEATS = 8
VOL_STALE_MIN_MS = 400.0
# A monitor that came this late to a tick (half an interval) is on a starved
# machine, where a proxy or a worker held off the CPU for half a second is
# ordinary (30 labs on two cores: 175 ms late). Such a tick makes no fast
# verdict, and after FAST_LATE_TICKS of them within FAST_LOAD_HOLD_S none
# does: silence waits for the fixed timeout, as before the fast path. One late
# tick alone a while ago is a busy moment (an exec in the monitor's container),
# not a starved machine; 70 ms late is common on a merely busy one.
FAST_MAX_LATE_MS = 100.0
FAST_LATE_TICKS = 2
FAST_LOAD_HOLD_S = 3.0

HEALTHY, CRASHED, PAUSED, PARTITIONED, RESTARTED, STOPPED, UNKNOWN, SLOW = (
    "HEALTHY", "CRASHED", "PAUSED", "PARTITIONED", "RESTARTED", "STOPPED", "UNKNOWN", "SLOW")
ALIVE, DEAD = "ALIVE", "DEAD"


# --------------------------------------------------------------------------- phi accrual


class PhiAccrual:
    """Phi accrual failure detector over a sliding window of inter-arrival times (ms)."""

    def __init__(self, window: int = WINDOW, min_std_ms: float = MIN_STD_MS):
        self.intervals: deque[float] = deque(maxlen=window)
        self.min_std = min_std_ms
        self.last: float | None = None

    def heartbeat(self, at_ms: float) -> None:
        if self.last is not None:
            self.intervals.append(at_ms - self.last)
        self.last = at_ms

    def phi(self, now_ms: float) -> float:
        if self.last is None or not self.intervals:
            return 0.0
        return phi_of(now_ms - self.last, statistics.fmean(self.intervals),
                      max(statistics.pstdev(self.intervals), self.min_std))


def phi_of(elapsed_ms: float, mean_ms: float, std_ms: float) -> float:
    """-log10 of the probability that a beat comes later than elapsed_ms."""
    p_later = 0.5 * math.erfc((elapsed_ms - mean_ms) / (std_ms * math.sqrt(2)))
    if p_later <= 10 ** -PHI_CAP:
        return PHI_CAP
    return -math.log10(p_later)


def recent_window(beat_ms: float) -> int:
    """The recent window in beats: RECENT_BEATS, and at least RECENT_MS of them."""
    return max(RECENT_BEATS, math.ceil(RECENT_MS / beat_ms))


class BeatStats:
    """What the loop learns from the UDP beats of the worker's current
    incarnation: phi, and the loss and mean gap over the last RECENT_BEATS
    seq numbers. Pure: arrival times are given, in ms.

    A gap far past what the monitor calls silence (longer than the timeout's
    silent_after_ms, and phi at OUTAGE_PHI_FACTOR times its threshold, or too
    young to judge) is an outage, not a sample of the channel: it teaches phi nothing, or after
    a pause or a partition phi would wait many seconds for the next one; and
    it restarts the recent window, or the beats lost in it would read as a
    lossy link once it heals. A new incarnation restarts seq, so it starts
    afresh."""

    def __init__(self, silent_after_ms: float, phi_threshold: float, recent: int = RECENT_BEATS):
        self.silent_after_ms = silent_after_ms
        self.phi_threshold = phi_threshold
        self.recent = recent
        self.incarnation: str | None = None
        self.detector = PhiAccrual()
        self.first_seq = 0  # where the window may begin: the first beat since the last restart
        self.arrivals: deque[tuple[int, float]] = deque()  # (seq, at ms), seq rising
        self.disordered: deque[int] = deque()  # seqs that came again or late, within the window
        self.afresh = False  # set by forget(): the next beat starts the window

    def beat(self, at_ms: float, beat: Beat) -> None:
        if self.afresh and beat.incarnation == self.incarnation:
            self.afresh = False
            self.restart(beat.seq)
            self.detector.heartbeat(at_ms)
            self.arrivals.append((beat.seq, at_ms))
            return
        self.afresh = False
        if beat.incarnation != self.incarnation:
            self.incarnation = beat.incarnation
            self.detector = PhiAccrual()
            self.restart(beat.seq)
        elif self.arrivals and beat.seq <= self.arrivals[-1][0]:
            # A duplicate or one overtaken: no new arrival, but evidence of a
            # jittering link (a healthy bridge never reorders a beat).
            if beat.seq >= self.arrivals[0][0]:
                self.disordered.append(beat.seq)
            return
        elif self.detector.last is not None and self.outage(at_ms):
            self.detector.last = at_ms
            self.restart(beat.seq)
            self.arrivals.append((beat.seq, at_ms))
            return
        self.detector.heartbeat(at_ms)
        self.arrivals.append((beat.seq, at_ms))
        while self.arrivals and self.arrivals[0][0] <= beat.seq - self.recent:
            self.arrivals.popleft()
        while self.disordered and self.disordered[0] <= beat.seq - self.recent:
            self.disordered.popleft()

    def outage(self, at_ms: float) -> bool:
        if at_ms - self.detector.last <= self.silent_after_ms:
            return False
        phi = self.phi(at_ms)
        return phi is None or phi >= OUTAGE_PHI_FACTOR * self.phi_threshold

    def forget(self) -> None:
        """After the monitor's own pause: the beats that waited in its socket
        arrive as one burst, which says nothing of the link. What was learnt
        of the link's gaps goes too (phi judges by the timeout alone until it
        has learnt again), so neither the burst nor the pause's gap counts."""
        self.detector = PhiAccrual()
        self.arrivals.clear()
        self.disordered.clear()
        self.afresh = True  # the window starts again at the next beat

    def restart(self, seq: int) -> None:
        self.first_seq = seq
        self.arrivals.clear()
        self.disordered.clear()

    def phi_value(self, now_ms: float) -> float:
        """Phi as the detector has it, however few its samples (for the tick's `phi`)."""
        return self.detector.phi(now_ms)

    def phi(self, now_ms: float) -> float | None:
        """Phi, or None while it has too few samples to judge."""
        if len(self.detector.intervals) < MIN_PHI_SAMPLES:
            return None
        return self.detector.phi(now_ms)

    def loss(self) -> float | None:
        """The fraction of the window's seq numbers that never arrived."""
        if len(self.arrivals) < MIN_RECENT_BEATS:
            return None
        last = self.arrivals[-1][0]
        expected = last - max(self.first_seq, last - self.recent + 1) + 1
        return max(0.0, 1 - len(self.arrivals) / expected)

    def mean_gap_ms(self) -> float | None:
        """The mean time between the window's beats, as they arrived."""
        if len(self.arrivals) < MIN_RECENT_BEATS:
            return None
        return (self.arrivals[-1][1] - self.arrivals[0][1]) / (len(self.arrivals) - 1)

    def disorder(self) -> float | None:
        """The share of the window's beats that arrived twice or behind a later one."""
        if len(self.arrivals) < MIN_RECENT_BEATS:
            return None
        return len(self.disordered) / len(self.arrivals)

    def gap_std_ms(self) -> float | None:
        """How irregular the window's gaps are: their standard deviation."""
        if len(self.arrivals) < MIN_RECENT_BEATS:
            return None
        at = [a for _, a in self.arrivals]
        return statistics.pstdev(b - a for a, b in zip(at, at[1:], strict=False))


# --------------------------------------------------------------------------- channels


@dataclass
class LockState:
    state: str  # held | free | absent | unreadable
    pid: int | None = None
    incarnation: str | None = None


def probe_lock(path: str) -> LockState:
    """A momentary shared flock: it fails only while someone holds the exclusive lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return LockState("absent")
    except OSError:
        return LockState("unreadable")
    try:
        pid, inc = parse_lock_content(os.read(fd, 128))
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return LockState("held", pid, inc)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return LockState("free", pid, inc)
    finally:
        os.close(fd)


def parse_lock_content(data: bytes) -> tuple[int | None, str | None]:
    """'PID INCARNATION' as the worker writes it; garbage gives (None, None)."""
    parts = data.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    inc = parts[1].decode("ascii", "replace") if len(parts) > 1 and pid is not None else None
    return pid, inc


@dataclass
class Beat:
    incarnation: str
    pid: int
    seq: int
    processed: int
    unix_ms: int
    stopped: bool = False


def parse_beat(data: bytes) -> Beat | None:
    """'incarnation pid seq processed unix_ms [stopped]', or None if malformed."""
    parts = data.split()
    if len(parts) not in (5, 6):
        return None
    try:
        return Beat(parts[0].decode("ascii"), int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]),
                    len(parts) == 6 and parts[5] == b"stopped")
    except (ValueError, UnicodeDecodeError):
        return None


def read_beat_file(path: str) -> Beat | None:
    try:
        with open(path, "rb") as f:
            return parse_beat(f.read(256))
    except OSError:
        return None


# --------------------------------------------------------------------------- the classifier


class ReceiveClock:
    """When the volume beat now in the file was first seen, on the monitor's
    own monotonic clock: the volume channel's freshness, timed as received.
    A beat already there at the first read was written before watching
    began, at a time this clock cannot know: it counts as old."""

    def __init__(self) -> None:
        self.key: tuple[str, int, int, bool] | None = None
        self.seen_at = -math.inf
        self.first = True

    def see(self, now: float, beat: Beat | None) -> None:
        """Notes a read of the file at monotonic `now` (a beat, or None: no file or garbage)."""
        if beat is not None:
            key = (beat.incarnation, beat.pid, beat.seq, beat.stopped)
            if key != self.key:
                self.key = key
                self.seen_at = -math.inf if self.first else now
        self.first = False

    def age_ms(self, now: float) -> float:
        return (now - self.seen_at) * 1000


@dataclass
class Observation:
    now: float  # monotonic seconds
    now_wall_ms: float  # taken before the lock was probed; only the sender-clock detector reads it
    lock: LockState
    net_age_ms: float | None  # since the last UDP beat (or since watching began)
    file_beat: Beat | None
    net_beat: Beat | None = None  # the last UDP beat
    # From the UDP beats (BeatStats): None while there are too few to judge.
    phi: float | None = None
    loss: float | None = None  # over the recent window of seq numbers
    mean_gap_ms: float | None = None  # between the recent window's beats
    gap_std_ms: float | None = None  # how irregular those gaps are
    disorder: float | None = None  # the share of the window's beats that came twice or out of order
    # Since the last beat as the heartbeat-only detector saw it, before this
    # tick read its socket. The same as net_age_ms, the loop reading each beat
    # as it lands, except after the monitor's own pause: then the beats that
    # waited are still unread, and the heartbeat-only detector blames the worker for
    # its own silence (the lesson of scenario-observer-pause). None: net_age_ms.
    heartbeat_only_age_ms: float | None = None
    late_ms: float = 0.0  # how late the monitor itself came to this tick: a starved machine
    # Since the monitor first saw file_beat, on its own monotonic clock
    # (ReceiveClock); None: no file beat. Never from the beat's own wall time.
    file_age_ms: float | None = None


class Classifier:
    """Turns observations into verdicts per the table in the module docstring. Pure: no I/O."""

    def __init__(self, interval_ms: float, timeout_ms: float, phi_threshold: float = 8.0,
                 beat_ms: float | None = None, heartbeat_only_timeout_ms: float | None = None):
        self.silent_after_ms = max(timeout_ms - interval_ms, interval_ms)
        beat = beat_ms or interval_ms
        # The fast path's window: FAST_MIN_BEATS beats, if they fit in the timeout's.
        fast_ms = FAST_MIN_BEATS * beat
        self.fast_after_ms: float | None = fast_ms if fast_ms < self.silent_after_ms else None
        self.vol_stale_ms = (min(self.silent_after_ms, max(VOL_STALE_BEATS * beat, VOL_STALE_MIN_MS))
                             if self.fast_after_ms is not None else self.silent_after_ms)
        # The heartbeat-only detector may be given a tighter timeout of its
        # own (the one a student's first monitor picks), to show it flap.
        hb_timeout = heartbeat_only_timeout_ms or timeout_ms
        self.heartbeat_only_after_ms = max(hb_timeout - interval_ms, interval_ms)
        self.phi_threshold = phi_threshold
        # The lab beats once a tick (LAB_HEARTBEAT_MS = LAB_INTERVAL_MS by default).
        self.beat_ms = beat_ms or interval_ms
        self.slow = False
        self.slow_flip_since: float | None = None  # since when degradation has said the opposite of self.slow
        self.incarnation: str | None = None
        self.inc_seen_at: float | None = None
        self.restarted_until = 0.0
        self.seen_worker = False
        self.last = UNKNOWN
        self.fresh_since: float | None = None  # since when the volume beat has been fresh, without a break
        self.held_at: float | None = None  # monotonic: the last tick that saw the lock held, or the first tick
        self.late_ticks: deque[float] = deque()  # when the recent late ticks came (monotonic)
        self.lock_was_held = False  # the last tick saw the lock held

    def classify(self, o: Observation) -> tuple[str, str]:
        """(verdict, heartbeat-only verdict)."""
        if o.late_ms > FAST_MAX_LATE_MS:
            self.late_ticks.append(o.now)
        while self.late_ticks and self.late_ticks[0] < o.now - FAST_LOAD_HOLD_S:
            self.late_ticks.popleft()
        net_silent = o.net_age_ms is None or o.net_age_ms > self.silent_after_ms
        # The heartbeat-only detector: a fixed timeout alone, flapping under loss as it must.
        hb_age = o.heartbeat_only_age_ms if o.heartbeat_only_age_ms is not None else o.net_age_ms
        heartbeat_only = DEAD if hb_age is None or hb_age > self.heartbeat_only_after_ms else ALIVE
        if self.held_at is None:
            self.held_at = o.now
        if o.lock.state != "held":
            self.clear_slow()
            self.lock_was_held = False
            if self.stopped_cleanly(o):
                return self.remember(STOPPED), heartbeat_only
            return self.remember(CRASHED if self.seen_worker else UNKNOWN), heartbeat_only
        self.seen_worker = True
        self.held_at = o.now
        # A worker that has just taken the lock may not have written its
        # incarnation into it yet: it is new all the same, and has had no
        # time to beat (seen at boot: PAUSED for one tick).
        if not self.lock_was_held:
            self.inc_seen_at = o.now
        self.lock_was_held = True
        if o.lock.incarnation != self.incarnation:
            if self.incarnation is not None:
                self.restarted_until = o.now + RESTARTED_HOLD_S
            self.incarnation = o.lock.incarnation
            self.inc_seen_at = o.now
            self.clear_slow()
        # A new incarnation has had no time to beat yet: judge its network
        # silence only from the moment it appeared.
        if self.inc_seen_at is not None and o.net_age_ms is not None:
            since_inc_ms = (o.now - self.inc_seen_at) * 1000
            net_silent = min(o.net_age_ms, since_inc_ms) > self.silent_after_ms
        # Silent also by phi, which has learnt how this link's gaps run: on a
        # lossy link a gap past the fixed timeout is ordinary, and only phi
        # knows it. On a clean one phi crosses its threshold long before the
        # timeout, so a clean fault is called exactly as fast as before.
        timeout_silent = net_silent
        phi_suspects = o.phi is None or o.phi >= self.phi_threshold
        net_silent = timeout_silent and phi_suspects
        # Timed as received (ReceiveClock), not by the beat's own wall time:
        # a worker whose clock is skewed must not look paused, or alive.
        file_age_ms = o.file_age_ms if o.file_beat is not None else None
        # The volume is fresh within the timeout's window, as before the fast
        # path; only the fast path judges it by its tighter bound, so a worker
        # held off the CPU for half a second does not reset what the timeout
        # path has learnt of it (fresh_since) or drop SLOW.
        fresh = file_age_ms is not None and file_age_ms <= self.silent_after_ms
        self.fresh_since = (self.fresh_since if self.fresh_since is not None else o.now) if fresh else None
        if not net_silent:
            fast = self.fast_verdict(o, file_age_ms, file_age_ms is not None and file_age_ms <= self.vol_stale_ms)
            if fast is not None:
                return self.remember(fast), heartbeat_only
            if o.now < self.restarted_until:
                return self.remember(RESTARTED), heartbeat_only
            degraded = ((o.loss is not None and o.loss >= SLOW_LOSS)
                        or (o.mean_gap_ms is not None
                            and o.mean_gap_ms >= max(SLOW_GAP_FACTOR * self.beat_ms, SLOW_GAP_MIN_MS))
                        or (o.gap_std_ms is not None
                            and o.gap_std_ms >= max(SLOW_JITTER_FACTOR * self.beat_ms, SLOW_JITTER_MIN_MS))
                        or (o.disorder is not None and o.disorder >= SLOW_DISORDER)
                        or timeout_silent)
            if self.judge_slow(degraded, o.now) and fresh:
                return self.remember(SLOW), heartbeat_only
            return self.remember(HEALTHY), heartbeat_only
        # What follows a silence is judged afresh: a healed link is not slow
        # for having been silent.
        self.clear_slow()
        # PARTITIONED: the network silent for a whole window while the volume
        # was alive all along. A worker that thaws (or a starved one that
        # catches up) writes its volume beat before its network beat lands,
        # by one tick or, on a loaded machine, by several; judged only by
        # this tick's "net silent, volume fresh" it would be called
        # partitioned. Until the volume has been fresh for a window, it stays
        # what it was seen to be: PAUSED.
        # And the volume clearly younger than the network's silence: when a
        # worker freezes, its two channels stop within a beat of each other,
        # and the network's can go first, so a volume beat one beat younger
        # than the silent network is no live volume. A partitioned worker's
        # volume beat stays one beat old while the silence grows.
        alive_for_ms = (o.now - self.fresh_since) * 1000 if self.fresh_since is not None else 0.0
        younger = file_age_ms is not None and o.net_age_ms is not None and (
            file_age_ms + self.silent_after_ms / 2 < o.net_age_ms)
        verdict = PARTITIONED if fresh and younger and alive_for_ms >= self.silent_after_ms else PAUSED
        return self.remember(verdict), heartbeat_only

    def fast_verdict(self, o: Observation, file_age_ms: float | None, fresh: bool) -> str | None:
        """PAUSED or PARTITIONED before the fixed timeout ("Fast silence" in
        the module docstring), or None: not silent yet, or not sure."""
        starved = o.late_ms > FAST_MAX_LATE_MS or len(self.late_ticks) >= FAST_LATE_TICKS
        if (self.fast_after_ms is None or o.phi is None or o.phi < self.phi_threshold or o.net_age_ms is None
                or starved):
            return None
        silence_ms = o.net_age_ms
        if self.inc_seen_at is not None:
            silence_ms = min(silence_ms, (o.now - self.inc_seen_at) * 1000)
        clean = (o.loss is not None and o.loss < FAST_MAX_LOSS and not o.disorder and not self.slow)
        if silence_ms < self.fast_after_ms or not clean:
            return None
        if not fresh:
            return PAUSED
        alive_for_ms = (o.now - self.fresh_since) * 1000 if self.fresh_since is not None else 0.0
        younger = file_age_ms is not None and file_age_ms + self.fast_after_ms / 2 < silence_ms
        if younger and alive_for_ms >= silence_ms:
            return PARTITIONED
        # A volume beat back before the network's (a thawing worker): what it was.
        return PAUSED if self.last == PAUSED else None

    def judge_slow(self, degraded: bool, now: float) -> bool:
        """SLOW once degraded for SLOW_HOLD_S, and until not degraded for as long."""
        if degraded == self.slow:
            self.slow_flip_since = None
        elif self.slow_flip_since is None:
            self.slow_flip_since = now
        if self.slow_flip_since is not None and now - self.slow_flip_since >= SLOW_HOLD_S:
            self.slow, self.slow_flip_since = degraded, None
        return self.slow

    def clear_slow(self) -> None:
        self.slow, self.slow_flip_since = False, None

    def stopped_cleanly(self, o: Observation) -> bool:
        """Whether the worker's last word, on the volume or the network, is a
        clean stop by the incarnation last seen or by a later one: one
        received no earlier than the last tick that saw the lock held (on
        this monitor's clock: the beat's own wall time may be skewed)."""
        held_at = self.held_at if self.held_at is not None else o.now
        for b, age_ms in ((o.file_beat, o.file_age_ms), (o.net_beat, o.net_age_ms)):
            if b is None or not b.stopped:
                continue
            received = o.now - age_ms / 1000 if age_ms is not None else -math.inf
            if b.incarnation == self.incarnation or received >= held_at:
                return True
        return False

    def sender_clock(self, o: Observation) -> str:
        """The sender-clock detector: ALIVE while the newest beat's own wall
        time is within the heartbeat-only timeout of this monitor's wall
        clock. It trusts the worker's clock: a beat stamped in the future
        keeps a dead worker alive, one stamped in the past kills a live one."""
        stamps = [b.unix_ms for b in (o.file_beat, o.net_beat) if b is not None]
        if not stamps:
            return DEAD
        return ALIVE if o.now_wall_ms - max(stamps) <= self.heartbeat_only_after_ms else DEAD

    def remember(self, verdict: str) -> str:
        self.last = verdict
        return verdict


# --------------------------------------------------------------------------- the loop


class Events:
    def __init__(self, path: str | None, to_stdout: bool = True):
        self.file = open(path, "a", buffering=1, encoding="utf-8") if path else None
        self.to_stdout = to_stdout

    def emit(self, kind: str, **fields) -> None:
        line = json.dumps({"ts": round(time.time(), 6), "source": "monitor", "kind": kind, **fields},
                          separators=(",", ":")) + "\n"
        if self.to_stdout:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                pass
        if self.file:
            self.file.write(line)


class Monitor:
    def __init__(self, args):
        self.args = args
        self.interval = args.interval_ms / 1000
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((args.bind, args.udp_port))
        self.sock.setblocking(False)
        beat_ms = args.heartbeat_ms or args.interval_ms
        self.cls = Classifier(args.interval_ms, args.timeout_ms, args.phi_threshold, beat_ms=beat_ms,
                              heartbeat_only_timeout_ms=args.heartbeat_only_timeout_ms)
        self.net = BeatStats(self.cls.silent_after_ms, args.phi_threshold, recent_window(beat_ms))
        self.events = Events(args.events)
        self.started = time.monotonic()
        self.last_udp: float | None = None
        self.last_udp_beat: Beat | None = None
        self.udp_count = 0
        self.verdict = ""
        self.heartbeat_only = ""
        self.sender_clock = ""
        # The volume beat timed as received: read at every tick and every lock probe.
        self.received = ReceiveClock()
        self.held = 0  # late ticks in a row whose verdict was held
        self.stop = False

    def drain_udp(self) -> None:
        while True:
            try:
                data = self.sock.recv(512)
            except (BlockingIOError, InterruptedError):
                return
            beat = parse_beat(data)
            if beat is None:
                continue
            now = time.monotonic()
            self.last_udp = now
            self.last_udp_beat = beat
            self.udp_count += 1
            self.net.beat(now * 1000, beat)
            if self.args.log_beats:
                # Every arrival, for replaying other detectors over this
                # link offline (bench/tune_detectors.py): the monotonic
                # arrival in ms and the beat's own seq.
                self.events.emit("beat", at_ms=round(now * 1000, 1), seq=beat.seq, incarnation=beat.incarnation)

    def judge_late(self, verdict: str, heartbeat_only: str, late_ms: float) -> tuple[str, str]:
        """A tick that came more than an interval late means this monitor was
        starved (or frozen) itself: the silence it sees may be its own. Such
        a tick does not turn the verdict to one of silence (PAUSED,
        PARTITIONED, heartbeat-only DEAD); it says so (a `late` event), and
        the next tick on time judges. At most MAX_HELD in a row, so a monitor
        starved for good still reaches a verdict, only later."""
        # Only what silence concludes is held: a new incarnation (RESTARTED)
        # or a free lock (CRASHED) are facts a late tick sees as well as any.
        # The heartbeat-only detector holds nothing: it is the simple one,
        # which does not notice its own pause (the lesson beside this hold).
        hold_v = verdict != self.verdict and verdict in (PAUSED, PARTITIONED)
        if not (hold_v and self.verdict and late_ms > self.args.interval_ms and self.held < MAX_HELD):
            self.held = 0
            return verdict, heartbeat_only
        self.held += 1
        self.events.emit("late", late_ms=round(late_ms), held=self.verdict, would_be=verdict)
        return self.verdict, heartbeat_only

    def tick(self, late_ms: float = 0.0, heartbeat_only_ref: float | None = None) -> None:
        now = time.monotonic()
        # Only the sender-clock detector compares the worker's wall time with this one.
        wall_ms = time.time() * 1000
        lock = probe_lock(self.args.lock)
        file_beat = read_beat_file(self.args.heartbeat_file)
        self.received.see(now, file_beat)
        file_age_ms = self.received.age_ms(now) if file_beat else None
        self.drain_udp()  # a beat that landed while we read the volume counts too
        if late_ms > self.interval * 1000:
            self.net.forget()  # what waited in our socket while we were frozen is no measure of the link
        ref = self.last_udp if self.last_udp is not None else self.started
        net_age_ms = (now - ref) * 1000
        heartbeat_only_age_ms = (now - heartbeat_only_ref) * 1000 if heartbeat_only_ref is not None else None
        loss, mean_gap_ms, gap_std_ms = self.net.loss(), self.net.mean_gap_ms(), self.net.gap_std_ms()
        disorder = self.net.disorder()
        obs = Observation(now, wall_ms, lock, net_age_ms, file_beat, self.last_udp_beat,
                          self.net.phi(now * 1000), loss, mean_gap_ms, gap_std_ms, disorder, heartbeat_only_age_ms,
                          late_ms, file_age_ms)
        verdict, heartbeat_only = self.judge_late(*self.cls.classify(obs), late_ms)
        sender_clock = self.cls.sender_clock(obs)
        phi = self.net.phi_value(now * 1000)
        fields = {
            "late_ms": round(late_ms),
            "verdict": verdict,
            "heartbeat_only": heartbeat_only,
            "sender_clock": sender_clock,
            "phi": round(phi, 2),
            "phi_suspect": phi >= self.args.phi_threshold,
            "net_age_ms": round(net_age_ms),
            "loss": round(loss, 2) if loss is not None else None,
            "mean_gap_ms": round(mean_gap_ms) if mean_gap_ms is not None else None,
            "gap_std_ms": round(gap_std_ms) if gap_std_ms is not None else None,
            "disorder": round(disorder, 2) if disorder is not None else None,
            # As received (ReceiveClock); None also for a beat older than this monitor's watch.
            "file_age_ms": round(file_age_ms) if file_age_ms is not None and math.isfinite(file_age_ms) else None,
            # What the sender-clock detector reads: our wall clock minus the beat's own (its clock's skew shows).
            "file_wall_age_ms": round(wall_ms - file_beat.unix_ms) if file_beat else None,
            "lock": lock.state,
            "pid": lock.pid,
            "incarnation": lock.incarnation,
            "seq": file_beat.seq if file_beat else None,
            "processed": file_beat.processed if file_beat else None,
            "udp_beats": self.udp_count,
        }
        if verdict != self.verdict or heartbeat_only != self.heartbeat_only or sender_clock != self.sender_clock:
            self.events.emit("verdict", previous=self.verdict or None,
                             previous_heartbeat_only=self.heartbeat_only or None,
                             previous_sender_clock=self.sender_clock or None, **fields)
            self.verdict, self.heartbeat_only, self.sender_clock = verdict, heartbeat_only, sender_clock
        self.events.emit("tick", **fields)

    def run(self) -> int:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        self.events.emit("start", udp_port=self.args.udp_port, interval_ms=self.args.interval_ms,
                         timeout_ms=self.args.timeout_ms, phi_threshold=self.args.phi_threshold,
                         silent_after_ms=self.cls.silent_after_ms, heartbeat_ms=self.cls.beat_ms,
                         fast_after_ms=self.cls.fast_after_ms, vol_stale_ms=self.cls.vol_stale_ms)
        next_tick = next_probe = time.monotonic()
        end = self.started + self.args.duration_s if self.args.duration_s else None
        lingers = {STOPPED: self.args.linger_after_stop_s, CRASHED: self.args.linger_after_crash_s}
        since: tuple[str, float] | None = None  # the verdict we may leave on, and since when
        while not self.stop:
            now = time.monotonic()
            if end is not None and now >= end:
                break
            if lingers.get(self.verdict, 0) > 0:
                since = since if since and since[0] == self.verdict else (self.verdict, now)
                if now - since[1] >= lingers[self.verdict]:
                    # The worker left cleanly, or crashed and nothing took its
                    # lock for that long (its restarts are used up): so can we.
                    break
            else:
                since = None
            if now >= next_tick:
                # The heartbeat-only detector judges by the last beat it had
                # read before this tick: after its own pause, before the beats
                # that waited in its socket (see Observation.heartbeat_only_age_ms).
                heartbeat_only_ref = self.last_udp
                self.drain_udp()
                self.tick((now - next_tick) * 1000, heartbeat_only_ref)
                next_tick += self.interval
                if next_tick <= now:  # fell behind: skip, don't burst
                    next_tick = now + self.interval
                next_probe = now + LOCK_PROBE_S
                continue
            if now >= next_probe:
                next_probe = now + LOCK_PROBE_S
                # A new volume beat is timed within a probe of its writing, not a tick.
                self.received.see(now, read_beat_file(self.args.heartbeat_file))
                # A free lock is a fact that needs no waiting: judged at
                # once, not at the next tick, a crash is seen within a probe.
                if self.verdict not in (CRASHED, STOPPED, UNKNOWN) and probe_lock(self.args.lock).state != "held":
                    self.drain_udp()
                    self.tick()
                continue
            # Wake for each datagram so arrival times are exact, for the lock probe and for the tick.
            if sel.select(timeout=min(next_tick, next_probe) - now):
                self.drain_udp()
        self.events.emit("stop", verdict=self.verdict)
        return 0


# --------------------------------------------------------------------------- exercise 2: the pidfile monitor

P_RUNNING, P_PAUSED, P_CRASHED, P_STALE, P_WAITING, P_EXITED, P_NONE = (
    "running", "paused", "crashed", "stale lock", "waiting", "exited", "no worker")
# Reads of a lock without a PID before it counts as stale: the worker creates
# the file, then writes its PID, and a tick can land in between.
EMPTY_LOCK_TICKS = 3


def process_state(pid: int) -> str:
    """'alive', 'stopped' (SIGSTOP, a debugger), or 'gone' (no such process, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        state = None
    if state is None:
        # No /proc entry we can read (another PID namespace's /proc?): ask the kernel directly.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            return "alive"  # it exists; it is another user's
        return "alive"
    if state in (b"Z", b"X"):
        return "gone"
    if state in (b"T", b"t"):
        return "stopped"
    return "alive"


def read_pid(path: str) -> tuple[bool, int | None]:
    """(the file exists, the PID in it): the first token, if it is digits."""
    try:
        with open(path, "rb") as f:
            data = f.read(128)
    except FileNotFoundError:
        return False, None
    except OSError:
        return True, None
    return True, parse_lock_content(data)[0]


class PidfileJudge:
    """Exercise 2's verdicts from a lock file holding a PID and, if given, a
    heartbeat file. Remembers the PIDs it saw alive, so it can say "crashed"
    for a worker it watched die and "stale lock" for one that was gone before
    it looked."""

    def __init__(self, lock: str, heartbeat_file: str | None, stale_after_s: float):
        self.lock = lock
        self.heartbeat_file = heartbeat_file
        self.stale_after_s = stale_after_s
        self.seen_alive: set[int] = set()
        self.empty_ticks = 0

    def judge(self, now_wall: float) -> tuple[str, str]:
        exists, pid = read_pid(self.lock)
        if not exists:
            self.empty_ticks = 0
            if self.seen_alive:
                return P_EXITED, f"{self.lock} was removed: the worker ended and cleaned up after itself"
            return P_NONE, f"{self.lock} does not exist: no worker has started"
        if pid is None:
            self.empty_ticks += 1
            if self.empty_ticks < EMPTY_LOCK_TICKS:
                return P_WAITING, f"{self.lock} holds no PID yet (being written?); reading it again"
            return P_STALE, f"{self.lock} holds no PID: a stale or broken lock file"
        self.empty_ticks = 0
        state = process_state(pid)
        if state == "gone":
            if pid in self.seen_alive:
                return P_CRASHED, (f"worker pid {pid} is gone and left {self.lock} behind: it crashed "
                                   "(a stale lock)")
            return P_STALE, f"{self.lock} names pid {pid}, which is not running: the worker crashed earlier"
        self.seen_alive.add(pid)
        if state == "stopped":
            return P_PAUSED, f"worker pid {pid} exists but is stopped (SIGSTOP?): it holds its lock and does nothing"
        age = self.heartbeat_age(now_wall)
        if age is not None and age > self.stale_after_s:
            return P_PAUSED, f"worker pid {pid} exists but its last heartbeat is {age:.1f} s old: frozen?"
        return P_RUNNING, f"worker pid {pid} is alive" + (f", last heartbeat {age:.1f} s ago" if age is not None
                                                          else "")

    def heartbeat_age(self, now_wall: float) -> float | None:
        """Seconds since the heartbeat file last changed, or None without one."""
        if not self.heartbeat_file:
            return None
        try:
            return max(0.0, now_wall - os.stat(self.heartbeat_file).st_mtime)
        except OSError:
            return None


def run_pidfile(args, stop: threading.Event) -> int:
    """Exercise 2's loop: one line per tick on stdout, for a person."""
    judge = PidfileJudge(args.pidfile, args.heartbeat_file, args.timeout_ms / 1000)
    events = Events(args.events, to_stdout=False)
    interval = args.interval_ms / 1000
    started = time.monotonic()
    next_tick = started
    last = None
    while not stop.is_set():
        if args.duration_s and time.monotonic() - started >= args.duration_s:
            break
        verdict, sentence = judge.judge(time.time())
        try:
            print(f"{time.strftime('%H:%M:%S')} monitor: {verdict}: {sentence}", flush=True)
        except BrokenPipeError:
            return 0
        if verdict != last:
            events.emit("verdict", mode="pidfile", verdict=verdict, previous=last, detail=sentence)
            last = verdict
        next_tick += interval
        delay = next_tick - time.monotonic()
        if delay <= 0:  # fell behind: skip, don't burst
            next_tick = time.monotonic()
            continue
        stop.wait(delay)  # the next tick, or at once on SIGTERM/SIGINT
    events.emit("stop", mode="pidfile", verdict=last)
    return 0


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"wants 1 or more, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Tell a crashed worker from a paused or partitioned one.",
                                 epilog="Without arguments: exercise 2's monitor, "
                                        + " ".join(EXERCISE_ARGS) + ".")
    ap.add_argument("--udp-port", type=positive_int, help="where the worker's heartbeats arrive (required)")
    ap.add_argument("--bind", default="0.0.0.0", help="address to receive heartbeats on (default all)")
    ap.add_argument("--heartbeat-file", help="the worker's heartbeat file on the shared volume (required, "
                                             "except with --pidfile)")
    ap.add_argument("--lock", help="the worker's lock file on the shared volume (required)")
    ap.add_argument("--pidfile", help="exercise 2's monitor: judge by the PID in this lock file, one line "
                                      "a tick for a person (--udp-port and --lock are then not used)")
    ap.add_argument("--interval-ms", type=positive_int, default=200, help="tick period (default 200)")
    ap.add_argument("--timeout-ms", type=positive_int, default=2000, help="longest a verdict may take (default 2000)")
    ap.add_argument("--heartbeat-ms", type=int, default=0,
                    help="how often the worker beats (default 0: once a tick, --interval-ms)")
    ap.add_argument("--heartbeat-only-timeout-ms", type=int, default=0,
                    help="the heartbeat-only detector's own timeout (default 0: the same as --timeout-ms)")
    ap.add_argument("--phi-threshold", type=float, default=8.0, help="phi at which the accrual detector suspects")
    ap.add_argument("--log-beats", type=int, choices=(0, 1), default=0,
                    help="1: a `beat` event for every heartbeat that arrives (for tuning detectors offline)")
    ap.add_argument("--events", help="also append events (JSON lines) to this file")
    ap.add_argument("--duration-s", type=float, default=0, help="stop after this long (default: run until SIGTERM)")
    ap.add_argument("--linger-after-stop-s", type=float, default=0,
                    help="exit this long after the worker stopped cleanly (default 0: keep watching)")
    ap.add_argument("--linger-after-crash-s", type=float, default=0,
                    help="exit once the worker has been CRASHED this long with no new worker (its restarts used "
                         "up) (default 0: keep watching)")
    return ap


# Exercise 2's monitor as the sheet runs it: `python3 monitor.py` in the
# worker's directory, which beats once a second.
EXERCISE_ARGS = ("--pidfile", "worker.lock", "--heartbeat-file", "worker.heartbeat", "--interval-ms", "1000",
                 "--timeout-ms", "3000")


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv or list(EXERCISE_ARGS))
    if args.timeout_ms <= args.interval_ms:
        ap.error(f"--timeout-ms ({args.timeout_ms}) must exceed --interval-ms ({args.interval_ms})")
    if args.heartbeat_only_timeout_ms and args.heartbeat_only_timeout_ms <= args.interval_ms:
        ap.error(f"--heartbeat-only-timeout-ms ({args.heartbeat_only_timeout_ms}) must exceed --interval-ms "
                 f"({args.interval_ms})")
    if args.pidfile:
        stop = threading.Event()

        def on_stop(signum, frame):
            stop.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        return run_pidfile(args, stop)
    missing = [opt for opt, v in (("--udp-port", args.udp_port), ("--heartbeat-file", args.heartbeat_file),
                                  ("--lock", args.lock)) if v is None]
    if missing:
        ap.error("the following arguments are required: " + ", ".join(missing))
    try:
        mon = Monitor(args)
    except OSError as e:
        print(f"monitor: error: cannot listen on UDP {args.bind}:{args.udp_port}: {e.strerror}", file=sys.stderr)
        return 71

    def on_term(signum, frame):
        mon.stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return mon.run()


if __name__ == "__main__":
    sys.exit(main())
