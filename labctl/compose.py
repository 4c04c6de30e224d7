"""compose.yaml as the single source of truth for the lab's services.

labctl reads the same file `docker compose` runs, fills in the ${LAB_*}
variables from a scenario (Compose's own `${VAR:-default}` syntax), and turns
each service into a ContainerSpec for one isolated lab.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from labctl import labels as L
from labctl.engine import ContainerSpec
from labctl.errors import ExitCode, LabError

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
IMAGES_DIR = ROOT / "images"
SERVICES = ("monitor", "worker", "supervisor")  # start order (depends_on)

_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::-((?:[^}])*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR} and ${VAR:-default}; an unset VAR without a default is ''."""
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


@dataclass
class Service:
    name: str
    image: str
    build_context: Path
    command: list[str]
    user: str | None
    read_only: bool
    tmpfs: dict[str, str]
    cap_drop: list[str]
    security_opt: list[str]
    mem_limit: str | None
    cpus: float | None
    pids_limit: int | None
    restart: dict | None
    mount: str


def load(path: Path = COMPOSE_FILE) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LabError(ExitCode.NOT_FOUND, f"{path} not found", "run labctl from a checkout of the project") from None
    except yaml.YAMLError as e:
        raise LabError(ExitCode.BAD_SCENARIO, f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise LabError(ExitCode.BAD_SCENARIO, f"{path}: no services: mapping")
    return doc


def restart_policy(value: str | None) -> dict | None:
    """'on-failure:10' -> the engine's RestartPolicy."""
    if not value or value == "no":
        return None
    name, _, count = value.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def services(env: dict[str, str], path: Path = COMPOSE_FILE) -> dict[str, Service]:
    doc = load(path)
    out = {}
    for name in SERVICES:
        raw = doc["services"].get(name)
        if raw is None:
            raise LabError(ExitCode.BAD_SCENARIO, f"{path}: service {name!r} is missing")
        mount = next((v.split(":", 1)[1] for v in raw.get("volumes", []) if v.startswith("lab:")), "/lab")
        tmpfs = {}
        for t in raw.get("tmpfs", []):
            p, _, opts = t.partition(":")
            tmpfs[p] = opts
        cmd = raw.get("command", [])
        cmd = cmd.split() if isinstance(cmd, str) else list(cmd)
        out[name] = Service(
            name=name,
            image=f"{doc.get('name', 'labctl')}-{name}",
            build_context=(path.parent / raw["build"]["context"]).resolve(),
            command=[interpolate(str(c), env) for c in cmd],
            user=raw.get("user"),
            read_only=bool(raw.get("read_only", False)),
            tmpfs=tmpfs,
            cap_drop=list(raw.get("cap_drop", [])),
            security_opt=list(raw.get("security_opt", [])),
            mem_limit=raw.get("mem_limit"),
            cpus=float(raw["cpus"]) if raw.get("cpus") else None,
            pids_limit=raw.get("pids_limit"),
            restart=restart_policy(interpolate(str(raw["restart"]), env)) if raw.get("restart") else None,
            mount=mount,
        )
    return out


def container_spec(svc: Service, lab_id: str, scenario: str, image: str) -> ContainerSpec:
    return ContainerSpec(
        name=L.container_name(lab_id, svc.name),
        image=image,
        command=svc.command,
        labels=L.service_labels(lab_id, svc.name, scenario),
        network=L.network_name(lab_id),
        aliases=[svc.name],
        volume=L.volume_name(lab_id),
        mount=svc.mount,
        user=svc.user,
        read_only=svc.read_only,
        tmpfs=svc.tmpfs,
        cap_drop=svc.cap_drop,
        security_opt=svc.security_opt,
        mem_limit=svc.mem_limit,
        nano_cpus=int(svc.cpus * 1e9) if svc.cpus else None,
        pids_limit=svc.pids_limit,
        restart=svc.restart,
    )
