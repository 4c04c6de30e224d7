"""timeline.png: one lane per observer, fault windows shaded, one column per
scenario. The picture an instructor puts on the projector."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from labctl import rundir, runlog, states
from labctl.runlog import Event

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LANES = ("ground truth", "monitor", "heartbeat-only", "phi (accrual)", "sender clock", "supervisor",
         "worker beats\n& items processed")
# The observers drawn in the first lanes, in LANES' order; the last lane is the worker's beats.
OBSERVER_LANES = (states.TRUTH, states.MONITOR, states.HEARTBEAT_ONLY, states.PHI, states.SENDER_CLOCK,
                  states.SUPERVISOR)
COLORS = {
    states.RUNNING: "#2e7d32", states.HEALTHY: "#2e7d32", states.ALIVE: "#2e7d32", states.STREAMING: "#2e7d32",
    states.DONE: "#1b5e20",
    states.CRASHED: "#c62828", states.DEAD: "#e57373",
    states.PAUSED: "#ef6c00", states.SIGSTOPPED: "#ef6c00", states.TIMED_OUT: "#ffa726",
    states.PARTITIONED: "#6a1b9a", states.ISOLATING: "#ab47bc",
    states.RESTARTED: "#00838f", states.RECONNECTING: "#fdd835",
    states.STOPPED: "#1565c0", states.UNKNOWN: "#9e9e9e", states.CONNECTING: "#bdbdbd",
    states.DEGRADED: "#9e9d24", states.SLOW: "#c0ca33", states.ONEWAY: "#8e24aa", states.SKEWED: "#5d4037",
}
FAULT_SHADE = "#90a4ae"  # the fault windows; tests look for this colour
LATENCY_COLOR = "#d84315"


def _pyplot() -> ModuleType:
    """matplotlib takes half a second to import: more than a third of labctl's
    start. It is imported only when a picture is drawn, or by preload()."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def preload() -> None:
    """Imports matplotlib in the background while a lab runs, so that drawing
    at the end does not wait for it either (the import lock makes a render
    that starts first simply wait for this import)."""
    threading.Thread(target=_pyplot, name="preload-matplotlib", daemon=True).start()


@dataclass
class Column:
    title: str
    events: list[Event]
    t0: float
    t1: float


def segments(changes: list[tuple[float, str]], t0: float, t1: float) -> list[tuple[float, float, str]]:
    """(start, width, state) runs from a list of (ts, state) observations."""
    out = []
    cur = None
    for ts, state in changes:
        if cur and cur[1] == state:
            continue
        if cur:
            out.append((cur[0] - t0, ts - cur[0], cur[1]))
        cur = (ts, state)
    if cur:
        out.append((cur[0] - t0, max(t1 - cur[0], 0), cur[1]))
    return [s for s in out if s[1] > 0]


def render(columns: list[Column], path: Path) -> dict[str, str]:
    """Draws the figure; returns what it drew (lanes, fault windows) for checking."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    n = len(columns)
    fig, axes = plt.subplots(len(LANES), n, figsize=(6.2 * n + 1.6, 8.8), squeeze=False,
                             gridspec_kw={"hspace": 0.35, "wspace": 0.08})
    used: set[str] = set()
    windows_drawn = 0
    for c, col in enumerate(columns):
        lanes = [axes[r][c] for r in range(len(LANES))]
        span = max(col.t1 - col.t0, 1.0)
        for ax, who in zip(lanes, OBSERVER_LANES, strict=False):
            used |= draw_states(ax, runlog.observed(col.events, who), col, span)
        draw_progress(lanes[-1], col)
        windows_drawn += draw_fault_windows(lanes, col)
        for r, ax in enumerate(lanes):
            ax.set_xlim(0, span)
            if r < len(LANES) - 1:
                ax.set_xticklabels([])
        lanes[-1].set_xlabel("seconds since the lab started", fontsize=8)
        # Above the names of the fault windows, which stack when faults overlap.
        lanes[0].set_title(col.title, fontsize=11, fontweight="bold", pad=6 + 10 * max_stacked_names(col))
    for r, name in enumerate(LANES):
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    handles = [Patch(color=COLORS[s], label=s) for s in COLORS if s in used]
    handles.append(Patch(color=FAULT_SHADE, alpha=0.35, label="fault window"))
    # As many legend entries a row as the figure is wide; gray faults add states enough to need two rows.
    per_row = min(len(handles), 5 * n + 1)
    rows = -(-len(handles) // per_row)
    fig.legend(handles=handles, loc="lower center", ncol=per_row, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.subplots_adjust(left=0.22 if n == 1 else 0.09, right=0.94 if n == 1 else 0.97, top=0.92,
                        bottom=0.1 + 0.035 * rows)
    meta = {"Lanes": "|".join(n.replace("\n", " ") for n in LANES), "Columns": str(n),
            "FaultWindows": str(windows_drawn)}
    # The figure grows to hold every label and the legend: lane names, tick
    # labels and the p99 axis vary in width with the numbers a run reached,
    # and fixed margins alone clipped them on a single column.
    fig.savefig(path, dpi=110, metadata=meta, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return meta


def draw_states(ax: Axes, changes: runlog.Seen, col: Column, span: float) -> set[str]:
    """One observer's lane: a bar per state, labelled where it is wide enough; returns the states drawn."""
    used = set()
    for start, width, state in segments(changes, col.t0, col.t1):
        used.add(state)
        ax.broken_barh([(start, width)], (0.15, 0.7), color=COLORS.get(state, "#757575"))
        if width / span > 0.16:
            ax.text(start + width / 2, 0.5, state, ha="center", va="center", fontsize=8, color="white",
                    fontweight="bold", clip_on=True)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    return used


