"""The checker: judges a run from its files alone, like a test.

A run directory holds `scenario.yaml`, `events.jsonl`, `summary.json` and
`lab/` (the volume: `input.dat`, `out/`). The checker verifies that every
valid item appears exactly once with the right square, that every negative
reading was reported and every malformed line rejected, that the poison item
was dead-lettered and no stale lock was left, and that each observer's
conclusions match the scenario's expectations and the ground truth, with the
detection latency of every fault. It writes its findings into `report.md`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from labctl import observe, oracle, scenario
from labctl.errors import ExitCode, LabError
from labctl.scenario import Scenario

# Which monitor verdicts agree with which ground truth.
AGREES = {
    "RUNNING": {"HEALTHY", "RESTARTED"},
    "CRASHED": {"CRASHED", "RESTARTED"},
    "PAUSED": {"PAUSED"},
    "SIGSTOPPED": {"PAUSED"},
    "PARTITIONED": {"PARTITIONED"},
    "STOPPED": {"STOPPED"},
}
DETECTABLE = {"CRASHED": "CRASHED", "PAUSED": "PAUSED", "SIGSTOPPED": "PAUSED", "PARTITIONED": "PARTITIONED",
              "STOPPED": "STOPPED"}
SLACK_S = 0.5  # log and scheduling noise between containers on a loaded 2-core machine


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Latency:
    at: float
    truth: str
    want: str
    monitor_s: float | None
    naive_s: float | None
    supervisor_s: float | None
    lasted_s: float = 0.0


@dataclass
class Verdict:
    run_dir: Path
    scenario: str
    checks: list[Check] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)


# ----------------------------------------------------------------------- reading a run


def read_events(path: Path) -> list[dict]:
    out = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise LabError(ExitCode.NOT_FOUND, f"{path} is missing", "is this a run directory? `labctl runs` lists them")
    for n, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            ev = json.loads(ln)
        except ValueError:
            raise LabError(ExitCode.FAILED, f"{path}: line {n} is not JSON") from None
        if not isinstance(ev, dict) or not {"ts", "source", "kind"} <= ev.keys():
            raise LabError(ExitCode.FAILED, f"{path}: line {n} lacks ts, source or kind")
        out.append(ev)
    return out


def fault_windows(events: list[dict], run_end: float) -> dict[int, tuple[float, float]]:
    """Step -> (start, end): from the intent (a `docker stop` takes effect while
    the call runs) of a fault that was applied, to the end of its revert."""
    intent, applied, reverted = {}, set(), {}
    for e in events:
        if e.get("source") != "labctl" or e.get("kind") != "fault" or e.get("step") is None:
            continue
        if e.get("phase") == "intent":
            intent.setdefault(e["step"], e["ts"])
        elif e.get("phase") == "applied":
            applied.add(e["step"])
        elif e.get("phase") == "reverted":
            reverted.setdefault(e["step"], e["ts"])
    return {s: (t, reverted.get(s, run_end)) for s, t in intent.items() if s in applied}


def observed(events: list[dict], who: str) -> list[tuple[float, str]]:
    if who in ("monitor", "naive"):
        key = "verdict" if who == "monitor" else "naive"
        return [(e["ts"], e[key]) for e in events
                if e["source"] == "monitor" and e["kind"] in ("tick", "verdict") and key in e]
    if who == "supervisor":
        return [(e["ts"], e["state"]) for e in events if e["source"] == "supervisor" and e["kind"] == "state"]
    if who == "truth":
        return observe.truth_timeline(events)
    raise ValueError(who)


def first_at_or_after(seen: list[tuple[float, str]], t: float, want: set[str], until: float) -> float | None:
    return next((ts for ts, v in seen if t <= ts <= until and v in want), None)


def log_text(events: list[dict]) -> str:
    return "\n".join(str(e.get("message", "")) for e in events if e.get("kind") == "log")


def exit_codes(events: list[dict], service: str) -> list[int]:
    return [e["exit_code"] for e in events if e["source"] == "engine" and e.get("action") == "die"
            and e.get("service") == service and "exit_code" in e]


def policy_restarts(events: list[dict]) -> int:
    """Worker starts after the first, less those labctl did by hand (`start`)."""
    starts = sum(1 for e in events if e["source"] == "engine" and e.get("action") == "start"
                 and e.get("service") == "worker")
    manual = sum(1 for e in events if e["source"] == "labctl" and e.get("kind") == "fault"
                 and e.get("phase") in ("applied", "reverted") and e.get("fault") == "start"
                 and e.get("target") == "worker")
    return max(0, starts - 1 - manual)


# ----------------------------------------------------------------------- judging


def judge(sc: Scenario, events: list[dict], lab_dir: Path, run_end: float) -> tuple[list[Check], list[Latency]]:
    checks: list[Check] = []
    lab = sc.lab
    outdir = lab_dir / "out"
    summary_path = outdir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    sup_codes = exit_codes(events, "supervisor")
    sup_exit = sup_codes[-1] if sup_codes else None
    restarts = policy_restarts(events)
    windows = fault_windows(events, run_end)
    truth = observed(events, "truth")
    interval, timeout = lab.interval_ms / 1000, lab.timeout_ms / 1000

    # The scenario's windows: each observer's conclusion while the fault holds.
    for w in sc.expect.windows:
        step = sc.timeline[w.step - 1]
        if w.step not in windows:
            checks.append(Check(f"step {w.step} ({step.do})", False, "the fault was never applied"))
            continue
        start, end = windows[w.step]
        within = (w.within_ms or lab.timeout_ms + SLACK_S * 1000) / 1000
        for who in ("truth", "monitor", "naive", "supervisor"):
            want = getattr(w, who)
            if not want:
                continue
            seen = observed(events, who)
            in_win = [(t, v) for t, v in seen if start <= t <= end]
            if who == "truth":
                before = observe.state_at(seen, start + 0.001)
                in_win = ([(start, before)] if before else []) + in_win
            hit = next((t for t, v in in_win if v == want), None)
            name = f"step {w.step} {step.do}: {who} says {want}"
            if hit is None:
                got = sorted({v for _, v in in_win}) or ["nothing"]
                checks.append(Check(name, False, f"never in the window; saw {', '.join(got)}"))
            elif who in ("monitor", "naive") and hit - start > within:
                checks.append(Check(name, False, f"after {hit - start:.2f} s, later than {within:.2f} s"))
            else:
                checks.append(Check(name, True, f"after {max(hit - start, 0):.2f} s"))
    for who, wants in sc.expect.sees.items():
        values = {v for _, v in observed(events, who)}
        for want in wants:
            checks.append(Check(f"{who} says {want} at some point", want in values,
                                "seen" if want in values else f"never; saw {', '.join(sorted(values)) or 'nothing'}"))
    for who, bad in sc.expect.never.items():
        values = observed(events, who)
        for b in bad:
            hits = [t for t, v in values if v == b]
            checks.append(Check(f"{who} never says {b}", not hits, "never" if not hits else f"{len(hits)} time(s)"))

    # Detection latency of every change of the truth the monitor should see.
    latencies: list[Latency] = []
    mon, naive, sup = observed(events, "monitor"), observed(events, "naive"), observed(events, "supervisor")
    for i, (t, state) in enumerate(truth):
        if state not in DETECTABLE:
            continue
        until = truth[i + 1][0] if i + 1 < len(truth) else run_end
        want = DETECTABLE[state]
        # A restart faster than a tick shows as RESTARTED: the crash is still seen.
        accept = {want, "RESTARTED"} if state == "CRASHED" else {want}
        m = first_at_or_after(mon, t - 0.05, accept, until + interval + SLACK_S)
        n = first_at_or_after(naive, t - 0.05, {"DEAD"}, until + interval + SLACK_S)
        s = first_at_or_after(sup, t - 0.05, {"timed_out", "reconnecting", "isolating"}, until + timeout + SLACK_S)
        latencies.append(Latency(t, state, want, None if m is None else max(0.0, m - t),
                                 None if n is None else max(0.0, n - t), None if s is None else max(0.0, s - t),
                                 until - t))
    if lab.worker_mode == "robust" and lab.program == "supervisor":
        for lat in latencies:
            if lat.truth == "CRASHED":
                limit = 2 * interval + SLACK_S
            elif lat.truth == "STOPPED":
                limit = interval + SLACK_S
            else:
                limit = timeout + SLACK_S
            if lat.monitor_s is None and lat.at + limit > run_end:
                continue  # the run ended before the monitor could have ticked
            if lat.monitor_s is None and lat.truth in ("PAUSED", "SIGSTOPPED", "PARTITIONED") \
                    and lat.lasted_s < timeout:
                continue  # silence shorter than the timeout is, by design, not yet a failure
            ok = lat.monitor_s is not None and lat.monitor_s <= limit
            checks.append(Check(f"monitor saw {lat.truth.lower()} at {lat.at:.1f} as {lat.want}", ok,
                                "never" if lat.monitor_s is None else f"after {lat.monitor_s:.2f} s (limit {limit:.2f} s)"))
        checks.append(agreement(mon, truth, interval, timeout))

    # The job and its outputs.
    job = sc.expect.job
    if lab.program == "supervisor":
        done = summary is not None and sup_exit == 0
        checks.append(Check("the job completes" if job.completes else "the job does not complete",
                            done == job.completes, f"supervisor exit code {sup_exit}"))
        if job.exactly_once and job.completes:
            trigger = None if lab.bug_trigger == "none" else int(lab.bug_trigger)
            problems = oracle.compare(outdir, lab_dir / "input.dat", trigger)
            checks.append(Check("every valid item exactly once, squares right; negatives reported, "
                                "malformed rejected, poison dead-lettered", not problems,
                                "; ".join(problems[:3]) if problems else "matches the oracle"))
        for key in ("dead_lettered", "corrupted"):
            want = getattr(job, key)
            if want is not None:
                got = (summary or {}).get(key)
                checks.append(Check(f"{key.replace('_', '-')}: {want}", got == want, f"got {got}"))
        if lab.worker_mode == "robust" and job.completes:
            stale = (lab_dir / "cworker.lock").exists()
            checks.append(Check("no stale lock left", not stale,
                                "lock file still on the volume" if stale else "the lock file is gone"))
    if job.exit_code is not None:
        checks.append(Check(f"{lab.program} exits {job.exit_code}", sup_exit == job.exit_code, f"got {sup_exit}"))
    if job.min_worker_restarts is not None:
        checks.append(Check(f"worker restarted by policy at least {job.min_worker_restarts}x",
                            restarts >= job.min_worker_restarts, f"{restarts} restart(s)"))
    if job.max_worker_restarts is not None:
        checks.append(Check(f"worker restarted by policy at most {job.max_worker_restarts}x",
                            restarts <= job.max_worker_restarts, f"{restarts} restart(s)"))
    codes = exit_codes(events, "worker")
    for code in job.worker_exit_codes:
        checks.append(Check(f"worker exits with {code}", code in codes, f"exit codes seen: {codes}"))
    logs = log_text(events)
    for text in job.log_contains:
        checks.append(Check(f"the log says {text!r}", text in logs, "found" if text in logs else "not found"))
    return checks, latencies


def agreement(mon: list[tuple[float, str]], truth: list[tuple[float, str]], interval: float,
              timeout: float) -> Check:
    """No monitor verdict contradicts the truth once detection has had its time."""
    grace = timeout + interval + SLACK_S
    bad = []
    for ts, verdict in mon:
        if verdict == "UNKNOWN":
            continue
        state = observe.state_at(truth, ts)
        if state is None:
            continue
        changed = max((t for t, _ in truth if t <= ts), default=None)
        if changed is not None and ts - changed < grace:
            continue
        if verdict not in AGREES.get(state, {verdict}):
            # The monitor may be ahead of the engine: the crash handler frees
            # the lock before the process is reaped and the engine says "die".
            ahead = {s for t, s in truth if ts < t <= ts + SLACK_S}
            if not any(verdict in AGREES.get(s, set()) for s in ahead):
                bad.append((ts, verdict, state))
    if not bad:
        return Check("no monitor verdict contradicts the truth", True, f"{len(mon)} verdicts checked")
    t, v, s = bad[0]
    return Check("no monitor verdict contradicts the truth", False,
                 f"{len(bad)} tick(s) disagree; first: {v} while the worker was {s} (at {t:.1f})")


def check_run(run_dir: Path) -> Verdict:
    """Judges a run directory from its files alone and writes report.md."""
    run_dir = Path(run_dir)
    sc_path = run_dir / "scenario.yaml"
    if not sc_path.exists():
        raise LabError(ExitCode.NOT_FOUND, f"{run_dir} holds no scenario.yaml",
                       "is this a run directory? `labctl runs` lists them")
    sc = scenario.load(sc_path)
    events = read_events(run_dir / "events.jsonl")
    meta = read_meta(run_dir)
    run_end = meta.get("ended") or (events[-1]["ts"] if events else 0)
    v = Verdict(run_dir, sc.name, error=meta.get("error"))
    v.checks, v.latencies = judge(sc, events, run_dir / "lab", run_end)
    write_report(run_dir, sc, v, meta)
    meta.update({"ok": v.ok, "checks": [c.__dict__ for c in v.checks],
                 "latencies": [lat.__dict__ for lat in v.latencies]})
    (run_dir / "summary.json").write_text(json.dumps(meta, indent=2) + "\n")
    return v


def read_meta(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def fmt_s(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f} s"


def write_report(run_dir: Path, sc: Scenario, v: Verdict, meta: dict) -> None:
    job = (meta.get("job") or {})
    lines = [
        f"# {sc.name}: {'passed' if v.ok else 'FAILED'}",
        "",
        f"*{sc.lesson}*",
        "",
        sc.description.strip(),
        "",
        f"Lab `{meta.get('lab', '?')}`, run `{run_dir.name}`.",
        "",
    ]
    if (run_dir / "timeline.png").exists():
        lines += ["![timeline](timeline.png)", ""]
    if v.error:
        lines += [f"**Run error:** {v.error}", ""]
    lines += ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'ok' if c.ok else '**FAIL**'} | {c.detail} |" for c in v.checks]
    lines += ["", "## Detection latency", "",
              "From the change of the ground truth to each observer's first matching conclusion.", "",
              "| at | truth | lasted | monitor (wants) | heartbeat-only DEAD | supervisor notices |",
              "|---|---|---|---|---|---|"]
    t0 = meta.get("started") or 0
    for lat in v.latencies:
        lines.append(f"| +{lat.at - t0:.1f} s | {lat.truth} | {lat.lasted_s:.1f} s | {fmt_s(lat.monitor_s)} "
                     f"({lat.want}) | {fmt_s(lat.naive_s)} | {fmt_s(lat.supervisor_s)} |")
    if not v.latencies:
        lines.append("| - | no fault | - | - | - | - |")
    if job:
        lines += ["", "## Job", "", "| read | processed | corrupted | rejected | dead-lettered | worker crashes seen "
                  "| timeouts | reconnects | items/s |", "|---|---|---|---|---|---|---|---|---|",
                  f"| {job.get('read')} | {job.get('processed')} | {job.get('corrupted')} | {job.get('rejected')} | "
                  f"{job.get('dead_lettered')} | {job.get('worker_crashes')} | {job.get('timeouts')} | "
                  f"{job.get('reconnects')} | {job.get('items_per_s')} |"]
    if sc.timeline:
        lines += ["", "## Timeline", ""]
        lines += [f"- at {s.at:g} s: `{s.do}` {s.target}" + (f" for {s.for_s:g} s" if s.for_s else "")
                  for s in sc.timeline]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
