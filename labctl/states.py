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
RESTARTING = "RESTARTING"
PAUSED = "PAUSED"
SIGSTOPPED = "SIGSTOPPED"
PARTITIONED = "PARTITIONED"
STOPPED = "STOPPED"
GONE = "GONE"  # live view only: the container no longer exists
TRUTHS = (RUNNING, CRASHED, RESTARTING, PAUSED, SIGSTOPPED, PARTITIONED, STOPPED)

# ---------------------------------------------------------------- the monitor's verdict
UNKNOWN = "UNKNOWN"
HEALTHY = "HEALTHY"
RESTARTED = "RESTARTED"
VERDICTS = (UNKNOWN, HEALTHY, CRASHED, PAUSED, PARTITIONED, RESTARTED, STOPPED)

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
OBSERVERS = (TRUTH, MONITOR, HEARTBEAT_ONLY, SUPERVISOR)
SAYS = {TRUTH: TRUTHS, MONITOR: VERDICTS, HEARTBEAT_ONLY: HEARTBEAT_ONLY_VERDICTS, SUPERVISOR: SUPERVISOR_STATES}
