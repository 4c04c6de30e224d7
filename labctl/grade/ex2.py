"""Exercise 2, worker.c and monitor.py: tests 2.2-2.8 (2.1, the compile, is
the runner's).

The worker runs in the case directory with stdin left open; the monitor
(`python3 monitor.py`, unbuffered, so what it prints arrives as it prints
it) runs beside it in the same directory, started once worker.lock exists.
A monitor may watch in a loop or judge once and exit; both are graded: a
second monitor is started after each fault for the kind that exits, and a
looping one is judged by the lines it printed after the fault.

What a monitor line says is read from its words (`verdict()`), not from a
fixed format: "stale" is a stale lock; pause words (paused, frozen,
SIGSTOP...) a paused worker; crash words (crashed, dead, not running...) a
crashed one; run words (running, alive...) a running one. The faults come
from the driver at moments it marks with files in the case directory; the
monitor's run notes how many lines it had printed when each mark appeared.

Every system run is drawn (gradeplot.py) into the submission's folder: the
worker's truth (running, then killed or stopped), the monitor's verdicts
(timed exactly at the marks and spread evenly between them, since a
monitor's lines carry no time of their own) and the worker's heartbeat
lines, the fault shaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from labctl import states
from labctl.grade import gradeplot
from labctl.grade.gradeplot import Mark, Picture, Span, Window, shown
from labctl.grade.runner import Check, Context, Outcome
from labctl.grade.sandbox import RunResult, RunSpec, at, on_file, send_signal, snapshot, touch

WORKER, MONITOR = "worker.c", "monitor.py"
LOCK = "worker.lock"
ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
RUNNING, PAUSED, CRASHED, STALE, NONE = "running", "paused", "crashed", "stale lock", "no worker"
_WORDS = (  # in this order: "not running" is a crash, "stale lock" is stale whatever else the line says
    (STALE, re.compile(r"\bstale\b", re.I)),
    (NONE, re.compile(r"\bno (lock|worker)\b|lock( file)? (is )?(missing|absent|not found|does ?n[o']t exist)", re.I)),
    (PAUSED, re.compile(r"paus|frozen|freez|suspend|sigstop|not responding|unresponsive|\bhung\b|\bstuck\b", re.I)),
    (CRASHED, re.compile(r"crash|\bdead\b|\bdied\b|not running|no longer running|isn'?t running|not alive|\bgone\b|"
                         r"killed|terminated|\bdown\b|no such process|does ?n[o']t exist|not exist", re.I)),
    (RUNNING, re.compile(r"running|alive|healthy|\bok\b|\bup\b|active", re.I)),
)
# Heartbeats: about one a second over HB_RUN_S, and some before HB_EARLY_S.
HB_RUN_S, HB_EARLY_S, HB_MIN, HB_MAX = 4.6, 2.3, 3, 7
LOCK_AT_S = 1.5
WATCH_S = 10.0  # 2.7: a healthy worker watched this long (the first attempt; later ones are for 2.5 only)
AFTER_S = 4.5  # how long the monitor has to say something after a fault
MONITOR_START_S = 5.0
STOP_AT_S = 2.0  # 2.8: SIGSTOP this long after the worker started
ALIVE_END, DEAD, STOPPED, STOPPED_LATE = ".alive-end", ".dead", ".stopped", ".stopped-late"


def verdict(line: str) -> str | None:
    for name, pattern in _WORDS:
        if pattern.search(line):
            return name
    return None


def worker_spec(ctx: Context, timeout: float, actions: list, touch_on_exit: str | None = None) -> RunSpec:
    return RunSpec([ctx.binary(WORKER)], keep_stdin_open=True, timeout=timeout, actions=actions,
                   touch_on_exit=touch_on_exit)


def monitor_spec(ctx: Context, start_when: str, timeout: float, actions: list | None = None,
                 start_timeout: float = MONITOR_START_S, files: dict[str, bytes] | None = None) -> RunSpec:
    return RunSpec(["python3", MONITOR], files={MONITOR: ctx.source(MONITOR), **(files or {})}, env=ENV,
                   timeout=timeout, actions=actions or [], start_when_file=start_when, start_timeout=start_timeout)


def lines_between(r: RunResult, start_action: int | None, end_action: int | None) -> list[str]:
    """The monitor's stdout lines printed between two marks (None: its start / its end)."""
    lines = r.stdout_lines()
    lo = 0
    if start_action is not None:
        f = r.fired_action(start_action)
        lo = f.lines if f else len(lines)
    hi = len(lines)
    if end_action is not None:
        f = r.fired_action(end_action)
        hi = f.lines if f else len(lines)
    return [ln for ln in lines[lo:hi] if ln.strip()]


