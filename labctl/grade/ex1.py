"""Exercise 1, generateData.py and processData.py: tests 1.1-1.9.

Each program runs in the sandbox's case directory, as a student runs it
there: `python3 generateData.py`, `python3 processData.py`, with input.dat
in the current directory. The grader judges input.dat as the generator left
it, and the log lines the processor printed (on stdout or stderr: logging
writes to stderr unless told otherwise).

A log line is a line that names a level as a word (INFO, WARNING or WARN,
ERROR, CRITICAL or FATAL, DEBUG); its message is what follows the level
name. A reading counts as processed when an INFO message holds both the
reading and its square as numbers, whatever the wording.

processData.py is fed the grader's own input.dat (drawn from ctx.rng, so
--seed replays it): valid readings, a negative one among them, a 0, then
readings that must not be processed, 999 and another negative.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from labctl.grade.runner import Check, Context, Outcome
from labctl.grade.sandbox import RunResult, RunSpec

GEN, PROC = "generateData.py", "processData.py"
INPUT = "input.dat"
GEN_OUT = ".generateData.out"  # 1.9: what the generator printed, kept apart from the processor's log
FAULTS = [-10, 0, 999, -25]
READINGS = 100
GEN_TIMEOUT_S = 10.0
PROC_TIMEOUT_S = 10.0
# Python as a student runs it, minus the bytecode cache a read-only /work/src could not take.
ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
LEVEL_RE = re.compile(r"\b(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\b")
LEVELS = {"WARN": "WARNING", "FATAL": "CRITICAL"}
INT_RE = re.compile(r"(?<![\w.])-?\d+(?![\w.])")
TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}")
TRACEBACK = "Traceback (most recent call last)"
SAID_RE = re.compile(r"generat|input\.dat|wrote|written|creat|saved|done", re.I)


def python(script: str) -> list[str]:
    return ["python3", script]


def seen(what: str, r: RunResult) -> str:
    return f"{what}\n\n{r.summary()}"


# ------------------------------------------------------------------ generateData.py


def gen_run(ctx: Context) -> RunResult:
    return ctx.run(RunSpec(python(GEN), files={GEN: ctx.source(GEN)}, env=ENV, timeout=GEN_TIMEOUT_S,
                           snapshot_at_exit=[INPUT]))


def gen(ctx: Context) -> RunResult:
    return ctx.memo("ex1:gen", lambda: gen_run(ctx))


def parse_values(data: bytes) -> tuple[list[int], list[str]]:
    """(the integers, one per non-empty line; the lines that are not integers)."""
    values, bad = [], []
    for raw in data.decode("utf-8", "replace").splitlines():
        text = raw.strip()
        if not text:
            continue
        try:
            values.append(int(text))
        except ValueError:
            bad.append(text[:60])
    return values, bad


def generated(r: RunResult) -> tuple[list[int] | None, str]:
    """input.dat's values as the generator left them, or None and why not."""
    if r.error:
        return None, f"the run broke: {r.error}"
    if not r.ended_by_itself:
        return None, f"generateData.py did not end within {GEN_TIMEOUT_S:g} s: {r.status}"
    data = r.at_exit.get(INPUT)
    if data is None:
        files = ", ".join(f for f in r.files if f != GEN) or "none"
        return None, f"no {INPUT} in the directory generateData.py ran in (files there: {files})"
    values, bad = parse_values(data)
    if bad:
        return None, f"{INPUT} has lines that are not integers: {bad[:5]}"
    return values, ""


def show(values: Iterable[int], limit: int = 12) -> str:
    vs = list(values)
    head = ", ".join(map(str, vs[:limit]))
    return f"[{head}{', ...' if len(vs) > limit else ''}] ({len(vs)} values)"


def check_readings(ctx: Context) -> Outcome:
    """1.1: 100 integers in 1..100 besides the fault values; random, so not all alike."""
    r = gen(ctx)
    values, why = generated(r)
    if values is None:
        return Outcome.fail(seen(why, r))
    readings = [v for v in values if v not in FAULTS]
    problems = []
    if r.exit_code != 0:
        problems.append(f"generateData.py ended with {r.status}, not exit 0")
    out_of_range = [v for v in readings if not 1 <= v <= 100]
    if out_of_range:
        problems.append(f"readings outside 1..100: {show(out_of_range)}")
    if len(readings) != READINGS:
        problems.append(f"{len(readings)} readings besides the fault values, expected {READINGS}")
    elif len(set(readings)) < 5:
        problems.append(f"only {len(set(readings))} different values among 100: not random readings")
    if problems:
        return Outcome.fail(seen("\n".join(problems) + f"\n{INPUT}: {show(values)}", r))
    return Outcome.ok(f"{INPUT}: {len(readings)} readings in 1..100 ({len(set(readings))} different values), "
                      f"{len(values) - len(readings)} fault values")


