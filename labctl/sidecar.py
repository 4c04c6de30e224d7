"""Fault helpers: small containers that change a lab container from inside
one of its namespaces, for the faults the engine has no verb for.

- In the target's network namespace, holding NET_ADMIN and nothing else:
  iptables rules that cut one direction of a link or drop a share of its
  packets. The rules carry a comment naming the lab and the fault
  (`labctl:<lab>:<fault id>`), so that the revert, `down` and `recover`
  remove exactly them. The helper exits once the rules are in; the rules
  stay in the namespace (and go with it when the container goes).
- In the target's pid namespace, as the target's own user and with no
  capability at all: the duty cycle of `slow`, SIGSTOP and SIGCONT to the
  target's processes, for as long as the helper runs.

The lab's own containers never hold a capability: only these helpers do,
for a few hundred milliseconds (the duty cycle holds none). They run the
tools image (images.TOOLS: dash, coreutils, iptables), carry the lab's
labels, and are removed by the fault, by teardown or by `recover`.
"""
from __future__ import annotations

import secrets

from labctl import images, labels
from labctl.engine import Engine, wait_for
from labctl.errors import ExitCode, LabError

RUN_TIMEOUT_S = 20.0  # a helper that adds or removes a rule takes well under a second
POLL_S = 0.05
STOP_GRACE_S = 2  # the duty cycle's trap resumes the target within one period (at most a second)

# The rules go into the OUTPUT chain of the sender's namespace: what it sends
# to TO is dropped there, what TO sends back is left alone.
# It stamps the moment the rule went in (STAMP, then Unix seconds): the
# fault's window starts there, not when the helper was asked for.
STAMP = "labctl-stamp "
ADD_RULE = ('tag=$1; shift; iptables -w 5 -A OUTPUT "$@" -m comment --comment "$tag" -j DROP'
            ' && echo "' + STAMP + '$(date +%s.%N)" && iptables -w 5 -S OUTPUT')
# -S prints each rule as the -A that made it: the same words after -D delete it.
DELETE_RULES = ('tag=$1; iptables -w 5 -S OUTPUT | while read -r rule; do case "$rule" in'
                ' *"\\"$tag\\""*) eval "iptables -w 5 -D ${rule#-A }" || exit 1;; esac; done;'
                ' iptables -w 5 -S OUTPUT')
# Stopped for $1 seconds, running for $2, until told to stop; then resumed.
# kill -1 reaches every process the helper's user may signal in the shared
# namespace but its init (tini, which only waits) and the shell itself.
DUTY_CYCLE = ("trap 'kill -CONT -1 2>/dev/null; exit 0' TERM INT;"
              ' while :; do kill -STOP -1 2>/dev/null; sleep "$1"; kill -CONT -1 2>/dev/null; sleep "$2"; done')


def rule_tag(lab_id: str, fault_id: str) -> str:
    return f"labctl:{lab_id}:{fault_id}"


def _image(engine: Engine) -> str:
    ref = images.tools_ref()
    if not engine.image_exists(ref):
        raise LabError(ExitCode.IMAGE_MISSING, f"the fault tools image {ref} is missing",
                       "run `labctl build` (it builds the fault tools with the bases)")
    return ref


def stamp(out: str) -> float | None:
    """The time a helper's script stamped in its output, if any."""
    for line in out.splitlines():
        if line.startswith(STAMP):
            try:
                return float(line[len(STAMP):])
            except ValueError:
                return None
    return None


def run_in_network(engine: Engine, lab_id: str, fault_id: str, target: str, script: str, args: list[str]
                   ) -> str:
    """Runs `sh -c script sh args...` as root holding only NET_ADMIN in the
    network namespace of the container `target`; returns its output, or
    raises with it when the script fails."""
    name = labels.helper_name(lab_id, secrets.token_hex(4))
    cid = engine.create_helper(image=_image(engine), name=name, labels=labels.helper_labels(lab_id, fault_id),
                               command=["sh", "-c", script, "sh", *args], user="0:0", joins=target,
                               namespace="network", cap_add=("NET_ADMIN",))
    try:
        engine.start(cid)
        code = engine.wait(cid, RUN_TIMEOUT_S)
        out = engine.logs_text(cid).strip()
        if code is None:
            raise LabError(ExitCode.ENGINE_ERROR, f"the fault helper in {target} did not finish within "
                           f"{RUN_TIMEOUT_S:.0f} s", "see `labctl doctor`")
        if code != 0:
            raise LabError(ExitCode.ENGINE_ERROR, f"iptables in {target} failed (exit {code}): {out[-300:]}",
                           "the engine's kernel needs iptables with the comment and statistic matches")
        return out
    finally:
        engine.remove_container(cid)


def start_duty_cycle(engine: Engine, lab_id: str, fault_id: str, target: str, user: str,
                     stopped_s: float, running_s: float) -> str:
    """Starts the helper that stops and resumes `target`'s processes; returns its name."""
    name = labels.helper_name(lab_id, secrets.token_hex(4))
    cid = engine.create_helper(image=_image(engine), name=name, labels=labels.helper_labels(lab_id, fault_id),
                               command=["sh", "-c", DUTY_CYCLE, "sh", f"{stopped_s:.3f}", f"{running_s:.3f}"],
                               user=user or "10001:10001", joins=target, namespace="pid")
    try:
        engine.start(cid)
    except BaseException:
        engine.remove_container(cid)
        raise
    return name


def helpers_of(engine: Engine, lab_id: str, fault_id: str | None = None) -> list[str]:
    """The names of a lab's fault helpers (of one fault, or all)."""
    want = [f"{labels.MANAGED}=true", f"{labels.LAB}={lab_id}", f"{labels.SERVICE}={labels.HELPER}"]
    if fault_id:
        want.append(f"{labels.FAULT}={fault_id}")
    return [c.name for c in engine.containers({"label": want})]


def stop_helpers(engine: Engine, lab_id: str, fault_id: str) -> int:
    """Stops (the trap resumes the target) and removes a fault's helpers; returns how many there were."""
    names = helpers_of(engine, lab_id, fault_id)
    for name in names:
        try:
            engine.stop(name, timeout=STOP_GRACE_S)
        except LabError:
            pass  # already stopped or gone: removal below is what counts
        engine.remove_container(name)
    wait_for(lambda: not helpers_of(engine, lab_id, fault_id), 10, POLL_S,
             f"the helpers of {fault_id} to go", seen=lambda: ", ".join(helpers_of(engine, lab_id, fault_id)))
    return len(names)
