"""Scenarios: YAML parsed once into dataclasses; every error names file and key."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from labctl import faults, labels, states
from labctl.errors import ExitCode, LabError

BUILTIN_DIR = Path(__file__).resolve().parent / "scenarios"
TARGETS = faults.SERVICES  # the default target first
WORKER_MODES = ("robust", "naive")  # naive: the exercise's worker, a pidfile and no flock
BUG_KINDS = ("segv", "oom")  # what the bug trigger does: segfault, or allocate until the OOM killer acts
PROGRAMS = ("supervisor", "process-data")
# The kinds of lab (labels.KIND_SERVICES): the worker lab of compose.yaml, and
# the lease lab of compose.lease.yaml (a lease service, a fencing store, two holders).
KINDS = tuple(labels.KIND_SERVICES)
# The settings only a lease lab takes, and the faults that apply to its containers
# (the proxy's faults and the worker's bug have no place there).
LEASE_KEYS = ("fencing", "ttl_ms", "think_ms", "work_ms")
LEASE_FAULTS = ("crash", "kill", "start", "pause", "unpause", "sigstop", "sigcont", "partition", "heal",
                "stop")
# A step that waits for a service's event before it acts (`on_event: alice.read`)
# gives up after this long: the event never came.
ON_EVENT_TIMEOUT_S = 10.0
# The faults a blind scenario may pick from (labctl/blind.py: each one's step and expectations).
BLIND_FAULTS = ("crash", "pause", "partition", "sigstop", "slow")
# The heartbeat-only observer's key in scenario files before it had its name.
OBSERVER_ALIASES = {"naive": states.HEARTBEAT_ONLY}


@dataclass
class LabParams:
    items: int = 3000
    rate: float = 250.0
    seed: int = 42
    timeout_ms: int = 2000
    heartbeat_only_timeout_ms: int = 0  # 0: the same as timeout_ms
    supervisor_timeout_ms: int = 0  # 0: the same as timeout_ms
    log_beats: bool = False  # the monitor logs every heartbeat's arrival (bench/tune_detectors.py)
    interval_ms: int = 200
    # 20 beats a second: enough beats in half a second that the monitor can
    # tell a silence from a lossy link without the fixed timeout.
    heartbeat_ms: int = 50
    window: int = 64
    bug_trigger: str = "none"
    bug_kind: str = "segv"  # or oom: the trigger allocates until the kernel's OOM killer ends the worker
    worker_mode: str = "robust"
    restart_limit: int = 10
    give_up_s: int = 90
    program: str = "supervisor"  # or process-data
    kind: str = "worker"  # or lease: compose.lease.yaml's lab
    # The lease lab's settings (LEASE_KEYS): the store's fencing, the lease's
    # time to live, the holders' read-modify-write think time and pace.
    fencing: bool = True
    ttl_ms: int = 2000
    think_ms: int = 1000
    work_ms: int = 100

    def env(self) -> dict[str, str]:
        return {
            "LAB_ITEMS": str(self.items), "LAB_RATE": str(self.rate), "LAB_SEED": str(self.seed),
            "LAB_TIMEOUT_MS": str(self.timeout_ms), "LAB_INTERVAL_MS": str(self.interval_ms),
            "LAB_HEARTBEAT_ONLY_TIMEOUT_MS": str(self.heartbeat_only_timeout_ms),
            "LAB_SUPERVISOR_TIMEOUT_MS": str(self.supervisor_timeout_ms or self.timeout_ms),
            "LAB_MONITOR_LOG_BEATS": "1" if self.log_beats else "0",
            "LAB_HEARTBEAT_MS": str(self.heartbeat_ms), "LAB_WINDOW": str(self.window),
            "LAB_BUG_TRIGGER": self.bug_trigger, "LAB_BUG_KIND": self.bug_kind, "LAB_WORKER_MODE": self.worker_mode,
            "LAB_RESTART_LIMIT": str(self.restart_limit), "LAB_GIVE_UP_S": str(self.give_up_s),
            "LAB_MONITOR_LINGER_S": "0", "LAB_MONITOR_CRASH_LINGER_S": "0",
            "LAB_FENCING": "on" if self.fencing else "off", "LAB_TTL_MS": str(self.ttl_ms),
            "LAB_THINK_MS": str(self.think_ms), "LAB_WORK_MS": str(self.work_ms),
        }

    @property
    def services(self) -> tuple[str, ...]:
        return labels.KIND_SERVICES[self.kind]


@dataclass
class Step:
    at: float
    do: str
    target: str = "worker"
    for_s: float | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the fault's settings (faults.Param), checked
    # (service, event kind): from `at`, wait for that service's next event of
    # that kind, then act (pause a lease holder as it starts to think).
    on_event: tuple[str, str] | None = None

    @property
    def inverse(self) -> str | None:
        return faults.get(self.do).inverse


@dataclass
class Window:
    step: int  # 1-based index into the timeline
    truth: str | None = None
    monitor: str | None = None
    heartbeat_only: str | None = None
    supervisor: str | None = None
    phi: str | None = None
    within_ms: int | None = None
    # Observer -> what it may say, and nothing else, all through the window
    # (after `within_ms`, the time an observer may take to notice).
    holds: dict[str, list[str]] = field(default_factory=dict)
    # The supervisor's p99 round trip, in some second of the window, at least this (a gray fault seen in latency).
    p99_ms_min: float | None = None
    # Observer -> (least, most) times it turned DEAD in the window: a detector flapping, or riding it out.
    flaps: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)


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
class LeaseExpect:
    """A lease lab's expectations (labctl/lease.py judges them)."""
    # True: the store's accepted writes are safe (no token below an earlier
    # one, no lost update); False: the checker must find the lost update
    # (fencing off), and the run fails its safety checks, as it should.
    safe: bool = True
    # Two holders believed they held the lease at once (the zombie), and the
    # old one tried to write after the new one had its token.
    zombie: bool = False
    # The store refused at least this many writes (fencing on).
    min_fenced: int = 0


