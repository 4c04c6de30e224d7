"""`labctl pack` and `labctl unpack`: the whole lab in one file, for a
machine with no network and no Debian archive.

The pack is a plain (uncompressed) tar whose members are compressed one by
one where it pays:

- MANIFEST.sha256: `sha256sum` lines for every other member;
- images.tar.xz: one `docker save` of the run-time base, the builder and the
  lab's three images under their content-hash tags (each shared layer once),
  xz-compressed (Python's lzma reads it back: no tool to install);
- wheels/: labctl's wheel, which carries compose.yaml and the images'
  sources (so an installed labctl computes the same content-hash tags and
  finds the images up to date), and its dependencies' wheels, pinned to the
  versions of the environment that packed, so `pip install --no-index` works;
- scenarios/, docs/ (README.md and docs/*.md), handout/ (`labctl handout`);
- install.sh: for a machine without labctl (sha256sum -c, a venv, pip
  --no-index, `xz -dc | docker load`, `labctl doctor`).

`labctl unpack` checks every member against the manifest (streaming, one
pass) before it touches anything: a member damaged, missing, extra, twice,
not a plain file, or with an unsafe path is refused in one line naming it.
The manifest itself is only checked for consistency with the members (a
tamperer who rewrites it too is not caught: compare the pack's own sha256
with the one its maker published).
"""
from __future__ import annotations

import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from labctl import __version__, compose, images
from labctl.engine import Engine
from labctl.errors import ExitCode, LabError

MANIFEST = "MANIFEST.sha256"
IMAGES = "images.tar.xz"
INSTALL = "install.sh"
INSTALL_SOURCE = compose.ROOT / "scripts" / "pack-install.sh"
CHUNK = 1 << 20
PROGRESS_S = 5.0  # at most this long without a progress line in a long step
MANIFEST_MAX = 1 << 20
_LINE = re.compile(r"^([0-9a-f]{64})  (\S.*)$")
Say = Callable[[str], None]


def default_output() -> Path:
    return Path(f"labctl-pack-{__version__}.tar")


def bad(pack: Path, what: str) -> LabError:
    return LabError(ExitCode.BAD_PACK, f"{pack}: {what}", "get a fresh copy of the pack")


class Meter:
    """A progress line every PROGRESS_S seconds of a long step: MB done (of the total)."""

    def __init__(self, what: str, say: Say, total: int | None = None):
        self.what, self.say, self.total = what, say, total
        self.done = 0
        self.t0 = self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_S:
            self.last = now
            of = f" of {self.total / 2**20:.0f}" if self.total else ""
            self.say(f"  {self.what}: {self.done / 2**20:.0f}{of} MB ({now - self.t0:.0f} s)")


# ----------------------------------------------------------------------- the manifest


def safe_member(pack: Path, name: str) -> str:
    """A member's name, refused when it could land outside the directory it is unpacked into."""
    p = PurePosixPath(name)
    if not name or name.startswith("/") or "\\" in name or ".." in p.parts or "\n" in name:
        raise bad(pack, f"member {name!r} has an unsafe path (absolute, or with ..)")
    return p.as_posix()


def manifest_text(hashes: dict[str, str]) -> str:
    return "".join(f"{h}  {n}\n" for n, h in sorted(hashes.items()))


