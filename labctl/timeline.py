"""timeline.png: one lane per observer, fault windows shaded, one column per
scenario. The picture an instructor puts on the projector."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from labctl import check  # noqa: E402

LANES = ("ground truth", "monitor", "heartbeat-only", "supervisor", "worker beats\n& items processed")
COLORS = {
    "RUNNING": "#2e7d32", "HEALTHY": "#2e7d32", "ALIVE": "#2e7d32", "streaming": "#2e7d32", "done": "#1b5e20",
    "CRASHED": "#c62828", "DEAD": "#e57373",
    "PAUSED": "#ef6c00", "SIGSTOPPED": "#ef6c00", "timed_out": "#ffa726",
    "PARTITIONED": "#6a1b9a", "isolating": "#ab47bc",
    "RESTARTED": "#00838f", "reconnecting": "#fdd835",
    "STOPPED": "#1565c0", "UNKNOWN": "#9e9e9e", "connecting": "#bdbdbd",
}
FAULT_SHADE = "#90a4ae"  # the fault windows; tests look for this colour


@dataclass
class Column:
    title: str
    events: list[dict]
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


def render(columns: list[Column], path: Path) -> dict:
    """Draws the figure; returns what it drew (lanes, fault windows) for checking."""
    n = len(columns)
    fig, axes = plt.subplots(len(LANES), n, figsize=(6.2 * n + 1.6, 7.2), squeeze=False,
                             gridspec_kw={"hspace": 0.35, "wspace": 0.08})
    used: set[str] = set()
    windows_drawn = 0
    for c, col in enumerate(columns):
        evs = col.events
        span = max(col.t1 - col.t0, 1.0)
        lanes = [
            check.observed(evs, "truth"),
            check.observed(evs, "monitor"),
            check.observed(evs, "naive"),
            check.observed(evs, "supervisor"),
        ]
        windows = check.fault_windows(evs, col.t1)
        faults = {e["step"]: e["fault"] for e in evs
                  if e.get("source") == "labctl" and e.get("phase") == "intent" and e.get("step") is not None}
        for r, changes in enumerate(lanes):
            ax = axes[r][c]
            for start, width, state in segments(changes, col.t0, col.t1):
                used.add(state)
                ax.broken_barh([(start, width)], (0.15, 0.7), color=COLORS.get(state, "#757575"))
                if width / span > 0.16:
                    ax.text(start + width / 2, 0.5, state, ha="center", va="center", fontsize=8, color="white",
                            fontweight="bold", clip_on=True)
            ax.set_ylim(0, 1)
            ax.set_yticks([])
        ax = axes[4][c]
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
        for step, (ws, we) in windows.items():
            windows_drawn += 1
            for r in range(len(LANES)):
                axes[r][c].axvspan(ws - col.t0, we - col.t0, color=FAULT_SHADE, alpha=0.35, zorder=0, lw=0)
            axes[0][c].text((ws - col.t0 + we - col.t0) / 2, 1.08, f"{faults.get(step, 'fault')}",
                            ha="center", va="bottom", fontsize=8, transform=axes[0][c].get_xaxis_transform())
        for r in range(len(LANES)):
            axes[r][c].set_xlim(0, span)
            if r < len(LANES) - 1:
                axes[r][c].set_xticklabels([])
        axes[-1][c].set_xlabel("seconds since the lab started", fontsize=8)
        axes[0][c].set_title(col.title, fontsize=11, fontweight="bold", pad=16)
    for r, name in enumerate(LANES):
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    handles = [Patch(color=COLORS[s], label=s) for s in COLORS if s in used]
    handles.append(Patch(color=FAULT_SHADE, alpha=0.35, label="fault window"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.subplots_adjust(left=0.17 if n == 1 else 0.09, right=0.98, top=0.9, bottom=0.16)
    meta = {"Lanes": "|".join(n.replace("\n", " ") for n in LANES), "Columns": str(n),
            "FaultWindows": str(windows_drawn)}
    fig.savefig(path, dpi=110, metadata=meta)
    plt.close(fig)
    return meta


def render_runs(run_dirs: list[Path], path: Path) -> dict:
    """One picture for several runs (a demo): one column per scenario."""
    cols = []
    for rd in run_dirs:
        meta = check.read_meta(rd)
        evs = check.read_events(rd / "events.jsonl")
        cols.append(Column(meta.get("scenario", rd.parent.name), evs, meta.get("started", evs[0]["ts"] if evs else 0),
                           meta.get("ended", evs[-1]["ts"] if evs else 1)))
    return render(cols, path)
