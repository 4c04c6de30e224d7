"""Scenarios: YAML parsed once into dataclasses; every error names file and key."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

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
                "stop", "skew", "skew-off", "drift", "drift-off")
# A step that waits for a service's event before it acts (`on_event: alice.read`)
# gives up after this long: the event never came.
ON_EVENT_TIMEOUT_S = 10.0
# The faults a blind scenario may pick from (labctl/blind.py: each one's step and expectations).
BLIND_FAULTS = ("crash", "pause", "partition", "sigstop", "slow")
# The heartbeat-only observer's key in scenario files before it had its name.
OBSERVER_ALIASES = {"naive": states.HEARTBEAT_ONLY}
# The keys each part of a file takes (labctl/schema.py documents every one; a test keeps them in step).
TOP_KEYS = ("name", "lesson", "description", "lab", "timeline", "expect", "duration_s", "blind")
STEP_KEYS = ("at", "do", "target", "for", "on_event")  # and the settings of the step's fault (faults.Param)
EXPECT_KEYS = ("windows", "sees", "never", "job", "lease")
WINDOW_KEYS = ("step", *states.OBSERVERS, "within_ms", "holds", "p99_ms_min", "flaps")
FLAP_OBSERVERS = (states.HEARTBEAT_ONLY, states.PHI, states.SENDER_CLOCK)
FLAP_KEYS = ("min", "max")
LEASE_EXPECT_KEYS = ("safe", "zombie", "min_fenced")
BLIND_KEYS = ("choices", "at", "for")
# duration_s, when a file gives none, is derived (derive_duration) so that no
# limit the author never saw cuts a job off: the least a run gets, and an
# unpaced job's (rate 0: its length is unknown)...
DEFAULT_DURATION_S = 60.0
# ...on top of twice the job's paced length (a fault can stall it that long
# and more), or of the timeline's last step end...
DURATION_SLACK_S = 30.0
# ...and a lease lab, which has no job and runs exactly its duration, gets this
# after its last step's end for the zombie's late write and its fencing.
LEASE_SETTLE_S = 5.0
LEASE_MIN_DURATION_S = 10.0
# Faults of which a second, on the same target while the first holds, cannot stack.
NO_STACK = ("pause", "sigstop", "partition", "slow", "stop", "kill", "skew", "drift")
# While a fault holds its target: the faults the engine or faults.py then refuses, and why.
REFUSED_WHILE: dict[str, tuple[tuple[str, ...], str]] = {
    "stop": (("crash", "pause", "sigstop", "slow", "stop", "kill"), "a stopped container runs nothing"),
    "kill": (("crash", "pause", "sigstop", "slow", "stop", "kill"), "a stopped container runs nothing"),
    "pause": (("crash", "sigstop", "slow"), "the engine says a paused container is not running"),
    "sigstop": (("slow",), "a slow's SIGCONTs would resume what the sigstop holds"),
    "slow": (("sigstop",), "the slow's SIGCONTs would resume what the sigstop holds"),
    "skew": (("drift",), "one clock setting at a time: the drift would replace the skew"),
    "drift": (("skew",), "one clock setting at a time: the skew would replace the drift"),
}


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
    # scenario-crash-loop: the worker segfaults after this many lines per
    # incarnation (0: never), and each start waits this long before it serves.
    crash_every: int = 0
    start_delay_ms: int = 0
    worker_mode: str = "robust"
    restart_limit: int = 10
    give_up_s: int = 90
    program: str = "supervisor"  # or process-data
    # The supervisor's end-to-end check of each result's square (scenario-bitflip).
    verify: bool = False
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
            "LAB_CRASH_EVERY": str(self.crash_every), "LAB_START_DELAY_MS": str(self.start_delay_ms),
            "LAB_MONITOR_LINGER_S": "0", "LAB_MONITOR_CRASH_LINGER_S": "0",
            "LAB_FENCING": "on" if self.fencing else "off", "LAB_TTL_MS": str(self.ttl_ms),
            "LAB_THINK_MS": str(self.think_ms), "LAB_WORK_MS": str(self.work_ms),
            "LAB_VERIFY": "on" if self.verify else "off",
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
    sender_clock: str | None = None
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
    # Silent data corruption (scenario-bitflip): wrong squares the oracle finds
    # in the results, and the share of injected flips the supervisor detected.
    undetected_corruption_min: int | None = None
    undetected_corruption_max: int | None = None
    detection_coverage_min: float | None = None


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
    duration_s: float = DEFAULT_DURATION_S
    blind: Blind | None = None  # a blind-triage game: the fault comes from a seed (labctl/blind.py)
    duration_given: bool = False  # False: derived from the job and the timeline (derive_duration)
    beats_given: bool = False  # lab.heartbeat_ms is the file's own: a crowd of labs leaves it (for_crowd)
    # Lab keys labctl set for this run over the file's (for_crowd): the run
    # directory's scenario.yaml carries them, so `labctl check` judges alike.
    lab_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Blind:
    """`blind:`: the faults to pick from, and the ranges of the step's start and length (seconds)."""
    choices: list[str]
    at: tuple[float, float] = (1.0, 3.0)
    for_s: tuple[float, float] = (4.0, 6.0)


