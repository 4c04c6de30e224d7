"""The scenario file's schema: every key, its type, default and meaning, and
the lab kind it applies to. `labctl scenarios --schema` prints it;
docs/scenarios.md holds the same text (a test keeps them equal), and a test
keeps these keys and the parser's (labctl/scenario.py) the same set.

Defaults and choices are read from the parser's dataclasses and tuples, so
the table cannot state a default the parser does not use.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from labctl import faults, labels, scenario, states

WORKER = "worker"
LEASE = "lease"
BOTH = "both"


@dataclass(frozen=True)
class Key:
    """One key: `path` as written in a file (`timeline[].at`: `at` of each step)."""
    path: str
    type: str
    default: str
    meaning: str
    kind: str = BOTH  # which lab kind takes it


@dataclass(frozen=True)
class Section:
    title: str
    intro: str
    keys: tuple[Key, ...]


def _said(v: object) -> str:
    """A default as a file would write it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "-"
    if v == []:
        return "[]"
    return str(v)


def _one_of(choices: tuple[str, ...]) -> str:
    return " or ".join(choices) if len(choices) <= 2 else "one of " + ", ".join(choices)


_LAB = scenario.LabParams()
_JOB = scenario.Job()
_LEASE = scenario.LeaseExpect()
_BLIND = scenario.Blind([])

# lab.* : (type, meaning); the default comes from LabParams.
_LAB_KEYS: dict[str, tuple[str, str]] = {
    "kind": (_one_of(scenario.KINDS), "the lab: `worker` (compose.yaml: worker, proxy, monitor, supervisor) or "
                                      "`lease` (compose.lease.yaml: a lease service, a fencing store, two holders)"),
    "items": ("whole number, 1 or more", "readings in the job's data set"),
    "rate": ("number, 0 or more", "items a second the supervisor sends; 0: as fast as the worker answers "
                                  "(unpaced: duration_s cannot be derived from it)"),
    "seed": ("whole number, 0 or more", "the data set's random seed"),
    "timeout_ms": ("whole number, 1 or more", "the detectors' silence timeout (and the supervisor's, unless "
                                              "supervisor_timeout_ms); must exceed interval_ms"),
    "heartbeat_only_timeout_ms": ("whole number, 0 or more", "the heartbeat-only detector's own timeout; 0: "
                                                             "timeout_ms; else it must exceed interval_ms"),
    "supervisor_timeout_ms": ("whole number, 0 or more", "how long the supervisor waits for an answer; 0: "
                                                         "timeout_ms"),
    "log_beats": ("true or false", "the monitor logs every heartbeat's arrival (bench/tune_detectors.py)"),
    "interval_ms": ("whole number, 1 or more", "the monitor's tick: how often it judges"),
    "heartbeat_ms": ("whole number, 1 or more", "how often the worker beats (UDP and the shared volume); not "
                                                "given, and more than 5 labs a core on one engine: 200"),
    "window": ("whole number, 1 or more", "items the supervisor keeps in flight"),
    "bug_trigger": ("whole number or `none`", "the reading that triggers the worker's bug (bug_kind)"),
    "bug_kind": (_one_of(scenario.BUG_KINDS), "what the bug does: segfault, or allocate until the kernel's OOM "
                                              "killer ends the worker"),
    "crash_every": ("whole number, 0 or more", "the worker segfaults once an incarnation has answered this many "
                                               "lines, between lines and after flushing their answers (0: never; "
                                               "scenario-crash-loop)"),
    "start_delay_ms": ("whole number, 0 to 600000", "each worker start waits this long before it takes its lock "
                                                    "and listens: the repair time scenario-crash-loop varies"),
    "worker_mode": (_one_of(scenario.WORKER_MODES), "`naive`: the exercise's worker, a pidfile and no flock"),
    "restart_limit": ("whole number, 0 or more", "how often the engine restarts the worker after a failure"),
    "give_up_s": ("whole number, 1 or more", "the supervisor gives up after this long without a worker"),
    "program": (_one_of(scenario.PROGRAMS), "what runs the job: the supervisor, or the exercise-1 program"),
    "verify": ("true or false", "the supervisor's end-to-end check: each result's square against its own input; "
                                "a corrupt one is counted and sent again, not written (scenario-bitflip)"),
    "fencing": ("true or false", "the store refuses a write whose token is below one it has accepted"),
    "ttl_ms": ("whole number, 1 or more", "the lease's time to live"),
    "think_ms": ("whole number, 0 or more", "a holder's think between its read and its write; must be less than "
                                            "ttl_ms"),
    "work_ms": ("whole number, 1 or more", "a holder's pace between read-modify-writes"),
}

