#!/usr/bin/env python3
"""Supervisor: feeds input to the worker and collects every result exactly once.

The job coordinator of the lab. It streams input lines to the worker's
`--listen` port with a window of items in flight and survives everything that
can happen to the worker:

* a crash (reset, refused, EOF with items in flight): CRITICAL, check the lock
  file on the shared volume, reconnect with backoff and jitter, resume from the
  first unacknowledged item;
* a poison item: after a crash, items are resent one at a time until the
  culprit is isolated; an item that crashed the worker --max-item-crashes times
  is dead-lettered and skipped, so the job completes;
* a timeout: no response in T ms. A timeout cannot tell a crash from a pause
  from a partition, so the items stay in flight and the supervisor reconnects;
* its own death: outputs are append-only and a durable checkpoint (after flush
  and fsync) records how far they are valid; a restart truncates them back to
  it and resumes, so no row is lost or doubled.

With --spawn CMD it is exercise 4's supervisor instead: it starts the worker
as its own child process and talks to it over pipes (SpawnSupervisor below),
with the same outputs, checkpoint and events. Run without arguments, as the
exercise sheet runs it (`python3 supervisor.py`), it does exactly that with
the sheet's names: generateData.py makes input.dat if it is missing, then
./hardcore_worker is fed every line, restarted after a crash past the line
that killed it, and stopped with SIGTERM at the end.

Standard library only: the image builds offline. Console log on stderr in the
exercise's format; events as JSON lines on stdout (docs/events.md).
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import logging
import operator
import os
import random
import re
import selectors
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import compress, repeat
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 64
EXIT_DATAERR = 65
EXIT_NOINPUT = 66
EXIT_UNAVAILABLE = 69
EXIT_CANTCREAT = 73
EXIT_IOERR = 74

OUTPUTS = {
    "results": ("results.csv", b"index,n,square\n"),
    "corrupted": ("corrupted.csv", b"index,value\n"),
    "rejected": ("rejected.csv", b"index,reason\n"),
    "dead": ("dead-letter.csv", b"index,item,reason,crashes\n"),
}
CHECKPOINT = "checkpoint.json"
CHECKPOINT_EVERY_S = 0.5
PROGRESS_EVERY_S = 0.5
LATENCY_EVERY_S = 1.0  # a `latency` event per second of streaming with responses in it
SEND_CHUNK = 4096  # items joined into one send buffer
CACHED_CONNECT_S = 0.3  # a live worker on the lab's bridge answers in well under a millisecond

log = logging.getLogger("supervisor")


# --------------------------------------------------------------------------- events


class Events:
    """One JSON object per line: ts (Unix seconds), source, kind, fields."""

    def __init__(self, source: str, path: str | None, stream=sys.stdout):
        self.source = source
        self.stream = stream
        self.file = open(path, "a", buffering=1, encoding="utf-8") if path else None

    def emit(self, kind: str, **fields) -> None:
        rec = {"ts": round(time.time(), 6), "source": self.source, "kind": kind, **fields}
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        try:
            self.stream.write(line)
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # a gone reader must not stop the job
        if self.file:
            self.file.write(line)


# --------------------------------------------------------------------------- responses


class ProtocolError(Exception):
    """A response that is not one of the worker's forms, or answers another item."""


RESULT, CORRUPTED, REJECTED = "result", "corrupted", "rejected"
CORRUPTED_PREFIX = b"ERROR: Corrupted data "


def parse_response(line: bytes, check: bool = True) -> tuple[str, object]:
    """One response line (no newline) → (RESULT, (n, square)) | (CORRUPTED, v) | (REJECTED, reason).
    check=False: a result whose square is wrong is returned as it is (the caller verifies)."""
    if line.startswith(b"ERROR: "):
        rest = line[7:]
        if rest.startswith(b"Corrupted data "):
            try:
                return CORRUPTED, int(rest[15:])
            except ValueError:
                raise ProtocolError(f"corrupted-data response without a number: {line[:80]!r}") from None
        if rest.startswith(b"Malformed input: ") or rest.startswith(b"Out of range: "):
            return REJECTED, rest.decode("ascii", "replace")
        raise ProtocolError(f"unknown error response: {line[:80]!r}")
    n, sep, sq = line.partition(b",")
    if not sep or not n.isdigit() or not sq.isdigit():
        raise ProtocolError(f"not a result: {line[:80]!r}")
    n_i, sq_i = int(n), int(sq)
    if check and sq_i != n_i * n_i:
        raise ProtocolError(f"wrong square in {line[:80]!r}")
    return RESULT, (n_i, sq_i)


def answers(item: bytes, kind: str, value) -> bool:
    """Whether a parsed response belongs to this input item (catches misalignment)."""
    try:
        n = int(item.strip(b" \t\r"))
    except ValueError:
        return kind == REJECTED
    if kind == RESULT:
        return value[0] == n
    if kind == CORRUPTED:
        return value == n
    return True  # out of range: any number too large to square


def result_rows(start: int, lines: list[bytes]) -> bytes:
    """results.csv rows for responses already known to be results, the first
    answering the item at position `start`."""
    return b"".join(b"%d,%s\n" % pair for pair in enumerate(lines, start + 1))


class Rows:
    """The rows one batch of responses adds to each output, written together."""

    __slots__ = ("results", "corrupted", "rejected", "processed")

    def __init__(self):
        self.results: list[bytes] = []
        self.corrupted: list[bytes] = []
        self.rejected: list[bytes] = []
        self.processed = 0


class BadLineLog:
    """One kind of bad line in the log, the way log systems cope with a flood:
    the first FIRST_N one by one, then at most one summary every EVERY_S
    ("N more ..., the last: ..."). Every line is still in its CSV file; a
    record per line would cost more than the line's processing."""

    FIRST_N = 10
    EVERY_S = 1.0

    def __init__(self, fmt: str, what: str, where: str):
        self.fmt, self.what, self.where = fmt, what, where
        self.shown = 0
        self.held = 0
        self.first_held = 0
        self.last: tuple = ()
        self.last_summary = time.monotonic()

    def note(self, idx: int, value) -> None:
        if self.shown < self.FIRST_N:
            self.shown += 1
            log.warning(self.fmt, idx, value)
            if self.shown == self.FIRST_N:
                log.warning("more %s will be summed up once a second; every one is recorded in %s",
                            self.what, self.where)
            return
        if not self.held:
            self.first_held = idx
        self.held += 1
        self.last = (idx, value)

    def flush(self, now: float, force: bool = False) -> None:
        if self.held and (force or now - self.last_summary >= self.EVERY_S):
            log.warning("%d more %s (items %d to %d, all in %s); the last: " + self.fmt,
                        self.held, self.what, self.first_held, self.last[0], self.where, *self.last)
            self.held = 0
            self.last_summary = now