def verdicts(lines: list[str]) -> list[tuple[str, str]]:
    return [(v, ln) for ln in lines if (v := verdict(ln)) is not None]


def show(lines: list[str], limit: int = 8) -> str:
    if not lines:
        return "(nothing)"
    shown = lines if len(lines) <= limit else [*lines[:3], f"... {len(lines) - 6} more lines ...", *lines[-3:]]
    return "\n".join(ln[:200] for ln in shown)


def monitor_summary(name: str, r: RunResult) -> str:
    return f"{name}: {r.summary(800)}"


# ------------------------------------------------------------------ the timeline pictures

STATE_OF = {RUNNING: states.RUNNING, PAUSED: states.PAUSED, CRASHED: states.CRASHED, STALE: states.DEAD,
            NONE: states.UNKNOWN}


@dataclass(frozen=True)
class Fault:
    """What the grader did to the worker, for the picture: from `at` s on it is `label`."""

    name: str  # the fault window's name: "SIGKILL"
    label: str  # the worker's state after it: "killed (SIGKILL)"
    state: str  # a labctl.states name, for the colour
    at: float | None  # None: it never came (the run ended first)


def offset_of(r: RunResult, t0: float) -> float:
    """When r's program started, in seconds after t0 (the sandbox's clock)."""
    return r.t_start - t0 if r.t_start is not None else 0.0


def timed_lines(r: RunResult, offset: float = 0.0) -> list[tuple[float, str]]:
    """r's stdout lines with their times: exact at the driver's marks (a
    fired action counts the lines printed by then), spread evenly between."""
    if r.error:
        return []
    lines = r.stdout_lines()
    bounds = [(0.0, 0), *sorted((f.t, f.lines) for f in r.fired), (r.elapsed, len(lines))]
    out: list[tuple[float, str]] = []
    for (ta, la), (tb, lb) in zip(bounds, bounds[1:], strict=False):
        chunk = lines[la:lb]
        out += [(offset + ta + (tb - ta) * j / len(chunk), ln) for j, ln in enumerate(chunk)]
    return out


def monitor_lane(monitors: list[RunResult], t0: float) -> tuple[list[Span], list[Mark]]:
    """What each monitor run said, verdict by verdict, until it ended."""
    spans: list[Span] = []
    marks: list[Mark] = []
    for n, r in enumerate(m for m in monitors if m.error is None):
        off = offset_of(r, t0)
        changes = [(t, v) for t, ln in timed_lines(r, off) if (v := verdict(ln)) is not None]
        spans += gradeplot.spans_of(changes, off + r.elapsed, {}, STATE_OF)
        marks.append(Mark(off, "monitor starts" if n == 0 else "monitor again"))
    return spans, marks


def picture(tests: str, title: str, worker: RunResult | None, monitors: list[RunResult], fault: Fault,
            note: str = "") -> Picture:
    """The worker's truth, the monitor's words and the worker's heartbeats over one run."""
    t0 = worker.t_start if worker is not None and worker.t_start is not None else next(
        (m.t_start for m in monitors if m.t_start is not None), 0.0)
    runs = [r for r in (worker, *monitors) if r is not None and r.error is None]
    end = max([offset_of(r, t0) + r.elapsed for r in runs] or [1.0])
    truth: list[Span] = []
    windows: list[Window] = []
    if worker is not None:
        truth.append(Span(0.0, fault.at if fault.at is not None else worker.elapsed, "running", states.RUNNING))
    if fault.at is not None:
        truth.append(Span(fault.at, end, fault.label, fault.state))
        windows.append(Window(fault.at, end, fault.name))
    said, marks = monitor_lane(monitors, t0)
    beats = ([(0.0, 0.0), *((f.t, float(f.lines)) for f in sorted(worker.fired, key=lambda f: f.t)),
              (worker.elapsed, float(worker.stdout_newlines))] if worker is not None and worker.error is None else [])
    return Picture(tests, title, end, "monitor", "worker's stdout\n(heartbeats)", truth=truth, said=said,
                   said_marks=marks, progress=beats, progress_note=note, progress_steps=False, windows=windows)


