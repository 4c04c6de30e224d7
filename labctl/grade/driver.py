"""The in-container process driver: runs one student program and reports
what it did as one JSON line.

The sandbox runs this file's source inside the grading container with
`docker exec ... python3 -I -S -c <this source> <spec as JSON>`, so no file
of the grader ever lies in the container; it therefore uses the standard
library only and imports nothing from labctl. The host side (sandbox.py)
builds the spec and parses the result; the spec's shape is documented
there, in RunSpec and RunResult.

What it guarantees, whatever the program does:
- the program runs in its own session and process group, with its cwd, an
  environment of the spec's choosing, no core files, and pipes for stdin,
  stdout and stderr (never the driver's own descriptors);
- stdout and stderr are each kept up to CAP bytes, while every byte and
  every newline is still counted, so a flood is read (never blocks the
  program) and reported as cut;
- at the timeout the whole process group is killed with SIGKILL, and so is
  what is left of the group when the program exits by itself;
- the exit status is exact: exit code, or signal and whether it dumped core;
- the result line is prefixed with a nonce that only the host and this
  process know (it comes in the environment, which the program cannot read
  once the driver has made itself non-dumpable), so a program that writes
  JSON of its own cannot fake a result;
- with "record" in the spec, it listens on that abstract unix socket before
  the program starts and keeps every message that begins with the record
  token (from the environment too, like the nonce): the grader's stand-in
  workers, exec-only binaries with the token built in, report there what
  they handled. The program cannot take the name first, read the token, or
  take back a message once sent; what it sends itself is counted as forged.

Mode "reset" kills every process of the sandbox's user but PID 1 and empties
the case's directories: what one case leaves behind never meets the next.
"""
from __future__ import annotations

import base64
import json
import os
import resource
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

CAP = 64 * 1024
READ_CHUNK = 64 * 1024
POLL_S = 0.01  # how often file conditions and the child's state are looked at
DRAIN_S = 0.5  # how long output still in flight is read after the program ended
REAP_S = 2.0  # how long a SIGKILLed program may take to be reaped
RESET_S = 5.0
SNAPSHOT_MAX = CAP
NONCE_ENV = "LABCTL_DRIVER_NONCE"
RECORD_TOKEN_ENV = "LABCTL_RECORD_TOKEN"
RECORD_MAX = 48 * 1024 * 1024  # genuine records kept; a flood of 200,000 lines makes about 10 MB
RECORD_MSG_MAX = 4096
RECORD_CONNS_MAX = 64  # the stand-ins alive at once are a handful; more is a program flooding the socket
RECORD_BATCH = 4096  # messages read from one connection per turn of the loop, so no sender holds the driver
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
PR_SET_DUMPABLE = 4


def now() -> float:
    return time.monotonic()


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def undumpable() -> str:
    """Hides this process's /proc entries (environ, fd, mem) from the program,
    which runs as the same user. Returns a note if that failed."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            return f"prctl failed: errno {ctypes.get_errno()}"
    except (OSError, AttributeError, ImportError) as e:
        return f"prctl unavailable: {e}"
    return ""


# ------------------------------------------------------------------ reset


def live_pids() -> list[int]:
    """Processes of this namespace that are not zombies, PID 1 and us excepted."""
    me, out = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (1, me):
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state not in (b"Z", b"X"):
            out.append(int(name))
    return out


def empty_dir(path: str) -> None:
    """Removes everything inside path, even what the program made unwritable."""
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        return

    def force(_func: object, p: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        except OSError:
            pass

    if os.stat(path).st_uid == os.getuid():  # /tmp and /dev/shm are root's, and sticky
        os.chmod(path, stat.S_IRWXU)
    for entry in os.listdir(path):
        p = os.path.join(path, entry)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, onerror=force)
        else:
            try:
                os.unlink(p)
            except OSError:
                force(os.unlink, p, None)


def kill_all() -> list[int]:
    """SIGKILL to every process but PID 1 and this one (kill(-1) spares
    both), until none is left or RESET_S passed; returns what is left."""
    deadline = now() + RESET_S
    left = live_pids()
    while left and now() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(POLL_S)  # the kernel delivers SIGKILL asynchronously: look again shortly
        left = live_pids()
    return left


def reset(spec: dict) -> dict:
    """Every leftover process killed, then the case's directories emptied."""
    left = kill_all()
    for d in spec.get("clean", []):
        empty_dir(d)
    return {"left": left}


