"""The base images (a run-time base, a builder and the fault tools, from the
Debian archive, when no registry answers) and the lab's images, built side
by side and rebuilt only when their sources change."""
from __future__ import annotations

import atexit
import functools
import hashlib
import os
import queue
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from labctl import compose, doctor, labels
from labctl.engine import ContainerSpec, Engine
from labctl.errors import ExitCode, LabError

UPSTREAM_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE_REPO = "labctl-base"
LOCAL_BUILDER_REPO = "labctl-builder"
SUITE = "bookworm"
# mmdebstrap is reproducible given the same package versions and this epoch.
SOURCE_DATE_EPOCH = "1700000000"
IGNORED = {"build", "fuzz-corpus", "__pycache__"}
# Builds run side by side: the legacy builder spends about a second a step
# waiting on the storage driver (fuse-overlayfs: every metadata step is a
# layer commit), not on the CPU, so five images take barely longer than
# the slowest one (measured: three at once 9.4 s, one alone 8.4 s).
BUILD_THREADS = 5

T = TypeVar("T")

# Both local bases are extracted from the Debian archive (mmdebstrap's
# `extract` variant: the listed packages and their dependencies, no apt, no
# perl, no maintainer scripts; dash pulls dpkg in, whose programs the
# run-time base drops) and finished by the shell hooks below, run with
# the root file system as $1. dash and coreutils give the `sh -c`, `kill`,
# `chmod`, `mkdir`... the lab and the grader run in containers.
COMMON_PACKAGES = ("base-files", "base-passwd", "dash", "coreutils")
# What every image needs: passwd/group (with the lab's user 10001, as no
# `passwd` package is there to add it), the loader's cache, and none of
# docs, man pages, locales, charset converters (Python's codecs are its own)
# or package caches.
COMMON_HOOKS = (
    # No maintainer script ran: dpkg's status is written from the packages
    # themselves, so that `dpkg -l` and image scanners see what is inside.
    'for d in "$1"/var/cache/apt/archives/*.deb; do dpkg-deb -f "$d" | grep -v "^Status:";'
    ' echo "Status: install ok installed"; echo; done > "$1"/var/lib/dpkg/status',
    'cp "$1"/usr/share/base-passwd/passwd.master "$1"/etc/passwd',
    'cp "$1"/usr/share/base-passwd/group.master "$1"/etc/group',
    'echo "lab:x:10001:10001:lab:/nonexistent:/bin/false" >> "$1"/etc/passwd',
    'echo "lab:x:10001:" >> "$1"/etc/group',
    'printf "passwd: files\\ngroup: files\\nhosts: files dns\\n" > "$1"/etc/nsswitch.conf',
    'echo "include /etc/ld.so.conf.d/*.conf" > "$1"/etc/ld.so.conf',
    'find "$1"/usr/share/doc -mindepth 2 ! -name copyright ! -type d -delete',
    'find "$1"/usr/share/doc -mindepth 1 -type d -empty -delete',
    'rm -rf "$1"/usr/share/man "$1"/usr/share/info "$1"/usr/share/locale "$1"/usr/share/lintian'
    ' "$1"/usr/share/bug "$1"/usr/share/menu "$1"/usr/lib/x86_64-linux-gnu/gconv',
    'rm -rf "$1"/var/cache/* "$1"/var/log/* "$1"/etc/cron.daily "$1"/etc/logrotate.d',
)


@dataclass(frozen=True)
class BaseRecipe:
    what: str  # for the progress lines
    repo: str
    packages: tuple[str, ...]
    hooks: tuple[str, ...]

    def recipe_hash(self) -> str:
        recipe = f"{SUITE}|extract|{','.join(self.packages)}|{'|'.join(self.hooks)}|{SOURCE_DATE_EPOCH}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:12]

    def ref(self) -> str:
        return f"{self.repo}:{SUITE}-{self.recipe_hash()}"