T = TypeVar("T")
TODO = "fix the scenario file; `labctl scenarios --validate FILE` checks it"


class _Skip(Exception):
    """A problem recorded while collecting them all: the key or item it is in is left out."""


class _Ctx:
    """Where we are in the file, for error messages. By default the first
    problem raises; collecting (validate), each is recorded and parsing goes on
    past the key or item it is in, with that key's default."""

    def __init__(self, path: Path, collect: bool = False):
        self.path = path
        self.collect = collect
        self.errors: list[str] = []
        self.failed: set[str] = set()  # the keys with a problem: checks that read them are skipped

    def note(self, key: str, msg: str, todo: str | None = None) -> None:
        """A problem after which the caller can go on: raised at once, or recorded."""
        what = f"{self.path.name}: {key}: {msg}"
        self.failed.add(key)
        if not self.collect:
            raise LabError(ExitCode.BAD_SCENARIO, what, todo or TODO)
        self.errors.append(what)

    def fail(self, key: str, msg: str, todo: str | None = None) -> NoReturn:
        self.note(key, msg, todo)
        raise _Skip

    def attempt(self, fn: Callable[[], T], default: T) -> T:
        try:
            return fn()
        except _Skip:
            return default

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = (),
                aliases: dict[str, str] | None = None, skip_missing: bool = True) -> dict[str, Any]:
        """The mapping, with old key names (aliases) turned into their new ones;
        an unknown key is left out, a missing required one skips it all unless
        the caller handles that (skip_missing=False)."""
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type_name(value)}")
        out: dict[str, Any] = {}
        for k, v in value.items():
            where = f"{key}.{k}" if key else str(k)
            new = (aliases or {}).get(k, k)
            if new not in allowed:
                self.note(where, "unknown key; expected one of " + ", ".join(allowed))
                continue
            if new in out:
                old = next(o for o, n in (aliases or {}).items() if n == new)
                self.note(where, f"given twice, as {old!r} (its old name) and as {new!r}; keep {new!r}")
                continue
            out[new] = v
        missing = [k for k in required if k not in out]
        for k in missing:
            self.note(f"{key}.{k}" if key else k, "is required")
        if missing and skip_missing:
            raise _Skip
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

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {value!r}")
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


# ----------------------------------------------------------------------- how long a run may take


def job_seconds(lab: LabParams) -> float | None:
    """The job's length at its pace with no fault; None for a lease lab (no job) or an unpaced one (rate 0)."""
    if lab.kind == "lease" or lab.rate <= 0:
        return None
    return lab.items / lab.rate


def last_step_end(timeline: list[Step], blind: Blind | None = None) -> float:
    """When the timeline's last step ends (`at` + `for`), counting a blind game's latest possible fault."""
    ends = [s.at + (s.for_s or 0.0) for s in timeline]
    if blind is not None:
        ends.append(blind.at[1] + blind.for_s[1])
    return max(ends, default=0.0)


def derive_duration(lab: LabParams, timeline: list[Step], blind: Blind | None = None) -> float:
    """duration_s for a file that gives none (docs/scenarios.md states the rule)."""
    last = last_step_end(timeline, blind)
    if lab.kind == "lease":
        return float(math.ceil(max(LEASE_MIN_DURATION_S, last + LEASE_SETTLE_S)))
    job = job_seconds(lab)
    longest = [DEFAULT_DURATION_S, last + DURATION_SLACK_S] + ([2 * job + DURATION_SLACK_S] if job else [])
    return float(math.ceil(max(longest)))