def parse_manifest(pack: Path, text: str) -> dict[str, str]:
    """MANIFEST.sha256 (sha256sum's format) -> member -> sha256."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        m = _LINE.match(line)
        if not m:
            raise bad(pack, f"{MANIFEST} line {n} is not `<sha256>  <member>`")
        name = safe_member(pack, m.group(2))
        if name in out or name == MANIFEST:
            raise bad(pack, f"{MANIFEST} lists member {name} twice" if name in out
                      else f"{MANIFEST} lists itself")
        out[name] = m.group(1)
    return out


def hash_stream(f: IO[bytes], meter: Meter | None = None) -> str:
    h = hashlib.sha256()
    while chunk := f.read(CHUNK):
        h.update(chunk)
        if meter:
            meter.add(len(chunk))
    return h.hexdigest()


def compare(pack: Path, listed: dict[str, str], found: dict[str, str]) -> None:
    """Every member the manifest lists is there with its sha256, and nothing else is."""
    for name, want in listed.items():
        if name not in found:
            raise bad(pack, f"member {name} is missing")
        if found[name] != want:
            raise bad(pack, f"member {name} is damaged (sha256 mismatch)")
    extra = sorted(set(found) - set(listed))
    if extra:
        raise bad(pack, f"member {extra[0]} is not in the manifest")


def _member_hashes(pack: Path, tar: tarfile.TarFile, say: Say) -> tuple[dict[str, str], str | None]:
    found: dict[str, str] = {}
    text = None
    for m in tar:
        name = safe_member(pack, m.name.rstrip("/") if m.isdir() else m.name)
        if m.isdir():
            continue
        if not m.isfile():
            raise bad(pack, f"member {name} is not a plain file (a link or a device)")
        if name in found:
            raise bad(pack, f"member {name} appears twice")
        f = tar.extractfile(m)
        assert f is not None  # a regular file
        try:
            if name == MANIFEST:
                raw = f.read(MANIFEST_MAX + 1)
                text = raw.decode("utf-8", "replace") if len(raw) <= MANIFEST_MAX else ""
                found[name] = ""
            else:
                meter = Meter(f"checking {name}", say, m.size) if m.size > 32 * CHUNK else None
                found[name] = hash_stream(f, meter)
        except (tarfile.ReadError, EOFError, OSError):
            raise bad(pack, f"member {name} is damaged (cut short)") from None
    return found, text


def verify(pack: Path, say: Say) -> dict[str, str]:
    """Checks every member against the manifest, in one streaming pass;
    returns member -> sha256. Raises BAD_PACK naming the member at fault."""
    if not pack.is_file():
        raise LabError(ExitCode.NOT_FOUND, f"{pack}: no such file", "give the path of a pack `labctl pack` wrote")
    try:
        with tarfile.open(pack, "r:") as tar:
            found, text = _member_hashes(pack, tar, say)
    except tarfile.TarError as e:
        raise bad(pack, f"not a whole labctl pack ({e})") from None
    if text is None:
        raise bad(pack, f"member {MANIFEST} is missing")
    found.pop(MANIFEST)
    compare(pack, parse_manifest(pack, text), found)
    return found


# ----------------------------------------------------------------------- writing a pack


def _tarinfo(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, int(images.SOURCE_DATE_EPOCH)
    info.uname = info.gname = "root"
    return info


def write_pack(stage: Path, out: Path, say: Say) -> dict[str, str]:
    """The tar of every file under stage, the manifest first; written beside
    out and renamed into place, so a pack is never half there."""
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    names = [p.relative_to(stage).as_posix() for p in files]
    hashes = {}
    for p, n in zip(files, names, strict=True):
        with p.open("rb") as f:
            hashes[n] = hash_stream(f)
    manifest = manifest_text(hashes).encode()
    tmp = out.with_name(out.name + ".part")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_tarinfo(MANIFEST, len(manifest), 0o644), io.BytesIO(manifest))
            for p, n in zip(files, names, strict=True):
                with p.open("rb") as f:
                    tar.addfile(_tarinfo(n, p.stat().st_size, 0o755 if n == INSTALL else 0o644), f)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return hashes


def _xz(stream: Iterator[bytes], out: IO[bytes], level: int, meter: Meter) -> None:
    """The xz tool on every core; it reads ahead a block per core, so most of
    its time comes after the last byte was fed: a line every HEARTBEAT_S then."""
    proc = subprocess.Popen(["xz", f"-{level}", "-T0", "-c"], stdin=subprocess.PIPE, stdout=out)
    assert proc.stdin is not None  # stdin=PIPE
    try:
        for chunk in stream:
            proc.stdin.write(chunk)
            meter.add(len(chunk))
        proc.stdin.close()
    except BaseException:
        proc.kill()
        raise
    meter.say(f"  images: {meter.done / 2**20:.0f} MB saved; compressing (xz -{level}, every core; "
              "at -9 about a minute of one core per 100 MB)...")
    t0 = time.monotonic()
    while True:
        try:
            code = proc.wait(timeout=images.HEARTBEAT_S)
            break
        except subprocess.TimeoutExpired:
            written = os.fstat(out.fileno()).st_size  # xz writes a whole block (192 MB in at -9) at a time
            meter.say(f"  ... still compressing ({time.monotonic() - t0:.0f} s"
                      + (f", {written / 2**20:.0f} MB written)" if written else ")"))
    if code != 0:
        raise LabError(ExitCode.BUILD_FAILED, f"xz failed compressing the images (exit {code})")


def save_images(engine: Engine, refs: list[str], dest: Path, say: Say, level: int = 9) -> None:
    """One `docker save` of refs, xz-compressed into dest as it streams
    (with the xz tool when there is one, else Python's lzma)."""
    meter = Meter("saving and compressing the images", say)
    stream = engine.save_many(refs)
    with dest.open("wb") as out:
        if shutil.which("xz"):
            _xz(stream, out, level, meter)
        else:
            comp = lzma.LZMACompressor(preset=level)
            for chunk in stream:
                out.write(comp.compress(chunk))
                meter.add(len(chunk))
            out.write(comp.flush())
    say(f"  images: {meter.done / 2**20:.0f} MB saved, {dest.stat().st_size / 2**20:.0f} MB compressed "
        f"({time.monotonic() - meter.t0:.0f} s)")


def lab_images(engine: Engine, say: Say) -> list[str]:
    """The images labctl looks up on a machine with no registry: the local
    bases and the lab's three images built from them (built here if missing)."""
    base, builder = images.build_bases(engine, say)
    last = [0.0]

    def on_line(service: str, line: str) -> None:
        if line.startswith("Step ") or time.monotonic() - last[0] >= PROGRESS_S:
            last[0] = time.monotonic()
            say(f"  {service}: {line[:100]}")

    refs = images.build_all(engine, base, say, on_line, builder=builder)
    return list(dict.fromkeys([base, builder, images.tools_ref(), *refs.values()]))  # the lease services share one


# ----------------------------------------------------------------------- wheels


def _run(cmd: list[str], what: str, todo: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
        raise LabError(ExitCode.BUILD_FAILED, f"{what} failed: {tail}", todo)


def lab_files() -> list[Path]:
    """compose.yaml and every file of the images' sources that their content hash covers."""
    out = [compose.COMPOSE_FILE, compose.LEASE_FILE]
    for p in sorted(compose.IMAGES_DIR.rglob("*")):
        if p.is_file() and not (set(p.relative_to(compose.IMAGES_DIR).parts) & images.IGNORED):
            out.append(p)
    return out


def require_checkout() -> Path:
    """Packing builds labctl's wheel: it runs from a checkout of the project."""
    root = compose.ROOT
    if not all((root / f).is_file() for f in ("pyproject.toml", "compose.yaml", "scripts/pack-install.sh")):
        raise LabError(ExitCode.NOT_FOUND, f"labctl pack needs a checkout of the project; {root} is not one",
                       "run it from the checkout (.venv/bin/labctl pack), where `make` installed it")
    return root


def stage_source(dest: Path) -> Path:
    """A copy of the project to build labctl's wheel from, with compose.yaml
    and the images' sources as package data under labctl/_lab/."""
    root = require_checkout()
    shutil.copytree(root / "labctl", dest / "labctl", ignore=shutil.ignore_patterns("__pycache__", "_lab"))
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(root / f, dest / f)
    data = []
    for p in lab_files():
        rel = Path("_lab") / p.relative_to(root)
        (dest / "labctl" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest / "labctl" / rel)
        data.append(f'"{rel.as_posix()}"')
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text()
    anchor = "[tool.setuptools.package-data]\nlabctl = ["
    if anchor not in text:
        raise LabError(ExitCode.BUILD_FAILED, "pyproject.toml has no [tool.setuptools.package-data] labctl = [...]",
                       "labctl pack adds the lab's sources there")
    pyproject.write_text(text.replace(anchor, anchor + ", ".join(data) + ", ", 1))
    return dest


def build_wheels(dest: Path, say: Say) -> None:
    """labctl's wheel and its dependencies' wheels, pinned to this environment's versions."""
    dest.mkdir(parents=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="labctl-wheel-") as d:
        src = stage_source(Path(d) / "src")
        say("  building labctl's wheel (pip wheel)...")
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(src)],
             "building labctl's wheel", "pip needs setuptools>=77 (from the index, or PIP_FIND_LINKS)")
        (wheel,) = dest.glob("labctl-*.whl")
        freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                                capture_output=True, text=True, check=True).stdout
        pins = Path(d) / "constraints.txt"
        pins.write_text("".join(ln + "\n" for ln in freeze.splitlines() if "==" in ln and not ln.startswith("-")))
        say("  fetching its dependencies' wheels, pinned to this environment's versions (pip download)...")
        _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(dest), "-c", str(pins),
              str(wheel)], "fetching the dependencies' wheels", "packing needs the package index (or PIP_FIND_LINKS)")
    total = sum(p.stat().st_size for p in dest.iterdir())
    say(f"  wheels: {len(list(dest.iterdir()))}, {total / 2**20:.0f} MB ({time.monotonic() - t0:.0f} s)")