# The run-time base: libc for the worker, python3 (the standard library: the
# supervisor, the monitor and the grader's driver.py use ctypes, select,
# socket, subprocess, json, base64...) and tini as init; libfaketime (150 kB),
# which the worker's and the lease lab's images preload for the clock faults
# (faults.Clock). No compiler, no apt, no dpkg.
RUNTIME = BaseRecipe("run-time base", LOCAL_BASE_REPO, (*COMMON_PACKAGES, "python3", "tini", "libfaketime"), (
    *COMMON_HOOKS,
    'rm -f "$1"/usr/bin/tini-static "$1"/usr/bin/dpkg* "$1"/usr/bin/update-alternatives'
    ' "$1"/usr/sbin/start-stop-daemon',
    'rm -rf "$1"/usr/lib/python3.11/ensurepip "$1"/usr/lib/python3.11/lib2to3 "$1"/usr/lib/python3.11/idlelib'
    ' "$1"/usr/lib/python3.11/pydoc_data "$1"/usr/lib/python3.11/turtledemo',
    '/sbin/ldconfig -r "$1"',
    # The byte code Debian's postinst would compile, compiled once here (no
    # maintainer scripts run): every Python start-up in a read-only
    # container would otherwise compile what it imports. unchecked-hash:
    # reproducible, and the sources never change in an image.
    'chroot "$1" /usr/bin/python3 -m compileall -q --invalidation-mode unchecked-hash /usr/lib/python3.11',
))
# The builder: gcc, make and libc6-dev (libc.a too: the grader links static).
# Only build stages and the grader's compile steps run it, never the lab.
BUILDER = BaseRecipe("builder", LOCAL_BUILDER_REPO, (*COMMON_PACKAGES, "gcc", "libc6-dev", "make"), (
    *COMMON_HOOKS,
    'ln -s gcc "$1"/usr/bin/cc',  # the alternative gcc's postinst would set
    'rm -f "$1"/usr/bin/*lto-dump*',
    '/sbin/ldconfig -r "$1"',
))


# The fault tools: iptables (the nft backend, as the engine's own rules in a
# container's namespace use) for the faults that cut or thin one link, and
# dash and coreutils for the duty cycle of `slow`. Only labctl's short-lived
# fault helpers run it, never the lab: the lab's own images carry no iptables.
LOCAL_TOOLS_REPO = "labctl-tools"
TOOLS = BaseRecipe("fault tools", LOCAL_TOOLS_REPO, (*COMMON_PACKAGES, "iptables"), (
    *COMMON_HOOKS,
    # The alternatives iptables' postinst would set: the nft backend.
    'ln -sf xtables-nft-multi "$1"/usr/sbin/iptables',
    'rm -f "$1"/usr/bin/dpkg* "$1"/usr/bin/update-alternatives "$1"/usr/sbin/*legacy*',
    '/sbin/ldconfig -r "$1"',
))


def base_recipe_hash() -> str:
    return RUNTIME.recipe_hash()


def local_base_ref() -> str:
    return RUNTIME.ref()


def local_builder_ref() -> str:
    return BUILDER.ref()


def tools_ref() -> str:
    return TOOLS.ref()


@dataclass
class BaseChoice:
    ref: str
    note: str | None  # said once to the user, when labctl chose for them
    builder: str = ""  # the image the worker's build stage starts from

    def __post_init__(self) -> None:
        self.builder = self.builder or self.ref


def choose_base(engine: Engine, override: str | None, log: Callable[[str], None]) -> BaseChoice:
    """--base / LAB_BASE_IMAGE, else the upstream image if present or pullable,
    else the local run-time base from the Debian archive (built when missing);
    with the builder: LAB_BUILDER_IMAGE, else the local builder."""
    ref = override or os.environ.get("LAB_BASE_IMAGE")
    if ref:
        if not engine.image_exists(ref) and not engine.try_pull(ref):
            raise LabError(ExitCode.IMAGE_MISSING, f"base image {ref} is not present and cannot be pulled",
                           "build it, or drop --base/LAB_BASE_IMAGE to use labctl's local base")
        return BaseChoice(ref, None, choose_builder(engine, ref, log))
    if engine.image_exists(UPSTREAM_BASE):
        return BaseChoice(UPSTREAM_BASE, None, choose_builder(engine, UPSTREAM_BASE, log))
    local = local_base_ref()
    if engine.image_exists(local):
        return BaseChoice(local, f"no registry image {UPSTREAM_BASE}: using the local base {local}",
                          choose_builder(engine, local, log))
    if engine.try_pull(UPSTREAM_BASE):
        return BaseChoice(UPSTREAM_BASE, None, choose_builder(engine, UPSTREAM_BASE, log))
    build_bases(engine, log)
    return BaseChoice(local, f"no registry reachable: built the local base {local} and the builder "
                             f"{local_builder_ref()} from the Debian archive", local_builder_ref())