# ----------------------------------------------------------------------- parsing


def parse(doc: Any, path: Path) -> Scenario:
    return _parse(_Ctx(path), doc)


def _parse(c: _Ctx, doc: Any) -> Scenario:
    top = c.mapping(doc, "", TOP_KEYS, ("name", "lesson"), skip_missing=False)
    name = c.attempt(lambda: c.string(top["name"], "name"), "") if "name" in top else ""
    lesson = c.attempt(lambda: c.string(top["lesson"], "lesson"), "") if "lesson" in top else ""
    description = c.attempt(lambda: c.string(top.get("description", ""), "description"), "")
    lab = c.attempt(lambda: parse_lab(c, top.get("lab", {}) or {}), LabParams())
    raw_steps = top.get("timeline", []) or []
    steps: list[tuple[int, Step, bool]] = c.attempt(lambda: _parse_steps(c, raw_steps, lab.kind), [])
    timeline = [s for _, s, _ in steps]
    # A step left out for its problems still has its number: the expectations count the file's steps.
    n_steps = len(raw_steps) if isinstance(raw_steps, list) else 0
    expect = c.attempt(lambda: parse_expect(c, top.get("expect", {}) or {}, n_steps, lab.kind), Expect())
    given = "duration_s" in top
    duration = c.attempt(lambda: c.number(top["duration_s"], "duration_s", lo=1), None) if given else None
    blind = c.attempt(lambda: parse_blind(c, top), None) if "blind" in top else None
    if duration is None:
        duration = derive_duration(lab, timeline, blind)
    if blind is not None and blind.at[1] + blind.for_s[1] >= duration:
        c.note("blind.for", f"the latest fault ends at {blind.at[1] + blind.for_s[1]:g} s, not before "
                            f"duration_s ({duration:g})")
    _check_stacking(c, steps)
    # The job's length and the limit, from defaults in place of what the file got wrong, would mislead.
    if not c.failed & {"lab", "lab.items", "lab.rate", "lab.kind", "duration_s"}:
        _check_timing(c, lab, steps, duration, given, expect.job.completes)
    raw_lab = top.get("lab")
    beats_given = isinstance(raw_lab, dict) and "heartbeat_ms" in raw_lab
    return Scenario(name, lesson, description, lab, timeline, expect, c.path, duration, blind, given, beats_given)


# A crowd of labs on few cores (a class's lab server: 30 labs on two) cannot
# afford 20 beats a second each: the beats' handling in the monitor, the
# proxy and the worker costs a lab about 2 % of a core more than at 200 ms
# (measured), the machine runs out of CPU, and workers held off it beat late
# enough to look SLOW and monitors tick late enough to miss the pause limit
# (30 labs on two cores passed 19 to 25 of 30 with 50 ms beats, 30 of 30 with
# 200 ms ones). Past this many labs a core on one engine, labctl beats every
# CROWD_HEARTBEAT_MS unless the scenario names its own heartbeat_ms: silence
# then waits for the fixed timeout (no fast path at five beats a timeout
# window), as it did before the fast beats.
CROWD_LABS_PER_CORE = 5
CROWD_HEARTBEAT_MS = 200


def crowded(labs: int, cores: int) -> bool:
    return labs > CROWD_LABS_PER_CORE * max(1, cores)


def for_crowd(sc: Scenario) -> Scenario:
    """The scenario as a crowded engine runs it: slower beats, unless its file
    names its own, it has no worker (a lease lab), or a timeout of its would
    hold fewer than ten slow beats (a 450 ms timeout tuned for 50 ms beats
    would call every 200 ms gap a silence)."""
    lab = sc.lab
    tightest = min(lab.timeout_ms, lab.heartbeat_only_timeout_ms or lab.timeout_ms)
    if (sc.beats_given or lab.kind != "worker" or lab.heartbeat_ms >= CROWD_HEARTBEAT_MS
            or tightest < 10 * CROWD_HEARTBEAT_MS):
        return sc
    return dataclasses.replace(sc, lab=dataclasses.replace(lab, heartbeat_ms=CROWD_HEARTBEAT_MS),
                               lab_overrides={**sc.lab_overrides, "heartbeat_ms": CROWD_HEARTBEAT_MS})