OOM_FILES = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")


def oom_kills() -> int | None:
    """The sandbox's count of processes killed for want of memory (cgroup v2 or v1)."""
    for path in OOM_FILES:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return None


# ------------------------------------------------------------------ the run


class Stream:
    """One output pipe: the first CAP bytes kept, every byte and newline counted."""

    def __init__(self, fd: int):
        self.fd = fd
        self.kept = bytearray()
        self.total = 0
        self.lines = 0
        self.first_at: float | None = None
        self.open = True

    def read(self) -> None:
        try:
            data = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.open = False
            return
        if self.first_at is None:
            self.first_at = now()
        self.total += len(data)
        self.lines += data.count(b"\n")
        room = CAP - len(self.kept)
        if room > 0:
            self.kept += data[:room]


class Feed:
    """What goes to the program's stdin: bytes, then maybe a flood made on the
    fly ({"repeat": text, "count": n}, one repeat every `every` seconds if
    given, else as fast as the program reads), then maybe end of file."""

    def __init__(self, spec: dict):
        self.pending = bytearray(unb64(spec.get("data")))
        self.repeat = spec.get("repeat", "").encode()
        self.count = int(spec.get("count", 0)) if self.repeat else 0
        self.every = float(spec.get("every", 0))
        self.next_at = 0.0
        self.close_when_done = bool(spec.get("close", True))
        self.written = 0
        self.error = ""

    def refill(self) -> None:
        if self.count <= 0:
            return
        if self.every:
            if now() >= self.next_at:
                self.pending += self.repeat
                self.count -= 1
                self.next_at = now() + self.every
        elif len(self.pending) < READ_CHUNK:
            n = min(self.count, max(1, READ_CHUNK // len(self.repeat)))
            self.pending += self.repeat * n
            self.count -= n

    @property
    def done(self) -> bool:
        return not self.pending and self.count == 0


def trigger_holds(trig: dict, t: float, run: Run) -> bool:
    if "at" in trig:
        return t >= float(trig["at"])
    if "lines" in trig:
        return run.out.lines >= int(trig["lines"])
    if "stderr_lines" in trig:
        return run.err.lines >= int(trig["stderr_lines"])
    if "file" in trig:
        return os.path.lexists(os.path.join(run.cwd, trig["file"]))
    return False


def snapshot(cwd: str, paths: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in paths:
        try:
            with open(os.path.join(cwd, p), "rb") as f:
                out[p] = b64(f.read(SNAPSHOT_MAX))
        except OSError:
            out[p] = None
    return out


class Recorder:
    """The listening end of the stand-in workers' record: every message
    that carries the token, in the order each sender sent them."""

    def __init__(self, name: str, token: str):
        self.prefix = token.encode() + b" "
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind("\0" + name)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.conns: dict[int, socket.socket] = {}
        self.kept = bytearray()
        self.messages = self.forged = self.cut = 0

    def fds(self) -> list[int]:
        return [self.listener.fileno(), *self.conns]

    def service(self, readable: list[int] | None = None) -> None:
        """Accepts and reads what is ready (everything, if readable is None)."""
        if readable is None or self.listener.fileno() in readable:
            while True:
                try:
                    conn, _ = self.listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                if len(self.conns) >= RECORD_CONNS_MAX:
                    conn.close()
                    self.forged += 1
                    continue
                conn.setblocking(False)
                self.conns[conn.fileno()] = conn
        for fd, conn in list(self.conns.items()):
            if readable is None or fd in readable:
                self.drain(fd, conn)

    def drain(self, fd: int, conn: socket.socket, most: int = RECORD_BATCH) -> None:
        for _ in range(most):
            try:
                msg = conn.recv(RECORD_MSG_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg = b""
            if not msg:
                conn.close()
                del self.conns[fd]
                return
            self.take(msg)

    def take(self, msg: bytes) -> None:
        if not msg.startswith(self.prefix):
            self.forged += 1
            return
        body = msg[len(self.prefix):]
        if len(self.kept) + len(body) > RECORD_MAX:
            self.cut += 1
            return
        self.messages += 1
        self.kept += body if body.endswith(b"\n") else body + b"\n"

    def close(self) -> dict:
        for _ in range(RECORD_MAX // RECORD_BATCH):  # what is still queued, in bounded turns
            before = self.messages + self.forged + self.cut
            self.service()
            if self.messages + self.forged + self.cut == before:
                break
        for conn in self.conns.values():
            conn.close()
        self.listener.close()
        return {"record": b64(bytes(self.kept)), "record_messages": self.messages,
                "record_forged": self.forged, "record_cut": self.cut}


class Run:
    def __init__(self, spec: dict, proc: subprocess.Popen, t0: float):
        self.spec = spec
        self.cwd = spec["cwd"]
        self.proc = proc
        self.pid = proc.pid
        self.t0 = t0
        assert proc.stdin and proc.stdout and proc.stderr
        self.stdin_fd: int | None = proc.stdin.fileno()
        self.out = Stream(proc.stdout.fileno())
        self.err = Stream(proc.stderr.fileno())
        self.feed = Feed(spec.get("stdin", {}))
        self.actions = [dict(a, _armed=None, _done=False) for a in spec.get("actions", [])]
        self.fired: list[dict] = []
        self.snapshots: list[dict] = []
        self.status: int | None = None
        self.ended_at: float | None = None
        self.timed_out = False
        self.recorder: Recorder | None = None
        for fd in (self.stdin_fd, self.out.fd, self.err.fd):
            os.set_blocking(fd, False)

    def close_stdin(self) -> None:
        if self.stdin_fd is not None:
            assert self.proc.stdin
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.stdin_fd = None
            self.feed.pending.clear()
            self.feed.count = 0

    def write_stdin(self) -> None:
        if self.stdin_fd is None or not self.feed.pending:
            return
        try:
            n = os.write(self.stdin_fd, self.feed.pending[:READ_CHUNK])
        except BlockingIOError:
            return
        except OSError as e:  # the program closed its stdin or died: stop feeding
            self.feed.error = e.strerror or str(e)
            self.close_stdin()
            return
        del self.feed.pending[:n]
        self.feed.written += n
        if self.feed.done and self.feed.close_when_done:
            self.close_stdin()

    def do(self, i: int, a: dict, t: float) -> None:
        rec = {"i": i, "do": a["do"], "t": round(t, 4), "lines": self.out.lines,
               "stderr_lines": self.err.lines, "note": ""}
        kind = a["do"]
        if kind == "signal":
            sig = getattr(signal, "SIG" + a["signal"])
            try:
                os.killpg(self.pid, sig) if a.get("group") else os.kill(self.pid, sig)
            except ProcessLookupError:
                rec["note"] = "the program was already gone"
        elif kind == "snapshot":
            self.snapshots.append({"i": i, "t": round(t, 4), "files": snapshot(self.cwd, a["paths"])})
        elif kind == "close_stdin":
            self.close_stdin()
        elif kind == "write":
            if self.stdin_fd is None:
                rec["note"] = "stdin was already closed"
            self.feed.pending += unb64(a.get("data"))
        elif kind == "touch":
            with open(os.path.join(self.cwd, a["path"]), "ab"):
                pass
        self.fired.append(rec)

    def tick_actions(self, t: float) -> None:
        for i, a in enumerate(self.actions):
            if a["_done"]:
                continue
            if a["_armed"] is None and trigger_holds(a.get("when", {}), t, self):
                a["_armed"] = t
            if a["_armed"] is not None and t >= a["_armed"] + float(a.get("when", {}).get("delay", 0)):
                a["_done"] = True
                self.do(i, a, t)

    def poll_exit(self) -> None:
        if self.status is not None:
            return
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == self.pid:
            self.status = status
            self.ended_at = now()
            self.kill_group()

    def kill_group(self) -> None:
        for fn, target in ((os.killpg, self.pid), (os.kill, self.pid)):
            try:
                fn(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def kill_at_timeout(self) -> None:
        self.timed_out = True
        self.kill_group()
        deadline = now() + REAP_S
        while self.status is None and now() < deadline:
            self.poll_exit()
            if self.status is None:
                time.sleep(POLL_S)  # SIGKILL is delivered asynchronously


def loop(run: Run, timeout: float) -> None:
    drain_until: float | None = None
    while True:
        t = now() - run.t0
        run.poll_exit()
        if run.status is None:
            run.tick_actions(t)
            if t >= timeout:
                run.kill_at_timeout()
        if run.status is not None:
            run.close_stdin()
            drain_until = drain_until or now() + DRAIN_S
            if not (run.out.open or run.err.open) or now() >= drain_until:
                return
        run.feed.refill()
        if run.stdin_fd is not None and run.feed.done and run.feed.close_when_done:
            run.close_stdin()
        readers = [s for s in (run.out, run.err) if s.open]
        writers = [run.stdin_fd] if run.status is None and run.stdin_fd is not None and run.feed.pending else []
        rec_fds = run.recorder.fds() if run.recorder else []
        readable, writable, _ = select.select([s.fd for s in readers] + rec_fds, writers, [], POLL_S)
        if writable:
            run.write_stdin()
        for s in readers:
            if s.fd in readable:
                s.read()
        if run.recorder and readable:
            run.recorder.service(readable)


# A seccomp filter for the program and all it starts, on top of the
# engine's: no ptrace and no process_vm_readv/writev (a program could
# otherwise single-step a grader's stand-in it started and read its token
# off the registers), and no syscalls of another ABI (i386, x32), which
# would get around the numbers below. (arch, syscall numbers) by machine.
NO_PTRACE = {"x86_64": (0xC000003E, (101, 310, 311)), "aarch64": (0xC00000B7, (117, 270, 271))}
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO_EPERM = 0x7FFF0000, 0x00050000 | 1
X32_SYSCALL_BIT = 0x40000000


def no_ptrace_filter() -> bytes | None:
    """The BPF program (struct sock_filter[]) of NO_PTRACE for this machine, or None."""
    import platform
    import struct

    arch = NO_PTRACE.get(platform.machine())
    if arch is None:
        return None
    audit_arch, denied = arch
    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    prog = [(ld_w_abs, 0, 0, 4), (jeq_k, 1, 0, audit_arch), (ret_k, 0, 0, SECCOMP_RET_ERRNO_EPERM),
            (ld_w_abs, 0, 0, 0), (jge_k, len(denied) + 1, 0, X32_SYSCALL_BIT)]
    prog += [(jeq_k, len(denied) - i, 0, nr) for i, nr in enumerate(denied)]
    prog += [(ret_k, 0, 0, SECCOMP_RET_ALLOW), (ret_k, 0, 0, SECCOMP_RET_ERRNO_EPERM)]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


NO_PTRACE_PROG = no_ptrace_filter()


def install_filter(prog: bytes) -> None:
    """Installs a seccomp filter on this process (for good: it is inherited and cannot be removed)."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    fprog = SockFprog(len(prog) // 8, prog)
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0):
        raise OSError(ctypes.get_errno(), "cannot install the no-ptrace seccomp filter")


def child_setup() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if NO_PTRACE_PROG is not None:
        install_filter(NO_PTRACE_PROG)


def wait_to_start(spec: dict) -> str:
    """Honours start_when (a file to wait for); returns a note if it never came."""
    trig = spec.get("start_when")
    if not trig:
        return ""
    deadline = now() + float(spec.get("start_timeout", 5))
    path = os.path.join(spec["cwd"], trig["file"])
    while not os.path.lexists(path):
        if now() >= deadline:
            return f"not started: {trig['file']} did not appear within {spec.get('start_timeout', 5)} s"
        time.sleep(POLL_S)  # nothing to block on: the file comes from another process
    if trig.get("delay"):
        time.sleep(float(trig["delay"]))  # a deliberate offset, not a wait for a condition
    return ""


def spawn(spec: dict) -> subprocess.Popen:
    env = {"PATH": DEFAULT_PATH, "HOME": spec["cwd"], "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
    env.update(spec.get("env") or {})
    return subprocess.Popen(spec["argv"], cwd=spec["cwd"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            close_fds=True, preexec_fn=child_setup)


def describe(run: Run) -> dict:
    st = run.status
    code = sig = None
    core = False
    if st is not None and os.WIFEXITED(st):
        code = os.WEXITSTATUS(st)
    elif st is not None and os.WIFSIGNALED(st):
        sig, core = os.WTERMSIG(st), os.WCOREDUMP(st)
    files: list[str] = []
    try:
        files = sorted(os.listdir(run.cwd))[:200]
    except OSError:
        pass
    return {
        "pid": run.pid, "exit_code": code, "signal": sig, "core_dumped": core, "timed_out": run.timed_out,
        "t_start": run.t0, "t_end": run.ended_at, "elapsed": round((run.ended_at or now()) - run.t0, 4),
        "t_first_stdout": run.out.first_at,
        "stdout": b64(bytes(run.out.kept)), "stdout_total": run.out.total, "stdout_lines": run.out.lines,
        "stderr": b64(bytes(run.err.kept)), "stderr_total": run.err.total, "stderr_lines": run.err.lines,
        "stdin_written": run.feed.written, "stdin_error": run.feed.error,
        "fired": run.fired, "snapshots": run.snapshots,
        "at_exit": snapshot(run.cwd, run.spec.get("snapshot_at_exit", [])), "files": files,
    }


def place_files(spec: dict) -> None:
    """The case's files into the case directory, and a staged stdin into
    memory; the staging directory is deleted before the program starts."""
    cwd = spec["cwd"]
    for name, data in (spec.get("files") or {}).items():
        with open(os.path.join(cwd, name), "wb") as f:
            f.write(unb64(data))
    stage = spec.get("stage")
    if not stage:
        return
    for name in stage["files"]:
        os.replace(os.path.join(stage["dir"], name), os.path.join(cwd, name))
    with open(os.path.join(stage["dir"], "stdin"), "rb") as f:
        spec["stdin"]["data"] = b64(f.read())
    empty_dir(os.path.dirname(stage["dir"]))  # this stage, and any an earlier broken run left


def run_program(spec: dict) -> dict:
    if spec.get("reset"):
        reset(spec["reset"])
    os.makedirs(spec["cwd"], mode=0o700, exist_ok=True)
    place_files(spec)
    note = wait_to_start(spec)
    if note:
        return {"error": note, "not_started": True}
    recorder = None
    if spec.get("record"):
        try:
            recorder = Recorder(spec["record"], spec.get("_record_token") or "")
        except OSError as e:  # the name is taken: only a process left running could have
            return {"error": f"the grader's record socket @{spec['record']} is taken: {e.strerror or e}",
                    "record_taken": True}
    oom_before = oom_kills()
    t0 = now()
    try:
        proc = spawn(spec)
    except OSError as e:
        if recorder:
            recorder.close()
        return {"error": f"cannot start {spec['argv'][0]}: {e.strerror or e}", "spawn_failed": True}
    run = Run(spec, proc, t0)
    run.recorder = recorder
    # The host times its own actions (docker pause) from this line.
    sys.stderr.write(f"{spec.get('_nonce', '')} started\n")
    sys.stderr.flush()
    try:
        loop(run, float(spec.get("timeout", 5)))
    finally:
        run.kill_group()
    result = describe(run)
    if recorder:
        result.update(recorder.close())
    proc.returncode = 0  # reaped by us with waitpid; Popen must not try again
    if spec.get("kill_after"):
        # Children that left the process group (setsid) die here too, while
        # this driver still holds a pid: a fork bomb can starve the next exec.
        result["left_after"] = len(kill_all())
    oom_after = oom_kills()
    result["oom_killed"] = oom_before is not None and oom_after is not None and oom_after > oom_before
    if spec.get("touch_on_exit"):
        with open(os.path.join(spec["cwd"], spec["touch_on_exit"]), "ab"):
            pass
    return result


def main(argv: list[str]) -> int:
    nonce = os.environ.pop(NONCE_ENV, "")
    token = os.environ.pop(RECORD_TOKEN_ENV, "")
    note = undumpable()
    spec = json.loads(argv[1])
    spec["_nonce"] = nonce
    spec["_record_token"] = token
    try:
        result = reset(spec) if spec.get("mode") == "reset" else run_program(spec)
    except Exception as e:  # reported to the host as the run's error, with its type
        result = {"error": f"driver: {type(e).__name__}: {e}", "driver_failed": True}
    if note:
        result["driver_note"] = note
    sys.stdout.write(f"{nonce} {json.dumps(result)}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
