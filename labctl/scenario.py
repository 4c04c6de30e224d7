"""Scenarios: YAML parsed once into dataclasses; every error names file and key."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from labctl.errors import ExitCode, LabError

BUILTIN_DIR = Path(__file__).resolve().parent / "scenarios"

FAULTS = {
    # do: (inverse, description)
    # `docker kill` marks a container as stopped by hand, so its restart
    # policy leaves it down; a crash is the process dying on its own.
    "crash": (None, "SIGKILL to the process inside the container: no cleanup, restart by policy"),
    "kill": ("start", "docker kill: the operator kills the container; no restart by policy"),
    "pause": ("unpause", "docker pause: the cgroup freezer; the process cannot tell"),
    "unpause": (None, "docker unpause"),
    "sigstop": ("sigcont", "kill -STOP inside the container"),
    "sigcont": (None, "kill -CONT inside the container"),
    "partition": ("heal", "docker network disconnect"),
    "heal": (None, "docker network connect"),
    "stop": ("start", "docker stop: SIGTERM, then SIGKILL after the grace period"),
    "start": (None, "docker start"),
}
TARGETS = ("worker", "monitor", "supervisor")
VERDICTS = ("UNKNOWN", "HEALTHY", "CRASHED", "PAUSED", "PARTITIONED", "RESTARTED", "STOPPED")
NAIVE = ("ALIVE", "DEAD")
TRUTHS = ("RUNNING", "CRASHED", "RESTARTING", "PAUSED", "SIGSTOPPED", "PARTITIONED", "STOPPED")
SUP_STATES = ("connecting", "streaming", "isolating", "timed_out", "reconnecting", "done")


@dataclass
class LabParams:
    items: int = 3000
    rate: float = 250.0
    seed: int = 42
    timeout_ms: int = 2000
    interval_ms: int = 200
    heartbeat_ms: int = 200
    window: int = 64
    bug_trigger: str = "none"
    worker_mode: str = "robust"
    restart_limit: int = 10
    give_up_s: int = 90
    program: str = "supervisor"  # or process-data

    def env(self) -> dict[str, str]:
        return {
            "LAB_ITEMS": str(self.items), "LAB_RATE": str(self.rate), "LAB_SEED": str(self.seed),
            "LAB_TIMEOUT_MS": str(self.timeout_ms), "LAB_INTERVAL_MS": str(self.interval_ms),
            "LAB_HEARTBEAT_MS": str(self.heartbeat_ms), "LAB_WINDOW": str(self.window),
            "LAB_BUG_TRIGGER": self.bug_trigger, "LAB_WORKER_MODE": self.worker_mode,
            "LAB_RESTART_LIMIT": str(self.restart_limit), "LAB_GIVE_UP_S": str(self.give_up_s),
            "LAB_MONITOR_LINGER_S": "0",
        }


@dataclass
class Step:
    at: float
    do: str
    target: str = "worker"
    for_s: float | None = None

    @property
    def inverse(self) -> str | None:
        return FAULTS[self.do][0]


@dataclass
class Window:
    step: int  # 1-based index into the timeline
    truth: str | None = None
    monitor: str | None = None
    naive: str | None = None
    supervisor: str | None = None
    within_ms: int | None = None


@dataclass
class Job:
    completes: bool = True
    exactly_once: bool = True
    dead_lettered: int | None = None
    corrupted: int | None = None
    min_worker_restarts: int | None = None
    max_worker_restarts: int | None = None
    worker_exit_codes: list[int] = field(default_factory=list)
    exit_code: int | None = None
    log_contains: list[str] = field(default_factory=list)


@dataclass
class Expect:
    windows: list[Window] = field(default_factory=list)
    sees: dict[str, list[str]] = field(default_factory=dict)
    never: dict[str, list[str]] = field(default_factory=dict)
    job: Job = field(default_factory=Job)


@dataclass
class Scenario:
    name: str
    lesson: str
    description: str
    lab: LabParams
    timeline: list[Step]
    expect: Expect
    path: Path
    duration_s: float = 60.0


class _Ctx:
    """Where we are in the file, for error messages."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, msg: str, todo: str | None = None):
        raise LabError(ExitCode.BAD_SCENARIO, f"{self.path.name}: {key}: {msg}",
                       todo or "fix the scenario file; `labctl scenarios --validate FILE` checks it")

    def mapping(self, value, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type_name(value)}")
        for k in value:
            if k not in allowed:
                self.fail(f"{key}.{k}" if key else str(k), "unknown key; expected one of " + ", ".join(allowed))
        for k in required:
            if k not in value:
                self.fail(f"{key}.{k}" if key else k, "is required")
        return value

    def number(self, value, key: str, lo: float = 0, integer: bool = False, hi: float | None = None):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.fail(key, f"expected {'a whole number' if integer else 'a number'}, got {type_name(value)} {value!r}")
        if value < lo:
            self.fail(key, f"must be {lo} or more, got {value}")
        if hi is not None and value > hi:
            self.fail(key, f"must be {hi} or less, got {value}")
        return value

    def string(self, value, key: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {type_name(value)} {value!r}")
        if choices and value not in choices:
            self.fail(key, f"{value!r} is not one of " + ", ".join(choices))
        return value


def type_name(v) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(v), type(v).__name__)


