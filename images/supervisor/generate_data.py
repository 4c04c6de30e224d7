#!/usr/bin/env python3
"""The exercise's data set: sensor readings, with faults mixed in.

Valid readings are integers 1-100. Mixed in, once each, at positions drawn
from the seed: -10 and -25 (corrupted readings: a simulated hardware fault),
0 (a dead sensor, which process_data.py treats as critical) and 999 (the
worker's bug trigger). The same N and seed always give the same file.

    generate_data.py N [--seed S] [--output PATH]

Run without arguments, as the exercise sheet runs its generateData.py, it is
exercise 1's generator: 100 random valid readings, then the four faults in
the sheet's order at the end, written to input.dat, and a line saying so.
"""
from __future__ import annotations

import argparse
import os
import random
import sys

SPECIALS = (-10, 0, 999, -25)
EXERCISE_VALID = 100  # exercise 1: 100 valid readings, then the specials


def generate(n: int, seed: int | None, specials_at_end: bool = False) -> list[int]:
    """n readings: n - 4 valid ones with the four specials at seeded positions,
    or after them in SPECIALS' order (the exercise's layout). seed None: a
    fresh seed from the system."""
    if n < 0:
        raise ValueError("the number of readings cannot be negative")
    rng = random.Random(seed)
    specials = SPECIALS[: min(n, len(SPECIALS))]
    values = [rng.randint(1, 100) for _ in range(n - len(specials))]
    if specials_at_end:
        return values + list(specials)
    for s in specials:
        values.insert(rng.randrange(len(values) + 1), s)
    return values


def write(path: str, values: list[int]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write("".join(f"{v}\n" for v in values))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate the exercise's sensor data set.",
                                 epilog="Without arguments: exercise 1's data, 100 random valid readings and "
                                        "then the faults, in input.dat.")
    ap.add_argument("n", type=int, nargs="?", help="number of readings (4 of them are the faults)")
    ap.add_argument("--seed", type=int, help="default 42 with N; a fresh one for the exercise's data")
    ap.add_argument("--output", default="input.dat", help="file to write (default: input.dat)")
    args = ap.parse_args(argv)
    exercise = args.n is None
    if exercise:
        values = generate(EXERCISE_VALID + len(SPECIALS), args.seed, specials_at_end=True)
    elif args.n < 0:
        ap.error("N must be 0 or more")
    else:
        values = generate(args.n, 42 if args.seed is None else args.seed)
    try:
        write(args.output, values)
    except OSError as e:
        print(f"generate_data: error: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        return 73
    if exercise:
        print(f"Generated {len(values)} readings in {args.output}: {EXERCISE_VALID} valid ones, then the faults "
              + ", ".join(map(str, SPECIALS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