def check_fault_values(ctx: Context) -> Outcome:
    """1.2: the last four lines are -10, 0, 999, -25."""
    r = gen(ctx)
    values, why = generated(r)
    if values is None:
        return Outcome.fail(seen(why, r))
    if values[-4:] != FAULTS:
        return Outcome.fail(seen(f"{INPUT} ends with {values[-4:]}, expected {FAULTS}", r))
    return Outcome.ok(f"{INPUT} ends with {FAULTS}")


def check_says_generated(ctx: Context) -> Outcome:
    """1.3: a line on stdout saying that the data was generated."""
    r = gen(ctx)
    said = [ln for ln in r.stdout_lines() if SAID_RE.search(ln)]
    if r.error or not said:
        return Outcome.fail(seen("no line on stdout says that input.dat was generated (e.g. 'Generated 104 "
                                 "readings in input.dat')", r))
    return Outcome.ok("generateData.py printed:\n" + "\n".join(said[:5]))


# ------------------------------------------------------------------ processData.py


@dataclass(frozen=True)
class LogLine:
    level: str
    message: str
    text: str
    at: int  # where the level name starts in text

    @property
    def numbers(self) -> list[int]:
        return [int(x) for x in INT_RE.findall(self.message)]


def log_lines(r: RunResult) -> list[LogLine]:
    out = []
    for text in r.stdout_lines() + r.stderr_lines():
        m = LEVEL_RE.search(text)
        if m:
            level = LEVELS.get(m.group(1), m.group(1))
            out.append(LogLine(level, text[m.end():].lstrip(" -:|]>\t"), text, m.start()))
    return out


def processed(lines: list[LogLine], v: int) -> bool:
    return any(ln.level == "INFO" and v in ln.numbers and v * v in ln.numbers for ln in lines)


def unmatched(lines: list[LogLine], readings: list[int]) -> list[int]:
    """The readings without an INFO line of their own, matched in order."""
    infos = [ln for ln in lines if ln.level == "INFO"]
    missing, at = [], 0
    for v in readings:
        hit = next((i for i in range(at, len(infos)) if v in infos[i].numbers and v * v in infos[i].numbers), None)
        if hit is None:
            missing.append(v)
        else:
            at = hit + 1
    return missing


@dataclass(frozen=True)
class ProcData:
    before: list[int]  # valid readings before the 0, the negative among them
    negative: int
    negative_at: int  # its index in before
    after: list[int]  # readings after the 0 (999 among them)

    @property
    def values(self) -> list[int]:
        return [*self.before[:self.negative_at], self.negative, *self.before[self.negative_at:], 0, *self.after]

    @property
    def after_negative(self) -> list[int]:
        return self.before[self.negative_at:]


def proc_data(ctx: Context) -> ProcData:
    rng = ctx.rng_for("ex1:proc")
    # Two-digit readings and squares of three or four digits: none is another's square. The
    # negative one's magnitude is none of them either, so its square stands for it alone.
    pool = rng.sample(range(11, 100), 11)
    before, after = pool[:7], [pool[7], 999, pool[8], -25, pool[9]]
    return ProcData(before, -pool[10], rng.randint(2, 4), after)


def proc_run(ctx: Context) -> tuple[ProcData, RunResult]:
    d = proc_data(ctx)
    data = "".join(f"{v}\n" for v in d.values).encode()
    r = ctx.run(RunSpec(python(PROC), files={PROC: ctx.source(PROC), INPUT: data}, env=ENV, timeout=PROC_TIMEOUT_S))
    return d, r


def proc(ctx: Context) -> tuple[ProcData, RunResult]:
    return ctx.memo("ex1:proc", lambda: proc_run(ctx))


def proc_seen(d: ProcData, what: str, r: RunResult) -> str:
    return seen(f"input.dat: {', '.join(map(str, d.values))}\n{what}", r)


def check_info_squares(ctx: Context) -> Outcome:
    """1.4: an INFO line with n and n*n for each valid reading before the 0."""
    d, r = proc(ctx)
    missing = unmatched(log_lines(r), d.before)
    if r.error or missing:
        return Outcome.fail(proc_seen(d, "no INFO line holding the reading and its square for: "
                                      + ", ".join(f"{v} ({v * v})" for v in missing), r))
    return Outcome.ok(f"an INFO line with the reading and its square for each of {d.before}")