_OBSERVER_MEANING = {
    states.TRUTH: "the ground truth (the engine, and labctl's journal for what the engine cannot see)",
    states.MONITOR: "the monitor's verdict (heartbeats, the shared volume and the lock)",
    states.HEARTBEAT_ONLY: "the heartbeat-only detector (a fixed timeout)",
    states.SUPERVISOR: "the supervisor's state",
    states.PHI: "the phi accrual detector on the same heartbeats",
    states.SENDER_CLOCK: "the sender-clock detector: trusts the wall time inside the newest beat against the "
                         "monitor's own wall clock (wrong when the worker's clock is off)",
}

SECTIONS: tuple[Section, ...] = (
    Section("Top level", "A scenario file is one YAML mapping.", (
        Key("name", "string", "required", "the scenario's name; a built-in one's is its file's stem"),
        Key("lesson", "string", "required", "the one-line lesson `labctl scenarios` lists"),
        Key("description", "string", '""', "what happens and why, for the report"),
        Key("lab", "mapping", "{}", "the lab's settings (`lab.*`)"),
        Key("timeline", "list of steps", "[]", "the faults, each at its time (`timeline[].*`); "
                                               "none in a blind scenario"),
        Key("expect", "mapping", "{}", "what must hold for the run to pass (`expect.*`); none in a blind scenario"),
        Key("duration_s", "number, 1 or more", "derived", "the run's limit in seconds from the job's start: a "
            "worker lab's job must end within it (a given one shorter than the job is refused, unless "
            "`expect.job.completes` is false), a lease lab runs exactly this long; when absent it is derived "
            "(see below)"),
        Key("blind", "mapping", "-", "a blind-triage game (`blind.*`): labctl picks the fault from a seed", WORKER),
    )),
    Section("lab", "The lab's settings. A lease lab takes `kind` and its own four; a worker lab all the others.",
            tuple(Key(f"lab.{f.name}", _LAB_KEYS[f.name][0], _said(getattr(_LAB, f.name)), _LAB_KEYS[f.name][1],
                      BOTH if f.name == "kind" else LEASE if f.name in scenario.LEASE_KEYS else WORKER)
                  for f in fields(scenario.LabParams))),
    Section("timeline[]", "Each step applies a fault at `at` seconds after the job starts, and with `for`, its "
            "inverse `for` seconds later. `labctl scenarios --validate` refuses two faults on one target that "
            "cannot both hold at once (a pause while paused, a slow with a sigstop, anything but `start` while "
            "stopped), an inverse with nothing to undo, a step at or after the job's expected end, and a `for` "
            "that outlasts duration_s.", (
        Key("timeline[].at", "number, 0 or more", "required", "seconds after the job starts"),
        Key("timeline[].do", "a fault (below)", "required", "the fault; a lease lab takes "
            + ", ".join(scenario.LEASE_FAULTS)),
        Key("timeline[].target", "a service", "worker", f"worker lab: {_one_of(scenario.TARGETS)}; lease lab "
            f"(required there): {_one_of(labels.LEASE_SERVICES)}"),
        Key("timeline[].for", "number, more than 0", "-", "apply the fault's inverse this many seconds later "
            "(a fault with an inverse only); without it the fault holds until a later step undoes it or the "
            "run ends"),
        Key("timeline[].on_event", "SERVICE.KIND", "-", "from `at`, wait for that service's next event of that "
            f"kind (e.g. `alice.read`), at most {scenario.ON_EVENT_TIMEOUT_S:g} s, then act", LEASE),
        Key("timeline[].SETTING", "per fault", "per fault", "the fault's settings (the table below), as keys of "
            "the step: `{at: 2, do: loss, p: 0.4, for: 10}`"),
    )),
    Section("expect", "What the checker judges. A worker lab: windows, sees, never, job; a lease lab: lease.", (
        Key("expect.windows", "list", "[]", "what observers say while a step's fault holds "
            "(`expect.windows[].*`)", WORKER),
        Key("expect.sees", "mapping OBSERVER: list of what it says", "{}", "each observer says each of these at "
            "some time in the run", WORKER),
        Key("expect.never", "mapping OBSERVER: list of what it says", "{}", "each observer never says any of "
            "these", WORKER),
        Key("expect.job", "mapping", "{}", "the job, its outputs, exits, restarts and logs (`expect.job.*`)",
            WORKER),
        Key("expect.lease", "mapping", "{}", "the lease lab's safety (`expect.lease.*`)", LEASE),
    )),
    Section("expect.windows[]", "A window runs from its step's fault taking effect to its inverse (or the run's "
            "end). An observer's value must be said within `within_ms` of the start.", (
        Key("expect.windows[].step", "whole number, 1 to the number of steps", "required",
            "the timeline step (counted from 1) whose window this is", WORKER),
        *(Key(f"expect.windows[].{who}", "what it says (OBSERVER table)", "-", f"{_OBSERVER_MEANING[who]} says "
              "this in the window" + (" (its old name: `naive`)" if who == states.HEARTBEAT_ONLY else ""), WORKER)
          for who in states.OBSERVERS),
        Key("expect.windows[].within_ms", "whole number, 1 or more", "lab.timeout_ms + 500",
            "how long an observer may take to notice", WORKER),
        Key("expect.windows[].holds", "mapping OBSERVER: list of what it says", "{}", "all through the window "
            "(after within_ms) the observer says only these", WORKER),
        Key("expect.windows[].p99_ms_min", "number, 0 or more", "-", "the supervisor's p99 round trip reaches "
            "at least this in some second of the window (a gray fault seen in latency)", WORKER),
        Key("expect.windows[].flaps", f"mapping {_one_of(scenario.FLAP_OBSERVERS)}: {{min, max}}", "{}",
            "how many times that detector turns DEAD in the window: a detector flapping, or riding it out", WORKER),
        Key("expect.windows[].flaps.OBSERVER.min", "whole number", "-", "at least this many times (give min, max "
            "or both)", WORKER),
        Key("expect.windows[].flaps.OBSERVER.max", "whole number", "-", "at most this many times", WORKER),
    )),
    Section("expect.job", "The supervisor's job, judged against the oracle.", (
        Key("expect.job.completes", "true or false", _said(_JOB.completes), "the supervisor exits 0 with its "
            "summary written", WORKER),
        Key("expect.job.exactly_once", "true or false", _said(_JOB.exactly_once), "every valid item once, its "
            "square right; negatives reported, malformed rejected, poison dead-lettered (when completes)", WORKER),
        Key("expect.job.dead_lettered", "whole number, 0 or more", "-", "items dead-lettered", WORKER),
        Key("expect.job.corrupted", "whole number, 0 or more", "-", "corrupted readings reported", WORKER),
        Key("expect.job.min_worker_restarts", "whole number, 0 or more", "-", "restarts by policy, at least",
            WORKER),
        Key("expect.job.max_worker_restarts", "whole number, 0 or more", "-", "restarts by policy, at most",
            WORKER),
        Key("expect.job.worker_exit_codes", "list of whole numbers 0 to 255", _said(_JOB.worker_exit_codes),
            "each is among the worker's exit codes", WORKER),
        Key("expect.job.exit_code", "whole number, 0 or more", "-", "the program's (lab.program) exit code",
            WORKER),
        Key("expect.job.log_contains", "list of strings", _said(_JOB.log_contains), "each is in the lab's logs",
            WORKER),
        Key("expect.job.undetected_corruption_min", "whole number, 0 or more", "-", "the oracle finds at least "
            "this many results with a wrong square (silent corruption the job did not catch); give "
            "exactly_once: false with it", WORKER),
        Key("expect.job.undetected_corruption_max", "whole number, 0 or more", "-", "at most this many",
            WORKER),
        Key("expect.job.detection_coverage_min", "number, 0 to 1", "-", "corrupt results the supervisor "
            "detected / results the worker's bitflip corrupted (its count), at least this; needs some injected",
            WORKER),
    )),
    Section("expect.lease", "The lease lab's checks (labctl/lease.py).", (
        Key("expect.lease.safe", "true or false", _said(_LEASE.safe), "true: the store's accepted writes are safe "
            "(no token below an earlier one, no lost update); false: the checker must find the lost update "
            "(fencing off)", LEASE),
        Key("expect.lease.zombie", "true or false", _said(_LEASE.zombie), "two holders believed they held the "
            "lease at once, and the old one wrote after the new one had its token", LEASE),
        Key("expect.lease.min_fenced", "whole number, 0 or more", _said(_LEASE.min_fenced), "the store refused at "
            "least this many writes", LEASE),
    )),
    Section("blind", "A blind scenario has no timeline and no expect: the seed picks one fault of `choices`, its "
            "start and its length (whole half seconds), and the run takes that fault's own scenario's step and "
            "expectations (labctl/blind.py).", (
        Key("blind.choices", f"list of two or more of {', '.join(scenario.BLIND_FAULTS)}", "required",
            "the faults to pick from", WORKER),
        Key("blind.at", "[least, most], seconds, 0 or more", f"[{_BLIND.at[0]:g}, {_BLIND.at[1]:g}]",
            "the range of the step's start", WORKER),
        Key("blind.for", "[least, most], seconds, 0.5 or more", f"[{_BLIND.for_s[0]:g}, {_BLIND.for_s[1]:g}]",
            "the range of its length; the latest end must come before duration_s", WORKER),
    )),
)

