"""More than one engine: which engines `--engine` names, which of them runs
each new lab, and the lab's images streamed to an engine that lacks them.

An `--engine` value is a Docker context name (read from the docker CLI's
config directory, ~/.docker or $DOCKER_CONFIG: `contexts/meta/*/meta.json`,
TLS material under `contexts/tls/`) or a DOCKER_HOST-style URL: unix://,
tcp:// (TLS when DOCKER_TLS_VERIFY or DOCKER_CERT_PATH says so) or ssh://.
`default` is the environment's engine (DOCKER_HOST, else the default
socket), as for the docker CLI. Only labctl/engine.py talks to an engine.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from labctl import labels
from labctl.engine import DEFAULT, Connection, Engine, unreachable
from labctl.errors import ExitCode, LabError

SCHEMES = ("unix://", "tcp://", "ssh://")
PROGRESS_BYTES = 16 << 20  # a progress line per this much streamed


def docker_config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def _contexts(config_dir: Path) -> dict[str, dict]:
    """Every context the docker CLI knows: name -> its meta.json."""
    out: dict[str, dict] = {}
    for meta in sorted((config_dir / "contexts" / "meta").glob("*/meta.json")):
        try:
            doc = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("Name"), str):
            out[doc["Name"]] = doc
    return out


def _from_url(value: str) -> Connection:
    if value.startswith("tcp://"):
        cert = os.environ.get("DOCKER_CERT_PATH")
        verify = bool(os.environ.get("DOCKER_TLS_VERIFY"))
        if cert or verify:
            return Connection(value, value, cert or str(docker_config_dir()), verify)
    if not value.startswith(SCHEMES) or len(value) <= len(value.split("://")[0]) + 3:
        raise LabError(ExitCode.USAGE, f"--engine {value}: not an engine URL",
                       "give unix:///PATH, tcp://HOST:PORT, ssh://USER@HOST or a context name")
    return Connection(value, value)


def _from_context(name: str, doc: dict, config_dir: Path) -> Connection:
    endpoint = (doc.get("Endpoints") or {}).get("docker") or {}
    host = endpoint.get("Host")
    if not host:
        return Connection(name)  # a context with no docker endpoint: the environment's engine
    tls = config_dir / "contexts" / "tls" / hashlib.sha256(name.encode()).hexdigest() / "docker"
    if tls.is_dir():
        return Connection(name, host, str(tls), not endpoint.get("SkipTLSVerify", False))
    return Connection(name, host)


def parse(value: str, config_dir: Path | None = None) -> Connection:
    """One --engine value: a URL, `default`, or a context's name."""
    value = value.strip()
    if "://" in value:
        return _from_url(value)
    config_dir = config_dir or docker_config_dir()
    found = _contexts(config_dir)
    if value in found:
        return _from_context(value, found[value], config_dir)
    if value == DEFAULT:
        return Connection(DEFAULT)
    raise LabError(ExitCode.USAGE, f"--engine {value}: no such Docker context",
                   f"`docker context ls` lists them ({', '.join([DEFAULT, *sorted(found)])} in {config_dir}); "
                   "or give a URL: unix:///PATH, tcp://HOST:PORT, ssh://USER@HOST")


def every_context(config_dir: Path | None = None) -> list[Connection]:
    """--all-engines: the default engine and every context in the docker config."""
    config_dir = config_dir or docker_config_dir()
    found = _contexts(config_dir)
    conns = [] if DEFAULT in found else [Connection(DEFAULT)]
    return conns + [_from_context(n, doc, config_dir) for n, doc in sorted(found.items())]


def connections(values: Sequence[str] | None, all_engines: bool = False) -> list[Connection]:
    """The engines a command covers; none named: the environment's engine."""
    if all_engines:
        return every_context()
    conns: list[Connection] = []
    for v in values or [DEFAULT]:
        c = parse(v)
        if c not in conns:
            conns.append(c)
    return conns