def percentile(ordered: list[float], p: float) -> float:
    """The p-th percentile (0 < p <= 100) of sorted values by nearest rank:
    the smallest value with at least p % of them at or below it."""
    if not ordered:
        raise ValueError("percentile of no values")
    rank = -(-len(ordered) * p // 100)  # ceil without float error for whole p
    return ordered[max(0, min(len(ordered), int(rank)) - 1)]


class Latencies:
    """The response times of one period (a second): the exact count and
    maximum, and at most `cap` samples spread evenly over the responses for
    the percentiles, so sorting them stays cheap at any rate.

    Items written together and answered in one read share a latency, so
    add() takes a count and costs no Python step per item. The samples are
    responses 0, k, 2k, ... of the period: when one more would pass the cap,
    every other one is dropped and the stride k doubles."""

    CAP = 2000

    def __init__(self, cap: int = CAP):
        if cap < 1:
            raise ValueError("cap wants 1 or more")
        self.cap = cap
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.max = 0.0
        self.stride = 1
        self.samples: list[float] = []

    def add(self, latency: float, count: int = 1) -> None:
        """`count` responses that each took `latency` seconds."""
        if count <= 0:
            return
        while True:
            first = -self.n % self.stride  # the first of these responses that falls on the stride
            kept = (count - 1 - first) // self.stride + 1 if first < count else 0
            if len(self.samples) + kept <= self.cap:
                break
            del self.samples[1::2]
            self.stride *= 2
        if kept:
            self.samples.extend(repeat(latency, kept))
        self.n += count
        if latency > self.max:
            self.max = latency

    def summary(self) -> dict:
        """n, p50_ms, p99_ms, max_ms (ms to 1 decimal); requires n > 0."""
        ordered = sorted(self.samples)
        return {"n": self.n, "p50_ms": round(percentile(ordered, 50) * 1000, 1),
                "p99_ms": round(percentile(ordered, 99) * 1000, 1), "max_ms": round(self.max * 1000, 1)}


# --------------------------------------------------------------------------- input


def load_items(path: Path) -> list[bytes]:
    """Input lines without their newline; a last line without one still counts."""
    data = path.read_bytes()
    if not data:
        return []
    items = data.split(b"\n")
    if items[-1] == b"":
        items.pop()
    return items


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- durable outputs


class CheckpointMismatch(Exception):
    pass


@dataclass
class Progress:
    next: int = 0  # every item before this position is resolved and durable
    counts: dict = field(default_factory=lambda: {"processed": 0, "corrupted": 0, "rejected": 0, "dead_lettered": 0,
                                                  "corrupt_results": 0})
    crash_counts: dict = field(default_factory=dict)  # position -> crashes it caused
    worker_crashes: int = 0
    timeouts: int = 0
    reconnects: int = 0
    restarts_of_supervisor: int = 0


class Outputs:
    """Append-only CSV files plus a checkpoint that says how much of them is valid.

    Rows are written before the checkpoint moves; the checkpoint moves only
    after flush and fsync. A restart truncates every file to the sizes in the
    checkpoint, dropping rows whose items will be sent again.
    """

    def __init__(self, outdir: Path, input_digest: str, fresh: bool):
        self.dir = outdir
        self.digest = input_digest
        outdir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = outdir / CHECKPOINT
        self.progress = Progress()
        sizes = None
        if self.ckpt_path.exists() and not fresh:
            try:
                ck = json.loads(self.ckpt_path.read_text())
            except (ValueError, OSError) as e:
                raise CheckpointMismatch(
                    f"{self.ckpt_path}: unreadable checkpoint ({e}); use --fresh to start over") from None
            if ck.get("input_sha256") != input_digest:
                raise CheckpointMismatch(
                    f"{self.ckpt_path}: checkpoint is for another input file; use --fresh or another --output"
                )
            p = ck["progress"]
            self.progress = Progress(
                next=p["next"],
                counts={"corrupt_results": 0, **p["counts"]},
                crash_counts={int(k): v for k, v in p["crash_counts"].items()},
                worker_crashes=p["worker_crashes"],
                timeouts=p["timeouts"],
                reconnects=p["reconnects"],
                restarts_of_supervisor=p.get("restarts_of_supervisor", 0) + 1,
            )
            sizes = ck["sizes"]
        self.files = {}
        for key, (name, header) in OUTPUTS.items():
            path = outdir / name
            f = open(path, "r+b" if (sizes and path.exists()) else "w+b")
            if sizes:
                f.truncate(sizes[key])
                f.seek(sizes[key])
            else:
                f.write(header)
            self.files[key] = f
        self.checkpoint()

    @property
    def resumed(self) -> bool:
        return self.progress.restarts_of_supervisor > 0

    def write(self, key: str, data: bytes) -> None:
        self.files[key].write(data)

    def checkpoint(self) -> None:
        sizes = {}
        for key, f in self.files.items():
            f.flush()
            os.fsync(f.fileno())
            sizes[key] = f.tell()
        p = self.progress
        ck = {
            "version": 1,
            "input_sha256": self.digest,
            "sizes": sizes,
            "progress": {
                "next": p.next,
                "counts": p.counts,
                "crash_counts": {str(k): v for k, v in p.crash_counts.items()},
                "worker_crashes": p.worker_crashes,
                "timeouts": p.timeouts,
                "reconnects": p.reconnects,
                "restarts_of_supervisor": p.restarts_of_supervisor,
            },
        }
        tmp = self.ckpt_path.with_suffix(f".tmp.{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(ck, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.ckpt_path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


# --------------------------------------------------------------------------- the worker's lock


def lock_report(path: str | None) -> tuple[str, str]:
    """(state, sentence) for the worker's lock file: absent | stale | held."""
    if not path:
        return "unknown", "no --worker-lock given, lock not checked"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "absent", f"lock file {path} was removed: the worker cleaned up as it died"
    except OSError as e:
        return "unknown", f"lock file {path} cannot be read: {e.strerror}"
    try:
        owner = os.read(fd, 64).split(b" ")[0].decode("ascii", "replace").strip() or "unknown"
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return "stale", f"lock file {path} was left behind by pid {owner} (died without cleanup): a stale lock"
        except BlockingIOError:
            return "held", f"lock file {path} is held by pid {owner}: a worker is alive (restarted already?)"
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the job


@dataclass
class Config:
    worker: tuple[str, int] | None  # None with spawn
    input: Path
    output: Path
    window: int = 1024
    timeout_s: float = 2.0
    max_item_crashes: int = 2
    worker_lock: str | None = None
    give_up_s: float = 300.0
    fresh: bool = False
    rate: float = 0.0
    spawn: tuple[str, ...] = ()  # the worker's command line: exercise 4's pipes instead of TCP
    stop_timeout_s: float = 5.0  # SIGTERM at the end, then SIGKILL after this long
    max_failed_starts: int = 3  # workers in a row that die before answering anything: give up
    # The end-to-end check (issue 15): every result's square against n*n from
    # our own input; a wrong one is counted and sent again, not written.
    verify: bool = False
    max_corrupt_results: int = 5  # corrupt results for one item before it is dead-lettered


class Unavailable(Exception):
    pass


class Lookup:
    """Name resolution that gives up waiting after a moment.

    While the worker is down (or cut off), Docker's DNS has no record for it
    and forwards the query out of an internal network, where it dies after
    the resolver's 5 s timeout. Waiting that long would make every reconnect
    slow, and so would joining a lookup that began before the worker came
    back. So each attempt starts a fresh lookup in a daemon thread (at most
    MAX_PENDING at once) and waits RESOLVE_WAIT_S for it; any lookup that has
    finished meanwhile answers first."""

    RESOLVE_WAIT_S = 0.5
    MAX_PENDING = 4

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: list[tuple[threading.Event, list]] = []

    def _start(self, host: str, port: int) -> tuple[threading.Event, list]:
        done, box = threading.Event(), []

        def run():
            try:
                box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except OSError as e:
                box.append(e)
            done.set()

        threading.Thread(target=run, daemon=True).start()
        return done, box

    def addresses(self, host: str, port: int) -> list:
        with self._lock:
            finished = [box[0] for done, box in self._pending if done.is_set()]
            self._pending = [p for p in self._pending if not p[0].is_set()]
            answers = [r for r in finished if not isinstance(r, OSError)]
            if answers:
                return answers[-1]
            if len(self._pending) < self.MAX_PENDING:
                self._pending.append(self._start(host, port))
            done, box = self._pending[-1]
        if not done.wait(self.RESOLVE_WAIT_S):
            raise OSError(f"looking up {host} takes too long (no DNS answer yet)")
        with self._lock:
            self._pending = [p for p in self._pending if p[1] is not box]
        if isinstance(box[0], OSError):
            raise box[0]
        return box[0]


class Supervisor:
    def __init__(self, cfg: Config, items: list[bytes], outputs: Outputs, events: Events):
        self.cfg = cfg
        self.items = items
        self.out = outputs
        self.p = outputs.progress
        self.ev = events
        self.state = ""
        self.isolate_until = 0  # positions below this go one at a time
        self.attempt = 0
        self.last_ckpt = time.monotonic()
        self.last_progress = 0.0
        self.started = time.monotonic()
        self.last_advance = time.monotonic()
        self.rate_base = self.p.next
        self.lookup = Lookup()
        self.known: list = []  # the address of the last successful connect
        self.corrupted_log = BadLineLog("item %d: corrupted data %d (a hardware fault); reported, skipped",
                                        "corrupted readings", "corrupted.csv")
        self.rejected_log = BadLineLog("item %d: rejected: %s", "rejected lines", "rejected.csv")
        self.corrupt_log = BadLineLog("item %d: corrupt result %r (the square is wrong): not written, sent again",
                                      "corrupt results", "the events (corrupt_result)")
        self.corrupt_counts: dict[int, int] = {}  # position -> corrupt results it got
        self.latencies = Latencies()  # this second's response times (TCP streaming)
        self.latency_since = time.monotonic()
        self.inflight_at_end = 0
        self.waited_s = 0.0  # how long the last timeout actually waited

    # -- state and events

    def set_state(self, state: str, **fields) -> None:
        if state != self.state:
            self.state = state
            self.ev.emit("state", state=state, acked=self.p.next, **fields)

    def report_latency(self, now: float, inflight: int) -> None:
        """Ends the latency period: a `latency` event if any response came in
        it, and a warning if its p99 passed a quarter of the timeout."""
        lat = self.latencies
        self.latency_since = now
        if not lat.n:
            return
        s = lat.summary()
        lat.reset()
        self.ev.emit("latency", **s, inflight=inflight)
        timeout_ms = self.cfg.timeout_s * 1000
        if s["p99_ms"] > timeout_ms / 4:
            log.warning("slow responses: p99 %.1f ms, p50 %.1f ms over %d responses (timeout %.0f ms)",
                        s["p99_ms"], s["p50_ms"], s["n"], timeout_ms)

    def maybe_checkpoint(self, inflight: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_ckpt >= CHECKPOINT_EVERY_S:
            self.out.checkpoint()
            self.last_ckpt = now
        if force or now - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = now
            self.ev.emit("progress", state=self.state, acked=self.p.next, total=len(self.items),
                         inflight=inflight, **self.p.counts)

    # -- responses

    def absorb(self, lines: list[bytes]) -> int | None:
        """Records responses for the items at the head of the window, in order.
        With --verify: the lines before the first corrupt result, which is
        counted and not written; its place in `lines` is returned (the caller
        sends it, and what follows it, again). None when all were recorded."""
        bad = self.first_corrupt(lines, self.p.next) if self.cfg.verify else None
        if bad is None:
            self.absorb_valid(lines)
            return None
        self.absorb_valid(lines[:bad])
        self.corrupt_result(self.p.next, lines[bad])
        return bad

    def first_corrupt(self, lines: list[bytes], start: int) -> int | None:
        """The place of the first line that answers its item with a wrong square."""
        for k, (line, item) in enumerate(zip(lines, self.items[start:start + len(lines)], strict=False)):
            if self.is_corrupt(line, item):
                return k
        return None

    @staticmethod
    def is_corrupt(line: bytes, item: bytes) -> bool:
        """A result for this item whose square is not n*n (the supervisor's own n)."""
        if line.startswith(item + b","):
            sq = line[len(item) + 1:]
            return not sq.isdigit() or int(sq) != int(item) ** 2
        try:
            kind, value = parse_response(line, check=False)
        except ProtocolError:
            return False  # not a result at all: absorb_one says so
        return kind == RESULT and answers(item, kind, value) and value[1] != value[0] * value[0]

    def corrupt_result(self, pos: int, line: bytes, resent: bool = True) -> None:
        """Counts and logs a corrupt result for the item at `pos`; the item is
        sent again, or dead-lettered after --max-corrupt-results of them."""
        count = self.corrupt_counts.get(pos, 0) + resent  # a dropped one was not the item's own answer
        self.corrupt_counts[pos] = count
        self.p.counts["corrupt_results"] += 1
        self.corrupt_log.note(pos + 1, line[:60].decode("ascii", "replace"))
        self.corrupt_log.flush(time.monotonic())
        last = resent and count >= self.cfg.max_corrupt_results
        self.ev.emit("corrupt_result", index=pos + 1, got=line[:60].decode("ascii", "replace"), attempt=count,
                     action="dead_lettered" if last else "resent" if resent else "dropped")
        if last:
            self.dead_letter(pos, count, f"{count} corrupt results")
            log.error("item %d dead-lettered after %d corrupt results", pos + 1, count)

    def check_dropped(self, lines: list[bytes], pos: int) -> None:
        """Responses dropped after a corrupt one (their items go again) are
        verified too: a corruption among them is detected all the same."""
        if self.cfg.verify:
            for k, (line, item) in enumerate(zip(lines, self.items[pos:pos + len(lines)], strict=False)):
                if self.is_corrupt(line, item):
                    self.corrupt_result(pos + k, line, resent=False)

    def absorb_valid(self, lines: list[bytes]) -> None:
        """absorb() for lines with no corrupt result among them.

        Bad lines must cost about what good ones do: one pass finds the lines
        that do not echo their item as a result (the ERROR lines, and any
        misaligned response), only those are looked at one by one, the runs of
        results between them take the batch path, and each output file gets
        one write per call. What was validated before a ProtocolError is still
        recorded, so the outputs and `next` agree when the connection is dropped."""
        start = self.p.next
        n = len(lines)
        items = self.items[start:start + n]
        if len(items) < n:
            raise ProtocolError(f"{n} responses for {len(items)} items in flight")
        # C-level maps, not a Python step per line: the common batch is all results.
        echoed = list(map(bytes.startswith, lines, map(operator.add, items, repeat(b","))))
        odd = list(compress(range(n), map(operator.not_, echoed)))
        if not odd:
            self.out.write("results", result_rows(start, lines))
            self.p.counts["processed"] += n
            self.p.next += n
            return
        rows = Rows()
        done = 0  # lines validated so far, their rows in `rows`
        try:
            for k in odd:
                if k > done:
                    rows.results.append(result_rows(start + done, lines[done:k]))
                    rows.processed += k - done
                    done = k
                if lines[k] == CORRUPTED_PREFIX + items[k]:
                    # The common bad line, recognised by one comparison: the
                    # worker echoes a negative reading's digits as it got them.
                    rows.corrupted.append(b"%d,%s\n" % (start + k + 1, items[k]))
                    self.corrupted_log.note(start + k + 1, int(items[k]))
                else:
                    self.absorb_one(rows, lines[k], items[k], start + k + 1)
                done = k + 1
            if done < n:
                rows.results.append(result_rows(start + done, lines[done:]))
                rows.processed += n - done
                done = n
        finally:
            self.record(rows)
            self.p.next = start + done
            now = time.monotonic()
            self.corrupted_log.flush(now)
            self.rejected_log.flush(now)

    def record(self, rows: Rows) -> None:
        """One batch's rows: one write per output file, and the counts."""
        for key in ("results", "corrupted", "rejected"):
            if getattr(rows, key):
                self.out.write(key, b"".join(getattr(rows, key)))
        self.p.counts["processed"] += rows.processed
        self.p.counts["corrupted"] += len(rows.corrupted)
        self.p.counts["rejected"] += len(rows.rejected)

    def absorb_one(self, rows: Rows, resp: bytes, item: bytes, idx: int) -> None:
        kind, value = parse_response(resp)
        if not answers(item, kind, value):
            raise ProtocolError(f"response {resp[:40]!r} does not answer item {idx} ({item[:40]!r})")
        if kind == RESULT:
            rows.results.append(b"%d,%d,%d\n" % (idx, value[0], value[1]))
            rows.processed += 1
        elif kind == CORRUPTED:
            rows.corrupted.append(b"%d,%d\n" % (idx, value))
            self.corrupted_log.note(idx, value)
        else:
            rows.rejected.append(b"%d,%s\n" % (idx, csv_field(value).encode()))
            self.rejected_log.note(idx, value[:80])

    def allowed(self, total: int) -> int:
        """How many items may have been sent by now: all, or --rate per second
        since the job began (a stream of readings arriving over time; items held
        back during an outage are a backlog released after it)."""
        if self.cfg.rate <= 0:
            return total
        return min(total, self.rate_base + int(self.cfg.rate * (time.monotonic() - self.started)))

    # -- one connection

    def connect(self) -> socket.socket:
        """Tries the worker's last known address first (a restarted container
        usually gets it back, and a live host answers a connect within
        milliseconds), then whatever the name resolves to now."""
        assert self.cfg.worker is not None
        host, port = self.cfg.worker
        last: OSError = OSError("no address")
        tries = [(a, CACHED_CONNECT_S) for a in self.known]
        try:
            tries += [(a, self.cfg.timeout_s) for a in self.lookup.addresses(host, port) if a not in self.known]
        except OSError as e:
            last = e
        for (family, kind, proto, _, addr), wait in tries:
            s = socket.socket(family, kind, proto)
            s.settimeout(wait)
            try:
                s.connect(addr)
            except OSError as e:
                s.close()
                last = e if not isinstance(e, TimeoutError) else OSError(f"connect to {addr[0]} timed out")
                continue
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            self.known = [(family, kind, proto, "", addr)]
            return s
        raise last

    def pump(self, sock: socket.socket) -> tuple[str, str]:
        """Streams over one connection until done or it fails: (outcome, detail).

        Response times: each write's time stamps the items it completed
        (`stamps`: (end position, time), oldest first), and each read's time
        ends the items it answered; one clock read per write and per read.
        Items sent again after a reconnect count from their new write."""
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        out = bytearray()
        rx = b""
        sent = self.p.next  # items queued in `out` or written
        written = self.p.next  # items whose whole line the socket took
        stamps: deque[tuple[int, float]] = deque()
        lat = self.latencies
        waiting_since = time.monotonic()
        writing = False
        total = len(self.items)
        drop, drop_at = 0, 0  # responses still owed for items sent again after a corrupt result, from drop_at
        try:
            while self.p.next < total:
                window = 1 if self.p.next < self.isolate_until else self.cfg.window
                self.set_state("isolating" if window == 1 else "streaming")
                now = time.monotonic()
                if sent == self.p.next:
                    waiting_since = now
                if now - self.latency_since >= LATENCY_EVERY_S:
                    self.report_latency(now, sent - self.p.next)
                limit = self.allowed(total)
                while sent < limit and sent - self.p.next < window and len(out) < (1 << 20):
                    end = min(limit, self.p.next + window, sent + SEND_CHUNK)
                    out += b"\n".join(self.items[sent:end])
                    out += b"\n"
                    sent = end
                if out and not writing:
                    sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                    writing = True
                waited = now - waiting_since
                remaining = self.cfg.timeout_s - waited
                if remaining <= 0:
                    self.waited_s = waited
                    return "timeout", (f"no response in {self.cfg.timeout_s * 1000:.0f} ms "
                                       f"with {sent - self.p.next} items in flight (waited {int(waited * 1000)} ms)")
                wait = min(remaining, PROGRESS_EVERY_S)
                if limit < total:
                    wait = min(wait, 0.02)  # paced: wake to release the next items
                for _key, mask in sel.select(timeout=wait):
                    if mask & selectors.EVENT_WRITE and out:
                        try:
                            n = sock.send(out)
                        except (BlockingIOError, InterruptedError):
                            n = 0
                        except (ConnectionResetError, BrokenPipeError) as e:
                            return "crash", f"connection lost while sending ({e.strerror})"
                        if n:
                            done_lines = out.count(b"\n", 0, n)
                            if done_lines:
                                written += done_lines
                                stamps.append((written, time.monotonic()))
                        del out[:n]
                        if not out:
                            sel.modify(sock, selectors.EVENT_READ)
                            writing = False
                    if mask & selectors.EVENT_READ:
                        try:
                            data = sock.recv(1 << 20)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except ConnectionResetError:
                            return "crash", "connection reset by the worker"
                        if not data:
                            return "crash", "the worker closed the connection (EOF)" + (
                                f" with {sent - self.p.next} items in flight" if sent > self.p.next else "")
                        rx += data
                        if b"\n" in rx:
                            lines = rx.split(b"\n")
                            rx = lines.pop()
                            if drop:
                                d = min(drop, len(lines))
                                self.check_dropped(lines[:d], drop_at)
                                drop, drop_at, lines = drop - d, drop_at + d, lines[d:]
                            first = self.p.next
                            waiting_since = time.monotonic()  # before the rows are written: the answer's time
                            bad = self.absorb(lines)
                            # The answered items [first, next) end now; each
                            # write's items share its time.
                            at, upto = first, self.p.next
                            while at < upto and stamps:
                                end, t_sent = stamps[0]
                                if end > upto:
                                    lat.add(waiting_since - t_sent, upto - at)
                                    break
                                if end > at:
                                    lat.add(waiting_since - t_sent, end - at)
                                    at = end
                                stamps.popleft()
                            if bad is not None:
                                # Send from the corrupt one again; the answers owed for
                                # the items after it are dropped as they come.
                                after = first + bad + 1
                                self.check_dropped(lines[bad + 1:], after)
                                drop, drop_at = sent - after - len(lines[bad + 1:]), after + len(lines[bad + 1:])
                                written, sent = self.p.next - (sent - written), self.p.next
                                stamps.clear()
                            self.last_advance = waiting_since
                            self.attempt = 0
                self.maybe_checkpoint(sent - self.p.next)
            return "done", ""
        finally:
            self.inflight_at_end = sent - self.p.next
            sel.close()
            # The period's responses so far are reported before whatever ended
            # the stream (done, crash, timeout): the timeline shows them first.
            self.report_latency(time.monotonic(), self.inflight_at_end)

    # -- the whole job

    def after_crash(self, detail: str) -> None:
        inflight = self.inflight_at_end
        self.p.worker_crashes += 1
        state, sentence = lock_report(self.cfg.worker_lock)
        log.critical("worker crashed: %s; %s", detail, sentence)
        self.ev.emit("crash", detail=detail, inflight=inflight, lock=state, acked=self.p.next)
        if inflight == 1:
            pos = self.p.next
            count = self.p.crash_counts.get(pos, 0) + 1
            self.p.crash_counts[pos] = count
            item = self.items[pos]
            log.error("item %d (%r) was alone in flight: it crashed the worker (%d of %d)", pos + 1,
                      item[:40].decode("ascii", "replace"), count, self.cfg.max_item_crashes)
            if count >= self.cfg.max_item_crashes:
                self.dead_letter(pos, count)
                log.error("item %d dead-lettered after %d crashes; skipping it so the job completes", pos + 1, count)
        elif inflight > 1:
            # Which of them? Resend one at a time until the culprit is alone.
            self.isolate_until = max(self.isolate_until, self.p.next + inflight)
            log.warning("isolating: resending %d items one at a time to find the one that crashed the worker", inflight)
        self.out.checkpoint()

    def dead_letter(self, pos: int, count: int, reason: str = "") -> None:
        """Sets aside the item at `pos` that crashed the worker `count` times
        (or, with a reason, got that many corrupt results), so the job can complete."""
        item = self.items[pos]
        crashes = 0 if reason else count
        reason = reason or f"crashed the worker {count} times"
        self.out.write("dead", b"%d,%s,%s,%d\n" % (pos + 1, csv_field(item.decode("ascii", "replace")).encode(),
                                                   reason.encode(), count))
        self.p.counts["dead_lettered"] += 1
        self.p.next += 1
        self.ev.emit("dead_letter", index=pos + 1, item=item[:64].decode("ascii", "replace"), crashes=crashes,
                     reason=reason)

    def backoff(self) -> None:
        delay = min(2.0, 0.05 * (2 ** min(self.attempt, 10))) * random.uniform(0.5, 1.0)
        self.attempt += 1
        time.sleep(delay)  # a deliberate pause between attempts, not a wait for a condition

    def run(self) -> dict:
        try:
            return self.run_job()
        finally:
            # Whatever ends the job, the log owes a count of the bad lines it held back.
            now = time.monotonic()
            self.corrupted_log.flush(now, force=True)
            self.rejected_log.flush(now, force=True)
            self.corrupt_log.flush(now, force=True)

    def run_job(self) -> dict:
        assert self.cfg.worker is not None
        total = len(self.items)
        self.ev.emit("start", total=total, resumed_at=self.p.next, window=self.cfg.window,
                     timeout_ms=int(self.cfg.timeout_s * 1000), worker=f"{self.cfg.worker[0]}:{self.cfg.worker[1]}")
        if self.out.resumed:
            log.warning("resuming from checkpoint: %d of %d items already done", self.p.next, total)
        first = True
        while True:
            if time.monotonic() - self.last_advance > self.cfg.give_up_s:
                raise Unavailable(f"no progress for {self.cfg.give_up_s:.0f} s; "
                                  f"giving up with {total - self.p.next} items left")
            self.set_state("connecting")
            try:
                sock = self.connect()
            except OSError as e:
                self.ev.emit("connect_failed", error=e.strerror or str(e), attempt=self.attempt)
                if self.attempt == 0:
                    log.error("cannot reach the worker at %s:%d (%s); retrying with backoff",
                              *self.cfg.worker, e.strerror or e)
                self.set_state("reconnecting")
                self.backoff()
                continue
            if not first:
                self.p.reconnects += 1
                log.info("reconnected to the worker; resuming at item %d", self.p.next + 1)
            self.ev.emit("connected", acked=self.p.next, reconnect=not first)
            first = False
            try:
                outcome, detail = self.pump(sock)
            except ProtocolError as e:
                outcome, detail = "protocol", str(e)
            if outcome == "done":
                self.finish(sock)
                self.set_state("done")
                break
            abandon(sock)
            if outcome == "crash":
                self.after_crash(detail)
            elif outcome == "timeout":
                self.p.timeouts += 1
                log.warning("worker unreachable: %s; a timeout cannot tell a crash from a pause from a partition, "
                            "so the items stay in flight and we reconnect", detail)
                self.ev.emit("timeout", detail=detail, inflight=self.inflight_at_end, acked=self.p.next,
                             waited_ms=int(self.waited_s * 1000))
                self.set_state("timed_out")
            else:
                log.error("protocol error: %s; dropping the connection and resending from item %d", detail,
                          self.p.next + 1)
                self.ev.emit("protocol_error", detail=detail, acked=self.p.next)
            self.out.checkpoint()
            self.set_state("reconnecting")
            self.backoff()
        return self.summary()

    def finish(self, sock: socket.socket) -> None:
        """All acknowledged: close our side, let the worker see EOF and exit 0."""
        self.out.checkpoint()
        sock.setblocking(True)
        sock.settimeout(self.cfg.timeout_s)
        try:
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:
            pass
        sock.close()

    def summary(self) -> dict:
        dur = time.monotonic() - self.started
        p = self.p
        return {
            "read": len(self.items),
            "processed": p.counts["processed"],
            "corrupted": p.counts["corrupted"],
            "rejected": p.counts["rejected"],
            "dead_lettered": p.counts["dead_lettered"],
            "corrupt_results": p.counts["corrupt_results"],
            "worker_crashes": p.worker_crashes,
            "timeouts": p.timeouts,
            "reconnects": p.reconnects,
            "supervisor_restarts": p.restarts_of_supervisor,
            "duration_s": round(dur, 3),
            "items_per_s": round(len(self.items) / dur, 1) if dur > 0 else None,
        }


def csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def abandon(sock: socket.socket) -> None:
    """Close with a reset, not a FIN: the worker reads a FIN as "job over" and exits."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


# --------------------------------------------------------------------------- spawn mode: exercise 4


# An answer on the worker's stdout: "n,square" (its shape; parse_response judges the values).
ANSWER_SHAPE = re.compile(rb"\s*[-+]?[0-9]+\s*,\s*[-+]?[0-9]+\s*")
POLL_S = 0.2  # how often a quiet loop looks at the child's state
SQUARE_MAX = 3037000499  # the largest n whose square fits a signed 64-bit integer: larger ones are errors
SEND_MAX = 1 << 16  # bytes queued for the worker's stdin at a time


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists: another user's process
    return True


def clear_stale_lock(path: str | None, dead_pid: int) -> tuple[str, str]:
    """After a worker died: (state, sentence) for its lock file, read as the
    exercise's workers keep it (a PID first). A lock naming no live process
    is stale and removed, so the next worker can take it; one naming a live
    process other than the dead worker is left alone."""
    if not path:
        return "unknown", "no --worker-lock given, lock not checked"
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except FileNotFoundError:
        return "absent", f"lock file {path} was removed: the worker cleaned up as it died"
    except OSError as e:
        return "unknown", f"lock file {path} cannot be read: {e.strerror}"
    token = (data.split() or [b""])[0]
    pid = int(token) if token.isdigit() else None
    if pid is not None and pid != dead_pid and pid_alive(pid):
        return "held", f"lock file {path} names pid {pid}, which is alive: left alone"
    owner = f"pid {pid}" if pid is not None else "no readable pid"
    try:
        os.unlink(path)
    except FileNotFoundError:
        return "absent", f"lock file {path} was removed meanwhile"
    except OSError as e:
        return "stale", f"stale lock file {path} ({owner}) cannot be removed: {e.strerror}"
    return "stale", f"lock file {path} was left behind ({owner}, not running): a stale lock, removed"


def exit_status(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


def item_value(item: bytes) -> int | None:
    try:
        return int(item.strip(b" \t\r"))
    except ValueError:
        return None


def answered_by_error(item: bytes) -> bool:
    """Whether a worker keeping the contract answers this item with an ERROR line."""
    v = item_value(item)
    return v is None or not 0 <= v <= SQUARE_MAX


class WorkerProcess:
    """One spawned worker: its process and three non-blocking pipes, and how
    far it got: items[start:sent] were written to it, `answered` of them
    answered."""

    def __init__(self, argv: tuple[str, ...], start: int):
        # The worker keeps our process group, so whoever stops us can stop it too.
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0)
        self.pid = self.proc.pid
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.stdin: int | None = self.proc.stdin.fileno()
        self.outputs = {self.proc.stdout.fileno(): "stdout", self.proc.stderr.fileno(): "stderr"}
        self.partial = {"stdout": b"", "stderr": b""}
        for fd in (self.stdin, *self.outputs):
            os.set_blocking(fd, False)
        self.sel = selectors.DefaultSelector()
        for fd, name in self.outputs.items():
            self.sel.register(fd, selectors.EVENT_READ, name)
        self.writing = False
        self.start = self.sent = start
        self.answered = 0
        self.out_at = self.err_at = start  # where the next stdout / stderr answer's item is looked for
        self.log_lines = 0  # lines of its own (not answers) it printed

    @property
    def reading(self) -> bool:
        return bool(self.outputs)

    def want_write(self, on: bool) -> None:
        if self.stdin is None or on == self.writing:
            return
        if on:
            self.sel.register(self.stdin, selectors.EVENT_WRITE, "stdin")
        else:
            self.sel.unregister(self.stdin)
        self.writing = on

    def write(self, data: bytearray) -> int:
        """Writes what the pipe takes now; 0 if it is full or closed."""
        if self.stdin is None:
            return 0
        try:
            return os.write(self.stdin, data[:SEND_MAX])
        except BlockingIOError:
            return 0
        except OSError:  # EPIPE: it closed its stdin or died; its exit tells which
            self.close_stdin()
            return 0

    def close_stdin(self) -> None:
        if self.stdin is not None:
            self.want_write(False)
            assert self.proc.stdin
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.stdin = None

    def read(self, fd: int) -> tuple[str, list[bytes]]:
        """(stream, the complete lines read now); at end of file, the last
        line without its newline too, and the stream is no longer watched."""
        name = self.outputs[fd]
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return name, []
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(fd)
            del self.outputs[fd]
            tail, self.partial[name] = self.partial[name], b""
            return name, [tail] if tail else []
        lines = (self.partial[name] + data).split(b"\n")
        self.partial[name] = lines.pop()
        return name, lines

    def close(self) -> None:
        self.close_stdin()
        self.sel.close()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


class SpawnSupervisor(Supervisor):
    """Exercise 4's supervisor: the worker as a child process on three pipes.

    Every input line gets one answer: `n,n*n` on the worker's stdout, or an
    `ERROR` line on its stderr; any other line is the worker's log. Two pipes
    lose their interleaving, but each keeps its order and the worker takes
    lines one after another, so the number of answers read from both is the
    number of lines it handled. When it dies, both pipes are read to their end
    first: the first line without an answer is the one it died on, dead-
    lettered after --max-item-crashes crashes, and the lines after it that it
    never answered go to the next worker. That holds for a worker that sends
    each answer as it makes it, as the exercise asks; one that buffers them
    loses its buffer when it dies. So a worker that dies without a single
    answer while several lines were in flight proves nothing about any of
    them: those lines go to the next worker one at a time ("isolating", as
    over TCP) until the one that kills it is alone. Reads and writes never block, so a
    worker flooding its stderr while we fill its stdin cannot deadlock us.
    At the end of the input the worker gets SIGTERM, and SIGKILL if it does
    not exit within --stop-timeout-s."""

    RESULTS_SHOWN = 1000  # results logged one by one; every one is in results.csv
    LOG_LINES_SHOWN = 20  # per worker: its own log lines repeated in ours
    DRAIN_S = 1.0  # after a worker died, how long its pipes may still deliver

    def __init__(self, cfg: Config, items: list[bytes], outputs: Outputs, events: Events):
        super().__init__(cfg, items, outputs, events)
        self.shown_results = 0
        self.failed_starts = 0
        self.worker: WorkerProcess | None = None

    def run_job(self) -> dict:
        total = len(self.items)
        self.ev.emit("start", total=total, resumed_at=self.p.next, window=self.cfg.window,
                     timeout_ms=int(self.cfg.timeout_s * 1000), worker=shlex.join(self.cfg.spawn))
        if self.out.resumed:
            log.warning("resuming from checkpoint: %d of %d items already done", self.p.next, total)
        first = True
        try:
            while self.p.next < total:
                self.set_state("connecting")
                w = self.start_worker(first)
                first = False
                if self.feed(w):
                    self.stop_worker(w)
                else:
                    self.after_death(w)
                    self.set_state("reconnecting")
                w.close()
                self.worker = None
        finally:
            if self.worker is not None:  # stopped by a signal or an error: the worker goes too
                self.worker.proc.kill()
                self.worker.proc.wait()
                self.worker.close()
        self.out.checkpoint()
        self.set_state("done")
        return self.summary()

    def start_worker(self, first: bool) -> WorkerProcess:
        try:
            w = WorkerProcess(self.cfg.spawn, self.p.next)
        except OSError as e:
            self.ev.emit("connect_failed", error=e.strerror or str(e), attempt=self.attempt)
            # A missing or unrunnable program does not appear by trying again.
            raise Unavailable(f"cannot start the worker {shlex.join(self.cfg.spawn)}: {e.strerror or e}") from None
        self.worker = w
        if first:
            log.info("started the worker %s (pid %d)", shlex.join(self.cfg.spawn), w.pid)
        else:
            self.p.reconnects += 1
            log.info("restarted the worker (pid %d); resuming at line %d", w.pid, self.p.next + 1)
        self.ev.emit("connected", acked=self.p.next, reconnect=not first, pid=w.pid)
        return w

    def feed(self, w: WorkerProcess) -> bool:
        """Feeds w until every item is answered (True) or w died (False)."""
        total = len(self.items)
        out = bytearray()
        last_answer = time.monotonic()
        quiet_warned = False
        self.set_state("streaming")
        while self.p.next < total:
            window = 1 if self.p.next < self.isolate_until else self.cfg.window
            while w.sent < total and w.sent - self.p.next < window and len(out) < SEND_MAX:
                end = min(total, self.p.next + window, w.sent + SEND_CHUNK)
                out += b"\n".join(self.items[w.sent:end])
                out += b"\n"
                w.sent = end
            w.want_write(bool(out))
            before = w.answered
            # stdout before stderr when both are ready: the worker wrote a result
            # before the error of a later line, and error_answers relies on that order.
            for key, _mask in sorted(w.sel.select(timeout=POLL_S), key=lambda km: km[0].data == "stderr"):
                if key.data == "stdin":
                    del out[:w.write(out)]
                else:
                    self.take(w, *w.read(key.fd))
            if w.stdin is None:
                out.clear()  # it stopped reading: nothing more reaches it
            now = time.monotonic()
            if w.answered != before:
                last_answer, quiet_warned = now, False
                self.last_advance = now
                self.set_state("isolating" if self.p.next < self.isolate_until else "streaming")
            if w.proc.poll() is not None:
                self.drain(w)
                return self.p.next >= total
            if w.sent > self.p.next and now - last_answer > self.cfg.timeout_s:
                if w.sent == total and not out:
                    # Fed everything; what is still unanswered will not be: a
                    # worker that skips some lines must not hang the job.
                    log.warning("no answer for the last %d lines within %.1f s; taking the input as done",
                                total - self.p.next, self.cfg.timeout_s)
                    self.p.next = total
                    break
                if not quiet_warned:
                    quiet_warned = True
                    self.p.timeouts += 1
                    self.set_state("timed_out")
                    log.warning("the worker (pid %d) is alive but answered nothing for %.1f s with %d lines in "
                                "flight: paused? still waiting", w.pid, now - last_answer, w.sent - self.p.next)
                    self.ev.emit("timeout", detail="no answer on the worker's pipes", inflight=w.sent - self.p.next,
                                 acked=self.p.next, waited_ms=int((now - last_answer) * 1000))
                if now - last_answer > self.cfg.give_up_s:
                    raise Unavailable(f"no answer from the worker for {self.cfg.give_up_s:.0f} s; giving up")
            self.maybe_checkpoint(w.sent - self.p.next)
        return True

    def drain(self, w: WorkerProcess) -> None:
        """Reads a dead worker's pipes to their end (a child of its could hold them open: not for long)."""
        deadline = time.monotonic() + self.DRAIN_S
        w.close_stdin()
        while w.reading and time.monotonic() < deadline:
            ready = w.sel.select(timeout=max(0.0, deadline - time.monotonic()))
            for key, _mask in sorted(ready, key=lambda km: km[0].data == "stderr"):
                self.take(w, *w.read(key.fd))

    def take(self, w: WorkerProcess, stream: str, lines: list[bytes]) -> None:
        """Handles lines read from one of w's outputs."""
        rows = Rows()
        for raw in lines:
            line = raw.rstrip(b"\r")
            if stream == "stdout" and ANSWER_SHAPE.fullmatch(line):
                self.answer_result(w, rows, line)
            elif line.startswith(b"ERROR") and self.error_answers(w, line):
                self.answer_error(w, rows, line)
            elif line.strip():
                w.log_lines += 1
                if w.log_lines <= self.LOG_LINES_SHOWN:
                    log.info("worker pid %d %s: %s", w.pid, stream, line[:200].decode("utf-8", "replace"))
        self.record(rows)
        now = time.monotonic()
        self.corrupted_log.flush(now)
        self.rejected_log.flush(now)

    def error_answers(self, w: WorkerProcess, line: bytes) -> bool:
        """Whether an ERROR line answers a line fed to w. The contract's
        wordings always do. One of the worker's own wording ("ERROR: segfault,
        lock removed" from a crash handler) answers only if a fed line that a
        contract-keeping worker answers with an error is still unanswered:
        counted otherwise, it would make the crash look like the next line's."""
        try:
            parse_response(line)
            return True
        except ProtocolError:
            pass
        e = self.find(w, w.err_at, answered_by_error)
        # A worker answers in order: an error for line e comes after the results
        # of every valid line before it. A valid line before e still without
        # its result (999, say) means the worker never got to e.
        return e is not None and all(answered_by_error(self.items[i]) for i in range(w.out_at, e))

    def answered(self, w: WorkerProcess) -> None:
        w.answered += 1
        # A worker that prints more answers than it was given lines cannot move us past what it was fed.
        self.p.next = min(w.start + w.answered, w.sent)

    def find(self, w: WorkerProcess, at: int, want) -> int | None:
        """The first item fed to w from position `at` that `want` accepts."""
        for i in range(at, w.sent):
            if want(self.items[i]):
                return i
        return None

    def answer_result(self, w: WorkerProcess, rows: Rows, line: bytes) -> None:
        self.answered(w)
        n_text, _, sq_text = line.partition(b",")
        n, sq = int(n_text), int(sq_text)
        i = self.find(w, w.out_at, lambda item: item_value(item) == n)
        if i is not None:
            w.out_at = i + 1
        idx = (self.p.next - 1 if i is None else i) + 1
        if sq != n * n:
            rows.rejected.append(b"%d,%s\n" % (idx, csv_field(f"wrong answer {line[:60]!r}").encode()))
            log.error("line %d: wrong answer from the worker: %s", idx, line[:80].decode("ascii", "replace"))
            return
        rows.results.append(b"%d,%d,%d\n" % (idx, n, sq))
        rows.processed += 1
        self.shown_results += 1
        if self.shown_results <= self.RESULTS_SHOWN:
            log.info("line %d: %d -> %s", idx, n, line.strip().decode("ascii"))
        elif self.shown_results == self.RESULTS_SHOWN + 1:
            log.info("more results are recorded in results.csv without a log line each")

    def answer_error(self, w: WorkerProcess, rows: Rows, line: bytes) -> None:
        self.answered(w)
        try:
            kind, value = parse_response(line)
        except ProtocolError:  # an ERROR of its own wording: a rejection all the same
            kind, value = REJECTED, line[7:].decode("utf-8", "replace").strip()
        corrupted = value if kind == CORRUPTED and isinstance(value, int) else None
        if corrupted is not None:
            i = self.find(w, w.err_at, lambda item: item_value(item) == corrupted)
        else:
            i = self.find(w, w.err_at, answered_by_error)
        if i is not None:
            w.err_at = i + 1
        idx = (self.p.next - 1 if i is None else i) + 1
        if corrupted is not None:
            rows.corrupted.append(b"%d,%d\n" % (idx, corrupted))
            self.corrupted_log.note(idx, corrupted)
        else:
            rows.rejected.append(b"%d,%s\n" % (idx, csv_field(str(value)).encode()))
            self.rejected_log.note(idx, str(value)[:80])

    def after_death(self, w: WorkerProcess) -> None:
        """A worker died before the input was done: say so, clear a stale
        lock, and decide where the next worker starts."""
        status = exit_status(w.proc.returncode)
        inflight = w.sent - self.p.next
        self.p.worker_crashes += 1
        state, sentence = clear_stale_lock(self.cfg.worker_lock, w.pid)
        # A worker that exited by itself before answering anything never got
        # going (a lock it could not take, a bad option): no line is to blame.
        never_started = w.answered == 0 and w.proc.returncode is not None and w.proc.returncode >= 0
        # Killed without a single answer while several lines were in flight:
        # it may have handled some of them and lost their answers with it.
        unknown = not never_started and w.answered == 0 and inflight > 1
        if inflight and not never_started and not unknown:
            pos = self.p.next
            item = self.items[pos]
            detail = f"worker pid {w.pid} {status} on line {pos + 1} ({item[:40].decode('ascii', 'replace')!r})"
        else:
            detail = f"worker pid {w.pid} {status}" + (" before answering anything" if never_started else "")
        log.critical("worker %s: %s; %s", "failed to start" if never_started else "crashed", detail, sentence)
        self.note_unshown(w)
        self.ev.emit("crash", detail=detail, inflight=inflight, lock=state, acked=self.p.next)
        if never_started:
            self.failed_starts += 1
            if self.failed_starts >= self.cfg.max_failed_starts:
                raise Unavailable(f"the worker died {self.failed_starts} times in a row before answering a "
                                  "line; giving up")
            self.backoff()  # a worker that cannot start yet (its lock?) is not retried in a hot loop
        else:
            self.failed_starts = 0
        if unknown:
            self.isolate_until = max(self.isolate_until, self.p.next + inflight)
            log.warning("isolating: the worker died before any answer reached us, with %d lines in flight; "
                        "sending them again one at a time to find the one that crashes it", inflight)
        elif inflight and not never_started:
            pos = self.p.next
            count = self.p.crash_counts.get(pos, 0) + 1
            self.p.crash_counts[pos] = count
            item = self.items[pos]
            if count >= self.cfg.max_item_crashes:
                self.dead_letter(pos, count)
                log.error("line %d (%r) crashed the worker: skipping it; the next worker starts at line %d",
                          pos + 1, item[:40].decode("ascii", "replace"), self.p.next + 1)
            else:
                log.warning("line %d may have crashed the worker (%d of %d crashes): sending it again", pos + 1,
                            count, self.cfg.max_item_crashes)
        self.out.checkpoint()

    def stop_worker(self, w: WorkerProcess) -> None:
        """The input is done: SIGTERM, wait (still reading its pipes), SIGKILL if it will not go."""
        self.out.checkpoint()
        if w.proc.poll() is None:
            log.info("input done: stopping the worker (pid %d) with SIGTERM", w.pid)
            w.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.cfg.stop_timeout_s
            while w.proc.poll() is None and time.monotonic() < deadline:
                for key, _mask in w.sel.select(timeout=POLL_S):
                    if key.data != "stdin":
                        self.take(w, *w.read(key.fd))
            if w.proc.poll() is None:
                log.error("the worker (pid %d) did not exit within %.1f s of SIGTERM; killing it", w.pid,
                          self.cfg.stop_timeout_s)
                w.proc.kill()
                w.proc.wait()
        self.drain(w)
        log.info("the worker (pid %d) %s", w.pid, exit_status(w.proc.returncode))
        self.note_unshown(w)

    def note_unshown(self, w: WorkerProcess) -> None:
        if w.log_lines > self.LOG_LINES_SHOWN:
            log.info("(%d more lines of the worker's own output not shown)", w.log_lines - self.LOG_LINES_SHOWN)


# --------------------------------------------------------------------------- main


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"wants 1 or more, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Feed input to the worker; collect every result exactly once.",
                                 epilog="Without arguments: exercise 4's supervisor, " + shlex.join(EXERCISE_ARGS))
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--worker", type=parse_host_port, help="the worker's HOST:PORT")
    where.add_argument("--spawn", metavar="CMD", type=shlex.split,
                       help="start the worker as a child process (a shell-quoted command) and talk to it over its "
                            "stdin, stdout and stderr, restarting it after a crash")
    ap.add_argument("--input", required=True, type=Path, help="input file, one reading per line")
    ap.add_argument("--output", required=True, type=Path, help="directory for results and checkpoint")
    ap.add_argument("--generate", type=int, metavar="N",
                    help="first write the exercise's data set of N readings to --input")
    ap.add_argument("--generate-with", metavar="SCRIPT",
                    help="if --input does not exist, first run this Python script (the exercise's generateData.py)")
    ap.add_argument("--stop-timeout-s", type=float, default=5.0,
                    help="--spawn: at the end, SIGKILL the worker if SIGTERM has not stopped it by then")
    ap.add_argument("--seed", type=int, default=42, help="seed for --generate (default 42)")
    ap.add_argument("--window", type=positive_int, default=1024, help="items in flight (default 1024)")
    ap.add_argument("--timeout-ms", type=positive_int, default=2000, help="no response this long = unreachable")
    ap.add_argument("--max-item-crashes", type=positive_int, default=2)
    ap.add_argument("--worker-lock", help="the worker's lock file on the shared volume, checked after a crash")
    ap.add_argument("--events", help="also append events (JSON lines) to this file")
    ap.add_argument("--give-up-s", type=float, default=300.0, help="exit 69 after this long without progress")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="release at most this many items per second (0: as fast as possible)")
    ap.add_argument("--verify", choices=("on", "off"), default="off",
                    help="the end-to-end check: verify each result's square against the input, send a corrupt "
                         "one again (default off; --worker only)")
    ap.add_argument("--max-corrupt-results", type=positive_int, default=5,
                    help="corrupt results for one item before it is dead-lettered (default 5)")
    return ap


# Exercise 4's supervisor as the sheet runs it: `python3 supervisor.py` beside
# hardcore_worker and generateData.py. One crash per line is enough to skip it.
EXERCISE_ARGS = ("--spawn", "./hardcore_worker", "--input", "input.dat", "--output", "supervisor-output",
                 "--generate-with", "generateData.py", "--worker-lock", "cworker.lock", "--max-item-crashes", "1",
                 "--fresh")


def run_generator(script: str, target: Path) -> str | None:
    """Runs the data generator for a missing input; why it failed, or None."""
    log.info("%s not found: running %s to make it", target, script)
    try:
        p = subprocess.run([sys.executable, script], check=False)
    except OSError as e:
        return f"cannot run {script}: {e.strerror}"
    if p.returncode != 0:
        return f"{script} {exit_status(p.returncode)}"
    if not target.exists():
        return f"{script} ran but did not write {target}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv or list(EXERCISE_ARGS))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(levelname)s - %(message)s", stream=sys.stderr)
    try:
        events = Events("supervisor", args.events)
    except OSError as e:
        log.critical("cannot open events file %s: %s", args.events, e.strerror)
        return EXIT_CANTCREAT
    if args.generate is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import generate_data

        if args.generate < 0:
            log.critical("--generate wants 0 or more readings, got %d", args.generate)
            return EXIT_USAGE
        try:
            generate_data.write(str(args.input), generate_data.generate(args.generate, args.seed))
        except OSError as e:
            log.critical("cannot write generated input %s: %s", args.input, e.strerror)
            return EXIT_CANTCREAT
        log.info("generated %d readings (seed %d) into %s", args.generate, args.seed, args.input)
    if args.generate_with and not args.input.exists():
        why = run_generator(args.generate_with, args.input)
        if why:
            log.critical("%s", why)
            return EXIT_NOINPUT
    try:
        items = load_items(args.input)
        digest = file_digest(args.input)
    except FileNotFoundError:
        log.critical("input file %s not found", args.input)
        return EXIT_NOINPUT
    except IsADirectoryError:
        log.critical("input %s is a directory, not a file", args.input)
        return EXIT_NOINPUT
    if args.spawn is not None and not args.spawn:
        log.critical("--spawn wants a command")
        return EXIT_USAGE
    cfg = Config(worker=args.worker, input=args.input, output=args.output, window=args.window,
                 timeout_s=args.timeout_ms / 1000, max_item_crashes=args.max_item_crashes,
                 worker_lock=args.worker_lock, give_up_s=args.give_up_s, fresh=args.fresh, rate=args.rate,
                 spawn=tuple(args.spawn or ()), stop_timeout_s=args.stop_timeout_s,
                 verify=args.verify == "on", max_corrupt_results=args.max_corrupt_results)
    try:
        outputs = Outputs(args.output, digest, args.fresh)
    except CheckpointMismatch as e:
        log.critical("%s", e)
        return EXIT_DATAERR
    except OSError as e:
        log.critical("cannot prepare output directory %s: %s", args.output, e.strerror)
        return EXIT_CANTCREAT
    sup = (SpawnSupervisor if cfg.spawn else Supervisor)(cfg, items, outputs, events)
    if cfg.spawn:
        # SIGTERM ends the job like Ctrl-C: unwinding stops the worker we started.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    code = EXIT_OK
    try:
        try:
            summary = sup.run()
        except KeyboardInterrupt:
            if not cfg.spawn:
                raise
            log.critical("stopped by a signal; outputs are consistent up to the last checkpoint (item %d)", sup.p.next)
            events.emit("error", detail="stopped by a signal", acked=sup.p.next)
            return 128 + signal.SIGTERM
    except Unavailable as e:
        log.critical("%s", e)
        events.emit("error", detail=str(e))
        summary, code = sup.summary(), EXIT_UNAVAILABLE
    except OSError as e:
        # A full volume or a failing disk: the checkpoint never moved past what
        # is on disk, so a restart with room resumes cleanly.
        what = "the output volume is full" if e.errno == errno.ENOSPC else f"I/O error: {e.strerror}"
        log.critical("%s; outputs are consistent up to the last checkpoint (item %d)", what, sup.p.next)
        events.emit("error", detail=what, acked=sup.p.next)
        return EXIT_IOERR
    summary_path = args.output / "summary.json"
    try:
        outputs.checkpoint()
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    except OSError as e:
        log.critical("cannot write %s: %s", summary_path, e.strerror)
        return EXIT_IOERR
    finally:
        outputs.close()
    events.emit("done", exit_code=code, **summary)
    if code == EXIT_OK:
        log.info("job complete: %d read, %d processed, %d corrupted, %d rejected, %d dead-lettered, %d worker crashes, "
                 "%d reconnects, %.0f items/s", summary["read"], summary["processed"], summary["corrupted"],
                 summary["rejected"], summary["dead_lettered"], summary["worker_crashes"], summary["reconnects"],
                 summary["items_per_s"] or 0)
    return code


if __name__ == "__main__":
    sys.exit(main())
