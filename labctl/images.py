"""The base image (from the Debian archive, when no registry answers) and the
lab's three images, rebuilt only when their sources change."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labctl import compose, doctor, labels
from labctl.engine import Engine
from labctl.errors import ExitCode, LabError

UPSTREAM_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE_REPO = "labctl-base"
SUITE = "bookworm"
# What the programs need: python3 for the Python services and every
# healthcheck, gcc/libc6-dev/make for the worker's build stage, tini as init.
BASE_PACKAGES = ("python3", "gcc", "libc6-dev", "make", "tini", "ca-certificates")
# mmdebstrap is reproducible given the same package versions and this epoch.
SOURCE_DATE_EPOCH = "1700000000"
IGNORED = {"build", "fuzz-corpus", "__pycache__"}


def base_recipe_hash() -> str:
    recipe = f"{SUITE}|minbase|{','.join(BASE_PACKAGES)}|{SOURCE_DATE_EPOCH}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def local_base_ref() -> str:
    return f"{LOCAL_BASE_REPO}:{SUITE}-{base_recipe_hash()}"


@dataclass
class BaseChoice:
    ref: str
    note: str | None  # said once to the user, when labctl chose for them


def choose_base(engine: Engine, override: str | None, log: Callable[[str], None]) -> BaseChoice:
    """--base / LAB_BASE_IMAGE, else the upstream image if present or pullable,
    else the local base from the Debian archive (built when missing)."""
    ref = override or os.environ.get("LAB_BASE_IMAGE")
    if ref:
        if not engine.image_exists(ref) and not engine.try_pull(ref):
            raise LabError(ExitCode.IMAGE_MISSING, f"base image {ref} is not present and cannot be pulled",
                           "build it, or drop --base/LAB_BASE_IMAGE to use labctl's local base")
        return BaseChoice(ref, None)
    if engine.image_exists(UPSTREAM_BASE):
        return BaseChoice(UPSTREAM_BASE, None)
    local = local_base_ref()
    if engine.image_exists(local):
        return BaseChoice(local, f"no registry image {UPSTREAM_BASE}: using the local base {local}")
    if engine.try_pull(UPSTREAM_BASE):
        return BaseChoice(UPSTREAM_BASE, None)
    build_base(engine, log)
    return BaseChoice(local, f"no registry reachable: built the local base {local} from the Debian archive")


def build_base(engine: Engine, log: Callable[[str], None], force: bool = False) -> str:
    ref = local_base_ref()
    if engine.image_exists(ref) and not force:
        log(f"base image {ref} is up to date")
        return ref
    if not shutil.which("mmdebstrap"):
        raise LabError(ExitCode.BUILD_FAILED, "mmdebstrap is not installed",
                       "install it (apt-get install mmdebstrap) or run `make` which does")
    with tempfile.TemporaryDirectory(prefix="labctl-base-") as d:
        tar = Path(d) / "rootfs.tar"
        cmd = [
            "mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            "--aptopt=Acquire::Retries \"3\"",
            "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin",
            SUITE, str(tar),
        ]
        log(f"building base image {ref} from the Debian archive (mmdebstrap {SUITE}: {', '.join(BASE_PACKAGES)})")
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        tail: list[str] = []
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            if line.startswith("I:"):
                log(line)
        if proc.wait() != 0:
            raise LabError(ExitCode.BUILD_FAILED, "mmdebstrap failed: " + " | ".join(tail[-3:]),
                           "check that Debian's archive is reachable (apt-get update)")
        repo, tag = ref.split(":")
        engine.import_rootfs(str(tar), repo, tag, changes=[
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            'CMD ["/bin/sh"]',
            f"LABEL {labels.BASE_RECIPE}={base_recipe_hash()}",
            f"LABEL {labels.MANAGED}=true",
        ])
    log(f"base image {ref} built")
    return ref


def source_hash(context: Path, base_id: str) -> str:
    h = hashlib.sha256(base_id.encode())
    for p in sorted(context.rglob("*")):
        rel = p.relative_to(context)
        if p.is_file() and not (set(rel.parts) & IGNORED):
            h.update(str(rel).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def image_refs(engine: Engine, base: str) -> dict[str, str]:
    """Service -> the tag its current sources would build (built or not)."""
    base_id = engine.image_id(base) or base
    refs = {}
    for name, svc in compose.services({}).items():
        refs[name] = f"{svc.image}:{source_hash(svc.build_context, base_id)}"
    return refs


def build_all(engine: Engine, base: str, log: Callable[[str], None], on_line: Callable[[str], None],
              force: bool = False) -> dict[str, str]:
    refs = image_refs(engine, base)
    for name, svc in compose.services({}).items():
        ref = refs[name]
        repo, tag = ref.split(":")
        if engine.image_exists(ref) and not force:
            log(f"{name}: {ref} is up to date")
        else:
            log(f"{name}: building {ref}")
            try:
                engine.build(str(svc.build_context), ref, {"BASE_IMAGE": base},
                             {labels.MANAGED: "true", labels.COMPONENT: name, labels.SOURCE_HASH: tag}, on_line)
            except LabError as e:
                raise blame(e) from None
            log(f"{name}: built {ref}")
        engine.tag(ref, svc.image, "latest")  # the name Compose gives what it builds, for `docker compose up`
    # compose.yaml's default base: plain `docker compose up --build` then uses
    # the same base as labctl, and needs no registry when that base is local.
    engine.tag(base, LOCAL_BASE_REPO, "latest")
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


def require_images(engine: Engine, base: str) -> dict[str, str]:
    refs = image_refs(engine, base)
    missing = [r for r in refs.values() if not engine.image_exists(r)]
    if missing:
        raise LabError(ExitCode.IMAGE_MISSING, f"image {missing[0]} is missing or out of date",
                       "run `labctl build`")
    return refs
