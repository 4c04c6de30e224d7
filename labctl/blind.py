"""Blind triage: labctl picks a fault from a seed, the student sees only the
supervisor, names the fault, and only then sees the truth.

A blind scenario (`blind:` in its file) names the faults to pick from and the
ranges of the step's start and length; it has no timeline and no expect of
its own. From the seed labctl derives, the same on every machine and Python:

    h = sha256(b"labctl-blind:<seed>")
    fault  = choices[int(h[0:4], big-endian) % len(choices)]
    at     = at_least  + 0.5 * (h[4] % (number of half seconds from at_least to at_most, both counted))
    for    = for_least + 0.5 * (h[5] % (the same for the length))

and writes a concrete scenario: the blind file's name, lesson and lab, and
the step and expectations of that fault's own scenario (SOURCES), its start
and length replaced (a crash has no length). The run directory's
scenario.yaml is that concrete file, so the checker judges the run exactly as
it judges the fault's own scenario. `blind.json` records the game: seed,
choices, fault, answer, score.

This module prints nothing: cli.py asks and reveals.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from labctl import faults, runlog, scenario, states
from labctl.errors import ExitCode, LabError
from labctl.runlog import Event

# The built-in scenario whose step and expectations each fault brings (the
# crash is the SIGKILL of scenario-sigkill: a step at a time of our choosing,
# where the bug trigger's crash comes when the data reaches it).
SOURCES = {
    "crash": "scenario-sigkill",
    "pause": "scenario-pause",
    "partition": "scenario-partition",
    "sigstop": "scenario-sigstop",
    "slow": "scenario-gray-worker",
}
FILE = "blind.json"  # in the run directory
STEP_S = 0.5  # the start and the length are whole half seconds
SEED_MAX = 9999  # a seed labctl picks itself is at most this: short enough to write on a board


@dataclass
class Game:
    """One game: what the seed picked, and the concrete scenario that runs it."""
    seed: int
    choices: list[str]
    fault: str
    at: float
    for_s: float | None
    source: str  # the scenario whose step and expectations apply

    def describe(self) -> str:
        length = f" for {self.for_s:g} s" if self.for_s is not None else ""
        return f"{self.fault} of the worker at +{self.at:g} s{length} (the step and checks of {self.source})"


def random_seed() -> int:
    return random.SystemRandom().randint(0, SEED_MAX)


def _pick(lo_hi: tuple[float, float], byte: int) -> float:
    lo, hi = lo_hi
    n = int((hi - lo) / STEP_S + 1e-9) + 1
    return lo + STEP_S * (byte % n)


def derive(blind: scenario.Blind, seed: int) -> Game:
    """The fault, its start and its length, from the seed alone (see the module's docstring)."""
    h = hashlib.sha256(f"labctl-blind:{seed}".encode()).digest()
    fault = blind.choices[int.from_bytes(h[0:4], "big") % len(blind.choices)]
    has_length = faults.get(fault).inverse is not None
    return Game(seed, list(blind.choices), fault, _pick(blind.at, h[4]),
                _pick(blind.for_s, h[5]) if has_length else None, SOURCES[fault])


def _yaml(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise LabError(ExitCode.BAD_SCENARIO, f"{path.name}: expected a mapping")
    return doc


def concrete_doc(sc: scenario.Scenario, game: Game) -> dict[str, Any]:
    """The scenario that runs: the blind file's name, lesson and lab; the source's step and expectations."""
    mine = _yaml(sc.path)
    src = _yaml(scenario.BUILTIN_DIR / f"{game.source}.yaml")
    step = dict(src["timeline"][0])
    step["at"] = game.at
    if game.for_s is not None:
        step["for"] = game.for_s
    return {
        "name": sc.name, "lesson": sc.lesson,
        "description": (sc.description.strip() + "\n\n" if sc.description.strip() else "")
        + f"This run (seed {game.seed}): {game.describe()}.\n",
        "lab": mine.get("lab") or {}, "timeline": [step], "expect": src.get("expect") or {},
        "duration_s": sc.duration_s,
    }


class _Dumper(yaml.SafeDumper):
    """Writes a text of several lines as a block (`|`), as the scenario files do."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                             style="|" if "\n" in s else None))


def write_concrete(sc: scenario.Scenario, game: Game, directory: Path) -> scenario.Scenario:
    """The concrete scenario, written to DIR/<name>.yaml (the run copies it) and read back: it must parse."""
    path = directory / f"{sc.name}.yaml"
    path.write_text(yaml.dump(concrete_doc(sc, game), Dumper=_Dumper, sort_keys=False, width=110))
    return scenario.load(path)


# ----------------------------------------------------------------------- the answer


def normalise(text: str, choices: list[str]) -> str | None:
    """A typed answer: a choice's name (any case) or its number in the list; None if it is neither."""
    t = text.strip().lower()
    if t.isdigit() and 1 <= int(t) <= len(choices):
        return choices[int(t) - 1]
    return t if t in choices else None


def score(answer: str | None, fault: str) -> int:
    """1 for the fault itself, else 0 (no answer scores 0): a pause is not a sigstop, as the monitor knows."""
    return int(answer is not None and answer == fault)


def record(run_dir: Path, game: Game, answer: str | None, how: str) -> dict[str, Any]:
    """blind.json: the game and its answer. `how`: flag (--answer), prompt, none or interrupted."""
    doc = {**{k: v for k, v in asdict(game).items() if k != "for_s"}, "for": game.for_s,
           "answer": answer, "answered": how, "correct": answer == game.fault, "score": score(answer, game.fault)}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def read(run_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((Path(run_dir) / FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# ----------------------------------------------------------------------- the reveal


def lane(events: list[Event], who: str) -> str:
    """What one observer said, each change once: `HEALTHY -> PAUSED -> HEALTHY`."""
    said: list[str] = []
    for _, what in runlog.observed(events, who):
        if not said or said[-1] != what:
            said.append(what)
    return " -> ".join(said) or "-"


def reveal_lines(game: Game, answer: str | None, events: list[Event]) -> list[str]:
    """The truth, every observer's lane, then the verdict on the answer: lines for the terminal."""
    got = score(answer, game.fault)
    if answer is None:
        verdict = f"no answer: score 0 (it was {game.fault})"
    else:
        verdict = f"your answer: {answer}: " + ("right" if got else f"wrong, it was {game.fault}") + f"; score {got}"
    return [
        f"the fault (seed {game.seed}): {game.describe()}",
        f"  ground truth:   {lane(events, states.TRUTH)}",
        f"  monitor:        {lane(events, states.MONITOR)}",
        f"  heartbeat-only: {lane(events, states.HEARTBEAT_ONLY)}",
        f"  phi (accrual):  {lane(events, states.PHI)}",
        f"  supervisor:     {lane(events, states.SUPERVISOR)}",
        verdict,
    ]


def report_lines(doc: dict[str, Any]) -> list[str]:
    """report.md's section on the game, from blind.json (it goes after the head, before the checks)."""
    length = f" for {doc['for']:g} s" if doc.get("for") is not None else ""
    answer = doc.get("answer") or "no answer"
    return ["## Blind triage", "",
            f"Seed {doc.get('seed')}; choices: {', '.join(doc.get('choices') or [])}. The fault: "
            f"`{doc.get('fault')}` of the worker at +{doc.get('at', 0):g} s{length} (the step and checks of "
            f"{doc.get('source')}).", "",
            f"Answer: {answer} ({'right' if doc.get('correct') else 'wrong'}); score {doc.get('score', 0)}.", ""]
