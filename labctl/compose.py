"""compose.yaml as the single source of truth for the lab's services.

labctl reads the same file `docker compose` runs, fills in the ${LAB_*}
variables from a scenario (Compose's own `${VAR:-default}` syntax), and turns
each service into a ContainerSpec: first what the file says (services()),
then one isolated lab's names, labels and image (for_lab()).
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from labctl import labels
from labctl.engine import ContainerSpec
from labctl.errors import ExitCode, LabError

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
IMAGES_DIR = ROOT / "images"

_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::-((?:[^}])*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR} and ${VAR:-default}; an unset VAR without a default is ''."""
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def load(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LabError(ExitCode.NOT_FOUND, f"{path} not found", "run labctl from a checkout of the project") from None
    except yaml.YAMLError as e:
        raise LabError(ExitCode.BAD_SCENARIO, f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise LabError(ExitCode.BAD_SCENARIO, f"{path}: no services: mapping")
    return doc


def restart_policy(value: str | None) -> dict[str, Any] | None:
    """'on-failure:10' -> the engine's RestartPolicy."""
    if not value or value == "no":
        return None
    name, _, count = value.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def services(env: dict[str, str], path: Path = COMPOSE_FILE) -> dict[str, ContainerSpec]:
    """Each service as compose.yaml describes it, ${LAB_*} filled in from env."""
    doc = load(path)
    out = {}
    for name in labels.SERVICES:
        raw = doc["services"].get(name)
        if raw is None:
            raise LabError(ExitCode.BAD_SCENARIO, f"{path}: service {name!r} is missing")
        out[name] = _service(doc, name, raw, env, path)
    return out


def _service(doc: dict[str, Any], name: str, raw: dict[str, Any], env: dict[str, str], path: Path) -> ContainerSpec:
    mount = next((v.split(":", 1)[1] for v in raw.get("volumes", []) if v.startswith("lab:")), "/lab")
    tmpfs = {}
    for t in raw.get("tmpfs", []):
        p, _, opts = t.partition(":")
        tmpfs[p] = opts
    cmd = raw.get("command", [])
    cmd = cmd.split() if isinstance(cmd, str) else list(cmd)
    return ContainerSpec(
        service=name,
        image=f"{doc.get('name', 'labctl')}-{name}",
        build_context=(path.parent / raw["build"]["context"]).resolve(),
        command=[interpolate(str(c), env) for c in cmd],
        user=raw.get("user"),
        read_only=bool(raw.get("read_only", False)),
        tmpfs=tmpfs,
        cap_drop=list(raw.get("cap_drop", [])),
        security_opt=list(raw.get("security_opt", [])),
        mem_limit=raw.get("mem_limit"),
        nano_cpus=int(float(raw["cpus"]) * 1e9) if raw.get("cpus") else None,
        pids_limit=raw.get("pids_limit"),
        restart=restart_policy(interpolate(str(raw["restart"]), env)) if raw.get("restart") else None,
        mount=mount,
    )


def for_lab(spec: ContainerSpec, lab_id: str, scenario: str, image: str) -> ContainerSpec:
    """The service as one lab runs it: its names and labels from the lab id, the image built for it."""
    return replace(
        spec,
        name=labels.container_name(lab_id, spec.service),
        image=image,
        labels=labels.service_labels(lab_id, spec.service, scenario),
        network=labels.network_name(lab_id),
        aliases=[spec.service],
        volume=labels.volume_name(lab_id),
    )