# ------------------------------------------------------------------ the worker alone (2.2, 2.3)


def solo_run(ctx: Context) -> RunResult:
    return ctx.run(worker_spec(ctx, HB_RUN_S, [snapshot([LOCK], at(LOCK_AT_S)), snapshot([], at(HB_EARLY_S))]))


def solo(ctx: Context) -> RunResult:
    return ctx.memo("ex2:solo", lambda: solo_run(ctx))


def check_lock_pid(ctx: Context) -> Outcome:
    """2.2: worker.lock holds the worker's PID."""
    r = solo(ctx)
    snap = r.snapshot_of(0)
    if r.error or snap is None:
        return Outcome.fail(f"the worker ended before {LOCK_AT_S:g} s, so its lock could not be looked at\n\n"
                            f"{r.summary()}")
    content = snap.files.get(LOCK)
    if content is None:
        return Outcome.fail(f"no {LOCK} in the worker's directory {LOCK_AT_S:g} s after it started (files at the "
                            f"end: {', '.join(r.files) or 'none'})\n\n{r.summary()}")
    m = re.search(rb"\d+", content)
    if m is None or int(m.group()) != r.pid:
        return Outcome.fail(f"{LOCK} holds {content[:80]!r}; expected the worker's PID, {r.pid}\n\n{r.summary()}")
    return Outcome.ok(f"{LOCK} holds {content[:80]!r}, the worker's PID")


def check_heartbeats(ctx: Context) -> Outcome:
    """2.3: about one Heartbeat line a second, each as it happens."""
    r = solo(ctx)
    beats = [ln for ln in r.stdout_lines() if "heartbeat" in ln.lower()]
    early = r.fired_action(1)
    problems = []
    if r.error:
        problems.append(f"the run broke: {r.error}")
    elif not beats:
        problems.append(f"no 'Heartbeat' line on stdout in {HB_RUN_S:g} s")
    elif not HB_MIN <= len(beats) <= HB_MAX:
        problems.append(f"{len(beats)} Heartbeat lines in {HB_RUN_S:g} s; about one a second means "
                        f"{HB_MIN} to {HB_MAX}")
    if not problems and (early is None or early.lines == 0):
        problems.append(f"nothing had reached stdout after {HB_EARLY_S:g} s: the heartbeats are buffered and "
                        "come in a burst, or not at all")
    if problems:
        return Outcome.fail("\n".join(problems) + f"\n\n{r.summary()}")
    return Outcome.ok(f"{len(beats)} Heartbeat lines in {HB_RUN_S:g} s, the first within {HB_EARLY_S:g} s:\n"
                      + show(beats, 4))


# ------------------------------------------------------------------ the monitor beside a worker (2.4, 2.5, 2.7)


@dataclass
class Watch:
    """A worker watched while alive, then SIGKILLed."""

    alive_s: float
    worker: RunResult
    monitor: RunResult  # started when worker.lock appeared
    after: RunResult  # a second monitor, started once the worker was dead

    def alive_lines(self) -> list[str]:
        return lines_between(self.monitor, None, 0)

    def dead_lines(self) -> list[str]:
        """What the monitor said after the kill: the watching one's later lines,
        or, if it had exited before, the second one's."""
        if self.monitor.fired_action(1) is not None:
            return lines_between(self.monitor, 1, None)
        return lines_between(self.after, None, None)

    def summary(self) -> str:
        return "\n\n".join([f"worker: {self.worker.summary(400)}", monitor_summary("monitor", self.monitor),
                            monitor_summary("monitor started after the kill", self.after)])


def watch_run(ctx: Context) -> Watch:
    # The first attempt watches long enough for 2.7; a repeat (2.5 only) needs less.
    alive = WATCH_S if ctx.attempt == 0 else 2.5
    w = worker_spec(ctx, alive + 2, [touch(ALIVE_END, at(alive - 0.3)), send_signal("KILL", at(alive))],
                    touch_on_exit=DEAD)
    m = monitor_spec(ctx, LOCK, alive + AFTER_S, [snapshot([LOCK], on_file(ALIVE_END)),
                                                  snapshot([LOCK], on_file(DEAD))])
    again = monitor_spec(ctx, DEAD, AFTER_S, start_timeout=alive + MONITOR_START_S + 2)
    rw, rm, ra = ctx.run_many([w, m, again])
    return Watch(alive, rw, rm, ra)


