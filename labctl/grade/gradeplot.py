"""Timeline pictures of the grader's lab runs, one per system test, for the
student's feedback.md.

A Picture has three lanes over the seconds since the run's program started,
in labctl/timeline.py's colours and shading:

- the worker as it really was (running, stopped by a signal, paused by
  `docker pause`, crashed, killed, exited, restarted), from the stand-in's
  record, the driver's fired actions and the host's events;
- what the student's program said or did: the monitor's verdicts (exercise
  2), or the supervisor's life with its restarts and signals as marks
  (exercise 4);
- progress: lines fed to the workers, or the worker's heartbeats.

Fault windows are shaded across all three and named above the first. The
exercise modules build the Picture from what they ran (ex2.py, ex4_supervisor.py);
this module only draws it: a small figure (800x380 px, some tens of KB) in a
fraction of a second, with the Figure API rather than pyplot, since
submissions are graded on several threads. The PNG's text metadata says what
was drawn (Tests, Lanes, States, Marks, FaultWindows), so tests can read it
back.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from labctl import states
from labctl.grade.results import FaultEvent
from labctl.timeline import COLORS, FAULT_SHADE, segments

if TYPE_CHECKING:
    from labctl.grade.runner import Context, Outcome

TRUTH_LANE = "worker (truth)"
SIZE_IN = (8.0, 3.8)
DPI = 100
MAX_POINTS = 800  # a progress curve is thinned to this many points
MARK_LABELS = 6  # marks of one kind labelled; the rest only drawn
LABEL_MIN_SHARE = 0.1  # a bar is labelled when it is at least this share of the axis
MARK_NEAR_SHARE = 0.08  # marks closer than this share of the axis have their labels pulled apart
# docker pause as the host reports it (sandbox._HostActions)
PAUSE, UNPAUSE = "pause", "unpause"
_render_lock = threading.Lock()  # matplotlib's font cache and text layout are not thread-safe


@dataclass(frozen=True)
class Span:
    """A stretch of one state on a lane; state is a labctl.states name (its colour)."""

    start: float
    end: float
    label: str
    state: str


@dataclass(frozen=True)
class Mark:
    """An instant on a lane: a restart, a signal sent."""

    at: float
    label: str


@dataclass(frozen=True)
class Window:
    """A fault window, shaded across the lanes."""

    start: float
    end: float
    name: str


@dataclass
class Picture:
    tests: str  # "4.17, 4.18": the tests that judged this run
    title: str
    end: float  # seconds shown
    said_lane: str  # "supervisor", "monitor"
    progress_lane: str  # "lines fed", "heartbeats"
    truth: list[Span] = field(default_factory=list)
    said: list[Span] = field(default_factory=list)
    said_marks: list[Mark] = field(default_factory=list)
    truth_marks: list[Mark] = field(default_factory=list)
    progress: list[tuple[float, float]] = field(default_factory=list)
    progress_note: str = ""  # shown in the progress lane, e.g. when there is no curve
    progress_steps: bool = True  # every step is known (a record); False: a line through a few known points
    windows: list[Window] = field(default_factory=list)

    @property
    def lanes(self) -> tuple[str, str, str]:
        return TRUTH_LANE, self.said_lane, self.progress_lane


# ---------------------------------------------------------------- helpers for the builders


def image_name(key: str, attempt: int = 0) -> str:
    """timeline-4.24.png; a repeat's own picture is timeline-4.24-run2.png."""
    return f"timeline-{key}.png" if attempt == 0 else f"timeline-{key}-run{attempt + 1}.png"


def pause_windows(events: Sequence[FaultEvent], end: float) -> list[Window]:
    """The host's pause/unpause pairs as windows (one still open ends at `end`)."""
    out: list[Window] = []
    start: float | None = None
    for e in sorted(events, key=lambda e: e.at_s):
        if e.fault == PAUSE:
            start = e.at_s
        elif e.fault == UNPAUSE and start is not None:
            out.append(Window(start, e.at_s, "docker pause"))
            start = None
    if start is not None:
        out.append(Window(start, max(end, start), "docker pause"))
    return out


def paused_spans(windows: Sequence[Window]) -> list[Span]:
    """What a docker pause does to every process in the sandbox: drawn over their lanes."""
    return [Span(w.start, w.end, "paused (docker)", states.PAUSED) for w in windows if w.name == "docker pause"]


def overlay(base: Sequence[Span], top: Sequence[Span]) -> list[Span]:
    """base with top laid over it: every base span cut around the top ones, so
    that each visible piece is a span of its own (and gets its own label)."""
    out: list[Span] = []
    for b in base:
        pieces = [(b.start, b.end)]
        for t in top:
            pieces = [q for a, z in pieces for q in ((a, min(z, t.start)), (max(a, t.end), z)) if q[1] > q[0]]
        out += [Span(a, z, b.label, b.state) for a, z in pieces]
    return sorted([*out, *top], key=lambda s: s.start)


def spans_of(changes: list[tuple[float, str]], end: float, label: dict[str, str],
             state: dict[str, str]) -> list[Span]:
    """Spans from (time, key) observations: each key holds until the next differs."""
    return [Span(s, s + w, label.get(k, k), state.get(k, states.UNKNOWN))
            for s, w, k in segments(changes, 0.0, end)]