@dataclass
class Expect:
    windows: list[Window] = field(default_factory=list)
    sees: dict[str, list[str]] = field(default_factory=dict)
    never: dict[str, list[str]] = field(default_factory=dict)
    job: Job = field(default_factory=Job)
    lease: LeaseExpect | None = None


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
    blind: Blind | None = None  # a blind-triage game: the fault comes from a seed (labctl/blind.py)


@dataclass
class Blind:
    """`blind:`: the faults to pick from, and the ranges of the step's start and length (seconds)."""
    choices: list[str]
    at: tuple[float, float] = (1.0, 3.0)
    for_s: tuple[float, float] = (4.0, 6.0)


class _Ctx:
    """Where we are in the file, for error messages."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, msg: str, todo: str | None = None) -> NoReturn:
        raise LabError(ExitCode.BAD_SCENARIO, f"{self.path.name}: {key}: {msg}",
                       todo or "fix the scenario file; `labctl scenarios --validate FILE` checks it")

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = (),
                aliases: dict[str, str] | None = None) -> dict[str, Any]:
        """The mapping, with old key names (aliases) turned into their new ones."""
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type_name(value)}")
        out: dict[str, Any] = {}
        for k, v in value.items():
            where = f"{key}.{k}" if key else str(k)
            new = (aliases or {}).get(k, k)
            if new not in allowed:
                self.fail(where, "unknown key; expected one of " + ", ".join(allowed))
            if new in out:
                old = next(o for o, n in (aliases or {}).items() if n == new)
                self.fail(where, f"given twice, as {old!r} (its old name) and as {new!r}; keep {new!r}")
            out[new] = v
        for k in required:
            if k not in out:
                self.fail(f"{key}.{k}" if key else k, "is required")
        return out

    def number(self, value: Any, key: str, lo: float = 0, integer: bool = False, hi: float | None = None) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.fail(key, f"expected {'a whole number' if integer else 'a number'}, got {type_name(value)} {value!r}")
        if value < lo:
            self.fail(key, f"must be {lo} or more, got {value}")
        if hi is not None and value > hi:
            self.fail(key, f"must be {hi} or less, got {value}")
        return value

    def string(self, value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {type_name(value)} {value!r}")
        if choices and value not in choices:
            self.fail(key, f"{value!r} is not one of " + ", ".join(choices))
        return value

    def listing(self, value: Any, key: str, what: str = "a list") -> list[Any]:
        if not isinstance(value, list):
            self.fail(key, f"expected {what}, got {type_name(value)}")
        return value


def type_name(v: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(v), type(v).__name__)


def _key_as_written(raw: dict[str, Any], key: str) -> str:
    """The name the file used for a key (its old alias, if that is what it says)."""
    return next((old for old, new in OBSERVER_ALIASES.items() if new == key and old in raw), key)


def parse(doc: Any, path: Path) -> Scenario:
    c = _Ctx(path)
    top = c.mapping(doc, "", ("name", "lesson", "description", "lab", "timeline", "expect", "duration_s", "blind"),
                    ("name", "lesson"))
    name = c.string(top["name"], "name")
    lesson = c.string(top["lesson"], "lesson")
    description = c.string(top.get("description", ""), "description")
    lab = parse_lab(c, top.get("lab", {}) or {})
    timeline = parse_timeline(c, top.get("timeline", []) or [], lab.kind)
    expect = parse_expect(c, top.get("expect", {}) or {}, len(timeline), lab.kind)
    duration = c.number(top.get("duration_s", 60), "duration_s", lo=1)
    blind = parse_blind(c, top, duration) if "blind" in top else None
    return Scenario(name, lesson, description, lab, timeline, expect, path, duration, blind)


def parse_blind(c: _Ctx, top: dict[str, Any], duration: float) -> Blind:
    """A blind scenario names no fault: labctl picks it from the seed, so it has no timeline or expect."""
    for k in ("timeline", "expect"):
        if k in top:
            c.fail(k, "a blind scenario takes its step and expectations from the fault the seed picks; drop it")
    b = c.mapping(top["blind"], "blind", ("choices", "at", "for"), ("choices",))
    choices = [c.string(v, f"blind.choices[{i}]", BLIND_FAULTS)
               for i, v in enumerate(c.listing(b["choices"], "blind.choices", "a list of faults"))]
    if len(set(choices)) < 2 or len(set(choices)) != len(choices):
        c.fail("blind.choices", f"name two or more different faults, got {choices}")
    blind = Blind(choices)
    for k, lo in (("at", 0.0), ("for", 0.5)):
        if k in b:
            r = c.listing(b[k], f"blind.{k}", "a range [least, most] in seconds")
            if len(r) != 2:
                c.fail(f"blind.{k}", f"expected [least, most], got {len(r)} value(s)")
            least, most = (c.number(v, f"blind.{k}[{j}]", lo=lo) for j, v in enumerate(r))
            if least > most:
                c.fail(f"blind.{k}", f"least ({least}) is more than most ({most})")
            setattr(blind, "at" if k == "at" else "for_s", (float(least), float(most)))
    if blind.at[1] + blind.for_s[1] >= duration:
        c.fail("blind.for", f"the latest fault ends at {blind.at[1] + blind.for_s[1]:g} s, not before "
                            f"duration_s ({duration:g})")
    return blind


def parse_lab(c: _Ctx, raw: Any) -> LabParams:
    lab = LabParams()
    for k, v in c.mapping(raw, "lab", tuple(LabParams.__dataclass_fields__)).items():
        key = f"lab.{k}"
        if k in ("items", "seed", "timeout_ms", "interval_ms", "heartbeat_ms", "window", "restart_limit", "give_up_s",
                 "heartbeat_only_timeout_ms", "supervisor_timeout_ms"):
            v = c.number(v, key, lo=0 if k in ("seed", "restart_limit", "heartbeat_only_timeout_ms",
                                               "supervisor_timeout_ms") else 1, integer=True)
        elif k == "rate":
            v = c.number(v, key)
        elif k == "bug_trigger":
            v = str(v) if isinstance(v, int) and not isinstance(v, bool) else c.string(v, key)
            if v != "none" and not v.lstrip("-").isdigit():
                c.fail(key, f"expected a number or 'none', got {v!r}")
        elif k == "log_beats":
            if not isinstance(v, bool):
                c.fail(key, f"expected true or false, got {v!r}")
        elif k == "bug_kind":
            v = c.string(v, key, BUG_KINDS)
        elif k == "worker_mode":
            v = c.string(v, key, WORKER_MODES)
        elif k == "program":
            v = c.string(v, key, PROGRAMS)
        elif k == "kind":
            v = c.string(v, key, KINDS)
        elif k == "fencing":
            if not isinstance(v, bool):
                c.fail(key, f"expected true or false, got {v!r}")
        elif k in ("ttl_ms", "think_ms", "work_ms"):
            v = c.number(v, key, lo=0 if k == "think_ms" else 1, integer=True)
        setattr(lab, k, v)
    given = set(raw or {})
    if lab.kind == "lease":
        worker_only = sorted(given - {"kind", *LEASE_KEYS})
        if worker_only:
            c.fail(f"lab.{worker_only[0]}", "a lease lab has no worker to set it for; "
                                           f"a lease lab takes {', '.join(LEASE_KEYS)}")
        if lab.think_ms >= lab.ttl_ms:
            c.fail("lab.think_ms", f"must be less than lab.ttl_ms ({lab.ttl_ms}): a holder that thinks longer "
                                   "than its lease loses it every time, paused or not")
    else:
        lease_only = sorted(given & set(LEASE_KEYS))
        if lease_only:
            c.fail(f"lab.{lease_only[0]}", "only a lease lab takes it (lab.kind: lease)")
    if lab.timeout_ms <= lab.interval_ms:
        c.fail("lab.timeout_ms", f"must exceed lab.interval_ms ({lab.interval_ms})")
    if lab.heartbeat_only_timeout_ms and lab.heartbeat_only_timeout_ms <= lab.interval_ms:
        c.fail("lab.heartbeat_only_timeout_ms", f"must exceed lab.interval_ms ({lab.interval_ms}), or be 0")
    return lab


def parse_timeline(c: _Ctx, raw: Any, kind: str = "worker") -> list[Step]:
    timeline = []
    lease = kind == "lease"
    for i, s in enumerate(c.listing(raw, "timeline", "a list of steps")):
        key = f"timeline[{i}]"
        if isinstance(s, dict) and isinstance(s.get("do"), str) and s["do"] in faults.FAULTS:
            settable = tuple(p.name for p in faults.FAULTS[s["do"]].params)
        else:
            settable = ()
        s = c.mapping(s, key, ("at", "do", "target", "for", "on_event", *settable), ("at", "do"))
        if lease and "target" not in s:
            c.fail(f"{key}.target", "is required in a lease lab: one of " + ", ".join(labels.LEASE_SERVICES))
        step = Step(at=c.number(s["at"], f"{key}.at"),
                    do=c.string(s["do"], f"{key}.do", LEASE_FAULTS if lease else tuple(faults.FAULTS)),
                    target=c.string(s.get("target", "worker"), f"{key}.target",
                                    labels.LEASE_SERVICES if lease else TARGETS))
        if "on_event" in s:
            if not lease:
                c.fail(f"{key}.on_event", "only a lease lab's steps wait for an event (lab.kind: lease)")
            svc, dot, ev_kind = c.string(s["on_event"], f"{key}.on_event").partition(".")
            if not dot or svc not in labels.LEASE_SERVICES or not ev_kind:
                c.fail(f"{key}.on_event", f"expected SERVICE.KIND (e.g. alice.read), SERVICE one of "
                                          f"{', '.join(labels.LEASE_SERVICES)}, got {s['on_event']!r}")
            step.on_event = (svc, ev_kind)
        try:
            step.params = faults.get(step.do).settings({k: s[k] for k in settable if k in s}, f"{key}.")
        except LabError as e:
            c.fail(*e.what.split(": ", 1))
        if step.params.get("to") == step.target:
            c.fail(f"{key}.to", f"is the target itself ({step.target}); name another service")
        if "for" in s:
            step.for_s = c.number(s["for"], f"{key}.for")
            if step.for_s is not None and step.for_s <= 0:
                c.fail(f"{key}.for", f"must be more than 0, got {step.for_s}")
            if step.inverse is None:
                c.fail(f"{key}.for", f"{step.do!r} has no inverse to apply after a duration")
        timeline.append(step)
    return timeline


def parse_expect(c: _Ctx, raw: Any, steps: int, kind: str = "worker") -> Expect:
    raw = c.mapping(raw, "expect", ("windows", "sees", "never", "job", "lease"))
    exp = Expect()
    if kind == "lease":
        other = sorted(set(raw) - {"lease"})
        if other:
            c.fail(f"expect.{other[0]}", "a lease lab is judged by expect.lease (safe, zombie, min_fenced)")
        exp.lease = LeaseExpect()
        for k, v in c.mapping(raw.get("lease", {}) or {}, "expect.lease", ("safe", "zombie", "min_fenced")).items():
            if k == "min_fenced":
                v = c.number(v, f"expect.lease.{k}", lo=0, integer=True)
            elif not isinstance(v, bool):
                c.fail(f"expect.lease.{k}", f"expected true or false, got {v!r}")
            setattr(exp.lease, k, v)
        return exp
    if "lease" in raw:
        c.fail("expect.lease", "only a lease lab is judged by it (lab.kind: lease)")
    for i, w in enumerate(c.listing(raw.get("windows", []) or [], "expect.windows")):
        exp.windows.append(parse_window(c, w, f"expect.windows[{i}]", steps))
    for part in ("sees", "never"):
        written = raw.get(part, {}) or {}
        m = c.mapping(written, f"expect.{part}", states.OBSERVERS, aliases=OBSERVER_ALIASES)
        for k, vals in m.items():
            key = f"expect.{part}.{_key_as_written(written, k)}"
            getattr(exp, part)[k] = [c.string(v, f"{key}[{j}]", states.SAYS[k])
                                     for j, v in enumerate(c.listing(vals, key))]
    exp.job = parse_job(c, raw.get("job", {}) or {})
    return exp


def parse_window(c: _Ctx, raw: Any, key: str, steps: int) -> Window:
    w = c.mapping(raw, key, ("step", *states.OBSERVERS, "within_ms", "holds", "p99_ms_min", "flaps"), ("step",),
                  aliases=OBSERVER_ALIASES)
    step = c.number(w["step"], f"{key}.step", lo=1, integer=True, hi=max(steps, 1))
    if step > steps:
        c.fail(f"{key}.step", f"there is no timeline step {step}")
    win = Window(step=step)
    for who in states.OBSERVERS:
        if who in w:
            setattr(win, who, c.string(w[who], f"{key}.{_key_as_written(raw, who)}", states.SAYS[who]))
    if "within_ms" in w:
        win.within_ms = c.number(w["within_ms"], f"{key}.within_ms", lo=1, integer=True)
    if "p99_ms_min" in w:
        win.p99_ms_min = c.number(w["p99_ms_min"], f"{key}.p99_ms_min")
    for who, bounds in c.mapping(w.get("flaps", {}) or {}, f"{key}.flaps",
                                 (states.HEARTBEAT_ONLY, states.PHI)).items():
        k = f"{key}.flaps.{who}"
        b = c.mapping(bounds, k, ("min", "max"))
        if not b:
            c.fail(k, "give min, max or both")
        least = c.number(b["min"], f"{k}.min", integer=True) if "min" in b else None
        most = c.number(b["max"], f"{k}.max", integer=True) if "max" in b else None
        if least is not None and most is not None and least > most:
            c.fail(f"{k}.min", f"is more than max ({most})")
        win.flaps[who] = (least, most)
    holds = c.mapping(w.get("holds", {}) or {}, f"{key}.holds", states.OBSERVERS)
    for who, vals in holds.items():
        k = f"{key}.holds.{who}"
        win.holds[who] = [c.string(v, f"{k}[{j}]", states.SAYS[who]) for j, v in enumerate(c.listing(vals, k))]
    return win


def parse_job(c: _Ctx, raw: Any) -> Job:
    job = Job()
    for k, v in c.mapping(raw, "expect.job", tuple(Job.__dataclass_fields__)).items():
        key = f"expect.job.{k}"
        if k in ("completes", "exactly_once"):
            if not isinstance(v, bool):
                c.fail(key, f"expected true or false, got {v!r}")
        elif k == "worker_exit_codes":
            v = [c.number(x, f"{key}[{j}]", lo=0, integer=True, hi=255)
                 for j, x in enumerate(c.listing(v, key, "a list of exit codes"))]
        elif k == "log_contains":
            v = [c.string(x, f"{key}[{j}]") for j, x in enumerate(c.listing(v, key, "a list of strings"))]
        else:
            v = c.number(v, key, lo=0, integer=True)
        setattr(job, k, v)
    return job


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