def watched(ctx: Context) -> Watch:
    return ctx.memo("ex2:watch", lambda: watch_run(ctx))


def watch_picture(ctx: Context, wt: Watch) -> list[str]:
    kill = wt.worker.fired_action(1)
    monitors = [wt.monitor] if wt.monitor.fired_action(1) is not None else [wt.monitor, wt.after]
    fault = Fault("SIGKILL", "killed (SIGKILL)", states.CRASHED, kill.t if kill else None)
    return gradeplot.draw(ctx, "2.4-2.5-2.7", lambda: picture(
        "2.4, 2.5, 2.7", f"a healthy worker for {wt.alive_s:g} s, then SIGKILL", wt.worker, monitors, fault))


def not_watched(wt: Watch) -> str | None:
    """Why the monitor could not be judged beside a live worker; None if it could."""
    if wt.worker.error:
        return f"the worker's run broke: {wt.worker.error}"
    if wt.monitor.error:
        return (f"the monitor was not started: {wt.monitor.error} (it starts once the worker has created "
                f"{LOCK})")
    return None


def check_running(ctx: Context) -> Outcome:
    """2.4: with the worker alive, the monitor reports it running."""
    wt = watched(ctx)
    return shown(judge_running(wt), watch_picture(ctx, wt))


def judge_running(wt: Watch) -> Outcome:
    problem = not_watched(wt)
    lines = wt.alive_lines()
    vs = verdicts(lines)
    if problem is None and not any(v == RUNNING for v, _ in vs):
        problem = f"while the worker ran, the monitor never said it was running; it printed:\n{show(lines)}"
    elif problem is None and vs[-1][0] != RUNNING:
        problem = f"the worker was alive, but the monitor's last word about it was {vs[-1][0]!r}: {vs[-1][1]}"
    if problem:
        return Outcome.fail(f"{problem}\n\n{wt.summary()}")
    return Outcome.ok(f"with the worker alive the monitor said:\n{show(lines, 4)}")


def check_no_false_alarm(ctx: Context) -> Outcome:
    """2.7: over WATCH_S of a healthy worker, never crashed or stale."""
    wt = watched(ctx)
    return shown(judge_no_false_alarm(wt), watch_picture(ctx, wt))


def judge_no_false_alarm(wt: Watch) -> Outcome:
    problem = not_watched(wt)
    lines = wt.alive_lines()
    vs = verdicts(lines)
    alarms = [ln for v, ln in vs if v in (CRASHED, STALE)]
    if problem is None and alarms:
        problem = (f"the worker was alive the whole {wt.alive_s:g} s, but the monitor said:\n{show(alarms, 4)}")
    elif problem is None and not any(v == RUNNING for v, _ in vs):
        problem = f"the monitor never said the worker was running; it printed:\n{show(lines)}"
    if problem:
        return Outcome.fail(f"{problem}\n\n{wt.summary()}")
    return Outcome.ok(f"{len(lines)} line(s) over {wt.alive_s:g} s of a healthy worker, no false alarm")


def check_crashed(ctx: Context) -> Outcome:
    """2.5: after SIGKILL, crashed (or a stale lock) within AFTER_S."""
    wt = watched(ctx)
    return shown(judge_crashed(wt), watch_picture(ctx, wt))


def judge_crashed(wt: Watch) -> Outcome:
    problem = not_watched(wt)
    lines = wt.dead_lines()
    vs = verdicts(lines)
    if problem is None and not any(v in (CRASHED, STALE) for v, _ in vs):
        problem = (f"within {AFTER_S:g} s of the worker's SIGKILL the monitor never reported a crash; it "
                   f"said:\n{show(lines)}")
    if problem:
        return Outcome.fail(f"{problem}\n\n{wt.summary()}")
    first = next(ln for v, ln in vs if v in (CRASHED, STALE))
    return Outcome.ok(f"after the SIGKILL the monitor said: {first[:200]}")


# ------------------------------------------------------------------ a stale lock (2.6)