def choose_builder(engine: Engine, base: str, log: Callable[[str], None]) -> str:
    """LAB_BUILDER_IMAGE, else the local builder (built when missing); with
    an upstream base and no mmdebstrap, the base itself (the worker's build
    stage then installs gcc with apt-get)."""
    ref = os.environ.get("LAB_BUILDER_IMAGE")
    if ref:
        if not engine.image_exists(ref) and not engine.try_pull(ref):
            raise LabError(ExitCode.IMAGE_MISSING, f"builder image {ref} is not present and cannot be pulled",
                           "build it, or drop LAB_BUILDER_IMAGE to use labctl's local builder")
        return ref
    local = local_builder_ref()
    if engine.image_exists(local):
        return local
    if base != local_base_ref() and not shutil.which("mmdebstrap"):
        return base
    return build_base(engine, log, BUILDER)


def build_bases(engine: Engine, log: Callable[[str], None], force: bool = False) -> tuple[str, str]:
    """The run-time base and the builder: (their refs); and the fault tools.
    The three mmdebstrap runs go side by side (downloads and extraction)."""
    gone = threading.Event()
    say = quiet_after(gone, log)
    runtime, builder, _tools = side_by_side(
        [lambda r=r: build_base(engine, say, r, force) for r in (RUNTIME, BUILDER, TOOLS)],  # type: ignore[misc]
        abandoned=gone)
    return runtime, builder


def quiet_after(gone: threading.Event, say: Callable[..., None]) -> Callable[..., None]:
    """`say`, silent once the caller has given up on the jobs (Ctrl-C): a
    build thread left running must not write to a terminal being closed."""
    def quiet(*args: str) -> None:
        if not gone.is_set():
            say(*args)
    return quiet


def side_by_side(jobs: Sequence[Callable[[], T]], threads: int = BUILD_THREADS,
                 abandoned: threading.Event | None = None) -> list[T]:
    """Runs the jobs at most `threads` at a time and returns their results in
    order, once all have ended; the first job's error (in job order) is
    raised after the others end, so no build is left half-said. Daemon
    threads and a queue rather than joins: Ctrl-C reaches the caller at
    once (the engine drops a build whose client is gone), after `abandoned`
    is set for the jobs to see."""
    done: queue.Queue[tuple[int, T | None, BaseException | None]] = queue.Queue()
    slots = threading.BoundedSemaphore(max(1, threads))

    def run(i: int, job: Callable[[], T]) -> None:
        with slots:
            try:
                done.put((i, job(), None))
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                done.put((i, None, e))

    results: dict[int, T | None] = {}
    errors: dict[int, BaseException] = {}
    try:
        for i, job in enumerate(jobs):
            threading.Thread(target=run, args=(i, job), name=f"labctl-build-{i}", daemon=True).start()
        while len(results) + len(errors) < len(jobs):
            i, value, error = done.get()
            if error is not None:
                errors[i] = error
            else:
                results[i] = value
    except BaseException:  # Ctrl-C, wherever it lands: the jobs go on without us
        if abandoned is not None:
            abandoned.set()
        raise
    if errors:
        raise errors[min(errors)]
    return [results[i] for i in range(len(jobs))]  # type: ignore[misc]


def ensure_tools(engine: Engine, log: Callable[[str], None]) -> str:
    """The fault tools image, built from the Debian archive when the engine lacks it."""
    ref = TOOLS.ref()
    return ref if engine.image_exists(ref) else build_base(engine, log, TOOLS)


