"""The side-by-side view: one column per lab, one row per observer."""
from __future__ import annotations

import time

from rich import box
from rich.table import Table
from rich.text import Text

from labctl import lease, states
from labctl.lab import RunResult
from labctl.observe import Live

STYLE = {
    states.HEALTHY: "green", states.ALIVE: "green", states.RUNNING: "green", states.STREAMING: "green",
    states.DONE: "green", "passed": "bold green",
    states.CRASHED: "bold red", states.DEAD: "red", "FAILED": "bold red", states.GONE: "red",
    states.PAUSED: "bold yellow", states.SIGSTOPPED: "bold yellow", states.TIMED_OUT: "yellow",
    states.RECONNECTING: "yellow",
    states.PARTITIONED: "bold magenta", states.ISOLATING: "magenta",
    states.RESTARTED: "cyan", states.STOPPED: "blue", states.CONNECTING: "dim",
    states.DEGRADED: "yellow", states.SLOW: "yellow", states.ONEWAY: "magenta", states.SKEWED: "yellow",
}

ROWS = [
    ("step", "fault / step"),
    ("truth", "ground truth (engine)"),
    ("monitor", "monitor verdict"),
    ("heartbeat_only", "heartbeat-only verdict"),
    ("phi", "phi (accrual)"),
    ("sender_clock", "sender-clock verdict"),
    ("supervisor", "supervisor"),
    ("items", "items acked / total"),
    ("processed", "processed"),
    ("corrupted", "corrupted (reported)"),
    ("dead_lettered", "dead-lettered"),
    ("seen", "crashes / timeouts seen"),
    ("restarts", "worker restarts"),
    ("lock", "lock (flock probe)"),
    ("phase", "lab"),
]


def cell(live: Live, key: str) -> Text:
    if key == "items":
        return Text(f"{live.acked:,} / {live.total:,}" if live.total else "-")
    if key == "seen":
        return Text(f"{live.crashes} / {live.timeouts}")
    if key == "phi":
        return Text(f"{live.phi:.1f}", style="red" if live.phi >= 8 else "")
    value = getattr(live, key)
    text = f"{value:,}" if isinstance(value, int) else str(value or "-")
    return Text(text, style=STYLE.get(text, ""))


def table(lives: list[Live]) -> Table:
    t = Table(box=box.SIMPLE_HEAVY, title="labctl: what each observer concludes, beside the truth",
              title_justify="left", expand=False)
    t.add_column("", style="bold", no_wrap=True)
    for lv in lives:
        elapsed = time.time() - lv.started
        t.add_column(f"{lv.scenario}\n[dim]{lv.lab_id} · {elapsed:4.0f}s[/dim]", no_wrap=True, min_width=18)
    leases = [isinstance(lv, lease.LeaseLive) for lv in lives]
    # A lease lab has rows of its own; beside worker labs, each column fills the rows of its kind.
    rows = ([r for r in ROWS if not all(leases) or r[0] in ("step", "phase")]
            + [r for r in lease.ROWS if any(leases) and r[0] not in ("step", "phase")])
    for key, label in rows:
        t.add_row(label, *[lease_cell(lv, key) if isinstance(lv, lease.LeaseLive) else
                           (cell(lv, key) if key in WORKER_KEYS else Text("")) for lv in lives])
    return t


WORKER_KEYS = {k for k, _ in ROWS}


def lease_cell(lv: lease.LeaseLive, key: str) -> Text:
    if key in ("step", "phase") or key not in WORKER_KEYS:
        text = lease.cell(lv, key) if key not in WORKER_KEYS else str(getattr(lv, key) or "-")
        return Text(text, style=STYLE.get(text, ""))
    return Text("")


def lease_line(lv: lease.LeaseLive) -> str:
    """One line of a lease lab's state, for a view that is not a terminal."""
    return (f"{lv.scenario:<22} {lv.phase:<10} step={lv.step or '-':<24} lease={lease.cell(lv, 'lease'):<12} "
            f"alice={lease.cell(lv, 'alice'):<20} bob={lease.cell(lv, 'bob'):<20} "
            f"store={lease.cell(lv, 'store')} counter={lease.cell(lv, 'counter')}")


def final_table(results: list[RunResult]) -> Table:
    t = Table(box=box.SIMPLE_HEAVY, title="expectations", title_justify="left")
    t.add_column("scenario", no_wrap=True)
    t.add_column("check")
    t.add_column("", no_wrap=True)
    t.add_column("detail")
    for r in results:
        first = True
        for c in r.checks:
            t.add_row(r.scenario if first else "", c.name, Text("ok" if c.ok else "FAIL",
                                                                 style="green" if c.ok else "bold red"), c.detail)
            first = False
        if r.error:
            t.add_row(r.scenario if first else "", "run", Text("FAIL", style="bold red"), r.error)
        elif not r.checks:
            t.add_row(r.scenario, "run", Text("FAIL", style="bold red"), "nothing was checked")
        t.add_row("", f"[dim]run directory: {r.run_dir}[/dim]", "", "")
    return t


# ----------------------------------------------------------------------- blind triage

# What the supervisor alone sees (scenario-blind): no fault, no ground truth, no monitor, no lock.
BLIND_ROWS = [(key, label) for key, label in ROWS
              if key in ("supervisor", "items", "processed", "seen", "restarts", "phase")]
BLIND_LOG_LINES = 6  # the supervisor's latest log lines shown under its rows
BLIND_LOG_WIDTH = 100


def blind_table(lives: list[Live]) -> Table:
    """The live view of a blind run: the supervisor's rows and the tail of its log, nothing else."""
    t = Table(box=box.SIMPLE_HEAVY, title="labctl blind triage: the supervisor's view",
              title_justify="left", expand=False)
    t.add_column("", style="bold", no_wrap=True)
    for lv in lives:
        t.add_column(f"{lv.scenario}\n[dim]{lv.lab_id} · {time.time() - lv.started:4.0f}s[/dim]", no_wrap=True,
                     min_width=18)
    for key, label in BLIND_ROWS:
        t.add_row(label, *[cell(lv, key) for lv in lives])
    t.add_row("supervisor log", *[Text("\n".join(line[:BLIND_LOG_WIDTH] for line in lv.supervisor_log[
        -BLIND_LOG_LINES:]) or "-", style="dim") for lv in lives])
    return t


def blind_line(live: Live) -> str:
    """One line of a blind run's progress where there is no terminal (logs, CI): the supervisor's fields only."""
    return (f"{live.scenario:<22} {live.phase:<10} supervisor={live.supervisor:<12} acked={live.acked}/{live.total} "
            f"crashes/timeouts seen={live.crashes}/{live.timeouts} worker restarts={live.restarts}")
