#!/usr/bin/env python3
"""Tuning a failure detector on your own lab: detection time against false alarms.

The classic trade-off, measured: each network level (clean, jittered,
lossy) runs a real lab whose monitor logs the arrival of every heartbeat
(`log_beats`); the link is degraded for the healthy part, then the worker
is killed (`docker kill`: it stays dead for a while). Each detector is then
replayed over those real arrivals:

- a fixed timeout T (0.5, 1, 2, 4 s): suspect once T has passed since the
  last beat;
- phi accrual at threshold F (1, 3, 5, 8, 12), the monitor's own detector
  (images/monitor/monitor.py: the same window and sigma floor).

For each: the false alarms while the worker was alive (times it turned
suspicious and was wrong, per minute) and the time from the kill to its
suspicion. A lower timeout or threshold detects sooner and cries wolf more
often; phi's curve sits below the timeout's on a lossy or jittered link,
because it learns the link's gaps. One table (markdown) and one plot.

    python bench/tune_detectors.py [--levels clean,jitter,loss20,loss40] [--healthy-s 40] [--out DIR]

The labs run side by side (`labctl up`), in a scratch runs directory; what
the replay reads is each run's events.jsonl.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
LABCTL = [sys.executable, "-m", "labctl"]
TIMEOUTS_S = (0.5, 1.0, 2.0, 4.0)
PHI_THRESHOLDS = (1.0, 3.0, 5.0, 8.0, 12.0)
STEP_S = 0.01  # the replay's clock resolution
WARMUP_S = 3.0  # beats before this after the first are the detectors' learning, not judged
RATE = 250
# Each level: the fault step that degrades the link for the healthy part (None: clean).
LEVELS: dict[str, dict | None] = {
    "clean": None,
    "jitter": {"do": "delay", "ms": 100, "jitter": 100},
    "loss20": {"do": "loss", "p": 0.2},
    "loss40": {"do": "loss", "p": 0.4},
}


def monitor_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lab_monitor", ROOT / "images" / "monitor" / "monitor.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lab_monitor"] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@dataclass
class Trace:
    """One link's heartbeats as the monitor received them, and when the worker died."""
    level: str
    arrivals: list[float]  # wall-clock seconds, rising
    killed: float  # when `docker kill` was applied


@dataclass
class Outcome:
    detector: str  # "timeout" or "phi"
    setting: float
    false_alarms: int
    alive_s: float
    detect_s: float | None

    @property
    def per_minute(self) -> float:
        return self.false_alarms * 60 / self.alive_s if self.alive_s > 0 else 0.0


def scenario_text(level: str, healthy_s: float) -> str:
    """A lab whose link is degraded from 1 s, killed after `healthy_s`, restarted 5 s later."""
    items = int(RATE * (healthy_s + 12))
    steps = []
    fault = LEVELS[level]
    if fault:
        settings = ", ".join(f"{k}: {v}" for k, v in fault.items() if k != "do")
        steps.append(f"  - {{at: 1, do: {fault['do']}, {settings}}}")
    steps.append(f"  - {{at: {1 + healthy_s:g}, do: kill, for: 5}}")
    return (f"name: tune-{level}\nlesson: detection time against false alarms on a {level} link\n"
            f"lab:\n  items: {items}\n  rate: {RATE}\n  log_beats: true\n"
            f"duration_s: {healthy_s + 120:g}\ntimeline:\n" + "\n".join(steps) + "\nexpect: {}\n")


def read_trace(run_dir: Path, level: str) -> Trace:
    events = [json.loads(ln) for ln in (run_dir / "events.jsonl").read_text().splitlines() if ln.strip()]
    arrivals = [e["ts"] for e in events if e.get("source") == "monitor" and e.get("kind") == "beat"]
    kill = next(e["ts"] for e in events if e.get("source") == "labctl" and e.get("fault") == "kill"
                and e.get("phase") == "applied")
    return Trace(level, sorted(arrivals), kill)


def alive_beats(t: Trace) -> list[float]:
    return [a for a in t.arrivals if a <= t.killed]


def replay_timeout(t: Trace, timeout_s: float) -> Outcome:
    """A fixed timeout over the real arrivals: a false alarm per gap longer
    than the timeout while alive; detection once it passed after the last beat."""
    beats = alive_beats(t)
    start = beats[0] + WARMUP_S
    alarms = sum(1 for a, b in zip(beats, beats[1:], strict=False) if b >= start and b - a > timeout_s)
    detect = max(0.0, beats[-1] + timeout_s - t.killed)
    return Outcome("timeout", timeout_s, alarms, beats[-1] - start, detect)


def first_suspicion(phi_at, since: float, until: float, threshold: float) -> float | None:
    """The first time in [since, until) at which phi_at(time) reaches the threshold."""
    n = 0
    while since + n * STEP_S < until:
        if phi_at(since + n * STEP_S) >= threshold:
            return since + n * STEP_S
        n += 1
    return None


