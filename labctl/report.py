"""report.md: a run's verdict for people, written from the checker's findings."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from labctl import blind, dependability, rundir
from labctl.scenario import Scenario

if TYPE_CHECKING:
    from labctl.check import Verdict


def fmt_s(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f} s"


def write(run_dir: Path, sc: Scenario, v: Verdict, summary: dict[str, Any],
          events: list[dict[str, Any]] | None = None) -> None:
    events = events or []
    t0 = float(summary.get("started") or (events[0]["ts"] if events else 0))
    lines = _head(run_dir, sc, v, summary) + _blind(run_dir) + _checks(v) + _latencies(v, t0) + _corruption(v)
    lines += _job(summary.get("job") or {}) + _dependability(sc, summary, events) + _timeline(sc)
    if sc.lab.program == "process-data":
        lines += program_log(events, t0)
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


def _corruption(v: Verdict) -> list[str]:
    """The bitflip fault's detection coverage: detected / injected (scenario-bitflip)."""
    c = v.corruption
    if not c:
        return []
    cov = "-" if c["coverage"] is None else f"{c['coverage']:.0%}"
    return ["", "## Silent data corruption", "",
            "Results the worker's bitflip corrupted (its own count), those the supervisor's end-to-end check "
            "detected, and those the oracle finds wrong in results.csv (undetected).", "",
            "| injected | detected | undetected | detection coverage |", "|---|---|---|---|",
            f"| {c['injected']} | {c['detected']} | {c['undetected']} | {cov} |"]


def _job(job: dict[str, Any]) -> list[str]:
    if not job:
        return []
    return ["", "## Job", "", "| read | processed | corrupted | rejected | dead-lettered | worker crashes seen "
            "| timeouts | reconnects | items/s |", "|---|---|---|---|---|---|---|---|---|",
            f"| {job.get('read')} | {job.get('processed')} | {job.get('corrupted')} | {job.get('rejected')} | "
            f"{job.get('dead_lettered')} | {job.get('worker_crashes')} | {job.get('timeouts')} | "
            f"{job.get('reconnects')} | {job.get('items_per_s')} |"]


def _dependability(sc: Scenario, summary: dict[str, Any], events: list[dict[str, Any]]) -> list[str]:
    """The run's dependability numbers; a run from before summary.json carried them gets them from its events."""
    dep = summary.get("dependability")
    if dep is None and events and sc.lab.kind == "worker":
        dep = dependability.of_run(events, sc.lab.rate, float(summary.get("ended") or events[-1]["ts"]))
    return dependability.report_lines(dep) if dep else []


def _timeline(sc: Scenario) -> list[str]:
    if not sc.timeline:
        return []
    return ["", "## Timeline", ""] + [f"- at {s.at:g} s: `{s.do}` {s.target}"
                                      + (f" for {s.for_s:g} s" if s.for_s else "") for s in sc.timeline]


# The program's log in the report: runs of INFO lines longer than this are
# cut to their first few and last, so that the WARNINGs and the CRITICAL, the
# point of exercise 1, stay in sight among 200 readings.
INFO_RUN_MAX = 6
INFO_RUN_KEEP = 3


def program_log(events: list[dict[str, Any]], t0: float) -> list[str]:
    """Exercise 1's program (process_data.py) logs each reading at its level:
    its log lines, with seconds since the lab started, and a count per level."""
    logged = [e for e in events if e.get("source") == "supervisor" and e.get("kind") == "log"]
    lines = ["", "## The program's log", ""]
    if not logged:
        return lines + ["The program logged nothing."]
    counts: dict[str, int] = {}
    for e in logged:
        level = str(e.get("level", "info")).upper()
        counts[level] = counts.get(level, 0) + 1
    lines += ["| level | lines |", "|---|---|"] + [f"| {lv} | {n} |" for lv, n in counts.items()] + ["", "```"]
    run: list[str] = []

    def flush() -> None:
        if len(run) > INFO_RUN_MAX:
            lines.extend(run[:INFO_RUN_KEEP] + [f"... {len(run) - INFO_RUN_KEEP - 1} more INFO lines ..."]
                         + run[-1:])
        else:
            lines.extend(run)
        run.clear()

    for e in logged:
        level = str(e.get("level", "info")).upper()
        at = f"+{float(e['ts']) - t0:.2f} s"
        text = f"{at:>9}  {level:<8} {e.get('message', '')}"
        if level == "INFO":
            run.append(text)
            continue
        flush()
        lines.append(text)
    flush()
    return lines + ["```"]
