"""Sandboxes for students' programs: one locked-down container per
submission, reused across its test cases, removed at the end.

    with Sandbox(engine, run_id=rid, submission="alice", image=supervisor_ref,
                 builder_image=base_ref) as sb:
        sb.put_files({"hardcore_worker.c": src})                 # into /work/src
        c = sb.compile_c("hardcore_worker.c")                    # -> /work/bin/hardcore_worker
        r = sb.run(RunSpec([c.binary], stdin=b"5\\n", keep_stdin_open=True, timeout=3,
                           actions=[snapshot(["cworker.lock"], on_lines(1)),
                                    write_stdin(b"999\\n", on_lines(1))],
                           snapshot_at_exit=["cworker.lock"]))
        r.exit_code, r.signal, r.timed_out, r.stdout_lines(), r.snapshots[0].files["cworker.lock"]

The container (labctl's run-time base: python3 and libc, no compiler)
runs an idle reaper as PID 1 and nothing else. It has no network
(network_mode none: only `lo`), runs as uid 10001 on a read-only root with
every capability dropped and no-new-privileges, under pid, memory (no swap),
CPU and core-file limits, with no health probe. Its only writable places are
a small /tmp, /dev/shm, and /work: a size-capped tmpfs volume of its own.

Layout of /work (root's, so its entries cannot be renamed): src/ the
student's files (put_files), bin/ what compile_c built, case/ the current
case's working directory (emptied, with /tmp and /dev/shm, before every
run, after every process but PID 1 is killed), .in/ a case's input while it
is too large for the command line (deleted by the driver once read),
.grader/ the grader's programs built by build_private: root's and
exec-only, so a student's program can run them but not read, replace or
ptrace them. Nothing of the grader's judgement is in the container: a
case's spec carries only its input; expected outputs stay on the host.

Each run is one `docker exec` of driver.py's source (see there for what it
guarantees). The host keeps its own deadline too: a run that does not report
within its timeout plus HOST_GRACE_S (a fork bomb, a frozen sandbox) gets
its container killed and removed, and comes back as a RunResult whose
`error` says "timed out"; the next run starts a fresh container on the same
volume, into which everything put in or built before is put back (the
volume is a tmpfs: it empties whenever no container holds it).

Failures are sorted in two kinds. What the student's program did (crashed,
hung, flooded, killed the driver) is in the RunResult, never raised. What
broke in the grader (the engine gone or refusing, an image missing, a
builder without gcc) raises LabError: the runner reports that as a grader
error, not as the student's failure.

C is compiled in a separate short-lived builder container from the builder
image (gcc, and libc.a for static links), with the same hardening and the
same /work volume.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import secrets
import signal as _signal
import tarfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl import labels
from labctl.engine import Engine, is_engine_gone, wait_for
from labctl.errors import EngineRefused, ExitCode, LabError
from labctl.grade import driver
from labctl.grade.results import FaultEvent, cap, decode

WORK = "/work"
SRC_DIR = f"{WORK}/src"
BIN_DIR = f"{WORK}/bin"
CASE_DIR = f"{WORK}/case"
INPUT_DIR = f"{WORK}/.in"
# The grader's own programs that a student's program runs but must not read
# or replace (the stand-in workers): root's, exec-only, in a root-owned
# directory of a root-owned /work, so no entry of it can be renamed either.
GRADER_DIR = f"{WORK}/.grader"
UID = GID = 10001
USER = f"{UID}:{GID}"
ROOT = 0
# The builder of grader-private programs runs as a user of its own, without
# the work volume: their source (which holds the record token) never enters
# the sandbox.
PRIVATE_BUILD_USER = "10002:10002"
PRIVATE_CFLAGS = ("-std=gnu11", "-O2", "-static")  # static: LD_PRELOAD cannot reach into it
# One environment string may hold 128 KiB (MAX_ARG_STRLEN); the source travels in one.
PRIVATE_SOURCE_MAX = 120 * 1024
# The abstract unix socket (the sandbox's own network namespace) where the
# driver collects the stand-in workers' records; see driver.Recorder.
RECORD_NAME = "labctl-grader-record"
# On top of a run's own timeout: docker exec and Python start-up, draining,
# and a loaded 2-core machine. Past it the sandbox is killed.
HOST_GRACE_S = 15.0
# The HTTP read timeout of the connection that runs the driver: longer than
# any run, since the driver says nothing until it ends; the deadline above is
# what bounds a run.
EXEC_READ_TIMEOUT_S = 3600.0
# A case's input travels in the driver's argv (one argument may hold 128 KiB)
# up to this size, base64 and all; above it, through a file in /work/.in.
INLINE_MAX = 64 * 1024
COMPILE_TIMEOUT_S = 60.0
COMPILER_LOG_MAX = 16 * 1024
CFLAGS = ("-std=gnu11", "-O1", "-g", "-Wall")  # warnings are listed, never errors, for students
LDLIBS = ("-lm", "-lpthread")
START_TIMEOUT_S = 30.0
POLL_S = 0.1
DRIVER_SOURCE = Path(driver.__file__).read_text(encoding="utf-8")
PYTHON = ["python3", "-I", "-S", "-c"]
# PID 1: blocks every signal (a program of the same uid cannot stop it with
# SIGTERM) and reaps whatever is orphaned to it, so killed cases leave no zombies.
IDLE_SOURCE = """\
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
while True:
    signal.sigwait({signal.SIGCHLD})
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
"""


# Runs in the private builder: the source comes base64 in the environment,
# the binary leaves base64 on stdout (the compiler's words on stderr).
PRIVATE_BUILD_SCRIPT = """\
set -e
printf %s "$SRC" | base64 -d > /tmp/p.c
# shellcheck disable=SC2086
gcc $CFLAGS -o /tmp/p /tmp/p.c -lpthread >&2
base64 /tmp/p
"""


@dataclass(frozen=True)
class Limits:
    memory: str = "256m"  # swap is set equal: no swap at all
    nano_cpus: int = 500_000_000  # half a CPU
    pids: int = 64
    work_size: str = "32m"
    tmp_size: str = "16m"
    shm_size: str = "8m"


# ------------------------------------------------------------------ what a run does


@dataclass(frozen=True)
class Trigger:
    """When an action fires: exactly one of `at` (seconds after the program
    started), `lines` (stdout has at least that many newlines), `stderr_lines`,
    `file` (a path, relative to the case directory, exists); then `delay`
    more seconds. Each action fires at most once, and only while the program
    runs."""

    at: float | None = None
    lines: int | None = None
    stderr_lines: int | None = None
    file: str | None = None
    delay: float = 0.0

    def to_json(self) -> dict[str, Any]:
        given = {k: v for k, v in (("at", self.at), ("lines", self.lines), ("stderr_lines", self.stderr_lines),
                                   ("file", self.file)) if v is not None}
        if len(given) != 1:
            raise ValueError(f"a trigger needs exactly one condition, got {given}")
        return {**given, "delay": self.delay} if self.delay else given


def at(seconds: float) -> Trigger:
    return Trigger(at=seconds)


def on_lines(n: int, delay: float = 0.0) -> Trigger:
    return Trigger(lines=n, delay=delay)


def on_stderr_lines(n: int, delay: float = 0.0) -> Trigger:
    return Trigger(stderr_lines=n, delay=delay)


def on_file(path: str, delay: float = 0.0) -> Trigger:
    return Trigger(file=path, delay=delay)


@dataclass(frozen=True)
class Action:
    """Something the driver does during a run; build one with the functions below."""

    do: str  # signal | snapshot | write | close_stdin | touch
    when: Trigger
    signal: str = ""  # "TERM", "SEGV", "STOP", ...
    group: bool = False  # the signal goes to the program's whole process group
    paths: tuple[str, ...] = ()
    data: bytes = b""
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"do": self.do, "when": self.when.to_json()}
        if self.do == "signal":
            out.update(signal=self.signal, group=self.group)
        elif self.do == "snapshot":
            out["paths"] = list(self.paths)
        elif self.do == "write":
            out["data"] = base64.b64encode(self.data).decode("ascii")
        elif self.do == "touch":
            out["path"] = self.path
        return out


def send_signal(sig: str, when: Trigger, group: bool = False) -> Action:
    """Sends SIGsig (e.g. "TERM") to the program (or its process group)."""
    name = sig.upper().removeprefix("SIG")
    if not hasattr(_signal, "SIG" + name):
        raise ValueError(f"no signal SIG{name}")
    return Action("signal", when, signal=name, group=group)


def snapshot(paths: Sequence[str], when: Trigger) -> Action:
    """Reads these files (up to 64 KiB each; None if absent) at that moment."""
    return Action("snapshot", when, paths=tuple(paths))


def write_stdin(data: bytes, when: Trigger) -> Action:
    return Action("write", when, data=data)


def close_stdin(when: Trigger) -> Action:
    return Action("close_stdin", when)


def touch(path: str, when: Trigger) -> Action:
    """Creates an empty file in the case directory (a signal to another run)."""
    return Action("touch", when, path=path)


@dataclass(frozen=True)
class Flood:
    """stdin made on the fly inside the sandbox: `line` repeated `count` times,
    one every `every` seconds (0: as fast as the program reads them)."""

    line: bytes
    count: int
    every: float = 0.0


@dataclass
class RunSpec:
    """One run of one program in the case directory (emptied first).

    stdin is written as the program reads it, then closed, unless
    keep_stdin_open (the program then sees a stdin that never ends, as
    under a supervisor). `files` are placed in the case directory before the
    start (e.g. a stale lock). At `timeout` seconds the program's process
    group is killed. snapshot_at_exit: files read once it ended.
    start_when_file: wait (up to start_timeout s) for that file before
    starting, e.g. one that another run of run_many() touches. touch_on_exit:
    a file created once the program ended, for another run to wait on."""

    argv: list[str]
    stdin: bytes | Flood = b""
    keep_stdin_open: bool = False
    timeout: float = 5.0
    actions: list[Action] = field(default_factory=list)
    snapshot_at_exit: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = CASE_DIR
    start_when_file: str | None = None
    start_timeout: float = 5.0
    touch_on_exit: str | None = None
    record: bool = False  # collect the stand-in workers' record (RunResult.record)

    def inline_size(self) -> int:
        return (len(self.stdin) if isinstance(self.stdin, bytes) else 0) + sum(map(len, self.files.values()))

    def host_deadline(self, paused_s: float) -> float:
        return self.timeout + (self.start_timeout if self.start_when_file else 0) + paused_s + HOST_GRACE_S


@dataclass(frozen=True)
class Fired:
    """An action that fired: when (s after start), and stdout/stderr newlines by then."""

    index: int
    do: str
    t: float
    lines: int
    stderr_lines: int
    note: str = ""


@dataclass(frozen=True)
class Snapshot:
    index: int  # the action's position in RunSpec.actions
    t: float
    files: dict[str, bytes | None]


@dataclass
class RunResult:
    """What one run did. `error` set means the run did not happen or did not
    report (not started, could not exec, timed out at the host, the sandbox
    died): the other fields are then mostly empty. Times t_* are the
    sandbox's monotonic clock, comparable between runs of one run_many()."""

    error: str | None = None
    host_timed_out: bool = False
    output_lost: bool = False  # the engine lost the driver's output (see _Exec): run() tries once more
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    core_dumped: bool = False
    timed_out: bool = False  # killed by the driver at RunSpec.timeout
    oom_killed: bool = False  # the sandbox killed a process for want of memory during the run
    memory_limit: str = Limits.memory
    elapsed: float = 0.0
    t_start: float | None = None
    t_end: float | None = None
    t_first_stdout: float | None = None
    stdout: bytes = b""  # the first 64 KiB
    stdout_total: int = 0
    stdout_newlines: int = 0
    stderr: bytes = b""
    stderr_total: int = 0
    stderr_newlines: int = 0
    stdin_written: int = 0
    fired: list[Fired] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    at_exit: dict[str, bytes | None] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # the case directory after the run
    host_events: list[FaultEvent] = field(default_factory=list)
    record: bytes = b""  # with RunSpec.record: what the stand-in workers reported, token checked
    record_forged: int = 0  # messages on the record's socket without the token
    record_cut: int = 0  # genuine messages past the driver's cap

    @classmethod
    def from_driver(cls, d: dict[str, Any]) -> RunResult:
        if d.get("error"):
            return cls(error=str(d["error"]))

        def files(m: dict[str, str | None]) -> dict[str, bytes | None]:
            return {k: None if v is None else base64.b64decode(v) for k, v in m.items()}

        return cls(
            pid=d["pid"], exit_code=d["exit_code"], signal=d["signal"], core_dumped=d["core_dumped"],
            timed_out=d["timed_out"], oom_killed=d.get("oom_killed", False), elapsed=d["elapsed"],
            t_start=d["t_start"], t_end=d["t_end"],
            t_first_stdout=d["t_first_stdout"], stdout=base64.b64decode(d["stdout"] or ""),
            stdout_total=d["stdout_total"], stdout_newlines=d["stdout_lines"],
            stderr=base64.b64decode(d["stderr"] or ""), stderr_total=d["stderr_total"],
            stderr_newlines=d["stderr_lines"], stdin_written=d["stdin_written"],
            fired=[Fired(f["i"], f["do"], f["t"], f["lines"], f["stderr_lines"], f["note"]) for f in d["fired"]],
            snapshots=[Snapshot(s["i"], s["t"], files(s["files"])) for s in d["snapshots"]],
            at_exit=files(d["at_exit"]), files=list(d["files"]),
            record=base64.b64decode(d.get("record") or ""), record_forged=d.get("record_forged", 0),
            record_cut=d.get("record_cut", 0))

    @property
    def ended_by_itself(self) -> bool:
        """It exited or was killed by a signal, and not by the timeout."""
        return self.error is None and not self.timed_out and (self.exit_code is not None or self.signal is not None)

    @property
    def status(self) -> str:
        """One phrase: 'exit 0', 'killed by signal 11 (SIGSEGV)', 'timed out after 3 s (killed)'."""
        if self.error:
            return self.error
        if self.timed_out:
            return f"did not end by its time limit: killed by the grader after {self.elapsed:.1f} s"
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = "?"
            oom = f", out of memory (the sandbox allows {self.memory_limit})" if self.oom_killed else ""
            return f"killed by signal {self.signal} ({name}){oom}" + (", core dumped" if self.core_dumped else "")
        return f"exit {self.exit_code}"

    def stdout_text(self) -> str:
        """stdout as text, with '[... N bytes cut]' when it was longer than kept."""
        return _with_cut(self.stdout, self.stdout_total)

    def stderr_text(self) -> str:
        return _with_cut(self.stderr, self.stderr_total)

    def stdout_lines(self) -> list[str]:
        """The kept stdout's lines, a trailing CR removed from each."""
        return [ln.rstrip("\r") for ln in decode(self.stdout).splitlines()]

    def stderr_lines(self) -> list[str]:
        return [ln.rstrip("\r") for ln in decode(self.stderr).splitlines()]

    def fired_action(self, index: int) -> Fired | None:
        return next((f for f in self.fired if f.index == index), None)

    def snapshot_of(self, index: int) -> Snapshot | None:
        return next((s for s in self.snapshots if s.index == index), None)

    def summary(self, max_chars: int = 1500) -> str:
        """What was seen, for a test's output: the status, then stdout and stderr heads."""
        parts = [f"status: {self.status}"]
        for name, kept, total in (("stdout", self.stdout, self.stdout_total),
                                  ("stderr", self.stderr, self.stderr_total)):
            if self.error is None:
                head = decode(kept[:max_chars])
                if total > len(head.encode()):
                    head += f"\n[... {total:,} bytes in all, the rest cut]"
                parts.append(f"{name}:\n{head}" if head else f"{name}: (empty)")
        return "\n".join(parts)


