#!/usr/bin/env python3
"""Availability against MTTR, measured: scenario-crash-loop at several start delays.

The worker crashes every `--crash-every` lines (that many lines at the lab's
rate between crashes; the supervisor catches up after each outage, so a
longer repair leaves less time to the next crash); each run gives every
restarted worker a longer start (lab.start_delay_ms), so the repair time
grows. All runs go side by side through one `labctl up`,
each in its own lab, judged like any other run. From each run's summary.json
("dependability", labctl/dependability.py) the table gives the failures and
each observer's MTTF and MTTR, the availability computed by hand from them,
A = MTTF / (MTTF + MTTR) (Patterson & Hennessy, section 5.5), and the job's
own downtime and availability measured from it (1 - downtime / job time).
The plot (availability against MTTR, with the curve MTTF / (MTTF + MTTR) at
the worker's MTTF at the lab's pace) and the table go to bench/results/availability/.

    python bench/availability.py [--delays 0,500,1000,2000] [--crash-every 600]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "labctl" / "scenarios" / "scenario-crash-loop.yaml"
OBSERVERS = ("truth", "monitor", "supervisor")


def scenario(delay_ms: int, crash_every: int) -> dict[str, Any]:
    sc = yaml.safe_load(SCENARIO.read_text())
    sc["name"] = f"crash-loop-{delay_ms}ms"
    sc["lab"].update(start_delay_ms=delay_ms, crash_every=crash_every)
    sc["expect"]["job"]["log_contains"] = [f"crashing on purpose after {crash_every} lines"]
    return sc


def run_all(delays: list[int], crash_every: int, runs: Path) -> tuple[int, dict[int, Path]]:
    files = []
    for d in delays:
        f = runs / f"crash-loop-{d}ms.yaml"
        f.write_text(yaml.safe_dump(scenario(d, crash_every), sort_keys=False))
        files.append(str(f))
    p = subprocess.run([sys.executable, "-m", "labctl", "up", *files], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "LABCTL_RUNS": str(runs)})
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-2000:])
    found = {}
    for d in delays:
        dirs = sorted(runs.glob(f"crash-loop-{d}ms-*/2*"))
        if dirs:
            found[d] = dirs[-1]
    return p.returncode, found


def row(delay: int, run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text())
    verdict = json.loads((run_dir / "verdict.json").read_text())
    dep = summary["dependability"]
    obs = dep["observers"]
    job = dep.get("job") or {}
    took = (summary.get("job") or {}).get("duration_s") or 0.0
    sup = obs["supervisor"]
    by_hand = (sup["mttf_s"] / (sup["mttf_s"] + sup["mttr_s"])) if sup["failures"] else None
    return {"delay_ms": delay, "ok": verdict.get("ok"), "obs": obs, "by_hand": by_hand,
            "job_down_s": job.get("downtime_s"), "job_s": took,
            "job_measured": 1 - job["downtime_s"] / took if job and took else None}


def f2(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| start delay | passed | failures | MTTF truth | MTTR truth | MTTR monitor | MTTR supervisor "
           "| A truth | A monitor | A supervisor | A = MTTF/(MTTF+MTTR) by hand (supervisor) | job downtime "
           "| job A measured |", "|" + "---|" * 13]
    for r in rows:
        o = r["obs"]
        out.append(f"| {r['delay_ms']} ms | {'yes' if r['ok'] else 'NO'} | {o['truth']['failures']} | "
                   f"{f2(o['truth']['mttf_s'])} s | {f2(o['truth']['mttr_s'])} s | {f2(o['monitor']['mttr_s'])} s | "
                   f"{f2(o['supervisor']['mttr_s'])} s | {f2(o['truth']['availability'])} | "
                   f"{f2(o['monitor']['availability'])} | {f2(o['supervisor']['availability'])} | "
                   f"{f2(r['by_hand'])} | {f2(r['job_down_s'])} s of {f2(r['job_s'])} s | {f2(r['job_measured'])} |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], mttf: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for who, color, marker in zip(OBSERVERS, ("#2e7d32", "#1565c0", "#c62828"), "os^", strict=True):
        pts = sorted((r["obs"][who]["mttr_s"], r["obs"][who]["availability"], r["delay_ms"]) for r in rows
                     if r["obs"][who]["mttr_s"] is not None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=who)
        for x, y, d in pts:
            ax.annotate(f"{d} ms", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    # The worker's MTTF at the lab's pace: its crash_every items at the rate.
    top = max((r["obs"][w]["mttr_s"] or 0 for r in rows for w in OBSERVERS), default=1.0) * 1.1
    xs = [top * i / 100 for i in range(101)]
    ax.plot(xs, [mttf / (mttf + x) for x in xs], "--", color="#777",
            label=f"MTTF/(MTTF+MTTR), MTTF {mttf:.1f} s (items to a crash / rate)")
    ax.set_xlabel("MTTR (s)")
    ax.set_ylabel("availability")
    ax.set_title("scenario-crash-loop: availability against MTTR")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delays", default="0,500,1000,2000", help="start delays in ms, comma-separated")
    ap.add_argument("--crash-every", type=int, default=600)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "availability")
    a = ap.parse_args()
    delays = [int(x) for x in a.delays.split(",") if x]
    t0 = time.monotonic()
    runs = Path(tempfile.mkdtemp(prefix="labctl-availability-"))
    code, found = run_all(delays, a.crash_every, runs)
    rows = [row(d, found[d]) for d in delays if d in found]
    if not rows:
        print(f"no run finished; see {runs}", file=sys.stderr)
        return 1
    a.out.mkdir(parents=True, exist_ok=True)
    text = table(rows)
    (a.out / "table.md").write_text(text + "\n")
    rate = float(yaml.safe_load(SCENARIO.read_text())["lab"]["rate"])
    plot(rows, a.crash_every / rate, a.out / "availability.png")
    print(text)
    print(f"\n{len(rows)} labs side by side in {time.monotonic() - t0:.0f} s; runs under {runs}; "
          f"plot: {a.out / 'availability.png'}")
    return 0 if code == 0 and len(rows) == len(delays) else 1


if __name__ == "__main__":
    raise SystemExit(main())