def run_file_text(sc: Scenario) -> str:
    """What the run directory's scenario.yaml holds: the file as written, or,
    with lab keys labctl set for the run, the file with those keys in."""
    text = sc.path.read_text()
    if not sc.lab_overrides:
        return text
    doc = yaml.safe_load(text)
    doc["lab"] = {**(doc.get("lab") or {}), **sc.lab_overrides}
    return (f"# {sc.path.name} as labctl ran it: lab keys set for this run ({', '.join(sc.lab_overrides)}).\n"
            + yaml.safe_dump(doc, sort_keys=False, width=110))


def parse_blind(c: _Ctx, top: dict[str, Any]) -> Blind:
    """A blind scenario names no fault: labctl picks it from the seed, so it has no timeline or expect."""
    for k in ("timeline", "expect"):
        if k in top:
            c.note(k, "a blind scenario takes its step and expectations from the fault the seed picks; drop it")
    b = c.mapping(top["blind"], "blind", BLIND_KEYS, ("choices",))
    blind = Blind([])
    with contextlib.suppress(_Skip):
        choices = [c.string(v, f"blind.choices[{i}]", BLIND_FAULTS)
                   for i, v in enumerate(c.listing(b["choices"], "blind.choices", "a list of faults"))]
        if len(set(choices)) < 2 or len(set(choices)) != len(choices):
            c.fail("blind.choices", f"name two or more different faults, got {choices}")
        blind.choices = choices
    for k, lo in (("at", 0.0), ("for", 0.5)):
        if k not in b:
            continue
        with contextlib.suppress(_Skip):
            r = c.listing(b[k], f"blind.{k}", "a range [least, most] in seconds")
            if len(r) != 2:
                c.fail(f"blind.{k}", f"expected [least, most], got {len(r)} value(s)")
            least, most = (c.number(v, f"blind.{k}[{j}]", lo=lo) for j, v in enumerate(r))
            if least > most:
                c.fail(f"blind.{k}", f"least ({least}) is more than most ({most})")
            setattr(blind, "at" if k == "at" else "for_s", (float(least), float(most)))
    return blind


def _lab_value(c: _Ctx, k: str, v: Any) -> Any:
    key = f"lab.{k}"
    if k in ("items", "seed", "timeout_ms", "interval_ms", "heartbeat_ms", "window", "restart_limit", "give_up_s",
             "heartbeat_only_timeout_ms", "supervisor_timeout_ms", "crash_every", "start_delay_ms"):
        return c.number(v, key, lo=0 if k in ("seed", "restart_limit", "heartbeat_only_timeout_ms",
                                              "supervisor_timeout_ms", "crash_every", "start_delay_ms") else 1,
                        integer=True, hi=600000 if k == "start_delay_ms" else None)
    if k == "rate":
        return c.number(v, key)
    if k == "bug_trigger":
        v = str(v) if isinstance(v, int) and not isinstance(v, bool) else c.string(v, key)
        if v != "none" and not v.lstrip("-").isdigit():
            c.fail(key, f"expected a number or 'none', got {v!r}")
        return v
    if k in ("log_beats", "fencing", "verify"):
        return c.boolean(v, key)
    if k in ("bug_kind", "worker_mode", "program", "kind"):
        return c.string(v, key, {"bug_kind": BUG_KINDS, "worker_mode": WORKER_MODES, "program": PROGRAMS,
                                 "kind": KINDS}[k])
    if k in ("ttl_ms", "think_ms", "work_ms"):
        return c.number(v, key, lo=0 if k == "think_ms" else 1, integer=True)
    return v


def parse_lab(c: _Ctx, raw: Any) -> LabParams:
    lab = LabParams()
    for k, v in c.mapping(raw, "lab", tuple(LabParams.__dataclass_fields__)).items():
        with contextlib.suppress(_Skip):
            setattr(lab, k, _lab_value(c, k, v))
    given = set(raw or {}) & set(LabParams.__dataclass_fields__)
    if lab.kind == "lease":
        worker_only = sorted(given - {"kind", *LEASE_KEYS})
        if worker_only:
            c.note(f"lab.{worker_only[0]}", "a lease lab has no worker to set it for; "
                                           f"a lease lab takes {', '.join(LEASE_KEYS)}")
        if lab.think_ms >= lab.ttl_ms:
            c.note("lab.think_ms", f"must be less than lab.ttl_ms ({lab.ttl_ms}): a holder that thinks longer "
                                   "than its lease loses it every time, paused or not")
    else:
        lease_only = sorted(given & set(LEASE_KEYS))
        if lease_only:
            c.note(f"lab.{lease_only[0]}", "only a lease lab takes it (lab.kind: lease)")
    if lab.timeout_ms <= lab.interval_ms:
        c.note("lab.timeout_ms", f"must exceed lab.interval_ms ({lab.interval_ms})")
    if lab.heartbeat_only_timeout_ms and lab.heartbeat_only_timeout_ms <= lab.interval_ms:
        c.note("lab.heartbeat_only_timeout_ms", f"must exceed lab.interval_ms ({lab.interval_ms}), or be 0")
    return lab