def replay_phi(t: Trace, threshold: float, mon: ModuleType) -> Outcome:
    """The monitor's own phi accrual detector over the real arrivals."""
    beats = alive_beats(t)
    start = beats[0] + WARMUP_S
    det = mon.PhiAccrual()
    alarms = 0
    for a, b in zip(beats, beats[1:], strict=False):
        det.heartbeat(a * 1000)
        # phi only grows through a gap: it crossed the threshold in it iff it had at the next beat.
        if b >= start and det.phi(b * 1000 - 0.001) >= threshold:
            alarms += 1
    det.heartbeat(beats[-1] * 1000)
    seen = first_suspicion(lambda s: det.phi(s * 1000), beats[-1], beats[-1] + 30, threshold)
    detect = None if seen is None else max(0.0, seen - t.killed)
    return Outcome("phi", threshold, alarms, beats[-1] - start, detect)


def replay(t: Trace, mon: ModuleType) -> list[Outcome]:
    return [replay_timeout(t, s) for s in TIMEOUTS_S] + [replay_phi(t, f, mon) for f in PHI_THRESHOLDS]


def table(results: dict[str, list[Outcome]], beats: dict[str, int]) -> str:
    rows = ["| link | detector | setting | false alarms while alive (per min) | time to suspect the kill |",
            "|---|---|---|---|---|"]
    for level, outs in results.items():
        for o in outs:
            setting = f"{o.setting:g} s" if o.detector == "timeout" else f"phi >= {o.setting:g}"
            detect = f"{o.detect_s:.2f} s" if o.detect_s is not None else "never (30 s)"
            rows.append(f"| {level} ({beats[level]} beats) | {o.detector} | {setting} | "
                        f"{o.false_alarms} ({o.per_minute:.1f}) | {detect} |")
    return "\n".join(rows)


def plot(results: dict[str, list[Outcome]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.0), squeeze=False, sharey=True)
    for ax, (level, outs) in zip(axes[0], results.items(), strict=True):
        for det, color, marker in (("timeout", "#c62828", "s"), ("phi", "#1565c0", "o")):
            pts = [(o.detect_s, o.per_minute, o.setting) for o in outs if o.detector == det and o.detect_s is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color,
                    label="fixed timeout" if det == "timeout" else "phi accrual")
            for x, y, s in pts:
                ax.annotate(f"{s:g}{' s' if det == 'timeout' else ''}", (x, y), fontsize=7,
                            textcoords="offset points", xytext=(4, 4), color=color)
        ax.set_title(level, fontsize=10)
        ax.set_xlabel("time to suspect a real crash (s)", fontsize=8)
        ax.set_yscale("symlog", linthresh=0.5)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("false alarms per minute while alive", fontsize=8)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Detection time against false alarms, replayed over this lab's own heartbeats", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_labs(levels: list[str], healthy_s: float, work: Path) -> dict[str, Path]:
    """One lab per level, side by side; the run directory of each."""
    files = []
    for level in levels:
        f = work / f"tune-{level}.yaml"
        f.write_text(scenario_text(level, healthy_s))
        files.append(str(f))
    runs = work / "runs"
    env = {**os.environ, "LABCTL_RUNS": str(runs)}
    p = subprocess.run([*LABCTL, "up", *files], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=healthy_s + 600)
    if not list(runs.glob("*/2*/events.jsonl")):
        sys.exit(f"tune_detectors: the labs did not run (exit {p.returncode}): {(p.stdout + p.stderr)[-2000:]}")
    out = {}
    for level in levels:
        dirs = sorted(runs.glob(f"tune-{level}-*/2*"))
        if not dirs:
            sys.exit(f"tune_detectors: no run for {level}: {(p.stdout + p.stderr)[-2000:]}")
        out[level] = dirs[-1]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default=",".join(LEVELS), help="comma-separated: " + ", ".join(LEVELS))
    ap.add_argument("--healthy-s", type=float, default=40.0, help="how long each link runs degraded before the kill")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tune_detectors")
    a = ap.parse_args()
    levels = [x for x in a.levels.split(",") if x]
    unknown = [x for x in levels if x not in LEVELS]
    if unknown:
        ap.error(f"unknown level {unknown[0]!r}; pick from {', '.join(LEVELS)}")
    mon = monitor_module()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="labctl-tune-") as d:
        dirs = run_labs(levels, a.healthy_s, Path(d))
        traces = {lv: read_trace(dirs[lv], lv) for lv in levels}
    results = {lv: replay(tr, mon) for lv, tr in traces.items()}
    a.out.mkdir(parents=True, exist_ok=True)
    text = table(results, {lv: len(alive_beats(tr)) for lv, tr in traces.items()})
    (a.out / "table.md").write_text(text + "\n")
    plot(results, a.out / "tradeoff.png")
    print(text)
    print(f"\n{len(levels)} labs side by side, {a.healthy_s:g} s of healthy link each, in "
          f"{time.monotonic() - t0:.0f} s; plot: {a.out / 'tradeoff.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
