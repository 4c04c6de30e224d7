"""Intake: a student's submission, read into memory and nothing else.

A submission is a directory, a `.zip`, or a `.tar.gz` / `.tgz` / `.tar`. The
files the exercises know (the exercise sheet's names, catalog.EXERCISE_FILES)
are taken from its top level, or from its single top-level folder, since
students zip a folder as often as its contents. Everything else is listed
and ignored.

Archives come from students, so they are read as hostile input: members are
read in memory and never extracted; a member with an absolute path, a `..`
component, a link or a device refuses the whole archive (a LabError naming
the member); sizes are capped per file, per member count and in total, both
by the sizes the archive declares and by the bytes actually read, because a
zip bomb declares whatever it likes. Nothing here executes anything.
"""
from __future__ import annotations

import gzip
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from labctl.errors import ExitCode, LabError
from labctl.grade.catalog import EXERCISE_FILES

MAX_FILE_BYTES = 1024 * 1024
MAX_MEMBERS = 200
MAX_TOTAL_BYTES = 5 * 1024 * 1024
# An archive larger than what it may unpack to, plus room for its headers,
# cannot be a valid submission: refused before it is opened.
MAX_ARCHIVE_BYTES = MAX_TOTAL_BYTES + 1024 * 1024
# A tar stream is headers and data: its decompressed size is bounded by the
# data cap plus a few blocks of headers per member and the end-of-archive
# padding. Past that it is a gzip bomb, whatever the headers say.
_MAX_TAR_STREAM = MAX_TOTAL_BYTES + (MAX_MEMBERS + 1) * 4096 + 20 * 1024
_CHUNK = 64 * 1024

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar")
# Folders a directory submission may hold that are never the student's
# answer: not walked at all, so a git checkout does not hit the member cap.
SKIPPED_DIRS = frozenset({".git", "__pycache__", "__MACOSX", ".venv", "node_modules"})
# Top-level entries that do not make a second "folder" when a student zipped
# one folder on macOS or Windows.
_JUNK_TOP = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
# What a refused or unreadable submission's LabError carries. A dedicated
# code (say BAD_SUBMISSION) would be clearer; until errors.py has one, the
# input given is unusable, which is what USAGE means.
REFUSED = ExitCode.BAD_SUBMISSION
_REFUSED_TODO = "this submission is not graded; ask the student for an archive of plain files"


@dataclass
class Submission:
    name: str  # unique among the submissions graded together; safe as a directory name
    source: Path
    files: dict[str, bytes] = field(default_factory=dict)  # exercise file name -> content
    other_files: list[str] = field(default_factory=list)  # present, ignored
    problems: list[str] = field(default_factory=list)  # remarks for the student, not errors
    refused: str | None = None  # set by load_submissions when the archive could not be taken

    def missing(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n not in self.files]


class _Readable(Protocol):
    def read(self, n: int = ..., /) -> bytes: ...


class _Refused(Exception):
    """A member breaks a rule; becomes a LabError naming the archive."""