def _with_cut(kept: bytes, total: int) -> str:
    return decode(kept) + (f"\n[... {total - len(kept)} bytes cut]" if total > len(kept) else "")


@dataclass
class CompileResult:
    ok: bool
    log: str  # the compiler's output (warnings, errors), capped
    binary: str  # the path inside the sandbox (exists only if ok)
    elapsed: float
    timed_out: bool = False


# ------------------------------------------------------------------ the sandbox


class Sandbox:
    """One submission's container and work volume. A context manager: leaving
    it (normally, by an exception, or Ctrl-C) removes both.

    `cancel`, when set, makes the next run() raise LabError(INTERRUPTED)."""

    def __init__(self, engine: Engine, *, run_id: str, submission: str, image: str, builder_image: str,
                 limits: Limits = Limits(), cancel: threading.Event | None = None):
        self.engine = engine
        self.run_id = run_id
        self.submission = submission
        self.image = image
        self.builder_image = builder_image
        self.limits = limits
        self.cancel = cancel or threading.Event()
        stem = "".join(c if c.isalnum() or c in "_.-" else "_" for c in submission)[:40]
        self._prefix = f"labctl-grade-{run_id}-{stem}"
        self.volume = f"{self._prefix}-work-{secrets.token_hex(2)}"
        self.container: str | None = None
        self._exec_engine: Engine | None = None
        self.replaced = 0  # containers killed and replaced after a run broke them
        # The credential of the stand-in workers' record: built into them
        # (build_private) and given to the driver, never to the student.
        self.record_token = secrets.token_hex(16)
        self._lock = threading.Lock()
        # What was put in or built, kept to restore it: the volume is a tmpfs,
        # so it is emptied whenever no container holds it, e.g. while a broken
        # sandbox is being replaced.
        self._kept: dict[tuple[str, int], dict[str, tuple[str, bytes | None, int]]] = {}

    def __enter__(self) -> Sandbox:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def labels(self, role: str) -> dict[str, str]:
        return labels.grade_labels(self.run_id, self.submission, role)

    def start(self) -> None:
        """Creates the work volume and starts the container."""
        self.engine.create_tmpfs_volume(self.volume, self.labels("work"), self.limits.work_size, ROOT, ROOT,
                                        mode="0755")
        self._ensure_container()

    def close(self) -> None:
        """Removes the container, any builder and the volume; safe to call twice."""
        for name in self._containers():
            self.engine.remove_container(name)
        self.container = None
        self.engine.remove_volume(self.volume)
        if self._exec_engine is not None:
            self._exec_engine.close()
            self._exec_engine = None

    def _containers(self) -> list[str]:
        f = labels.grade_filters(self.run_id, self.submission)
        return [c.id for c in self.engine.containers(f)]

    def _create(self, role: str, image: str, entrypoint: list[str], command: list[str]) -> str:
        lim = self.limits
        return self.engine.create_isolated(
            image=image, name=f"{self._prefix}-{role}-{secrets.token_hex(2)}", labels=self.labels(role),
            entrypoint=entrypoint, command=command, user=USER, volume=self.volume, mount=WORK,
            tmpfs={"/tmp": f"rw,noexec,nosuid,size={lim.tmp_size},mode=1777"}, mem_limit=lim.memory,
            nano_cpus=lim.nano_cpus, pids_limit=lim.pids, shm_size=lim.shm_size)

    def _ensure_container(self) -> str:
        with self._lock:
            if self.container is not None:
                return self.container
            cid = self._create("sandbox", self.image, [*PYTHON, IDLE_SOURCE], [])
            self.container = cid
        self.engine.start(cid)
        wait_for(lambda: (st := self.engine.inspect(cid)) is not None and st.status == "running",
                 START_TIMEOUT_S, POLL_S, f"the sandbox of {self.submission} to run",
                 seen=lambda: repr(getattr(self.engine.inspect(cid), "status", "gone")))
        self._put_tar(WORK, [(d, None, 0o700) for d in ("src", "bin", "case", ".in")])
        for (dest, owner), entries in self._kept.items():
            self._put_tar(dest, list(entries.values()), owner=owner)
        return cid

    def _discard_container(self) -> None:
        with self._lock:
            cid, self.container = self.container, None
        if cid:
            self.engine.remove_container(cid)
            self.replaced += 1

    # -------------------------------------------------------------- files

    def _put_tar(self, dest: str, entries: list[tuple[str, bytes | None, int]], owner: int = UID) -> None:
        """(name, content or None for a directory, mode) into dest, owned by
        `owner` (uid and gid; the sandbox's user unless said)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data, mode in entries:
                info = tarfile.TarInfo(name)
                info.uid, info.gid, info.mode, info.mtime = owner, owner, mode, int(time.time())
                if data is None:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        self.engine.put_archive(self._ensure_container(), dest, buf.getvalue())

    def put_files(self, files: Mapping[str, bytes], dest: str = SRC_DIR, mode: int = 0o644) -> None:
        """Copies files (plain names) into dest in the running sandbox."""
        for name in files:
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"put_files takes plain file names, not {name!r}")
        entries: list[tuple[str, bytes | None, int]] = [(n, d, mode) for n, d in files.items()]
        self._put_tar(dest, entries)
        self._kept.setdefault((dest, UID), {}).update((e[0], e) for e in entries)

    def read_file(self, path: str) -> bytes | None:
        """A file's content from the sandbox (None if absent), e.g. one a run wrote."""
        try:
            stream = self.engine.get_archive(self._ensure_container(), path)
        except EngineRefused:
            return None
        except LabError:
            raise
        except Exception as e:
            if getattr(e, "status_code", None) == 404:
                return None
            raise
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            f = tar.extractfile(member) if member is not None and member.isfile() else None
            return f.read() if f is not None else None

    # -------------------------------------------------------------- compile

    def compile_c(self, source: str, output: str | None = None, *, flags: Sequence[str] = CFLAGS,
                  libs: Sequence[str] = LDLIBS, timeout: float = COMPILE_TIMEOUT_S) -> CompileResult:
        """Compiles SRC_DIR/source to BIN_DIR/output (default: source without .c)
        in a builder container. A compile error or timeout is a CompileResult
        with ok False and the compiler's message; a builder that cannot run
        gcc at all raises LabError (the grader's problem)."""
        out = f"{BIN_DIR}/{output or source.removesuffix('.c')}"
        self._ensure_container()  # the volume must be mounted for the builder to see the files
        cmd = [*flags, "-o", out, f"{SRC_DIR}/{source}", *libs]
        t0 = time.monotonic()
        cid = self._create("builder", self.builder_image, ["gcc"], cmd)
        try:
            try:
                self.engine.start(cid)
            except EngineRefused as e:
                raise LabError(ExitCode.IMAGE_MISSING, f"cannot compile: the builder image {self.builder_image} "
                               f"cannot run gcc ({e.what})", "build labctl's local builder: `labctl base`") from None
            code = self.engine.wait(cid, timeout)
            log = self.engine.logs_text(cid)
        finally:
            self.engine.remove_container(cid)
        elapsed = time.monotonic() - t0
        if code is None:
            return CompileResult(False, cap(log + f"\ncompilation timed out after {timeout:g} s", COMPILER_LOG_MAX),
                                 out, elapsed, timed_out=True)
        if code == 127 and "gcc" in log and "not found" in log:
            raise LabError(ExitCode.IMAGE_MISSING, f"cannot compile: no gcc in {self.builder_image}",
                           "build labctl's local builder: `labctl base`")
        if code == 0:
            binary = self.read_file(out)
            if binary is None:
                raise LabError(ExitCode.ENGINE_ERROR, f"gcc succeeded but {out} is not in the sandbox",
                               "`docker volume inspect` the work volume; is it a shared tmpfs?")
            self._kept.setdefault((BIN_DIR, UID), {})[out.rsplit("/", 1)[1]] = (out.rsplit("/", 1)[1], binary, 0o755)
        return CompileResult(code == 0, cap(log, COMPILER_LOG_MAX), out, elapsed)

    def build_private(self, name: str, source: bytes, timeout: float = COMPILE_TIMEOUT_S) -> str:
        """Compiles a grader program (static) away from the sandbox, in a
        builder of its own user without the work volume, and installs it as
        GRADER_DIR/name, root's and exec-only (mode 0111): the student's
        programs can run it, but neither read it (exec of an unreadable file
        also makes the process undumpable, so not its memory either) nor
        replace it. Returns its path. Any failure is the grader's: LabError."""
        src = base64.b64encode(source).decode("ascii")
        if len(src) > PRIVATE_SOURCE_MAX:
            raise LabError(ExitCode.GRADER_ERROR, f"the grader's {name} source is too large for its builder's "
                           f"environment ({len(src)} bytes in base64)", "raise the limit: copy it in instead")
        cid = self.engine.create_isolated(
            image=self.builder_image, name=f"{self._prefix}-private-{secrets.token_hex(2)}",
            labels=self.labels("builder"), entrypoint=["sh", "-c", PRIVATE_BUILD_SCRIPT], command=[],
            user=PRIVATE_BUILD_USER, volume=None, mount=None,
            tmpfs={"/tmp": f"rw,noexec,nosuid,size={self.limits.tmp_size},mode=1777"},
            mem_limit=self.limits.memory, nano_cpus=self.limits.nano_cpus, pids_limit=self.limits.pids,
            environment={"SRC": src, "CFLAGS": " ".join(PRIVATE_CFLAGS)})
        try:
            self.engine.start(cid)
            code = self.engine.wait(cid, timeout)
            out = self.engine.logs_text(cid, stderr=code != 0)
        finally:
            self.engine.remove_container(cid)
        if code != 0:
            why = "timed out" if code is None else f"exit {code}"
            raise LabError(ExitCode.GRADER_ERROR, f"the grader's {name} did not build ({why}): {out[-800:]}",
                           f"the builder image {self.builder_image} must compile static C (libc6-dev)")
        try:
            binary = base64.b64decode("".join(out.split()), validate=True)
        except ValueError:
            binary = b""
        if not binary.startswith(b"\x7fELF"):
            raise LabError(ExitCode.GRADER_ERROR, f"the grader's {name} came back empty or garbled from its builder",
                           "run `docker logs` on a builder container to see it")
        # Made on first use only: a sandbox that runs none of the grader's
        # programs holds nothing of the grader.
        home = (GRADER_DIR.rsplit("/", 1)[1], None, 0o711)
        entry = (name, binary, 0o111)
        for dest, e in ((WORK, home), (GRADER_DIR, entry)):
            self._put_tar(dest, [e], owner=ROOT)
            self._kept.setdefault((dest, ROOT), {})[e[0]] = e
        return f"{GRADER_DIR}/{name}"

    # -------------------------------------------------------------- runs

    def run(self, spec: RunSpec, host_actions: Sequence[tuple[str, float, float]] = ()) -> RunResult:
        """Runs one case after a reset (every leftover process killed, the case
        directory, /tmp and /dev/shm emptied). host_actions: what the driver
        cannot do from inside, e.g. ("pause", at_s, for_s) = `docker pause` of
        the sandbox at_s seconds after the program started, for for_s
        seconds; the events come back in RunResult.host_events, timed from
        the program's start (and the pauses count toward the deadline). The
        program's own timeout runs on while it is frozen: leave it room."""
        result = self._run(spec, host_actions, reset=True)
        if result.output_lost:
            # The engine, not the program: the case runs once more from a clean sandbox.
            result = self._run(spec, host_actions, reset=True)
        return result

    def run_many(self, specs: Sequence[RunSpec]) -> list[RunResult]:
        """Runs several cases at once in the same case directory (e.g. two
        workers on one lock), after one reset; coordinate them with
        start_when_file / touch_on_exit / touch()."""
        self.reset()
        results: list[RunResult] = [RunResult(error="no result")] * len(specs)
        failures: list[BaseException] = []

        def one(i: int) -> None:
            try:
                results[i] = self._run(specs[i], (), reset=False)
            except BaseException as e:  # raised again on the caller's thread, not printed by this one
                failures.append(e)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(specs))]
        for t in threads:
            t.start()
        for t, s in zip(threads, specs, strict=True):
            t.join(s.host_deadline(0) + HOST_GRACE_S)
        if failures:
            raise failures[0]
        self.reset()  # what they left must not outlive them, as after run()
        return results

    def reset(self) -> None:
        """Kills every process but PID 1 and empties the case's directories."""
        ex = self._exec({"mode": "reset", "clean": [*self._clean_dirs(), INPUT_DIR]}, HOST_GRACE_S, ())
        if ex.doc is None or ex.doc.get("left"):
            self._discard_container()  # a sandbox that cannot be cleaned is replaced

    @staticmethod
    def _clean_dirs() -> list[str]:
        return [CASE_DIR, "/tmp", "/dev/shm"]

    def _run(self, spec: RunSpec, host_actions: Sequence[tuple[str, float, float]], reset: bool) -> RunResult:
        if self.cancel.is_set():
            raise LabError(ExitCode.INTERRUPTED, "grading interrupted")
        for kind, _, _ in host_actions:
            if kind != "pause":
                raise ValueError(f"unknown host action {kind!r}; supported: pause")
        payload = self._payload(spec)
        if reset:
            payload["reset"] = {"clean": self._clean_dirs()}
            payload["kill_after"] = True
        ex = self._exec(payload, spec.host_deadline(sum(h[2] for h in host_actions)), host_actions)
        if ex.doc is None:
            return RunResult(error=ex.why, host_timed_out=ex.timed_out, host_events=ex.events,
                             output_lost=ex.output_lost)
        result = RunResult.from_driver(ex.doc)
        result.host_events = ex.events
        result.memory_limit = self.limits.memory
        return result

    def _payload(self, spec: RunSpec) -> dict[str, Any]:
        stdin: dict[str, Any] = {"close": not spec.keep_stdin_open}
        p: dict[str, Any] = {
            "argv": spec.argv, "cwd": spec.cwd, "timeout": spec.timeout, "stdin": stdin, "env": spec.env,
            "actions": [a.to_json() for a in spec.actions], "snapshot_at_exit": spec.snapshot_at_exit,
        }
        if isinstance(spec.stdin, Flood):
            stdin.update(repeat=spec.stdin.line.decode("utf-8", "surrogateescape"), count=spec.stdin.count,
                         every=spec.stdin.every)
        if spec.start_when_file:
            p["start_when"] = {"file": spec.start_when_file}
            p["start_timeout"] = spec.start_timeout
        if spec.touch_on_exit:
            p["touch_on_exit"] = spec.touch_on_exit
        if spec.record:
            p["record"] = RECORD_NAME
        data = spec.stdin if isinstance(spec.stdin, bytes) else b""
        if spec.inline_size() <= INLINE_MAX:
            stdin["data"] = base64.b64encode(data).decode("ascii")
            p["files"] = {n: base64.b64encode(d).decode("ascii") for n, d in spec.files.items()}
            return p
        # Too large for the command line: staged as files, which the driver
        # moves into place (or reads) and deletes before the program starts.
        stage = secrets.token_hex(4)
        self._put_tar(INPUT_DIR, [(stage, None, 0o700), (f"{stage}/stdin", data, 0o600)]
                      + [(f"{stage}/{n}", d, 0o644) for n, d in spec.files.items()])
        p["stage"] = {"dir": f"{INPUT_DIR}/{stage}", "files": list(spec.files)}
        return p

    def _exec(self, payload: dict[str, Any], deadline_s: float,
              host_actions: Sequence[tuple[str, float, float]]) -> _Exec:
        """Runs the driver with a host-side deadline; its parsed result, or why there is none."""
        cid = self._ensure_container()
        with self._lock:
            if self._exec_engine is None:
                self._exec_engine = self.engine.with_timeout(EXEC_READ_TIMEOUT_S)
            exec_engine = self._exec_engine
        nonce = secrets.token_hex(16)
        cmd = [*PYTHON, DRIVER_SOURCE, json.dumps(payload)]
        box: dict[str, Any] = {}
        started, marker, err_head = threading.Event(), f"{nonce} started".encode(), bytearray()

        def watch(chunk: bytes) -> None:
            if not started.is_set():
                err_head.extend(chunk)
                if marker in err_head:
                    started.set()

        def target() -> None:
            try:
                env = {driver.NONCE_ENV: nonce}
                if payload.get("record"):  # only where needed: never in a run of several at once
                    env[driver.RECORD_TOKEN_ENV] = self.record_token
                box["res"] = exec_engine.exec_capture(cid, cmd, user=USER, environment=env,
                                                      workdir="/", on_stderr=watch)
            except Exception as e:  # judged below, on the caller's thread
                box["exc"] = e

        th = threading.Thread(target=target, daemon=True, name=f"exec-{self.submission}")
        host = _HostActions(self.engine, cid, host_actions, started)
        th.start()
        if host_actions:
            host.start()
        th.join(deadline_s)
        host.finish()
        if th.is_alive():
            self._discard_container()
            th.join(HOST_GRACE_S)
            return _Exec(f"timed out: no result from the sandbox within {deadline_s:.0f} s, so the grader killed "
                         "it (a hang, a fork bomb or a frozen program)", None, host.events, timed_out=True)
        if "exc" in box:
            return _Exec(self._exec_failed(box["exc"]), None, host.events)
        code, out, err = box["res"]
        prefix = nonce.encode() + b" "
        line = next((ln for ln in reversed(out.splitlines()) if ln.startswith(prefix)), None)
        if line is None:
            self._discard_container()
            return _Exec(f"the run gave no result (driver exit {code}; killed, or out of memory?): "
                         f"{decode(err[-300:]).strip() or 'no message'}", None, host.events, output_lost=code == 0)
        return _Exec("", json.loads(line[len(prefix):]), host.events)

    def _exec_failed(self, e: Exception) -> str:
        if is_engine_gone(e):
            raise e
        if self.cancel.is_set():
            raise LabError(ExitCode.INTERRUPTED, "grading interrupted")
        self._discard_container()
        what = e.what if isinstance(e, LabError) else str(e)
        return f"the sandbox stopped during the run ({what}); it was replaced"

    @staticmethod
    def cleanup(engine: Engine, run_id: str, submission: str | None = None) -> int:
        """Removes every container and volume labelled with the grading run
        (or one submission of it); returns how many. Safe to call twice."""
        f = labels.grade_filters(run_id, submission)
        found = [c.id for c in engine.containers(f)]
        for cid in found:
            engine.remove_container(cid)
        vols = engine.volumes(f)
        for v in vols:
            engine.remove_volume(v)
        return len(found) + len(vols)