def parse(doc, path: Path) -> Scenario:
    c = _Ctx(path)
    top = c.mapping(doc, "", ("name", "lesson", "description", "lab", "timeline", "expect", "duration_s"),
                    ("name", "lesson"))
    name = c.string(top["name"], "name")
    lesson = c.string(top["lesson"], "lesson")
    description = c.string(top.get("description", ""), "description")
    lab = LabParams()
    raw_lab = c.mapping(top.get("lab", {}) or {}, "lab", tuple(LabParams.__dataclass_fields__))
    for k, v in raw_lab.items():
        key = f"lab.{k}"
        if k in ("items", "seed", "timeout_ms", "interval_ms", "heartbeat_ms", "window", "restart_limit", "give_up_s"):
            v = c.number(v, key, lo=0 if k in ("seed", "restart_limit") else 1, integer=True)
        elif k == "rate":
            v = c.number(v, key)
        elif k == "bug_trigger":
            v = str(v) if isinstance(v, int) and not isinstance(v, bool) else c.string(v, key)
            if v != "none" and not v.lstrip("-").isdigit():
                c.fail(key, f"expected a number or 'none', got {v!r}")
        elif k == "worker_mode":
            v = c.string(v, key, ("robust", "naive"))
        elif k == "program":
            v = c.string(v, key, ("supervisor", "process-data"))
        setattr(lab, k, v)
    if lab.timeout_ms <= lab.interval_ms:
        c.fail("lab.timeout_ms", f"must exceed lab.interval_ms ({lab.interval_ms})")
    timeline = []
    raw_tl = top.get("timeline", []) or []
    if not isinstance(raw_tl, list):
        c.fail("timeline", f"expected a list of steps, got {type_name(raw_tl)}")
    for i, s in enumerate(raw_tl):
        key = f"timeline[{i}]"
        s = c.mapping(s, key, ("at", "do", "target", "for"), ("at", "do"))
        step = Step(at=c.number(s["at"], f"{key}.at"), do=c.string(s["do"], f"{key}.do", tuple(FAULTS)),
                    target=c.string(s.get("target", "worker"), f"{key}.target", TARGETS))
        if "for" in s:
            step.for_s = c.number(s["for"], f"{key}.for")
            if step.for_s <= 0:
                c.fail(f"{key}.for", f"must be more than 0, got {step.for_s}")
            if step.inverse is None:
                c.fail(f"{key}.for", f"{step.do!r} has no inverse to apply after a duration")
        timeline.append(step)
    expect = parse_expect(c, top.get("expect", {}) or {}, len(timeline))
    duration = c.number(top.get("duration_s", 60), "duration_s", lo=1)
    return Scenario(name, lesson, description, lab, timeline, expect, path, duration)