def parse_timeline(c: _Ctx, raw: Any, kind: str = "worker") -> list[Step]:
    return [s for _, s, _ in _parse_steps(c, raw, kind)]


def _parse_steps(c: _Ctx, raw: Any, kind: str) -> list[tuple[int, Step, bool]]:
    """(index, step, parsed without a problem) for each step not left out."""
    out = []
    for i, s in enumerate(c.listing(raw, "timeline", "a list of steps")):
        mark = len(c.errors)
        with contextlib.suppress(_Skip):
            step = _parse_step(c, s, f"timeline[{i}]", kind == "lease")
            out.append((i, step, len(c.errors) == mark))
    return out


def _parse_step(c: _Ctx, s: Any, key: str, lease: bool) -> Step:
    if isinstance(s, dict) and isinstance(s.get("do"), str) and s["do"] in faults.FAULTS:
        settable = tuple(p.name for p in faults.FAULTS[s["do"]].params)
    else:
        settable = ()
    s = c.mapping(s, key, (*STEP_KEYS, *settable), ("at", "do"))
    if lease and "target" not in s:
        c.fail(f"{key}.target", "is required in a lease lab: one of " + ", ".join(labels.LEASE_SERVICES))
    at = c.attempt(lambda: c.number(s["at"], f"{key}.at"), 0.0)
    step = Step(at=at, do=c.string(s["do"], f"{key}.do", LEASE_FAULTS if lease else tuple(faults.FAULTS)),
                target=c.string(s.get("target", "worker"), f"{key}.target",
                                labels.LEASE_SERVICES if lease else TARGETS))
    if "on_event" in s:
        with contextlib.suppress(_Skip):
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
        c.note(*e.what.split(": ", 1))
    if isinstance(faults.FAULTS.get(step.do), faults.Clock) and step.target not in faults.CLOCK_TARGETS:
        c.note(f"{key}.target", f"{step.do} acts on a clock libfaketime fakes: one of "
                                f"{', '.join(faults.CLOCK_TARGETS)}, not {step.target}")
    if step.params.get("to") == step.target:
        c.note(f"{key}.to", f"is the target itself ({step.target}); name another service")
    if "for" in s:
        with contextlib.suppress(_Skip):
            step.for_s = c.number(s["for"], f"{key}.for")
            if step.for_s is not None and step.for_s <= 0:
                c.fail(f"{key}.for", f"must be more than 0, got {step.for_s}")
            if step.inverse is None:
                c.fail(f"{key}.for", f"{step.do!r} has no inverse to apply after a duration")
    return step


def parse_expect(c: _Ctx, raw: Any, steps: int, kind: str = "worker") -> Expect:
    raw = c.mapping(raw, "expect", EXPECT_KEYS)
    exp = Expect()
    if kind == "lease":
        for other in sorted(set(raw) - {"lease"}):
            c.note(f"expect.{other}", "a lease lab is judged by expect.lease (safe, zombie, min_fenced)")
        exp.lease = LeaseExpect()
        for k, v in c.mapping(raw.get("lease", {}) or {}, "expect.lease", LEASE_EXPECT_KEYS).items():
            with contextlib.suppress(_Skip):
                key = f"expect.lease.{k}"
                setattr(exp.lease, k, c.number(v, key, lo=0, integer=True) if k == "min_fenced" else c.boolean(v, key))
        return exp
    if "lease" in raw:
        c.note("expect.lease", "only a lease lab is judged by it (lab.kind: lease)")
    with contextlib.suppress(_Skip):
        for i, w in enumerate(c.listing(raw.get("windows", []) or [], "expect.windows")):
            with contextlib.suppress(_Skip):
                exp.windows.append(parse_window(c, w, f"expect.windows[{i}]", steps))
    for part in ("sees", "never"):
        written = raw.get(part, {}) or {}
        with contextlib.suppress(_Skip):
            m = c.mapping(written, f"expect.{part}", states.OBSERVERS, aliases=OBSERVER_ALIASES)
            for k, vals in m.items():
                key = f"expect.{part}.{_key_as_written(written, k)}"
                with contextlib.suppress(_Skip):
                    getattr(exp, part)[k] = [c.string(v, f"{key}[{j}]", states.SAYS[k])
                                             for j, v in enumerate(c.listing(vals, key))]
    exp.job = c.attempt(lambda: parse_job(c, raw.get("job", {}) or {}), Job())
    return exp


