"""Every state and verdict name, defined once.

The programs in the containers print these strings (docs/events.md); labctl
reads them, validates scenarios against them, judges and draws them. A name
spelled anywhere else is a name that can drift.
"""
from __future__ import annotations

# ---------------------------------------------------------------- ground truth
# The worker as the engine sees it (a signal it cannot see comes from labctl's journal).
RUNNING = "RUNNING"
CRASHED = "CRASHED"
OOM = "OOM"  # killed by the kernel's OOM killer (the engine's OOMKilled): a death, not by a signal of its own
RESTARTING = "RESTARTING"
PAUSED = "PAUSED"
SIGSTOPPED = "SIGSTOPPED"
PARTITIONED = "PARTITIONED"
STOPPED = "STOPPED"
# Gray faults, which the engine cannot see either (labctl's journal tells):
# the worker runs, but crawls or its heartbeats are lossy (DEGRADED), or one
# direction of one of its links is cut (ONEWAY).
DEGRADED = "DEGRADED"
ONEWAY = "ONEWAY"
# A clock fault (skew, drift; labctl's journal tells): the process runs, but
# its clock is off, so what it stamps with the time is.
SKEWED = "SKEWED"
GONE = "GONE"  # live view only: the container no longer exists
TRUTHS = (RUNNING, CRASHED, OOM, RESTARTING, PAUSED, SIGSTOPPED, PARTITIONED, STOPPED, DEGRADED, ONEWAY, SKEWED)

# ---------------------------------------------------------------- the monitor's verdict
UNKNOWN = "UNKNOWN"
HEALTHY = "HEALTHY"
RESTARTED = "RESTARTED"
# Alive (lock held, volume fresh) but its network heartbeats come late or sparse.
SLOW = "SLOW"
VERDICTS = (UNKNOWN, HEALTHY, CRASHED, PAUSED, PARTITIONED, RESTARTED, STOPPED, SLOW)

# ---------------------------------------------------------------- the heartbeat-only verdict
ALIVE = "ALIVE"
DEAD = "DEAD"
HEARTBEAT_ONLY_VERDICTS = (ALIVE, DEAD)

# ---------------------------------------------------------------- the supervisor's states
CONNECTING = "connecting"
STREAMING = "streaming"
ISOLATING = "isolating"
TIMED_OUT = "timed_out"
RECONNECTING = "reconnecting"
DONE = "done"
SUPERVISOR_STATES = (CONNECTING, STREAMING, ISOLATING, TIMED_OUT, RECONNECTING, DONE)

# ---------------------------------------------------------------- the monitor's flock probe
LOCK_HELD = "held"
LOCK_FREE = "free"
LOCK_ABSENT = "absent"
LOCK_UNREADABLE = "unreadable"

# ---------------------------------------------------------------- observers
# The keys of a scenario's expectations, and what each may say.
TRUTH = "truth"
MONITOR = "monitor"
HEARTBEAT_ONLY = "heartbeat_only"
SUPERVISOR = "supervisor"
# The phi accrual detector on the same heartbeats: ALIVE, or DEAD once phi
# crosses the monitor's threshold (its `phi_suspect`).
PHI = "phi"
# A detector that trusts the wall time inside the newest beat against the
# monitor's own wall clock: ALIVE while that difference is under the timeout.
SENDER_CLOCK = "sender_clock"
OBSERVERS = (TRUTH, MONITOR, HEARTBEAT_ONLY, SUPERVISOR, PHI, SENDER_CLOCK)
SAYS = {TRUTH: TRUTHS, MONITOR: VERDICTS, HEARTBEAT_ONLY: HEARTBEAT_ONLY_VERDICTS, SUPERVISOR: SUPERVISOR_STATES,
        PHI: HEARTBEAT_ONLY_VERDICTS, SENDER_CLOCK: HEARTBEAT_ONLY_VERDICTS}