# ----------------------------------------------------------------------- pack


def stage_docs(stage: Path) -> None:
    """The scenarios, the docs, the students' handout and install.sh."""
    from labctl import handout, scenario  # the handout pulls in the grader: only packing needs it

    (stage / "scenarios").mkdir()
    for p in sorted(scenario.BUILTIN_DIR.glob("*.yaml")):
        shutil.copy2(p, stage / "scenarios" / p.name)
    (stage / "docs").mkdir()
    for p in [compose.ROOT / "README.md", *sorted((compose.ROOT / "docs").glob("*.md"))]:
        shutil.copy2(p, stage / "docs" / p.name)
    handout.write(stage / "handout")
    shutil.copy2(INSTALL_SOURCE, stage / INSTALL)


def pack(engine: Engine, out: Path, say: Say, level: int = 9) -> dict[str, str]:
    """Writes the pack to out; returns member -> sha256."""
    t0 = time.monotonic()
    require_checkout()
    if not out.resolve().parent.is_dir():
        raise LabError(ExitCode.NOT_FOUND, f"{out.parent}: no such directory", "create it, or give another --output")
    with tempfile.TemporaryDirectory(prefix="labctl-pack-", dir=out.resolve().parent) as d:
        stage = Path(d)
        say("[1/4] the images (the bases and the lab's three, built if missing)")
        refs = lab_images(engine, say)
        save_images(engine, refs, stage / IMAGES, say, level)
        say("[2/4] labctl and its dependencies as wheels")
        build_wheels(stage / "wheels", say)
        say("[3/4] the scenarios, the docs, the students' handout, install.sh")
        stage_docs(stage)
        say("[4/4] the manifest and the pack")
        hashes = write_pack(stage, out, say)
    say(f"wrote {out}: {out.stat().st_size / 2**20:.0f} MB, {len(hashes) + 1} members, "
        f"in {time.monotonic() - t0:.0f} s; images: {', '.join(refs)}")
    return hashes