def parse_window(c: _Ctx, raw: Any, key: str, steps: int) -> Window:
    w = c.mapping(raw, key, WINDOW_KEYS, ("step",), aliases=OBSERVER_ALIASES)
    step = c.number(w["step"], f"{key}.step", lo=1, integer=True, hi=max(steps, 1))
    if step > steps:
        c.fail(f"{key}.step", f"there is no timeline step {step}")
    win = Window(step=step)
    for who in states.OBSERVERS:
        if who in w:
            with contextlib.suppress(_Skip):
                setattr(win, who, c.string(w[who], f"{key}.{_key_as_written(raw, who)}", states.SAYS[who]))
    if "within_ms" in w:
        win.within_ms = c.attempt(lambda: c.number(w["within_ms"], f"{key}.within_ms", lo=1, integer=True), None)
    if "p99_ms_min" in w:
        win.p99_ms_min = c.attempt(lambda: c.number(w["p99_ms_min"], f"{key}.p99_ms_min"), None)
    flaps: dict[str, Any] = c.attempt(lambda: c.mapping(w.get("flaps", {}) or {}, f"{key}.flaps", FLAP_OBSERVERS), {})
    for who, bounds in flaps.items():
        k = f"{key}.flaps.{who}"
        with contextlib.suppress(_Skip):
            b = c.mapping(bounds, k, FLAP_KEYS)
            if not b:
                c.fail(k, "give min, max or both")
            least = c.number(b["min"], f"{k}.min", integer=True) if "min" in b else None
            most = c.number(b["max"], f"{k}.max", integer=True) if "max" in b else None
            if least is not None and most is not None and least > most:
                c.fail(f"{k}.min", f"is more than max ({most})")
            win.flaps[who] = (least, most)
    holds: dict[str, Any] = c.attempt(lambda: c.mapping(w.get("holds", {}) or {}, f"{key}.holds", states.OBSERVERS), {})
    for who, vals in holds.items():
        k = f"{key}.holds.{who}"
        with contextlib.suppress(_Skip):
            win.holds[who] = [c.string(v, f"{k}[{j}]", states.SAYS[who]) for j, v in enumerate(c.listing(vals, k))]
    return win


def parse_job(c: _Ctx, raw: Any) -> Job:
    job = Job()
    for k, v in c.mapping(raw, "expect.job", tuple(Job.__dataclass_fields__)).items():
        key = f"expect.job.{k}"
        with contextlib.suppress(_Skip):
            if k in ("completes", "exactly_once"):
                v = c.boolean(v, key)
            elif k == "worker_exit_codes":
                v = [c.number(x, f"{key}[{j}]", lo=0, integer=True, hi=255)
                     for j, x in enumerate(c.listing(v, key, "a list of exit codes"))]
            elif k == "log_contains":
                v = [c.string(x, f"{key}[{j}]") for j, x in enumerate(c.listing(v, key, "a list of strings"))]
            elif k == "detection_coverage_min":
                v = c.number(v, key, lo=0, hi=1)
            else:
                v = c.number(v, key, lo=0, integer=True)
            setattr(job, k, v)
    return job


# ----------------------------------------------------------------------- what only fails at run time


