"""Every label and every resource name, derived from one lab id."""
from __future__ import annotations

import re
import secrets
import time

from labctl.errors import ExitCode, LabError

PREFIX = "io.labctl"
MANAGED = f"{PREFIX}.managed"
LAB = f"{PREFIX}.lab"
SERVICE = f"{PREFIX}.service"
SCENARIO = f"{PREFIX}.scenario"
COMPONENT = f"{PREFIX}.component"
SOURCE_HASH = f"{PREFIX}.source-hash"
BASE_RECIPE = f"{PREFIX}.base-recipe"
FAULT = f"{PREFIX}.fault"  # on a fault helper: the journaled fault it serves

# The lab's three programs: the roles a fault targets and an observer watches.
ROLES = ("monitor", "worker", "supervisor")
# Every lab's containers, in start order (depends_on in compose.yaml): the
# proxy owns the worker's network namespace (the worker joins it), so that
# faults on the worker's links happen in front of it (images/proxy).
SERVICES = ("monitor", "proxy", "worker", "supervisor")
# Whose network namespace a service lives in, when not its own.
NETNS_OWNER = {"worker": "proxy"}
# The lease lab's containers (compose.lease.yaml), in start order: a lease
# service, a store that can fence, and two holders competing for the lease.
LEASE_SERVICES = ("lease", "store", "alice", "bob")
LEASE_HOLDERS = ("alice", "bob")
# Each kind of lab and its containers (scenario `lab.kind`).
KIND_SERVICES = {"worker": SERVICES, "lease": LEASE_SERVICES}
ALL_SERVICES = (*SERVICES, *LEASE_SERVICES)
# The services whose images preload libfaketime: labctl's clock faults can move their clocks.
CLOCK_SERVICES = ("worker", *LEASE_SERVICES)


def aliases(service: str) -> list[str]:
    """The names a service's container answers to on the lab network: its
    own, and for the proxy the worker's too (clients reach the worker through it)."""
    return [service, *(s for s, owner in NETNS_OWNER.items() if owner == service)]
NAME_PREFIX = "labctl-"
NETWORK = "net"
VOLUME = "lab"
# A fault helper's service label and the start of its name's last part
# (helper<tag>): short-lived containers that change a lab container's
# network or processes from inside its namespaces (faults.py).
HELPER = "helper"
HELPER_PART = re.compile(r"^helper[a-z0-9]{1,16}$")

LAB_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


# What Compose labels a container it started with: a lab that plain `docker
# compose up` started has compose.yaml's labels (managed) and these, no lab id.
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


def describe(found: dict[str, str]) -> tuple[str, str, str]:
    """(lab, service, scenario) of a managed container, for people: labctl's
    labels, or the Compose project and service of one `docker compose up`
    started; "-" where it has none (a fault helper runs no scenario)."""
    if LAB in found:
        return found[LAB], found.get(SERVICE, "-"), found.get(SCENARIO, "-")
    if COMPOSE_PROJECT in found:
        return f"{found[COMPOSE_PROJECT]} (compose)", found.get(COMPOSE_SERVICE, "-"), "docker compose up"
    return "-", found.get(SERVICE, "-"), found.get(SCENARIO, "-")


def check_lab_id(lab_id: str) -> str:
    if not LAB_ID.match(lab_id):
        raise LabError(ExitCode.USAGE, f"bad lab name {lab_id!r}",
                       "use 1-40 lowercase letters, digits and dashes, starting with a letter or digit")
    return lab_id


def new_lab_id(scenario: str) -> str:
    stem = scenario.removeprefix("scenario-")[:30]
    return f"{stem}-{secrets.token_hex(2)}"


def lab_labels(lab_id: str, **extra: str) -> dict[str, str]:
    labels = {MANAGED: "true", LAB: lab_id}
    labels.update({f"{PREFIX}.{k.replace('_', '-')}": v for k, v in extra.items()})
    return labels


def service_labels(lab_id: str, service: str, scenario: str) -> dict[str, str]:
    return {MANAGED: "true", LAB: lab_id, SERVICE: service, SCENARIO: scenario}


def container_name(lab_id: str, service: str) -> str:
    return _name(lab_id, service)


def helper_name(lab_id: str, tag: str) -> str:
    return _name(lab_id, f"{HELPER}{tag}")


def helper_labels(lab_id: str, fault_id: str) -> dict[str, str]:
    return {MANAGED: "true", LAB: lab_id, SERVICE: HELPER, FAULT: fault_id}


def netns_container(lab_id: str, service: str) -> str:
    """The container that owns a service's network namespace: the one on the
    lab network, which `docker network disconnect` and the engine's
    addresses are about."""
    return _name(lab_id, NETNS_OWNER.get(service, service))


def network_name(lab_id: str) -> str:
    return _name(lab_id, NETWORK)


def volume_name(lab_id: str) -> str:
    return _name(lab_id, VOLUME)


def _name(lab_id: str, part: str) -> str:
    return f"{NAME_PREFIX}{lab_id}-{part}"


def lab_id_of(name: str) -> str | None:
    """The lab id in a container, network or volume name; None for any other name.

    The part after the last dash is the resource (a service, `net`, `lab`);
    a lab id may itself hold dashes, so everything between is the id."""
    if not name.startswith(NAME_PREFIX):
        return None
    lab_id, _, part = name[len(NAME_PREFIX):].rpartition("-")
    if (part not in (*ALL_SERVICES, NETWORK, VOLUME) and not HELPER_PART.match(part)) or not LAB_ID.match(lab_id):
        return None
    return lab_id


def filters(lab_id: str | None = None, service: str | None = None) -> dict[str, list[str]]:
    """Docker filters matching labctl's resources: all, one lab's, or one service's."""
    want = [f"{MANAGED}=true"]
    if lab_id:
        want.append(f"{LAB}={lab_id}")
    if service:
        want.append(f"{SERVICE}={service}")
    return {"label": want}


# ------------------------------------------------------------------ grading (labctl grade)
# A grading run's sandboxes and volumes carry the run's id and the
# submission's name. They also carry a lab id, grade-<run id>, so that
# `labctl down --all` and `labctl recover` remove what an interrupted
# grading run left behind, like any lab's resources.

GRADE = f"{PREFIX}.grade"
SUBMISSION = f"{PREFIX}.submission"
GRADE_LAB_PREFIX = "grade-"


def new_grade_run_id() -> str:
    """UTC time and a random suffix: sortable, unique, a valid lab id with its prefix."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def grade_lab_id(run_id: str) -> str:
    return check_lab_id(f"{GRADE_LAB_PREFIX}{run_id}")


def grade_labels(run_id: str, submission: str, role: str) -> dict[str, str]:
    """Labels of one grading resource; role says what it is (sandbox, builder, work)."""
    return {MANAGED: "true", LAB: grade_lab_id(run_id), GRADE: run_id, SUBMISSION: submission, SERVICE: role}


def grade_filters(run_id: str | None = None, submission: str | None = None) -> dict[str, list[str]]:
    """Docker filters matching grading resources: all, one run's, or one submission's in a run."""
    want = [f"{MANAGED}=true", f"{GRADE}={run_id}" if run_id else GRADE]
    if submission:
        want.append(f"{SUBMISSION}={submission}")
    return {"label": want}
