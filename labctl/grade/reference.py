"""The reference submission: the lab's own programs under the exercise
sheet's names, each file standing alone as a student's would.

Nothing here is a second copy of a program. Each exercise file is made, when
asked, from the lab's sources:

| exercise file | made from |
|---|---|
| generateData.py, processData.py | images/supervisor/generate_data.py, process_data.py |
| worker.c, naive_worker.c, robust_worker.c | images/exercises/NAME, with its `#include "../worker/worker.c"` expanded |
| monitor.py | images/monitor/monitor.py |
| hardcore_worker.c | images/worker/worker.c |
| supervisor.py | images/supervisor/supervisor.py |

Run without arguments, as the sheet runs them, the lab's Python programs are
the exercises' programs; the C ones are thin builds that set the worker's
defaults (images/exercises/Makefile says how). `worker_source(defaults)`
builds the same way the grader's instrumented stand-in workers.

    python -m labctl.grade.reference DIR    # writes the reference submission into DIR
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from labctl.compose import IMAGES_DIR

WORKER_C = IMAGES_DIR / "worker" / "worker.c"
EXERCISES_DIR = IMAGES_DIR / "exercises"
SOURCES: dict[str, Path] = {
    "generateData.py": IMAGES_DIR / "supervisor" / "generate_data.py",
    "processData.py": IMAGES_DIR / "supervisor" / "process_data.py",
    "worker.c": EXERCISES_DIR / "worker.c",
    "monitor.py": IMAGES_DIR / "monitor" / "monitor.py",
    "naive_worker.c": EXERCISES_DIR / "naive_worker.c",
    "robust_worker.c": EXERCISES_DIR / "robust_worker.c",
    "hardcore_worker.c": WORKER_C,
    "supervisor.py": IMAGES_DIR / "supervisor" / "supervisor.py",
}
# A quoted include of a C file: a thin build's only way to reach the worker.
_INCLUDE_C = re.compile(r'^#include "([^"]+\.c)"[ \t]*$', re.M)


def expand(path: Path, _seen: tuple[Path, ...] = ()) -> str:
    """path's text with each `#include "x.c"` line replaced by x.c's text
    (itself expanded), so the result compiles alone."""
    path = path.resolve()
    if path in _seen:
        raise ValueError(f"{path} includes itself")
    text = path.read_text(encoding="utf-8")

    def inline(m: re.Match[str]) -> str:
        included = path.parent / m.group(1)
        return f"/* ---- {m.group(1)}, included here ---- */\n" + expand(included, (*_seen, path))

    return _INCLUDE_C.sub(inline, text)


def files() -> dict[str, bytes]:
    """Exercise file name -> its content in the reference submission."""
    return {name: (expand(src) if name.endswith(".c") else src.read_text(encoding="utf-8")).encode()
            for name, src in SOURCES.items()}


def build(dest: Path | str) -> Path:
    """Writes the reference submission (every exercise's files) into dest."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in files().items():
        (dest / name).write_bytes(data)
    return dest


def c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def worker_source(defaults: Sequence[str], what: str) -> bytes:
    """The lab's worker as one C file whose defaults are these arguments (a
    thin build made on the fly); `what` says what it is for, in a comment."""
    if not defaults:
        raise ValueError("a thin build needs at least one default argument")
    head = (f"/* {what}: the lab's worker (images/worker/worker.c) with default arguments. */\n"
            f"#define WORKER_DEFAULT_ARGS {', '.join(map(c_string, defaults))}\n")
    return (head + expand(WORKER_C)).encode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labctl.grade.reference",
                                 description="Write the lab's reference submission (all four exercises) into DIR.")
    ap.add_argument("dir", type=Path)
    args = ap.parse_args(argv)
    out = build(args.dir)
    sys.stdout.write(f"{out}: {', '.join(SOURCES)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