def _check_stacking(c: _Ctx, steps: list[tuple[int, Step, bool]]) -> None:
    """Two faults on one target that cannot both hold at once, and an inverse
    with nothing to undo: the engine or faults.py would refuse the step mid-run."""
    # Per target: [step number, fault, start, end] of each fault that holds
    # its target; the end of one without `for` is a later inverse's, or never.
    holding: dict[str, list[list[Any]]] = {}
    found: list[tuple[int, str, str, str | None]] = []  # told in the file's order, found in the time's
    for i, s, ok in sorted(steps, key=lambda t: (t[1].at, t[0])):
        if not ok:
            continue
        key, n = f"timeline[{i}]", i + 1
        on = [h for h in holding.get(s.target, []) if h[2] <= s.at < h[3]]
        undoes = [f.name for f in faults.undoes(s.do)]
        if undoes:
            mine = [h for h in on if h[1] in undoes]
            if not mine:
                found.append((i, f"{key}.do", f"{s.do} of the {s.target} at {s.at:g} s, with no "
                                              f"{' or '.join(undoes)} of it on to undo", None))
            for h in mine:
                h[3] = s.at
            continue
        for h in on:
            refused, why = REFUSED_WHILE.get(h[1], ((), ""))
            if s.do == h[1] and s.do in NO_STACK:
                why = f"a second {s.do} cannot stack on the first"
            elif s.do not in refused:
                continue
            until = f"to {h[3]:g} s" if h[3] != math.inf else "with no end"
            found.append((i, f"{key}.at", f"{s.do} of the {s.target} at {s.at:g} s, while step {h[0]}'s {h[1]} of "
                                          f"it holds (from {h[2]:g} s {until}): {why}",
                          "move the step, or shorten the other one"))
            break
        if s.inverse is not None:
            holding.setdefault(s.target, []).append([n, s.do, s.at, s.at + s.for_s if s.for_s else math.inf])
    for _, key, msg, todo in sorted(found, key=lambda f: f[0]):
        c.note(key, msg, todo)


def _check_timing(c: _Ctx, lab: LabParams, steps: list[tuple[int, Step, bool]], duration: float,
                  given: bool, completes: bool = True) -> None:
    """Steps after the job's end and faults that outlast the run: each would fail the run, not the file.
    A scenario that expects its job not to complete (expect.job.completes: false) may cut it off."""
    job = job_seconds(lab)
    limit = f"duration_s ({duration:g} s" + ("" if given else ", derived") + ")"
    if given and completes and job is not None and duration < job:
        c.note("duration_s", f"{duration:g} s is less than the job's expected length ({_job_said(lab, job)}): "
                             "the run would cut it off", "give a longer duration_s, or drop it and labctl derives "
                                                        "one from the job and the timeline")
    for i, s, ok in steps:
        if not ok:
            continue
        key = f"timeline[{i}]"
        if job is not None and s.at >= job:
            c.note(f"{key}.at", f"{s.at:g} s is at or after the job's expected end ({_job_said(lab, job)}): "
                                "the step would act on a finished job", "start it earlier, or give the job more "
                                                                       "lab.items")
        elif s.at >= duration:
            c.note(f"{key}.at", f"{s.at:g} s is at or after the run's end, {limit}",
                   "start it earlier, or give a longer duration_s")
        elif s.for_s and s.at + s.for_s > duration:
            c.note(f"{key}.for", f"the step ends at {s.at + s.for_s:g} s, after the run's end, {limit}",
                   "shorten it, or give a longer duration_s")


def _job_said(lab: LabParams, job: float) -> str:
    return f"lab.items {lab.items} at lab.rate {lab.rate:g}/s: about {job:g} s"


# ----------------------------------------------------------------------- files


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LabError(ExitCode.NOT_FOUND, f"scenario file {path} not found", "`labctl scenarios` lists them") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise LabError(ExitCode.BAD_SCENARIO, f"{path}: cannot read it as text ({e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        raise LabError(ExitCode.BAD_SCENARIO, f"{path.name}: {where}: not valid YAML ({getattr(e, 'problem', e)})",
                       "fix the YAML syntax") from None


def load(path: Path) -> Scenario:
    """The scenario, or LabError naming its first problem."""
    return parse(_read(path), path)


def validate(path: Path) -> list[str]:
    """Every problem of the file, each `file: key: problem`, in the order load
    meets them (load raises the first); [] for a sound file. A file that is
    not there raises, as load does."""
    try:
        doc = _read(path)
    except LabError as e:
        if e.code != ExitCode.BAD_SCENARIO:
            raise
        return [e.what]
    c = _Ctx(path, collect=True)
    with contextlib.suppress(_Skip):
        _parse(c, doc)
    return c.errors


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