def thin(points: Sequence[tuple[float, float]], n: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most about n points of a curve, its first and last kept."""
    if len(points) <= n:
        return list(points)
    step = len(points) / n
    kept = [points[int(i * step)] for i in range(n)]
    return kept + [points[-1]]


# ---------------------------------------------------------------- drawing


def render(p: Picture, path: Path) -> dict[str, str]:
    """Draws p into path (PNG); returns the metadata written into it."""
    end = max([p.end, 0.5, *(w.end for w in p.windows)])
    with _render_lock:
        fig = Figure(figsize=SIZE_IN, dpi=DPI)
        axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1, 1.3], "hspace": 0.18})
        for ax in axes:
            ax.set_xlim(0, end * 1.02)
        used = draw_spans(axes[0], p.truth, end) | draw_spans(axes[1], p.said, end)
        marks = draw_marks(axes[0], p.truth_marks) + draw_marks(axes[1], p.said_marks)
        draw_progress(axes[2], p)
        draw_windows(list(axes), p.windows)
        for ax, name in zip(axes, p.lanes, strict=True):
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        axes[2].set_xlabel("seconds since the program started", fontsize=8)
        axes[2].tick_params(labelsize=7)
        fig.suptitle(f"{p.tests}: {p.title}", fontsize=9.5, fontweight="bold")
        handles = [Patch(color=COLORS.get(s, "#757575"), label=lbl) for lbl, s in sorted(used.items())]
        handles.append(Patch(color=FAULT_SHADE, alpha=0.35, label="fault window"))
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
        fig.subplots_adjust(left=0.16, right=0.98, top=0.86, bottom=0.2)
        meta = {"Tests": p.tests, "Lanes": "|".join(p.lanes), "States": "|".join(sorted(used)),
                "Marks": "|".join(marks), "FaultWindows": str(len(p.windows))}
        fig.savefig(path, dpi=DPI, format="png", metadata=meta)
    return meta


def draw_spans(ax: Axes, spans: Sequence[Span], end: float) -> dict[str, str]:
    """A bar per span, in list order (later ones on top), labelled where wide enough;
    returns {label: state} of what it drew."""
    used: dict[str, str] = {}
    for s in spans:
        width = min(s.end, end) - max(s.start, 0.0)
        if width <= 0:
            continue
        used[s.label] = s.state
        ax.broken_barh([(max(s.start, 0.0), width)], (0.15, 0.7), color=COLORS.get(s.state, "#757575"), zorder=2)
        if width / end >= LABEL_MIN_SHARE:
            ax.text(max(s.start, 0.0) + width / 2, 0.5, s.label, ha="center", va="center", fontsize=7,
                    color="white", fontweight="bold", clip_on=True, zorder=3)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    return used


def draw_marks(ax: Axes, marks: Sequence[Mark]) -> list[str]:
    """A tick per mark, the first MARK_LABELS of each kind labelled; returns the labels drawn."""
    seen: dict[str, int] = {}
    labelled: list[Mark] = []
    for m in sorted(marks, key=lambda m: m.at):
        ax.plot([m.at], [0.92], marker="v", color="#212121", markersize=5, zorder=4, clip_on=False)
        seen[m.label] = seen.get(m.label, 0) + 1
        if seen[m.label] <= MARK_LABELS:
            labelled.append(m)
    lo, hi = ax.get_xlim()
    near = (hi - lo) * MARK_NEAR_SHARE
    for i, m in enumerate(labelled):
        # Two labels close together lean away from each other.
        after = i + 1 < len(labelled) and labelled[i + 1].at - m.at < near
        before = i > 0 and m.at - labelled[i - 1].at < near
        ha = "right" if after and not before else "left" if before else "center"
        ax.text(m.at, 1.0, f" {m.label} " if ha != "center" else m.label, ha=ha, va="bottom", fontsize=6.5,
                zorder=4, clip_on=False)
    return [m.label for m in labelled]


def draw_progress(ax: Axes, p: Picture) -> None:
    pts = thin(p.progress)
    if pts:
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        if p.progress_steps:
            ax.step(xs, ys, where="post", color="#37474f", linewidth=1.3)
        else:  # known only at a few marks: a line between them
            ax.plot(xs, ys, color="#37474f", linewidth=1.3)
        top = max(y for _, y in pts) or 1.0
        ax.set_ylim(0, top * 1.15)
    else:
        ax.set_ylim(0, 1)
        ax.set_yticks([])
    if p.progress_note:
        ax.text(0.01, 0.92, p.progress_note, transform=ax.transAxes, ha="left", va="top", fontsize=7,
                color="#37474f")
    ax.tick_params(axis="y", labelsize=7)


def draw_windows(lanes: list[Axes], windows: Sequence[Window]) -> None:
    for w in windows:
        for ax in lanes:
            ax.axvspan(w.start, max(w.end, w.start + 0.02), color=FAULT_SHADE, alpha=0.35, zorder=0, lw=0)
        lanes[0].text((w.start + w.end) / 2, 1.22, w.name, ha="center", va="bottom", fontsize=7,
                      transform=lanes[0].get_xaxis_transform(), clip_on=False)


def write(p: Picture, out_dir: Path, name: str) -> str:
    """Draws p as out_dir/name (replaced whole); returns name, for Outcome.images."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep the picture from a web server
        render(p, Path(tmp))
        os.replace(tmp, out_dir / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return name


def draw(ctx: Context, key: str, make: Callable[[], Picture]) -> list[str]:
    """A run's picture in the submission's folder, drawn once per attempt (the
    checks that judge one run share it, under its key: "4.17-4.18"); for
    Outcome.images."""
    return ctx.memo(f"png:{key}", lambda: [write(make(), ctx.out_dir, image_name(key, ctx.attempt))])


def shown(out: Outcome, images: list[str]) -> Outcome:
    """The outcome with the run's pictures, whatever its verdict."""
    out.images = [*out.images, *images]
    return out
