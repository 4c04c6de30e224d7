#!/usr/bin/env python3
"""The exercise-1 program: process sensor readings one by one, with logging.

Each reading n is squared and logged at INFO. A negative reading is corrupted
data: WARNING, skipped. A reading of 0 means the sensor is dead: CRITICAL, and
processing stops (exit 2), because every later reading is untrustworthy. A
line that is not a number is logged at WARNING and skipped.

    process_data.py [INPUT] [--log PATH]

Log format: the exercise's timestamped `time - LEVEL - message`.
"""
from __future__ import annotations

import argparse
import logging
import sys

EXIT_SENSOR_DEAD = 2
EXIT_NO_INPUT = 66


def process(lines, log: logging.Logger) -> tuple[int, list[tuple[int, int]]]:
    """Returns (exit code, [(reading, square)]) for the readings processed."""
    results = []
    for lineno, raw in enumerate(lines, 1):
        text = raw.strip()
        try:
            n = int(text)
        except ValueError:
            log.warning("line %d: not a number (%r); skipping", lineno, text[:64])
            continue
        if n < 0:
            log.warning("line %d: corrupted data %d; skipping", lineno, n)
            continue
        if n == 0:
            log.critical("line %d: reading 0, the sensor is dead; stopping", lineno)
            return EXIT_SENSOR_DEAD, results
        results.append((n, n * n))
        log.info("line %d: %d -> %d", lineno, n, n * n)
    log.info("processed %d readings", len(results))
    return 0, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Process sensor readings (exercise 1).")
    ap.add_argument("input", nargs="?", default="input.dat")
    ap.add_argument("--log", help="also write the log to this file")
    args = ap.parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log:
        handlers.append(logging.FileHandler(args.log))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(levelname)s - %(message)s", handlers=handlers)
    log = logging.getLogger("process_data")
    try:
        with open(args.input, encoding="utf-8", errors="replace", newline=None) as f:
            code, _ = process(f, log)
    except FileNotFoundError:
        log.critical("input file %s not found", args.input)
        return EXIT_NO_INPUT
    return code


if __name__ == "__main__":
    sys.exit(main())