class _Budget:
    """Counts the bytes actually read, whatever the archive declared."""

    def __init__(self) -> None:
        self.used = 0

    def read(self, f: _Readable, where: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := f.read(_CHUNK):
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise _Refused(f"member {where!r} is larger than {_mib(MAX_FILE_BYTES)}")
            if self.used + size > MAX_TOTAL_BYTES:
                raise _Refused(f"the files read reach more than {_mib(MAX_TOTAL_BYTES)} at member {where!r}")
            chunks.append(chunk)
        self.used += size
        return b"".join(chunks)


class _Limited:
    """A read-only stream that stops a decompressor running away."""

    def __init__(self, inner: _Readable, limit: int):
        self.inner = inner
        self.limit = limit
        self.seen = 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.seen += len(data)
        if self.seen > self.limit:
            raise _Refused(f"it decompresses to more than {_mib(MAX_TOTAL_BYTES)} of files and their headers "
                           "can take (a compression bomb?)")
        return data


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


def _member_path(raw: str) -> str:
    """A member's name as a clean relative POSIX path, or _Refused."""
    if not raw or "\x00" in raw:
        raise _Refused(f"member {raw!r} has an empty or invalid name")
    # Windows-made archives may use backslashes; read them as separators so
    # "..\\x" cannot slip past the checks below.
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _Refused(f"member {raw!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _Refused(f"member {raw!r} has a '..' component")
    if not parts:
        raise _Refused(f"member {raw!r} names no file")
    return "/".join(parts)


def safe_name(raw: str) -> str:
    """A submission's name as a directory name: letters, digits, '.', '_', '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).lstrip(".-_")[:100]
    return name or "submission"


def _stem(path: Path) -> str:
    lower = path.name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


class _Members:
    """What a container holds: regular files (path -> declared size), folders,
    and the contents of the files worth reading."""

    def __init__(self) -> None:
        self.files: dict[str, int] = {}
        self.dirs: set[str] = set()
        self.content: dict[str, bytes] = {}
        self.skipped: set[str] = set()  # folders of a directory submission not walked
        self.declared = 0

    def add_file(self, path: str, size: int, raw: str) -> None:
        if path in self.files or path in self.dirs:
            raise _Refused(f"member {raw!r} appears twice")
        if len(self.files) + len(self.dirs) >= MAX_MEMBERS:
            raise _Refused(f"it holds more than {MAX_MEMBERS} members")
        if size > MAX_FILE_BYTES:
            raise _Refused(f"member {raw!r} declares {size} bytes, more than {_mib(MAX_FILE_BYTES)}")
        self.declared += size
        if self.declared > MAX_TOTAL_BYTES:
            raise _Refused(f"its files declare more than {_mib(MAX_TOTAL_BYTES)} in all (at member {raw!r})")
        self.files[path] = size

    def add_dir(self, path: str, raw: str) -> None:
        if path in self.files:
            raise _Refused(f"member {raw!r} appears twice")
        if path not in self.dirs and len(self.files) + len(self.dirs) >= MAX_MEMBERS:
            raise _Refused(f"it holds more than {MAX_MEMBERS} members")
        self.dirs.add(path)

    @staticmethod
    def wanted(path: str) -> bool:
        """Worth reading: an exercise file's name no deeper than one folder.
        Only the chosen ones are kept, but reading these few is bounded."""
        return PurePosixPath(path).name in EXERCISE_FILES and path.count("/") <= 1


def _read_zip(path: Path) -> _Members:
    m = _Members()
    budget = _Budget()
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _Refused(f"it holds {len(infos)} members, more than {MAX_MEMBERS}")
        for info in infos:
            raw = info.filename
            p = _member_path(raw)
            mode = info.external_attr >> 16
            if info.create_system == 3 and stat.S_IFMT(mode):  # made on Unix: the mode is meaningful
                if stat.S_ISLNK(mode):
                    raise _Refused(f"member {raw!r} is a symbolic link")
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise _Refused(f"member {raw!r} is a device, pipe or socket, not a file")
            if info.is_dir() or stat.S_ISDIR(mode):
                m.add_dir(p, raw)
                continue
            if info.flag_bits & 0x1:
                raise _Refused(f"member {raw!r} is encrypted")
            m.add_file(p, info.file_size, raw)
        for info in infos:
            p = _member_path(info.filename)
            if p in m.files and m.wanted(p):
                try:
                    with zf.open(info) as f:
                        m.content[p] = budget.read(f, info.filename)
                except NotImplementedError as e:  # a compression method zipfile lacks
                    raise _Refused(f"member {info.filename!r} uses an unsupported compression ({e})") from None
    return m


def _read_tar(path: Path, compressed: bool) -> _Members:
    m = _Members()
    budget = _Budget()
    with open(path, "rb") as raw_file:
        stream: _Readable = gzip.GzipFile(fileobj=raw_file, mode="rb") if compressed else raw_file
        limited = _Limited(stream, _MAX_TAR_STREAM)
        # Stream mode ("r|") reads forward only, through our limit, and never
        # seeks back: each member is judged and read as it passes.
        with tarfile.open(fileobj=limited, mode="r|") as tf:  # type: ignore[call-overload]
            for member in tf:
                raw = member.name
                p = _member_path(raw)
                if member.issym() or member.islnk():
                    raise _Refused(f"member {raw!r} is a {'symbolic' if member.issym() else 'hard'} link")
                if member.isdir():
                    m.add_dir(p, raw)
                    continue
                if not member.isreg() or member.issparse():
                    raise _Refused(f"member {raw!r} is a device, pipe or special file, not a plain file")
                m.add_file(p, member.size, raw)
                if m.wanted(p):
                    f = tf.extractfile(member)
                    if f is None:
                        raise _Refused(f"member {raw!r} cannot be read as a file")
                    m.content[p] = budget.read(f, raw)
    return m


def _read_dir(root: Path) -> _Members:
    m = _Members()
    budget = _Budget()

    def walk(d: Path, rel: str) -> None:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            p = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                # A link could point anywhere on the grader's machine, and its
                # target would travel into the sandbox as the student's file.
                raise _Refused(f"{p!r} is a symbolic link")
            if stat.S_ISDIR(st.st_mode):
                if e.name in SKIPPED_DIRS:
                    m.skipped.add(p)
                    continue
                m.add_dir(p, p)
                walk(Path(e.path), p)
            elif stat.S_ISREG(st.st_mode):
                m.add_file(p, st.st_size, p)
                if m.wanted(p):
                    # O_NOFOLLOW: a file swapped for a link since the scan is refused, not followed.
                    try:
                        fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW)
                    except OSError as err:
                        raise _Refused(f"{p!r} cannot be read ({err.strerror})") from None
                    with os.fdopen(fd, "rb") as f:
                        m.content[p] = budget.read(f, p)
            else:
                raise _Refused(f"{p!r} is a device, pipe or socket, not a plain file")

    walk(root, "")
    return m


def _arrange(name: str, source: Path, m: _Members) -> Submission:
    """Picks the exercise files from the top level or the single top-level folder."""
    sub = Submission(name=name, source=source)
    at_top = [p for p in m.files if "/" not in p and p in EXERCISE_FILES]
    tops = {p.split("/", 1)[0] for p in (*m.files, *m.dirs) if "/" in p or p in m.dirs} - _JUNK_TOP
    root = ""
    if not at_top and len(tops) == 1:
        root = next(iter(tops))
    taken: set[str] = set()
    for fname in EXERCISE_FILES:
        p = f"{root}/{fname}" if root else fname
        if p in m.files:
            sub.files[fname] = m.content[p]
            taken.add(p)
            if not m.content[p].strip():
                sub.problems.append(f"{p} is empty")
    sub.other_files = sorted([*(p for p in m.files if p not in taken), *(f"{d}/" for d in m.skipped)])
    where = f"the folder {root}/" if root else "the top level"
    lower = {f.lower(): f for f in EXERCISE_FILES}
    for p in sub.other_files:
        if p.endswith("/"):
            continue
        base = PurePosixPath(p).name
        if base in EXERCISE_FILES:
            sub.problems.append(f"ignored {p}: exercise files are read from {where} only")
        elif base.lower() in lower and PurePosixPath(p).parent.as_posix() in (root or ".", "."):
            sub.problems.append(f"ignored {p}: the exercise expects {lower[base.lower()]} (names are case-sensitive)")
    if not sub.files:
        sub.problems.append("no exercise file found; expected any of " + ", ".join(EXERCISE_FILES))
    elif not root and not at_top and len(tops) > 1:
        sub.problems.append("several top-level folders: put the files at the top level or in one folder")
    return sub


def kind_of(path: Path) -> str | None:
    """'dir', 'zip', 'tar.gz' or 'tar', or None for anything else."""
    if path.is_dir():
        return "dir"
    lower = path.name.lower()
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(".tar"):
        return "tar"
    return None


def load_submission(path: Path | str) -> Submission:
    """Reads one submission into memory. A LabError names the file (and the
    member) when it cannot be taken: missing, of an unknown kind, corrupt,
    over a cap, or holding a member that could escape or link."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise LabError(ExitCode.NOT_FOUND, f"submission {path} does not exist", "check the path")
    kind = kind_of(path)
    if kind is None:
        raise LabError(REFUSED, f"submission {path} is not a directory, .zip, .tar.gz, .tgz or .tar",
                       "ask the student for one of those")
    name = safe_name(_stem(path.resolve() if kind == "dir" else path))
    try:
        if kind == "dir":
            members = _read_dir(path)
        else:
            size = path.stat().st_size
            if size > MAX_ARCHIVE_BYTES:
                raise _Refused(f"the archive is {size} bytes, more than {_mib(MAX_ARCHIVE_BYTES)}")
            members = _read_zip(path) if kind == "zip" else _read_tar(path, compressed=kind == "tar.gz")
    except _Refused as e:
        raise LabError(REFUSED, f"submission {path} refused: {e}", _REFUSED_TODO) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError,
            struct.error, UnicodeDecodeError, ValueError) as e:
        raise LabError(REFUSED, f"submission {path} is not a readable {kind} archive ({e or type(e).__name__})",
                       "ask the student to upload it again") from None
    except OSError as e:
        raise LabError(REFUSED, f"submission {path} cannot be read ({e.strerror or e})",
                       "check its permissions") from None
    return _arrange(name, path, members)


def unique_names(subs: list[Submission]) -> None:
    """Gives same-named submissions a numeric suffix: alice, alice-2, alice-3."""
    used: set[str] = set()
    for s in subs:
        base = s.name
        n = 1
        while s.name in used:
            n += 1
            s.name = f"{base}-{n}"
        used.add(s.name)


def load_submissions(paths: Iterable[Path | str]) -> list[Submission]:
    """Every submission of a class, names made unique. One that cannot be
    taken is kept as refused (no files, `refused` says why), so its student
    gets a report instead of the whole class losing its run; a path that
    does not exist is the grader's typo and raises."""
    subs: list[Submission] = []
    for raw in paths:
        path = Path(raw)
        try:
            subs.append(load_submission(path))
        except LabError as e:
            if e.code == ExitCode.NOT_FOUND:
                raise
            subs.append(Submission(name=safe_name(_stem(path)), source=path, refused=e.what))
    unique_names(subs)
    return subs