def parse_expect(c: _Ctx, raw, steps: int) -> Expect:
    raw = c.mapping(raw, "expect", ("windows", "sees", "never", "job"))
    exp = Expect()
    wins = raw.get("windows", []) or []
    if not isinstance(wins, list):
        c.fail("expect.windows", f"expected a list, got {type_name(wins)}")
    for i, w in enumerate(wins):
        key = f"expect.windows[{i}]"
        w = c.mapping(w, key, ("step", "truth", "monitor", "naive", "supervisor", "within_ms"), ("step",))
        step = c.number(w["step"], f"{key}.step", lo=1, integer=True, hi=max(steps, 1))
        if step > steps:
            c.fail(f"{key}.step", f"there is no timeline step {step}")
        exp.windows.append(Window(
            step=step,
            truth=c.string(w["truth"], f"{key}.truth", TRUTHS) if "truth" in w else None,
            monitor=c.string(w["monitor"], f"{key}.monitor", VERDICTS) if "monitor" in w else None,
            naive=c.string(w["naive"], f"{key}.naive", NAIVE) if "naive" in w else None,
            supervisor=c.string(w["supervisor"], f"{key}.supervisor", SUP_STATES) if "supervisor" in w else None,
            within_ms=c.number(w["within_ms"], f"{key}.within_ms", lo=1, integer=True) if "within_ms" in w else None,
        ))
    choices = {"monitor": VERDICTS, "naive": NAIVE, "supervisor": SUP_STATES, "truth": TRUTHS}
    for part in ("sees", "never"):
        m = c.mapping(raw.get(part, {}) or {}, f"expect.{part}", tuple(choices))
        for k, vals in m.items():
            if not isinstance(vals, list):
                c.fail(f"expect.{part}.{k}", f"expected a list, got {type_name(vals)}")
            getattr(exp, part)[k] = [c.string(v, f"expect.{part}.{k}[{j}]", choices[k]) for j, v in enumerate(vals)]
    job = c.mapping(raw.get("job", {}) or {}, "expect.job", tuple(Job.__dataclass_fields__))
    for k, v in job.items():
        key = f"expect.job.{k}"
        if k in ("completes", "exactly_once"):
            if not isinstance(v, bool):
                c.fail(key, f"expected true or false, got {v!r}")
        elif k in ("worker_exit_codes",):
            if not isinstance(v, list):
                c.fail(key, f"expected a list of exit codes, got {type_name(v)}")
            v = [c.number(x, f"{key}[{j}]", lo=0, integer=True, hi=255) for j, x in enumerate(v)]
        elif k == "log_contains":
            if not isinstance(v, list):
                c.fail(key, f"expected a list of strings, got {type_name(v)}")
            v = [c.string(x, f"{key}[{j}]") for j, x in enumerate(v)]
        else:
            v = c.number(v, key, lo=0, integer=True)
        setattr(exp.job, k, v)
    return exp


def load(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LabError(ExitCode.NOT_FOUND, f"scenario file {path} not found", "`labctl scenarios` lists them") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise LabError(ExitCode.BAD_SCENARIO, f"{path}: cannot read it as text ({e})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        raise LabError(ExitCode.BAD_SCENARIO, f"{path.name}: {where}: not valid YAML ({getattr(e, 'problem', e)})",
                       "fix the YAML syntax") from None
    return parse(doc, path)


def builtin() -> list[Scenario]:
    return [load(p) for p in sorted(BUILTIN_DIR.glob("*.yaml"))]


def resolve(name: str) -> Scenario:
    """A built-in scenario by name (with or without 'scenario-'), or a YAML file path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load(p)
    for cand in (name, f"scenario-{name}"):
        f = BUILTIN_DIR / f"{cand}.yaml"
        if f.exists():
            return load(f)
    known = ", ".join(s.stem for s in sorted(BUILTIN_DIR.glob("*.yaml")))
    raise LabError(ExitCode.NOT_FOUND, f"no scenario named {name!r}", f"pick one of: {known}")