def draw_progress(ax: Axes, col: Column) -> None:
    """The worker's lane: items processed as the monitor's ticks report them, the
    supervisor's acknowledged count, and a mark for each beat."""
    evs = col.events
    ticks = [e for e in evs if e["source"] == "monitor" and e["kind"] == "tick"]
    xs = [e["ts"] - col.t0 for e in ticks if e.get("processed") is not None]
    ys = [e["processed"] for e in ticks if e.get("processed") is not None]
    ax.plot(xs, ys, color="#37474f", linewidth=1.4)
    # Beats as the monitor counted them: a mark where the count rose.
    beats = []
    last = None
    for e in ticks:
        if last is not None and e.get("udp_beats", 0) > last:
            beats.append(e["ts"] - col.t0)
        last = e.get("udp_beats", 0)
    # The supervisor's acknowledged count: it never goes back, even when a
    # restarted worker's own count starts again from zero.
    acked = [(e["ts"] - col.t0, e["acked"]) for e in evs
             if e["source"] == "supervisor" and e["kind"] in ("progress", "state") and "acked" in e]
    if acked:
        ax.plot([a for a, _ in acked], [b for _, b in acked], "--", color="#1565c0", linewidth=1.2,
                label="supervisor: acked")
    ax.plot([], [], color="#37474f", label="worker: processed (this incarnation)")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ymax = max(ys + [b for _, b in acked]) if (ys or acked) else 1
    ymax = ymax or 1
    ax.plot(beats, [ymax * 1.05] * len(beats), "|", color="#2e7d32", markersize=5)
    ax.set_ylim(0, ymax * 1.15)
    ax.tick_params(axis="y", labelsize=7)
    # The supervisor's p99 round trip, once a second: a gray fault shows as this climbing.
    lat = runlog.latencies(evs)
    if lat:
        rt = ax.twinx()
        rt.plot([t - col.t0 for t, _, _ in lat], [p for _, _, p in lat], color=LATENCY_COLOR, linewidth=1.0)
        rt.set_ylim(0, max(p for _, _, p in lat) * 1.2 or 1)
        rt.tick_params(axis="y", labelsize=7, colors=LATENCY_COLOR)
        rt.set_ylabel("p99 ms", fontsize=7, color=LATENCY_COLOR)
        ax.plot([], [], color=LATENCY_COLOR, label="supervisor: p99 round trip (right axis)")
        ax.legend(loc="upper left", fontsize=7, frameon=False)


def max_stacked_names(col: Column) -> int:
    """How many fault names stack above the column's busiest shaded span."""
    return max((len(ns) for _, _, ns in fault_spans(col)), default=1)


def fault_spans(col: Column) -> list[tuple[float, float, list[str]]]:
    """The fault windows, overlapping ones merged: (start, end, the faults' names)."""
    spans: list[tuple[float, float, list[str]]] = []
    # Every journaled fault, a step or one given live (`labctl fault` on the lab meanwhile).
    for ws, we, name in runlog.every_fault_window(col.events, col.t1):
        if spans and ws <= spans[-1][1]:
            s0, e0, ns = spans[-1]
            spans[-1] = (s0, max(e0, we), [*ns, name])
        else:
            spans.append((ws, we, [name]))
    return spans


def draw_fault_windows(lanes: list[Axes], col: Column) -> int:
    """Shades every fault window across the column's lanes, named above the
    first; returns how many. Windows that overlap (two faults at once) are
    shaded as one span, so the shade means "a fault is on" wherever it is,
    and their names stack above it."""
    spans = fault_spans(col)
    for ws, we, ns in spans:
        for ax in lanes:
            ax.axvspan(ws - col.t0, we - col.t0, color=FAULT_SHADE, alpha=0.35, zorder=0, lw=0)
        lanes[0].text((ws - col.t0 + we - col.t0) / 2, 1.04, "\n".join(ns),
                      ha="center", va="bottom", fontsize=8, transform=lanes[0].get_xaxis_transform())
    return len(runlog.every_fault_window(col.events, col.t1))


def render_runs(run_dirs: list[Path], path: Path) -> dict[str, str]:
    """One picture for several runs (a demo): one column per scenario."""
    cols = []
    for rd in run_dirs:
        summary = rundir.read_summary(rd)
        evs = runlog.read_events(rd / rundir.EVENTS)
        first, last = (float(evs[0]["ts"]), float(evs[-1]["ts"])) if evs else (0.0, 1.0)
        started, ended = summary.get("started"), summary.get("ended")
        cols.append(Column(summary.get("scenario", rd.parent.name), evs,
                           first if started is None else float(started), last if ended is None else float(ended)))
    return render(cols, path)