# ----------------------------------------------------------------------- unpack


def extract(pack: Path, dest: Path, hashes: dict[str, str], say: Say) -> list[str]:
    """Every member but the images into dest, each checked again as it is written."""
    if dest.exists() and any(dest.iterdir()):
        raise LabError(ExitCode.USAGE, f"{dest} is not empty", "give another --dir, or remove it")
    written = []
    with tarfile.open(pack, "r:") as tar:
        for m in tar:
            if not m.isfile() or m.name == IMAGES:
                continue
            name = safe_member(pack, m.name)
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            f = tar.extractfile(m)
            assert f is not None
            data = f.read()
            if name != MANIFEST and hashlib.sha256(data).hexdigest() != hashes.get(name):
                raise bad(pack, f"member {name} is damaged (sha256 mismatch)")
            target.write_bytes(data)
            target.chmod(0o755 if name == INSTALL else 0o644)
            written.append(name)
    say(f"unpacked {len(written)} files into {dest}")
    return written


def _decompressed(f: IO[bytes], h: hashlib._Hash, meter: Meter) -> Iterator[bytes]:
    dec = lzma.LZMADecompressor()
    while raw := f.read(CHUNK):
        h.update(raw)
        meter.add(len(raw))
        out = dec.decompress(raw)
        if out:
            yield out


def load_images(pack: Path, engine: Engine, want: str, say: Say) -> list[str]:
    """images.tar.xz decompressed into engine.load as it is read (never whole
    in memory), its sha256 checked again on the way. Returns what the engine said."""
    t0 = time.monotonic()
    with tarfile.open(pack, "r:") as tar:
        m = tar.getmember(IMAGES)
        f = tar.extractfile(m)
        assert f is not None
        h = hashlib.sha256()
        meter = Meter(f"engine {engine.name}: loading the images", say, m.size)
        try:
            said = engine.load(_decompressed(f, h, meter))
        except lzma.LZMAError:
            raise bad(pack, f"member {IMAGES} is damaged (not xz data)") from None
    if h.hexdigest() != want:
        raise bad(pack, f"member {IMAGES} is damaged (sha256 mismatch)")
    say(f"engine {engine.name}: loaded {len(said)} images ({m.size / 2**20:.0f} MB compressed) "
        f"in {time.monotonic() - t0:.0f} s")
    return said


def check_loaded(engine: Engine, say: Say) -> bool:
    """Whether this labctl finds the lab's images up to date there (the same tags it would build)."""
    base, builder = images.local_base_ref(), images.local_builder_ref()
    refs = [base, builder, images.tools_ref()]
    if engine.image_exists(base) and engine.image_exists(builder):
        refs += list(dict.fromkeys(images.image_refs(engine, base, builder).values()))
    missing = [r for r in refs if not engine.image_exists(r)]
    if missing:
        say(f"engine {engine.name}: this labctl looks for {missing[0]}, which the pack does not hold: it would "
            "build the images again; install the pack's own labctl (install.sh), or run `labctl build`")
        return False
    say(f"engine {engine.name}: the images labctl needs are there: {', '.join(refs)}")
    return True