def check_stale_lock(ctx: Context) -> Outcome:
    """2.6: a worker.lock naming a PID that does not run is reported stale."""
    # PIDs count up from 1 in the sandbox's namespace: one this high is not in use.
    pid = ctx.rng.randint(20000, 30000)
    r = ctx.run(RunSpec(["python3", MONITOR], files={MONITOR: ctx.source(MONITOR), LOCK: f"{pid}\n".encode()},
                        env=ENV, timeout=AFTER_S))
    fault = Fault("stale lock", "no process: a stale lock", states.DEAD, 0.0)
    images = gradeplot.draw(ctx, "2.6", lambda: picture("2.6", f"{LOCK} names pid {pid}, which no process has",
                                                        None, [r], fault, note="no worker runs in this test"))
    return shown(judge_stale_lock(r, pid), images)


def judge_stale_lock(r: RunResult, pid: int) -> Outcome:
    lines = [ln for ln in r.stdout_lines() if ln.strip()]
    vs = verdicts(lines)
    running = [ln for v, ln in vs if v == RUNNING]
    if r.error or running or not any(v == STALE for v, _ in vs):
        what = (f"reported a running worker: {running[0][:200]}" if running else
                "never said 'stale'" + (f" (it said {vs[-1][0]!r})" if vs else ""))
        return Outcome.fail(f"{LOCK} held {pid}, a PID no process has; the monitor {what}\n\n{r.summary()}")
    first = next(ln for v, ln in vs if v == STALE)
    return Outcome.ok(f"{LOCK} held {pid} (no such process); the monitor said: {first[:200]}")


# ------------------------------------------------------------------ SIGSTOP (2.8, informational)


def check_sigstop(ctx: Context) -> Outcome:
    """2.8: the monitor's verdict on a SIGSTOPped worker, beside the truth."""
    w = worker_spec(ctx, STOP_AT_S + AFTER_S + 2, [send_signal("STOP", at(STOP_AT_S)), touch(STOPPED, at(STOP_AT_S)),
                                                   touch(STOPPED_LATE, at(STOP_AT_S + 3))])
    m = monitor_spec(ctx, LOCK, STOP_AT_S + AFTER_S, [snapshot([LOCK], on_file(STOPPED))])
    again = monitor_spec(ctx, STOPPED_LATE, 2.0, start_timeout=STOP_AT_S + MONITOR_START_S + 3)
    rw, rm, ra = ctx.run_many([w, m, again])
    stop = rw.fired_action(0)
    fault = Fault("SIGSTOP", "stopped (SIGSTOP)", states.SIGSTOPPED, stop.t if stop else None)
    monitors = [rm] if rm.fired_action(0) is not None else [rm, ra]
    images = gradeplot.draw(ctx, "2.8", lambda: picture("2.8", "SIGSTOP: the worker frozen, its process still there",
                                                        rw, monitors, fault))
    return shown(judge_sigstop(rw, rm, ra), images)


def judge_sigstop(rw: RunResult, rm: RunResult, ra: RunResult) -> Outcome:
    stop = rw.fired_action(0)
    if rw.error or rm.error or stop is None:
        return Outcome.fail("could not be observed: " + (rw.error or rm.error or "the worker ended before SIGSTOP")
                            + f"\n\nworker: {rw.summary(400)}\n\n{monitor_summary('monitor', rm)}")
    lines = lines_between(rm, 0, None) if rm.fired_action(0) is not None else lines_between(ra, None, None)
    vs = verdicts(lines)
    said = vs[-1] if vs else None
    truth = "the truth: paused (the worker's process exists but is frozen by SIGSTOP)"
    if said is None:
        return Outcome.fail(f"after SIGSTOP the monitor said nothing we could read; {truth}\nit printed:\n"
                            f"{show(lines)}")
    text = f"after SIGSTOP your monitor's last word was {said[0]!r}: {said[1][:200]}\n{truth}"
    return Outcome.ok(text) if said[0] == PAUSED else Outcome.fail(text)


CHECKS: dict[str, Check] = {
    "2.2": check_lock_pid,
    "2.3": check_heartbeats,
    "2.4": check_running,
    "2.5": check_crashed,
    "2.6": check_stale_lock,
    "2.7": check_no_false_alarm,
    "2.8": check_sigstop,
}