def build_base(engine: Engine, log: Callable[[str], None], recipe: BaseRecipe = RUNTIME, force: bool = False) -> str:
    ref = recipe.ref()
    if engine.image_exists(ref) and not force:
        log(f"{recipe.what} {ref} is up to date")
        return ref
    if not shutil.which("mmdebstrap"):
        raise LabError(ExitCode.BUILD_FAILED, "mmdebstrap is not installed",
                       "install it (apt-get install mmdebstrap) or run `make` which does")
    d = tempfile.mkdtemp(prefix="labctl-base-")
    # Built in a thread that a Ctrl-C leaves behind (side_by_side): the
    # rootfs tarball (up to 180 MB) goes at exit whatever becomes of it.
    cleanup = functools.partial(shutil.rmtree, d, True)
    atexit.register(cleanup)
    try:
        tar = Path(d) / "rootfs.tar"
        cmd = [
            "mmdebstrap", "--variant=extract", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            f"--include={','.join(recipe.packages)}",
            "--aptopt=Acquire::Retries \"3\"", "--aptopt=APT::Install-Recommends \"false\"",
            *(f"--extract-hook={h}" for h in recipe.hooks),
            SUITE, str(tar),
        ]
        log(f"building the {recipe.what} {ref} from the Debian archive "
            f"(mmdebstrap {SUITE}: {', '.join(recipe.packages)})")
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        started = time.monotonic()
        tail = run_with_progress(cmd, env, lambda s: log(f"  {recipe.what} [{time.monotonic() - started:4.0f}s] {s}"))
        if tail is not None:
            raise LabError(ExitCode.BUILD_FAILED, "mmdebstrap failed: " + " | ".join(tail[-3:]),
                           "check that Debian's archive is reachable (apt-get update)")
        repo, tag = ref.split(":")
        log(f"  {recipe.what} [{time.monotonic() - started:4.0f}s] importing {tar.stat().st_size // 2**20} MB "
            "into the engine...")
        engine.import_rootfs(str(tar), repo, tag, changes=[
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            'CMD ["/bin/sh"]',
            f"LABEL {labels.BASE_RECIPE}={recipe.recipe_hash()}",
            f"LABEL {labels.MANAGED}=true",
        ])
        log(f"{recipe.what} {ref} built in {time.monotonic() - started:.0f} s")
    finally:
        cleanup()
        atexit.unregister(cleanup)
    return ref


HEARTBEAT_S = 10.0
# mmdebstrap's lines about itself rather than the build's steps.
QUIET = ("I: automatically chosen", "I: skipping emulation", "I: finding correct", "I: running --setup-hook",
         "I: using /", "I: removing tempdir", "I: chroot architecture")


