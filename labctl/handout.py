"""`labctl handout DIR`: the students' starting folder for the four exercises.

DIR is written flat, as a submission `labctl grade` takes (the sheet's file
names at its top): a skeleton per exercise file, each with its contract in a
comment block and nothing of a solution; generateData.py complete, the lab's
own (labctl.grade.reference maps the sheet's names to the lab's sources);
and a README.md on running the programs in the lab, on grading, and on the
scenarios to watch.

Nothing here is hand-copied from the grader: every list of tests (in each
skeleton's comment and in the README's table) is made from
labctl.grade.catalog, the compiler flags are the sandbox's, and the
scenarios are the built-in ones, so a handout never drifts from what
`labctl grade` checks. The skeletons' texts are in labctl/handout_files/.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from labctl import scenario
from labctl.errors import ExitCode, LabError
from labctl.grade import catalog, reference
from labctl.grade.catalog import EXERCISE_FILES, TestDef
from labctl.grade.sandbox import CFLAGS
from labctl.grade.submission import safe_name

TEMPLATES = Path(__file__).resolve().parent / "handout_files"
README = "README.md"
# Handed out complete: the lab's own program, as the reference submission has it.
GIVEN = ("generateData.py",)
SKELETONS = tuple(f for f in EXERCISE_FILES if f not in GIVEN)
# The built-in scenarios that show each exercise's failures on the lab's own programs.
WATCH: dict[int, tuple[str, ...]] = {
    1: ("scenario-process-data", "scenario-corrupt"),
    2: ("scenario-crash", "scenario-sigstop", "scenario-pause"),
    3: ("scenario-stale-lock", "scenario-crash"),
    4: ("scenario-crash", "scenario-graceful", "scenario-pause", "scenario-partition"),
}
_WIDTH = 78


def tests_of(name: str) -> list[TestDef]:
    """The catalog's tests that run this exercise file, in number order."""
    return [t for t in catalog.tests_for([EXERCISE_FILES[name]]) if name in t.files]


def points(t: TestDef) -> str:
    return "info" if t.informational else f"{t.points:g}"


def contract_lines(name: str, prefix: str) -> str:
    """The tests of one file as comment lines: number, name and points, then what is expected."""
    out: list[str] = []
    for t in tests_of(name):
        if t.visibility == "hidden":
            out.append(f"{prefix}  {t.number:<5} a hidden test ({points(t)} points)")
            continue
        worth = "informational, no points" if t.informational else f"{points(t)} points"
        out.append(f"{prefix}  {t.number:<5} {t.name} ({worth})")
        text = t.description.replace("*/", "* /")  # a C comment must not end early
        out += textwrap.wrap(text, _WIDTH, initial_indent=f"{prefix}{'':8}", subsequent_indent=f"{prefix}{'':8}")
    return "\n".join(out)


def skeleton(name: str) -> str:
    """One exercise file's skeleton: its template with the file's tests and the sandbox's compiler flags."""
    prefix = " *" if name.endswith(".c") else "#"
    text = (TEMPLATES / f"{name}.tmpl").read_text(encoding="utf-8")
    return text.replace("@TESTS@", contract_lines(name, prefix)).replace("@CFLAGS@", " ".join(CFLAGS))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def grading_table() -> str:
    """The README's "how you will be graded": one Markdown table per exercise, from the catalog."""
    out: list[str] = []
    for ex in catalog.EXERCISES:
        tests = catalog.tests_for([ex])
        files = ", ".join(f"`{f}`" for f, e in EXERCISE_FILES.items() if e == ex)
        total = sum(t.points for t in tests)
        out += [f"### Exercise {ex}: {files} ({total:g} points)", "",
                "| # | test | points | what is expected |", "|---|---|---|---|"]
        for t in tests:
            if t.visibility == "hidden":
                out.append(f"| {t.number} | (hidden) | {points(t)} | counts in your score, not described |")
                continue
            mark = " †" if t.visibility == "after_published" else ""
            out.append(f"| {t.number} | {_cell(t.name)}{mark} | {points(t)} | {_cell(t.description)} |")
        out.append("")
    return "\n".join(out)


def files_table() -> str:
    rows = ["| exercise | file | in this folder |", "|---|---|---|"]
    for name, ex in EXERCISE_FILES.items():
        what = "complete: the lab's data generator" if name in GIVEN else "a skeleton for you to fill in"
        rows.append(f"| {ex} | `{name}` | {what} |")
    return "\n".join(rows)


def scenarios_table() -> str:
    """The built-in scenarios with their lessons, and the exercises each one shows."""
    rows = ["| scenario | for exercise | lesson |", "|---|---|---|"]
    for sc in scenario.builtin():
        exercises = ", ".join(str(ex) for ex, names in WATCH.items() if sc.name in names) or "-"
        rows.append(f"| `{sc.name}` | {exercises} | {_cell(sc.lesson)} |")
    return "\n".join(rows)


def readme(dir_name: str) -> str:
    text = (TEMPLATES / f"{README}.tmpl").read_text(encoding="utf-8")
    for key, value in (("@FILES@", files_table()), ("@GRADING@", grading_table()),
                       ("@SCENARIOS@", scenarios_table()), ("@CFLAGS@", " ".join(CFLAGS)),
                       ("@DIR@", dir_name), ("@NAME@", safe_name(dir_name))):
        text = text.replace(key, value)
    return text


def contents(dir_name: str = "handout") -> dict[str, str]:
    """File name -> text of everything the handout holds."""
    given = reference.files()
    out = {name: given[name].decode("utf-8") if name in GIVEN else skeleton(name) for name in EXERCISE_FILES}
    out[README] = readme(dir_name)
    return out


def _check_dest(dest: Path, force: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise LabError(ExitCode.USAGE, f"{dest} exists and is not a directory", "name a new or empty directory")
    entries = sorted(p.name for p in dest.iterdir()) if dest.is_dir() else []
    if entries and not force:
        raise LabError(ExitCode.USAGE, f"{dest} is not empty ({len(entries)} entries, e.g. {entries[0]})",
                       "name a new or empty directory, or add --force to overwrite the handout's files there")
    for name in (*EXERCISE_FILES, README):
        if (dest / name).is_dir() and not (dest / name).is_symlink():
            raise LabError(ExitCode.USAGE, f"{dest / name} is a directory", "move it away, or name another DIR")


def write(dest: Path | str, force: bool = False) -> list[Path]:
    """Writes the handout into dest (created if need be); returns the files written.
    A non-empty dest is refused unless force, which overwrites only the handout's own files."""
    dest = Path(dest)
    _check_dest(dest, force)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in contents(dest.resolve().name).items():
        path = dest / name
        if path.is_symlink():
            path.unlink()  # replace the link itself, never write through it
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