@dataclass
class _Exec:
    why: str  # empty when doc is there
    doc: dict[str, Any] | None
    events: list[FaultEvent]
    timed_out: bool = False
    # The driver exited 0 and its result line never came: the engine lost the
    # exec's output (moby/moby#27289, seen about once in a thousand runs under load).
    output_lost: bool = False


class _HostActions(threading.Thread):
    """Pauses the sandbox during a run, from the host; always unpauses."""

    def __init__(self, engine: Engine, container: str, actions: Sequence[tuple[str, float, float]],
                 started: threading.Event):
        super().__init__(daemon=True, name="host-actions")
        self.engine = engine
        self.container = container
        self.actions = sorted(actions, key=lambda a: a[1])
        self.started = started
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.events: list[FaultEvent] = []

    def run(self) -> None:
        # Times count from the program's start, which the driver announces;
        # a run that never starts (or ends first) gets no action.
        while not self.started.wait(POLL_S):
            if self.stop.is_set():
                return
        self.t0 = time.monotonic()
        for _kind, at_s, for_s in self.actions:
            # Event.wait: a timed step that finish() can cut short.
            if self.stop.wait(max(0.0, self.t0 + at_s - time.monotonic())):
                return
            try:
                self.engine.pause(self.container)
            except LabError as e:
                self.events.append(FaultEvent(time.monotonic() - self.t0, f"pause refused: {e.what}", "sandbox"))
                return
            self.events.append(FaultEvent(time.monotonic() - self.t0, "pause", "sandbox"))
            try:
                self.stop.wait(for_s)
            finally:
                with contextlib.suppress(Exception):  # a sandbox removed meanwhile has nothing to unpause
                    self.engine.unpause(self.container)
                self.events.append(FaultEvent(time.monotonic() - self.t0, "unpause", "sandbox"))

    def finish(self) -> None:
        self.stop.set()
        if self.is_alive():
            self.join(HOST_GRACE_S)
