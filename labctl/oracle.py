"""What a correct job must produce, computed from the input alone, and the
comparison of a run's outputs against it. Independent of the programs: it
reimplements the worker's grammar from the contract, not from its code."""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

NUMBER = re.compile(rb"^[ \t]*([+-]?[0-9]+)[ \t]*\r?$")
SQUARE_MAX = 3037000499  # floor(sqrt(2**63 - 1))
MAX_LINE = 1 << 20  # the worker rejects any line this long, padded number or not


@dataclass
class Expected:
    results: list[tuple[int, int, int]] = field(default_factory=list)
    corrupted: list[tuple[int, int]] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    poison: list[int] = field(default_factory=list)


def expected(lines: list[bytes], trigger: int | None = 999) -> Expected:
    want = Expected()
    for idx, raw in enumerate(lines, 1):
        m = NUMBER.match(raw) if len(raw) < MAX_LINE else None
        if not m:
            want.rejected.append(idx)
            continue
        if len(m.group(1).lstrip(b"+-").lstrip(b"0")) > 19:  # beyond int64, whatever the sign
            want.rejected.append(idx)
            continue
        v = int(m.group(1))
        if not -(2**63) <= v < 2**63:  # the worker cannot even read it: out of range
            want.rejected.append(idx)
            continue
        if trigger is not None and v == trigger:
            want.poison.append(idx)
        elif v < 0:
            want.corrupted.append((idx, v))
        elif v > SQUARE_MAX:
            want.rejected.append(idx)
        else:
            want.results.append((idx, v, v * v))
    return want


def input_lines(data: bytes) -> list[bytes]:
    """The supervisor's reading of an input file: a last line without newline counts."""
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


@dataclass
class Outputs:
    results: list[tuple[int, ...]]  # (index, n, square) as read: the widths are checked by read_outputs
    corrupted: list[tuple[int, ...]]  # (index, value)
    rejected: list[int]
    dead: list[int]
    problems: list[str]


# The supervisor's checkpoint keys (its `sizes`) for each output file.
FILE_KEYS = {"results.csv": "results", "corrupted.csv": "corrupted", "rejected.csv": "rejected",
             "dead-letter.csv": "dead"}


def read_outputs(outdir: Path, sizes: dict[str, int] | None = None) -> Outputs:
    """The outputs as written; with `sizes` (a checkpoint's), only the part the
    checkpoint vouches for: rows past it belong to items it will send again."""
    problems: list[str] = []

    def rows(name: str, width: int) -> list[list[str]]:
        path = outdir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            return []
        if sizes is not None and FILE_KEYS[name] in sizes:
            data = data[:sizes[FILE_KEYS[name]]]
        text = data.decode("utf-8", "replace")
        out = []
        for lineno, row in enumerate(csv.reader(io.StringIO(text)), 1):
            if lineno == 1:
                continue  # header
            if len(row) < width:
                problems.append(f"{name} line {lineno}: {len(row)} fields, expected {width}")
                continue
            out.append(row)
        return out

    def ints(name: str, row: list[str], n: int, lineno: int) -> tuple[int, ...] | None:
        try:
            return tuple(int(x) for x in row[:n])
        except ValueError:
            problems.append(f"{name}: a row is not numeric: {row!r}")
            return None

    results = [r for r in (ints("results.csv", row, 3, i) for i, row in enumerate(rows("results.csv", 3))) if r]
    corrupted = [r for r in (ints("corrupted.csv", row, 2, i) for i, row in enumerate(rows("corrupted.csv", 2))) if r]
    rejected = [int(row[0]) for row in rows("rejected.csv", 2) if row[0].isdigit()]
    dead = [int(row[0]) for row in rows("dead-letter.csv", 4) if row[0].isdigit()]
    return Outputs(results, corrupted, rejected, dead, problems)


def wrong_squares(outdir: Path) -> list[int]:
    """The results.csv rows whose square is not n*n (silent corruption the
    job did not catch): their items, in the file's order."""
    return [idx for idx, n, sq in read_outputs(outdir).results if sq != n * n]


def compare(outdir: Path, input_path: Path, trigger: int | None, upto: int | None = None,
            sizes: dict[str, int] | None = None, squares: bool = True) -> list[str]:
    """Every way the outputs differ from the oracle; empty when exactly once
    and right. `upto`: only the first items (a job stopped at a checkpoint,
    whose `sizes` bound the outputs). squares=False: wrong squares are left
    to wrong_squares() (a lab that expects them)."""
    try:
        lines = input_lines(input_path.read_bytes())
    except FileNotFoundError:
        return [f"input {input_path} is missing"]
    if upto is not None:
        lines = lines[:upto]
    want = expected(lines, trigger)
    got = read_outputs(outdir, sizes)
    problems = list(got.problems)
    seen: dict[int, int] = {}
    for idx, n, sq in got.results:
        seen[idx] = seen.get(idx, 0) + 1
        if squares and sq != n * n:
            problems.append(f"results.csv: item {idx}: {n} squared is {n * n}, not {sq}")
    dups = sorted(i for i, c in seen.items() if c > 1)
    if dups:
        problems.append(f"results.csv: {len(dups)} item(s) appear more than once, first {dups[:5]}")
    want_idx = {i: (n, sq) for i, n, sq in want.results}
    lost = sorted(set(want_idx) - set(seen))
    if lost:
        problems.append(f"results.csv: {len(lost)} valid item(s) lost, first {lost[:5]}")
    extra = sorted(set(seen) - set(want_idx))
    if extra:
        problems.append(f"results.csv: {len(extra)} row(s) for items that are not valid, first {extra[:5]}")
    wrong = sorted(i for i, n, sq in got.results if i in want_idx and want_idx[i][0] != n)
    if wrong:
        problems.append(f"results.csv: {len(wrong)} row(s) answer another reading, first {wrong[:5]}")
    if sorted(got.corrupted) != sorted(want.corrupted):
        problems.append(f"corrupted.csv: expected readings {sorted(want.corrupted)[:5]}, "
                        f"got {sorted(got.corrupted)[:5]}")
    if sorted(got.rejected) != sorted(want.rejected):
        problems.append(f"rejected.csv: expected lines {sorted(want.rejected)[:5]}, got {sorted(got.rejected)[:5]}")
    if sorted(got.dead) != sorted(want.poison):
        problems.append(f"dead-letter.csv: expected lines {sorted(want.poison)[:5]}, got {sorted(got.dead)[:5]}")
    return problems