_D, _SLACK = scenario.DEFAULT_DURATION_S, scenario.DURATION_SLACK_S
DURATION_RULE = f"""\
## duration_s, when the file gives none

labctl derives it, so that no limit you never saw cuts a job off. With
`job` the job's length at its pace (`lab.items / lab.rate`) and `last` the
timeline's last step end (`at` plus `for`, or a blind game's latest end):

- a worker lab with a paced job (`lab.rate` more than 0): the largest of
  {_D:g} s, 2 x `job` plus {_SLACK:g} s, and `last` plus {_SLACK:g} s;
- an unpaced job (`lab.rate: 0`, its length unknown): the larger of {_D:g} s
  and `last` plus {_SLACK:g} s; give `duration_s` for a longer job;
- a lease lab (no job: it runs exactly its duration): the larger of
  {scenario.LEASE_MIN_DURATION_S:g} s and `last` plus {scenario.LEASE_SETTLE_S:g} s;

rounded up to a whole second. `labctl scenarios --validate FILE` prints the
value. A `duration_s` given below the job's expected length, a step at or
after the job's expected end (a lease lab: the run's end), and a `for` that
ends after `duration_s` are refused before the lab starts.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(_cell(c) for c in r) + " |" for r in rows)]


def _faults() -> list[str]:
    """Every fault a step's `do` takes, with its settings, from faults.FAULTS."""
    rows: list[tuple[str, ...]] = []
    for f in faults.FAULTS.values():
        kinds = BOTH if f.name in scenario.LEASE_FAULTS else WORKER
        undo = f"`{f.inverse}`" if f.inverse else "-"
        settings = "; ".join(
            f"`{p.name}`: {_param_type(p)}, {'required' if p.default is None else f'default {_said(p.default)}'}, "
            f"{p.help}" for p in f.params) or "-"
        rows.append((f"`{f.name}`", kinds, undo, f.description, settings))
    return _table(("do", "lab", "undone by (`for`)", "what it does", "settings (`timeline[].SETTING`)"), rows)