def check_negative(ctx: Context) -> Outcome:
    """1.5: the negative reading: a WARNING naming it, no square, and the readings after it processed."""
    d, r = proc(ctx)
    lines = log_lines(r)
    neg = d.negative
    problems = []
    if not any(ln.level == "WARNING" and (neg in ln.numbers or -neg in ln.numbers) for ln in lines):
        problems.append(f"no WARNING line names the negative reading {neg}")
    squared = [ln.text for ln in lines if neg * neg in ln.numbers]
    if squared:
        problems.append(f"{neg} was squared anyway: {squared[0][:200]}")
    missing = unmatched(lines, d.after_negative)
    if missing:
        problems.append(f"the readings after {neg} were not all processed: none for {missing}")
    if r.error or problems:
        return Outcome.fail(proc_seen(d, "\n".join(problems or [r.error or ""]), r))
    return Outcome.ok(f"{neg}: a WARNING, no square, and {d.after_negative} processed after it")


def check_zero_stops(ctx: Context) -> Outcome:
    """1.6: a CRITICAL line at the 0, and nothing after it processed."""
    d, r = proc(ctx)
    lines = log_lines(r)
    problems = []
    if not any(ln.level == "CRITICAL" for ln in lines):
        problems.append("no CRITICAL line: the reading 0 (a dead sensor) must be logged at CRITICAL")
    late = [v for v in d.after if v > 0 and processed(lines, v)]
    if late:
        problems.append(f"readings after the 0 were processed: {late}")
    if r.error or problems:
        return Outcome.fail(proc_seen(d, "\n".join(problems or [r.error or ""]), r))
    return Outcome.ok(f"a CRITICAL line at the 0, and none of {d.after} processed after it")


def check_graceful(ctx: Context) -> Outcome:
    """1.7: the stop is graceful: no traceback, ended by itself."""
    d, r = proc(ctx)
    out = r.stdout_text() + r.stderr_text()
    if r.error or not r.ended_by_itself or r.signal is not None:
        return Outcome.fail(proc_seen(d, f"processData.py did not end by itself: {r.status}", r))
    if TRACEBACK in out:
        return Outcome.fail(proc_seen(d, "a Python traceback: the program crashed instead of stopping", r))
    return Outcome.ok(f"ended by itself ({r.status}), no traceback")


def check_log_format(ctx: Context) -> Outcome:
    """1.8: every log line has a timestamp, the level name and a message."""
    d, r = proc(ctx)
    lines = log_lines(r)
    if len(lines) < 3:
        return Outcome.fail(proc_seen(d, f"{len(lines)} log line(s) found; expected one per reading", r))
    bad = [ln.text for ln in lines if not TIMESTAMP_RE.search(ln.text[:ln.at]) or not ln.message.strip()]
    if bad:
        return Outcome.fail(proc_seen(d, f"{len(bad)} of {len(lines)} log lines lack a timestamp before the level "
                                      f"or a message, e.g.:\n" + "\n".join(b[:200] for b in bad[:3]), r))
    return Outcome.ok(f"{len(lines)} log lines, each with a timestamp, a level and a message, e.g.:\n"
                      + lines[0].text[:200])


def check_pipeline(ctx: Context) -> Outcome:
    """1.9: generateData.py then processData.py in one directory."""
    r = ctx.memo("ex1:pipeline", lambda: ctx.run(RunSpec(
        ["sh", "-c", f"python3 {GEN} >{GEN_OUT} 2>&1; exec python3 {PROC}"],
        files={GEN: ctx.source(GEN), PROC: ctx.source(PROC)}, env=ENV, timeout=GEN_TIMEOUT_S + PROC_TIMEOUT_S,
        snapshot_at_exit=[INPUT, GEN_OUT])))
    data = r.at_exit.get(INPUT)
    if r.error or data is None:
        said = (r.at_exit.get(GEN_OUT) or b"").decode("utf-8", "replace")[-1500:].strip()
        return Outcome.fail(seen(f"generateData.py left no {INPUT} for processData.py to read; it printed:\n"
                                 f"{said or '(nothing)'}", r))
    values, _ = parse_values(data)
    readings = [v for v in values[:values.index(0)] if v > 0] if 0 in values else [v for v in values if v > 0]
    missing = unmatched(log_lines(r), readings)
    if missing or not readings:
        return Outcome.fail(seen(f"{INPUT} as generated: {show(values)}\nprocessData.py logged no INFO line with "
                                 f"the reading and its square for {len(missing)} of the {len(readings)} readings "
                                 f"before the 0, e.g. {missing[:5]}", r))
    return Outcome.ok(f"processData.py processed all {len(readings)} readings generateData.py wrote before the 0")


CHECKS: dict[str, Check] = {
    "1.1": check_readings,
    "1.2": check_fault_values,
    "1.3": check_says_generated,
    "1.4": check_info_squares,
    "1.5": check_negative,
    "1.6": check_zero_stops,
    "1.7": check_graceful,
    "1.8": check_log_format,
    "1.9": check_pipeline,
}