def open_all(conns: Sequence[Connection], on_error: Callable[[LabError], None],
             opener: Callable[[Connection], Engine] | None = None) -> list[Engine]:
    """An Engine for every one that answers, in the order named; each that
    does not is reported (one line naming it) and left out. They are tried
    at once, so one that hangs costs its timeout once, not once per engine.
    The same engine reached twice (a context and its URL) counts once."""
    opener = opener or (lambda c: Engine.open(timeout=60, conn=c))

    def attempt(c: Connection) -> tuple[Engine, str] | LabError:
        try:
            eng = opener(c)
            return eng, eng.engine_id()
        except LabError as e:
            return e
        except Exception as e:  # it answered the ping, then not
            return unreachable(e, c.name)

    with ThreadPoolExecutor(max_workers=max(1, len(conns))) as pool:
        tried = list(pool.map(attempt, conns))
    out: list[Engine] = []
    seen: set[str] = set()
    for got in tried:
        if isinstance(got, LabError):
            on_error(got)
        elif got[1] in seen:
            got[0].close()
        else:
            seen.add(got[1])
            out.append(got[0])
    return out


# ----------------------------------------------------------------------- placement


class Countable(Protocol):
    name: str

    def running_count(self, filters: dict) -> int: ...


def busy(engine: Countable) -> int:
    """How busy an engine is: its running labctl-labelled containers."""
    return engine.running_count(labels.filters())


def place(engines: Sequence[Countable], n: int, per_lab: int = len(labels.SERVICES)) -> list[int]:
    """For each of n new labs, the index of the engine that runs it: the
    least busy one, counting the labs placed before it; a tie goes to the
    engine named first."""
    if not engines:
        raise LabError(ExitCode.ENGINE_UNREACHABLE, "no Docker engine to run the labs on",
                       "start one, or name one that answers with --engine")
    load = [busy(e) for e in engines]
    out = []
    for _ in range(n):
        i = min(range(len(engines)), key=lambda k: (load[k], k))
        out.append(i)
        load[i] += per_lab
    return out


# ----------------------------------------------------------------------- images


def _metered(stream: Iterator[bytes], sent: list[int], say: Callable[[int], None]) -> Iterator[bytes]:
    """The stream as it passes, its byte count in sent[0]; say(bytes) every PROGRESS_BYTES."""
    mark = 0
    for chunk in stream:
        sent[0] += len(chunk)
        if sent[0] - mark >= PROGRESS_BYTES:
            mark = sent[0]
            say(sent[0])
        yield chunk


def copy_images(src: Engine, dst: Engine, refs: dict[str, str], log: Callable[[str], None]) -> int:
    """Streams each image of refs that dst lacks from src (save -> load, never
    whole in memory), by the same content-hash tags. Returns how many."""
    copied = 0
    for ref in refs.values():
        if dst.image_exists(ref):
            continue
        t0 = time.monotonic()
        sent = [0]
        log(f"engine {dst.name}: streaming {ref} from {src.name}")

        def progress(n: int, ref: str = ref) -> None:
            log(f"engine {dst.name}: {ref}: {n / 2**20:.0f} MiB streamed")

        dst.load(_metered(src.save(ref), sent, progress))
        if not dst.image_exists(ref):
            raise LabError(ExitCode.IMAGE_MISSING, f"engine {dst.name} has no {ref} after loading it",
                           f"`labctl --engine {dst.name} build` builds it there")
        log(f"engine {dst.name}: {ref} loaded ({sent[0] / 2**20:.1f} MiB in {time.monotonic() - t0:.1f} s)")
        copied += 1
    return copied


def source_engine(engines: Sequence[Engine], has_images: Callable[[Engine], bool]) -> Engine:
    """The engine the images come from: the first one that has them, else
    the first one (they get built there)."""
    return next((e for e in engines if has_images(e)), engines[0])
