"""report.md: a run's verdict for people, written from the checker's findings."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from labctl import blind, rundir
from labctl.scenario import Scenario

if TYPE_CHECKING:
    from labctl.check import Verdict


def fmt_s(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f} s"


def write(run_dir: Path, sc: Scenario, v: Verdict, summary: dict[str, Any]) -> None:
    lines = _head(run_dir, sc, v, summary) + _blind(run_dir) + _checks(v) + _latencies(v, summary.get("started") or 0)
    lines += _job(summary.get("job") or {}) + _timeline(sc)
    (run_dir / rundir.REPORT).write_text("\n".join(lines) + "\n")


def _head(run_dir: Path, sc: Scenario, v: Verdict, summary: dict[str, Any]) -> list[str]:
    lines = [
        f"# {sc.name}: {'passed' if v.ok else 'FAILED'}",
        "",
        f"*{sc.lesson}*",
        "",
        sc.description.strip(),
        "",
        f"Lab `{summary.get('lab', '?')}`, run `{run_dir.name}`"
        + (f", engine `{summary['engine']}`." if summary.get("engine") else "."),
        "",
    ]
    if (run_dir / rundir.TIMELINE).exists():
        lines += [f"![timeline]({rundir.TIMELINE})", ""]
    if v.error:
        lines += [f"**Run error:** {v.error}", ""]
    return lines


def _blind(run_dir: Path) -> list[str]:
    """A blind run's game (blind.json), once it is played."""
    game = blind.read(run_dir)
    return blind.report_lines(game) if game else []


def _checks(v: Verdict) -> list[str]:
    lines = ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
    return lines + [f"| {c.name} | {'ok' if c.ok else '**FAIL**'} | {c.detail} |" for c in v.checks]


def _latencies(v: Verdict, t0: float) -> list[str]:
    lines = ["", "## Detection latency", "",
             "From the change of the ground truth to each observer's first matching conclusion.", "",
             "| at | truth | lasted | monitor (wants) | heartbeat-only DEAD | supervisor notices |",
             "|---|---|---|---|---|---|"]
    for lat in v.latencies:
        lines.append(f"| +{lat.at - t0:.1f} s | {lat.truth} | {lat.lasted_s:.1f} s | {fmt_s(lat.monitor_s)} "
                     f"({lat.want}) | {fmt_s(lat.heartbeat_only_s)} | {fmt_s(lat.supervisor_s)} |")
    if not v.latencies:
        lines.append("| - | no fault | - | - | - | - |")
    return lines


def _job(job: dict[str, Any]) -> list[str]:
    if not job:
        return []
    return ["", "## Job", "", "| read | processed | corrupted | rejected | dead-lettered | worker crashes seen "
            "| timeouts | reconnects | items/s |", "|---|---|---|---|---|---|---|---|---|",
            f"| {job.get('read')} | {job.get('processed')} | {job.get('corrupted')} | {job.get('rejected')} | "
            f"{job.get('dead_lettered')} | {job.get('worker_crashes')} | {job.get('timeouts')} | "
            f"{job.get('reconnects')} | {job.get('items_per_s')} |"]


def _timeline(sc: Scenario) -> list[str]:
    if not sc.timeline:
        return []
    return ["", "## Timeline", ""] + [f"- at {s.at:g} s: `{s.do}` {s.target}"
                                      + (f" for {s.for_s:g} s" if s.for_s else "") for s in sc.timeline]
