"""compose.yaml as the single source of truth for the lab's services.

labctl reads the same file `docker compose` runs, fills in the ${LAB_*}
variables from a scenario (Compose's own `${VAR:-default}` syntax), and turns
each service into a ContainerSpec: first what the file says (services()),
then one isolated lab's names, labels and image (for_lab()).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from labctl import labels
from labctl.engine import ContainerSpec
from labctl.errors import ExitCode, LabError

# A checkout's root; an installed labctl (from a pack's wheel) carries
# compose.yaml and the images' sources in its package, under _lab/.
_PACKAGE = Path(__file__).resolve().parent
ROOT = _PACKAGE.parent if (_PACKAGE.parent / "compose.yaml").is_file() else _PACKAGE / "_lab"
COMPOSE_FILE = ROOT / "compose.yaml"
LEASE_FILE = ROOT / "compose.lease.yaml"  # the lease lab (labels.LEASE_SERVICES)
KIND_FILES = {"worker": COMPOSE_FILE, "lease": LEASE_FILE}
IMAGES_DIR = ROOT / "images"
# Written by `labctl build` for plain `docker compose` in this checkout (see write_env).
ENV_FILE = ROOT / ".env"

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


def checkout_project(root: Path = ROOT) -> str:
    """This checkout's Compose project name: "labctl-" and a hash of its
    path. Compose names what it builds <project>-<service>, so two checkouts
    never run each other's images (COMPOSE_PROJECT_NAME, if set, wins, as it
    does for Compose)."""
    return os.environ.get("COMPOSE_PROJECT_NAME") or "labctl-" + hashlib.sha256(
        str(root.resolve()).encode()).hexdigest()[:10]


def write_env(base: str, builder: str, path: Path = ENV_FILE) -> bool:
    """The checkout's .env, which Compose reads for its project name and
    compose.yaml's ${LAB_*} defaults: this checkout's project, and the bases
    labctl built, by their content-hash tags (never a :latest another
    checkout may have moved). Written only when it changes; returns whether
    it did."""
    text = ("# Written by `labctl build` for plain `docker compose` in this checkout:\n"
            "# its own project (image names) and the bases labctl built, by content hash.\n"
            f"COMPOSE_PROJECT_NAME={checkout_project(path.parent)}\n"
            f"LAB_BASE_IMAGE={base}\nLAB_BUILDER_IMAGE={builder}\n")
    try:
        if path.exists() and path.read_text() == text:
            return False
        path.write_text(text)
    except OSError:  # not a checkout one may write in (an installed labctl): Compose is not run from there
        return False
    return True


def restart_policy(value: str | None) -> dict[str, Any] | None:
    """'on-failure:10' -> the engine's RestartPolicy."""
    if not value or value == "no":
        return None
    name, _, count = value.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def services(env: dict[str, str], path: Path = COMPOSE_FILE, kind: str = "worker") -> dict[str, ContainerSpec]:
    """Each service of a kind of lab as its compose file describes it, ${LAB_*} filled in from env."""
    if kind != "worker" and path == COMPOSE_FILE:
        path = KIND_FILES[kind]
    doc = load(path)
    out = {}
    for name in labels.KIND_SERVICES[kind]:
        raw = doc["services"].get(name)
        if raw is None:
            raise LabError(ExitCode.BAD_SCENARIO, f"{path}: service {name!r} is missing")
        out[name] = _service(doc, name, raw, env, path)
    return out


def all_services(env: dict[str, str]) -> dict[str, ContainerSpec]:
    """Every kind of lab's services: what `labctl build` builds."""
    out: dict[str, ContainerSpec] = {}
    for kind in labels.KIND_SERVICES:
        out.update(services(env, kind=kind))
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
        # Named for what it builds: the lease lab's services share images/lease.
        image=f"{doc.get('name', 'labctl')}-{Path(raw['build']['context']).name}",
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
    owner = labels.NETNS_OWNER.get(spec.service)
    return replace(
        spec,
        name=labels.container_name(lab_id, spec.service),
        image=image,
        labels=labels.service_labels(lab_id, spec.service, scenario),
        # A service in another's network namespace joins it: no network, no name of its own there.
        network=f"container:{labels.container_name(lab_id, owner)}" if owner else labels.network_name(lab_id),
        aliases=[] if owner else labels.aliases(spec.service),
        volume=labels.volume_name(lab_id),
    )