def _param_type(p: faults.Param) -> str:
    if p.choices:
        return _one_of(p.choices)
    return f"number {p.lo:g} to {p.hi:g}" if p.lo is not None and p.hi is not None else "number"


def keys() -> list[Key]:
    return [k for s in SECTIONS for k in s.keys]


def markdown() -> str:
    """The schema as markdown: what `labctl scenarios --schema` prints and docs/scenarios.md holds."""
    out = ["# The scenario file's keys", "",
           "`labctl scenarios --schema` prints this section; `lab` says which lab kind a key applies to "
           "(`lab.kind`: worker or lease).", ""]
    for s in SECTIONS:
        out += [f"## {s.title}", "", s.intro, ""]
        out += _table(("key", "type", "default", "lab", "meaning"),
                      [(f"`{k.path}`", k.type, k.default, k.kind, k.meaning) for k in s.keys])
        out.append("")
    out += ["## Faults (`timeline[].do`)", "",
            "A fault with an inverse can take `for`; the inverse can also be its own step. Settings without a "
            "default must be given.", ""]
    out += _faults()
    out += ["", "## Observers (OBSERVER)", "",
            "The keys of `expect.sees`, `expect.never`, a window's observer keys and `holds`, and what each may "
            "say.", ""]
    out += _table(("observer", "who", "says one of"),
                  [(f"`{who}`", _OBSERVER_MEANING[who], ", ".join(states.SAYS[who])) for who in states.OBSERVERS])
    out += ["", DURATION_RULE.rstrip(), ""]
    return "\n".join(out)
