"""`labctl doctor`'s smoke test: the engine must really run a container.

Asking the engine for its version is not enough: once a second dockerd in the
host's network namespace removed the engine's `docker0` bridge, doctor said
"ok" everywhere while every build failed with `could not find bridge docker0`.
So doctor runs a throwaway container, hardened like the lab's, to its end on
the engine's default bridge, and another on a labelled user network (an
internal bridge, like a lab's), and then removes both and the network,
whatever happened. Each step has a deadline; a failed step is reported with
the engine's own message and what to do.

Everything it makes carries a lab id (`doctor-xxxx`) and labctl's labels, so
`labctl recover` or `labctl down --all` removes it if doctor is killed half-way.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from labctl import labels
from labctl.engine import ContainerState, Engine, is_engine_gone, short, wait_for
from labctl.errors import ExitCode, LabError

RESTART = "restart the Docker engine: `sudo systemctl restart docker`, then run `labctl doctor` again"
# One engine call (create, start, inspect, remove) waits at most this long for an answer (cli.py opens
# the engine with it; a call that timed out is tried at most twice more); a probe's run is polled.
CALL_TIMEOUT_S = 20
RUN_DEADLINE_S = 30  # a probe container, from its start to its exit
POLL_S = 0.2
COMPONENT = "doctor"
# The probe proves the container got a network interface, and that it ran at all.
PROBE_COMMAND = ["sh", "-c", "test -d /sys/class/net/eth0 && echo 'eth0 up'"]
PROBE_USER = "10001:10001"
PROBE_MEM = "32m"
PROBE_CPUS = 500_000_000  # half a CPU, in nano-CPUs
PROBE_PIDS = 16

# ------------------------------------------------------------------ whose fault: the engine's?
# Phrases of the engine failing on its own, whatever was asked of it, with
# what to do. "network" alone is broad: a Dockerfile's RUN step that fails
# (say, a download) is the Dockerfile's, and says so in its own phrases below.
_NO_SPACE = "no space left on device"
ENGINE_FAULTS = {
    _NO_SPACE: "free disk space for the engine (`docker system df` shows what holds it; "
               "`docker builder prune` and `docker image prune` free some), then try again",
    "could not find bridge": "the engine's default bridge (docker0) is gone, as when a second dockerd in the "
                             "host's network namespace removes it; " + RESTART,
    "failed to create endpoint": RESTART,
    "network": RESTART,
}
DOCKERFILE_FAULTS = ("returned a non-zero code", "copy failed", "add failed", "dockerfile parse error",
                     "unknown instruction", "failed to process")


def engine_fault(message: str) -> str | None:
    """What to do when `message` is the engine failing (not a Dockerfile, not
    the program in the container); None when it is not."""
    low = message.lower()
    if _NO_SPACE in low:
        return ENGINE_FAULTS[_NO_SPACE]
    if any(m in low for m in DOCKERFILE_FAULTS):
        return None
    for marker, todo in ENGINE_FAULTS.items():
        if re.search(rf"\b{re.escape(marker)}\b", low):
            return todo
    return None


# ------------------------------------------------------------------ the smoke test


@dataclass
class Step:
    name: str
    ok: bool
    detail: str  # what happened; for a failed step, the engine's own message
    todo: str = ""  # for a failed step: what to do


@dataclass
class _Made:
    """What the smoke test asked the engine for: cleanup removes these (and
    anything else carrying the lab id), tolerating what never came to be."""
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)


def smoke(engine: Engine, image: str, lab_id: str | None = None,
          run_deadline_s: float = RUN_DEADLINE_S) -> list[Step]:
    """Runs a probe container on the default bridge and one on a labelled user
    network, then removes all it made. One Step per step, cleanup last; a
    probe stops at its first failed step, the other probe still runs."""
    lab_id = lab_id or labels.new_lab_id(COMPONENT)
    steps: list[Step] = []
    made = _Made()
    try:
        _probe(engine, image, lab_id, "bridge", "default bridge", steps, made, run_deadline_s)
        net = labels.network_name(lab_id)
        made.networks.append(net)  # before asking: a create that timed out may still have happened
        if _step(steps, "user network: create it",
                 lambda: _create_network(engine, net, lab_id)):
            _probe(engine, image, lab_id, net, "user network", steps, made, run_deadline_s)
    finally:
        steps.append(cleanup(engine, lab_id, made))
    return steps


def _probe(engine: Engine, image: str, lab_id: str, network: str, where: str, steps: list[Step], made: _Made,
           run_deadline_s: float) -> bool:
    role = "probe-bridge" if network == "bridge" else "probe-user"
    name = labels.container_name(lab_id, role)
    made.containers.append(name)
    tags = labels.lab_labels(lab_id, component=COMPONENT, service=role)

    def create() -> str:
        engine.create_probe(image=image, name=name, labels=tags, command=PROBE_COMMAND, network=network,
                            user=PROBE_USER, mem_limit=PROBE_MEM, nano_cpus=PROBE_CPUS, pids_limit=PROBE_PIDS)
        return f"{name} from {image}, hardened like the lab's"

    def start() -> str:
        engine.start(name)
        return "started"

    return (_step(steps, f"{where}: create a container", create)
            and _step(steps, f"{where}: start it", start)
            and _step(steps, f"{where}: run it to its end", lambda: _run_to_end(engine, name, run_deadline_s)))


def _create_network(engine: Engine, net: str, lab_id: str) -> str:
    engine.create_network(net, labels.lab_labels(lab_id, component=COMPONENT))
    return f"{net} (internal bridge, labelled {labels.LAB}={lab_id})"


def _run_to_end(engine: Engine, name: str, deadline_s: float) -> str:
    last: list[ContainerState | None] = [None]

    def ended() -> bool:
        last[0] = engine.inspect(name)
        return last[0] is None or last[0].status in ("exited", "dead")

    wait_for(ended, deadline_s, POLL_S, f"{name} to exit", seen=lambda: _state(last[0]))
    st = last[0]
    if st is None:
        raise LabError(ExitCode.ENGINE_ERROR, f"{name} vanished before it exited")
    out = " | ".join(engine.logs_text(name, tail=5).split("\n")).strip(" |")
    if st.exit_code != 0 or st.oom_killed:
        raise LabError(ExitCode.ENGINE_ERROR, f"{name} exited {st.exit_code}"
                       + (" (killed: out of memory)" if st.oom_killed else "") + (f": {out}" if out else ""))
    return f"exited 0 ({out or 'no output'})"


def _state(st: ContainerState | None) -> str:
    if st is None:
        return "no such container"
    return f"status {st.status}, exit code {st.exit_code}, pid {st.pid}"


def _step(steps: list[Step], name: str, fn: Callable[[], str]) -> bool:
    """Runs one step; records it, a failure with the engine's message and what
    to do. Any exception is a finding here: doctor reports, it does not crash."""
    try:
        steps.append(Step(name, True, fn()))
        return True
    except Exception as e:
        steps.append(Step(name, False, _said(e), _todo(e)))
        return False


def _said(e: Exception) -> str:
    if isinstance(e, LabError):
        return e.what
    if is_engine_gone(e):
        return f"the engine did not answer ({short(e)})"
    return f"{type(e).__name__}: {short(e)}"


def _todo(e: Exception) -> str:
    said = _said(e)
    fault = engine_fault(said)
    if fault:
        return fault
    if isinstance(e, LabError) and e.code == ExitCode.IMAGE_MISSING and e.todo:
        return e.todo
    return RESTART


def cleanup(engine: Engine, lab_id: str, made: _Made) -> Step:
    """Removes the probes and the network, and anything else labelled with the
    lab id; what is already gone is fine. Then nothing may carry the lab id."""
    problems: list[str] = []
    containers, networks = list(made.containers), list(made.networks)
    found = _labelled(engine, lab_id, problems)
    containers += [c for c in found[0] if c not in containers]
    networks += [n for n in found[1] if n not in networks]
    for c in containers:
        _try(problems, f"removing {c}", engine.remove_container, c)
    for n in networks:
        _try(problems, f"removing {n}", engine.remove_network, n)
    left = _labelled(engine, lab_id, problems)
    if left[0] or left[1]:
        problems.append("left behind: " + ", ".join(left[0] + left[1]))
    if problems:
        return Step("cleanup", False, "; ".join(problems), f"remove them with `labctl down --lab {lab_id}`")
    return Step("cleanup", True, f"nothing labelled {labels.LAB}={lab_id} is left")


def _labelled(engine: Engine, lab_id: str, problems: list[str]) -> tuple[list[str], list[str]]:
    f = labels.filters(lab_id)
    try:
        return [c.name for c in engine.containers(f)], [n for _, n in engine.networks(f)]
    except Exception as e:
        problems.append(f"listing what carries {labels.LAB}={lab_id}: {_said(e)}")
        return [], []


def _try(problems: list[str], doing: str, fn: Callable[[str], None], arg: str) -> None:
    try:
        fn(arg)
    except Exception as e:  # one failure must not spare the rest
        problems.append(f"{doing}: {_said(e)}")