def run_with_progress(cmd: list[str], env: dict[str, str], log: Callable[[str], None]) -> list[str] | None:
    """Runs mmdebstrap, saying each of its steps (its `I:` lines) and, when
    a step is long, that it still runs: never silent for more than
    HEARTBEAT_S. None when it succeeded, else its last lines."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None  # stdout=PIPE
    tail: list[str] = []
    step = "starting"
    buf = b""
    last = time.monotonic()
    fd = proc.stdout.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], HEARTBEAT_S)
        if not ready:
            log(f"... still {step}")
            last = time.monotonic()
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip()
            tail = (tail + [line])[-20:]
            if line.startswith(("I: ", "E: ")) and not line.startswith(QUIET):
                hook = line.startswith("I: running --extract-hook")
                if hook and step == "running the hooks":
                    continue
                step = "running the hooks" if hook else line[3:].rstrip(".")
                log(step if hook else line[3:])
                last = time.monotonic()
            elif time.monotonic() - last >= HEARTBEAT_S:
                log(f"... still {step}")
                last = time.monotonic()
    proc.stdout.close()
    return None if proc.wait() == 0 else tail


def source_hash(context: Path, base_id: str) -> str:
    h = hashlib.sha256(base_id.encode())
    for p in sorted(context.rglob("*")):
        rel = p.relative_to(context)
        if p.is_file() and not (set(rel.parts) & IGNORED):
            h.update(str(rel).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def image_refs(engine: Engine, base: str, builder: str | None = None) -> dict[str, str]:
    """Service -> the tag its current sources would build (built or not),
    from this run-time base and this builder."""
    base_id = engine.image_id(base) or base
    builder = builder or base
    if builder != base:
        base_id += "|" + (engine.image_id(builder) or builder)
    refs = {}
    for name, svc in compose.all_services({}).items():
        refs[name] = f"{svc.image}:{source_hash(svc.build_context, base_id)}"
    return refs


def build_all(engine: Engine, base: str, log: Callable[[str], None], on_line: Callable[[str, str], None],
              force: bool = False, builder: str | None = None) -> dict[str, str]:
    """Builds every image whose sources changed, side by side; on_line(service,
    line) gets each builder's output."""
    builder = builder or base
    refs = image_refs(engine, base, builder)
    todo: list[tuple[str, ContainerSpec, str]] = []
    seen: set[str] = set()  # the lease lab's four services share one image: built once, for the first
    for name, svc in compose.all_services({}).items():
        ref = refs[name]
        if ref in seen:
            continue
        seen.add(ref)
        if engine.image_exists(ref) and not force:
            log(f"{name}: {ref} is up to date")
        else:
            todo.append((name, svc, ref))

    gone = threading.Event()
    log, on_line = quiet_after(gone, log), quiet_after(gone, on_line)

    def build(name: str, svc: ContainerSpec, ref: str) -> None:
        log(f"{name}: building {ref}")
        started = time.monotonic()
        try:
            engine.build(str(svc.build_context), ref, {"BASE_IMAGE": base, "BUILDER_IMAGE": builder},
                         # The Dockerfiles carry the managed and component labels: the legacy
                         # builder adds a step (a layer commit) for each label given here.
                         {labels.SOURCE_HASH: ref.split(":")[1]},
                         lambda line: on_line(name, line))
        except LabError as e:
            raise blame(e) from None
        log(f"{name}: built {ref} in {time.monotonic() - started:.0f} s")

    side_by_side([lambda t=t: build(*t) for t in todo], abandoned=gone)  # type: ignore[misc]
    for name in compose.all_services({}):
        # Content-hash tags are shared by every checkout (same sources, same
        # image); `docker compose up` here looks for <project>-<service>.
        engine.tag(refs[name], f"{compose.checkout_project()}-{name}", "latest")
    # compose.yaml's fallback bases, for a checkout with no .env yet.
    engine.tag(base, LOCAL_BASE_REPO, "latest")
    engine.tag(builder, LOCAL_BUILDER_REPO, "latest")
    # Plain `docker compose` in this checkout: its own project and these very bases.
    if compose.write_env(base, builder):
        log(f"wrote {compose.ENV_FILE.name}: docker compose here uses project {compose.checkout_project()}")
    return refs


def blame(e: LabError) -> LabError:
    """A failed build whose message is the engine failing (`could not find
    bridge docker0`, no space left...) is the engine's fault, not the
    Dockerfile's: said so, with the engine's message and what to do."""
    todo = doctor.engine_fault(e.what) if e.code == ExitCode.BUILD_FAILED else None
    if todo is None:
        return e
    return LabError(ExitCode.ENGINE_ERROR, f"{e.what} (the Docker engine failed, not the Dockerfile)", todo)


def installed_base(engine: Engine) -> str | None:
    """The base image present in the engine, for a container that needs any:
    the one `labctl build` last used (tagged labctl-base:latest), else the
    upstream one, else the local one from the Debian archive."""
    for ref in (f"{LOCAL_BASE_REPO}:latest", UPSTREAM_BASE, local_base_ref()):
        if engine.image_exists(ref):
            return ref
    return None


def require_images(engine: Engine, base: str, builder: str | None = None) -> dict[str, str]:
    refs = image_refs(engine, base, builder)
    missing = [r for r in refs.values() if not engine.image_exists(r)]
    if missing:
        raise LabError(ExitCode.IMAGE_MISSING, f"image {missing[0]} is missing or out of date",
                       "run `labctl build`")
    return refs
