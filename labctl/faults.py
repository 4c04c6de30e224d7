"""Every fault labctl injects: one registry, one small class per mechanism.

A fault has a name, its inverse (the fault that undoes it, if any), a
description, and `apply(engine, target)`. Scenario validation, `labctl fault`
and its help, and the checker all read `FAULTS`.

`apply()` and `revert()` journal each fault around its mechanism (journal.py)
and try again when the engine refuses for a reason that can pass: under load
`docker pause` can fail with `OCI runtime pause failed: unable to freeze`.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential
from tenacity.wait import wait_base

from labctl import journal, labels, sidecar, states
from labctl.engine import DEFAULT, Engine, wait_for
from labctl.errors import EngineRefused, ExitCode, LabError

# Tries of one fault before it counts as failed, and the pause between them.
# Tests swap RETRY_WAIT for tenacity's wait_none().
ATTEMPTS = 4
RETRY_WAIT: wait_base = wait_exponential(multiplier=0.25, max=2)
# How long the engine may take to show a fault done (a docker stop waits up
# to its 10 s grace before it is), and how often to look.
REACH_S = 15.0
REACH_POLL_S = 0.1
# Phrases of an engine refusing an inverse that is already done: for a revert, success.
ALREADY_UNDONE = ("no such container", "not found", "not paused", "already", "is not running",
                  "is already in progress")
# The lab's services, the default target first (scenario.TARGETS is the same).
SERVICES = tuple(sorted(labels.ROLES, key=lambda s: s != "worker"))


@dataclass(frozen=True)
class Param:
    """One setting of a fault (`loss`'s probability, `oneway`'s far end):
    its bounds or choices, and its default when it has one."""
    name: str
    help: str
    lo: float | None = None
    hi: float | None = None
    default: float | str | None = None
    choices: tuple[str, ...] = ()

    def parse(self, value: object) -> float | str:
        """The value, or ValueError saying what is wrong with it (the caller names where it came from)."""
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{value!r} is not one of " + ", ".join(self.choices))
            return value
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"expected a number, got {value!r}")
        if self.lo is not None and value < self.lo or self.hi is not None and value > self.hi:
            raise ValueError(f"must be between {self.lo:g} and {self.hi:g}, got {value:g}")
        return float(value)


@dataclass(frozen=True)
class Target:
    lab_id: str
    service: str
    # The fault's settings, as journaled; for an inverse, those of the fault it undoes.
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # The journaled fault: the one applied, or for an inverse the one it undoes.
    fault_id: str = ""

    @property
    def container(self) -> str:
        return labels.container_name(self.lab_id, self.service)

    @property
    def network(self) -> str:
        return labels.network_name(self.lab_id)

    @property
    def netns_container(self) -> str:
        """The container whose network this service's is (the proxy, for the worker)."""
        return labels.netns_container(self.lab_id, self.service)


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    inverse: str | None = None
    # The ground truth it leaves behind when the engine cannot see it (a signal
    # inside the container): then only labctl's journal tells the checker.
    journal_truth: str | None = None
    # The engine records a container start for it, which is not a restart by policy.
    starts_container: bool = False
    params: tuple[Param, ...] = ()
    # It runs a fault helper from the tools image (images.TOOLS).
    needs_tools: bool = False
    # Applying it takes several steps with effects of their own (a helper
    # started, a rule added, a toxic set): one that fails or is interrupted
    # part-way is undone at once by its inverse, or nothing would revert it.
    undo_on_failure: bool = False
    # Its effect lives outside the worker's process (the proxy's namespace or
    # process) and so outlasts a restart of the worker; a signal or a duty
    # cycle dies with the process it acted on.
    survives_restart: bool = False
    # How `labctl fault NAME VALUE...` reads its values: these names in order
    # ("target" is the fault's target, the rest its params).
    cli_args: tuple[str, ...] = ()

    def settings(self, given: dict[str, Any], where: str = "") -> dict[str, Any]:
        """The params given, checked, with the defaults of those not given;
        LabError(USAGE) naming the key (after `where`) otherwise."""
        known = {p.name: p for p in self.params}
        out: dict[str, Any] = {}
        for k, v in given.items():
            if k not in known:
                raise LabError(ExitCode.USAGE, f"{where}{k}: {self.name} takes no {k!r}",
                               f"{self.name} takes " + (", ".join(known) if known else "no settings"))
            try:
                out[k] = known[k].parse(v)
            except ValueError as e:
                raise LabError(ExitCode.USAGE, f"{where}{k}: {e}", f"`labctl fault --help` lists "
                               f"{self.name}'s settings") from None
        for p in self.params:
            if p.name not in out:
                if p.default is None:
                    raise LabError(ExitCode.USAGE, f"{where}{p.name}: {self.name} needs it ({p.help})",
                                   f"e.g. `labctl fault {self.name} ...`; `labctl fault --help` lists them")
                out[p.name] = p.default
        return out

    def apply(self, engine: Engine, t: Target) -> float | None:
        """Applies it; returns when it took effect if that is well after the
        call began (a helper container started first), else None."""
        raise NotImplementedError

    def reached(self, engine: Engine, t: Target) -> str | None:
        """None once the engine shows the state this fault intends (or when
        the engine cannot show it: a signal inside the container); else what
        it shows instead."""
        return None


def _status(engine: Engine, t: Target, want: tuple[str, ...]) -> str | None:
    st = engine.inspect(t.container)
    status = st.status if st else "gone"
    return None if status in want else f"{t.container} is {status}, not {' or '.join(want)}"


@dataclass(frozen=True)
class ProcessKill(Fault):
    """The program dies by SIGKILL inside its container: tini exits 137, the restart policy acts."""

    def apply(self, engine: Engine, t: Target) -> None:
        before = engine.inspect(t.container)
        if before is None or before.status != "running":
            raise LabError(ExitCode.ENGINE_ERROR, f"cannot crash {t.container}: it is not running",
                           "`labctl status` shows the lab's containers")
        try:
            # -1: every process this user may signal but PID 1 (tini) and the shell.
            engine.exec(t.container, ["sh", "-c", "kill -KILL -1"])
        except LabError:
            pass  # the container can die under the exec itself; what counts is below

        def died() -> bool:
            st = engine.inspect(t.container)
            return st is None or st.pid != before.pid or st.restart_count != before.restart_count \
                or st.status != "running"

        wait_for(died, 10, 0.05, f"{t.container} to die after kill -KILL",
                 seen=lambda: str(engine.inspect(t.container)))


@dataclass(frozen=True)
class ContainerKill(Fault):
    """`docker kill`: the engine marks the container stopped by hand, so its restart policy leaves it down."""

    def apply(self, engine: Engine, t: Target) -> None:
        engine.kill(t.container, "SIGKILL")

    def reached(self, engine: Engine, t: Target) -> str | None:
        return _status(engine, t, ("exited", "dead"))


@dataclass(frozen=True)
class Freezer(Fault):
    """The cgroup freezer (`docker pause` / `unpause`): the process cannot tell."""
    freeze: bool = True

    def apply(self, engine: Engine, t: Target) -> None:
        if self.freeze:
            engine.pause(t.container)
        else:
            engine.unpause(t.container)

    def reached(self, engine: Engine, t: Target) -> str | None:
        # Thawed is whatever the process does next: running, or exited if it ended meanwhile.
        return _status(engine, t, ("paused",) if self.freeze else ("running", "restarting", "exited"))


@dataclass(frozen=True)
class ProcessSignal(Fault):
    """A signal to the program inside its container, as the exercise sent it on one host."""
    signal: str = "STOP"

    def apply(self, engine: Engine, t: Target) -> None:
        if self.signal == "STOP" and any(r.get("fault") == "slow" and r.get("target") == t.service
                                         for r in journal.pending(t.lab_id)):
            raise LabError(ExitCode.USAGE, f"cannot sigstop {t.container}: a slow of it is on (its duty cycle "
                           "would resume it)", "undo it first (`labctl fault slow-off`)")
        # -1: every process this user may signal but PID 1 (tini) and the
        # shell itself: the program and nothing else, as in the exercise.
        code, out = engine.exec(t.container, ["sh", "-c", f"kill -{self.signal} -1"])
        if code != 0:
            raise LabError(ExitCode.ENGINE_ERROR, f"kill -{self.signal} in {t.container} failed: {out.strip()[:200]}")


# The bitflip fault's control file, in the worker container's own /tmp (a
# tmpfs: nothing from the host, gone with the container); compose.yaml passes
# it to the worker as --bitflip-control.
BITFLIP_CONTROL = "/tmp/bitflip"


@dataclass(frozen=True)
class BitFlip(Fault):
    """Silent data corruption (issue 15): the worker flips one bit of a share
    p of the squares it sends. On: p into its control file, then SIGUSR1 by
    kill inside the container, as sigstop is sent; off: SIGUSR2. No
    capability and no mount; it lives in the worker's process, so a restart
    clears it (survives_restart False, as the other signal faults)."""
    on: bool = True

    def apply(self, engine: Engine, t: Target) -> None:
        if t.service != "worker":
            raise LabError(ExitCode.USAGE, f"{self.name} acts on the worker's answers; {t.service} sends none",
                           "drop --target (the worker is the default)")
        if self.on:
            script = f"printf %s {float(t.params['p']):.6f} > {BITFLIP_CONTROL} && kill -USR1 -1"
        else:
            script = f"rm -f {BITFLIP_CONTROL}; kill -USR2 -1"
        code, out = engine.exec(t.container, ["sh", "-c", script])
        # Off on a worker that is gone or restarting: nothing flips there any more.
        if code != 0 and (self.on or "no such process" not in out.lower()):
            raise LabError(ExitCode.ENGINE_ERROR, f"{self.name} in {t.container} failed: {out.strip()[:200]}")


@dataclass(frozen=True)
class NetworkLink(Fault):
    """The container's link to the lab network (`docker network disconnect` / `connect`)."""
    connect: bool = False

    def apply(self, engine: Engine, t: Target) -> None:
        owner = t.netns_container
        if self.connect:
            engine.reconnect(t.network, owner, aliases=labels.aliases(labels.NETNS_OWNER.get(t.service, t.service)))
        else:
            engine.disconnect(t.network, owner)

    def reached(self, engine: Engine, t: Target) -> str | None:
        owner = t.netns_container
        st = engine.inspect(owner)
        if st is None:
            return f"{owner} is gone"
        if (t.network in st.networks) == self.connect:
            return None
        return f"{owner} is {'not ' if self.connect else 'still '}on {t.network}"



@dataclass(frozen=True)
class Lifecycle(Fault):
    """`docker stop` (SIGTERM, then SIGKILL after the grace period) / `docker start`."""
    running: bool = False

    def apply(self, engine: Engine, t: Target) -> None:
        if self.running:
            engine.start(t.container)
        else:
            engine.stop(t.container, timeout=10)

    def reached(self, engine: Engine, t: Target) -> str | None:
        return _status(engine, t, ("running", "restarting") if self.running else ("exited", "dead"))


@dataclass(frozen=True)
class NetRule(Fault):
    """iptables in the target's network namespace (a helper holding NET_ADMIN
    does it, sidecar.py): what the target sends to `to` is dropped, all of it
    (`oneway`) or a random share of its UDP (`loss`, on the heartbeats); what
    `to` sends back is left alone."""
    needs_tools: bool = True
    undo_on_failure: bool = True
    survives_restart: bool = True
    udp_share: bool = False

    def apply(self, engine: Engine, t: Target) -> float | None:
        to = str(t.params["to"])
        if to == t.service:
            raise LabError(ExitCode.USAGE, f"{self.name}: {t.service} to itself", "name another service as `to`")
        # The engine's answer, not the namespace's DNS: the rule must name the
        # address the packets carry, and a lookup from inside can fail or wait.
        dest = engine.address(labels.netns_container(t.lab_id, to), t.network)
        if dest is None:
            raise LabError(ExitCode.ENGINE_ERROR, f"{self.name}: {to} has no address on {t.network}",
                           "is it running and connected? `labctl status` shows the lab")
        args = ["-d", dest]
        if self.udp_share:
            args = ["-p", "udp", "-d", dest, "-m", "statistic", "--mode", "random",
                    "--probability", f"{float(t.params['p']):.4f}"]
        tag = sidecar.rule_tag(t.lab_id, t.fault_id)
        out = sidecar.run_in_network(engine, t.lab_id, t.fault_id, t.netns_container, sidecar.ADD_RULE,
                                     [tag, *args])
        if f'"{tag}"' not in out:
            raise LabError(ExitCode.ENGINE_ERROR, f"the rule for {self.name} is not in {t.container}'s "
                           f"namespace after adding it: {out[-300:]}")
        # The helper's start can take a second or more on a loaded engine:
        # the fault began when the rule went in, which the helper stamps.
        return sidecar.stamp(out)


@dataclass(frozen=True)
class NetRuleOff(Fault):
    """Removes the rules one NetRule fault added (by their comment), and only them."""
    needs_tools: bool = True

    def apply(self, engine: Engine, t: Target) -> None:
        tag = sidecar.rule_tag(t.lab_id, t.fault_id)
        out = sidecar.run_in_network(engine, t.lab_id, t.fault_id, t.netns_container, sidecar.DELETE_RULES, [tag])
        if f'"{tag}"' in out:
            raise LabError(ExitCode.ENGINE_ERROR, f"a rule of {t.fault_id} is still in {t.container}'s "
                           f"namespace: {out[-300:]}")


@dataclass(frozen=True)
class DutyCycle(Fault):
    """`slow`: the target's processes stopped `percent` % of every period
    (SIGSTOP, then SIGCONT), by a helper in its pid namespace running as its
    user with no capability: alive, beating late, crawling."""
    needs_tools: bool = True
    undo_on_failure: bool = True

    def apply(self, engine: Engine, t: Target) -> None:
        st = engine.inspect(t.container)
        if st is None or st.status != "running":
            raise LabError(ExitCode.ENGINE_ERROR, f"cannot slow {t.container}: it is not running",
                           "`labctl status` shows the lab's containers")
        # Its SIGCONTs would resume a worker a sigstop holds, and two duty cycles would stop each other.
        clash = [r["fault"] for r in journal.pending(t.lab_id) if r.get("target") == t.service
                 and r.get("fault") in ("sigstop", "slow") and r.get("id") != t.fault_id]
        if clash:
            raise LabError(ExitCode.USAGE, f"cannot slow {t.container}: a {clash[0]} of it is still on",
                           f"undo it first (`labctl fault {get(clash[0]).inverse}`)")
        period_s = float(t.params["period_ms"]) / 1000
        stopped_s = period_s * float(t.params["percent"]) / 100
        sidecar.start_duty_cycle(engine, t.lab_id, t.fault_id, t.container, st.user, stopped_s,
                                 period_s - stopped_s)

    def reached(self, engine: Engine, t: Target) -> str | None:
        running = [n for n in sidecar.helpers_of(engine, t.lab_id, t.fault_id)
                   if (h := engine.inspect(n)) is not None and h.status == "running"]
        return None if running else f"the duty cycle of {t.fault_id} is not running"


@dataclass(frozen=True)
class DutyCycleOff(Fault):
    """Stops the duty cycle (its trap resumes the target), then resumes the
    target once more in case the helper died between a STOP and its CONT."""

    def apply(self, engine: Engine, t: Target) -> None:
        # Only a duty cycle that ran can have left the target stopped; resuming
        # it otherwise could wake a worker something else holds.
        if not sidecar.stop_helpers(engine, t.lab_id, t.fault_id):
            return
        st = engine.inspect(t.container)
        if st is not None and st.status == "running":
            engine.exec(t.container, ["sh", "-c", "kill -CONT -1"])


PROXY_CONTROL = "/tmp/proxy-control.sock"  # compose.yaml's --control for the proxy


def _proxy_ctl(engine: Engine, t: Target, request: dict[str, Any]) -> tuple[int, str]:
    """One request to the worker's proxy, through its control client (as the
    proxy's own user, in its container): (exit code, the reply or the error)."""
    return engine.exec(labels.container_name(t.lab_id, "proxy"),
                       ["python3", "/app/proxy.py", "ctl", "--control", PROXY_CONTROL, json.dumps(request)])


@dataclass(frozen=True)
class ProxyToxic(Fault):
    """A toxic in the proxy in front of the worker (images/proxy): on the
    supervisor<->worker stream, per direction (`up` to the worker, `down`
    back), or on the heartbeats (udp). Only the worker has a proxy."""
    undo_on_failure: bool = True
    survives_restart: bool = True
    toxic: str = ""
    # labctl's setting -> the proxy's field; settings not listed go as they are.
    fields: tuple[tuple[str, str], ...] = ()

    def request(self, t: Target) -> dict[str, Any]:
        names = dict(self.fields)
        req: dict[str, Any] = {"op": "set", "id": t.fault_id, "toxic": self.toxic}
        for k, v in t.params.items():
            req[names.get(k, k)] = int(v) if k == "size" else v
        return req

    def apply(self, engine: Engine, t: Target) -> None:
        if t.service != "worker":
            raise LabError(ExitCode.USAGE, f"{self.name} acts on the worker's links; {t.service} has no proxy",
                           "drop --target (the worker is the default)")
        code, out = _proxy_ctl(engine, t, self.request(t))
        if code != 0:
            raise LabError(ExitCode.ENGINE_ERROR, f"the proxy refused {self.name}: {out.strip()[-300:]}")


@dataclass(frozen=True)
class ProxyToxicOff(Fault):
    """Clears one ProxyToxic by its id; a proxy that no longer has it (restarted) is fine."""

    def apply(self, engine: Engine, t: Target) -> None:
        code, out = _proxy_ctl(engine, t, {"op": "clear", "id": t.fault_id})
        if code != 0 and "no toxic" not in out:
            raise LabError(ExitCode.ENGINE_ERROR, f"the proxy did not clear {t.fault_id}: {out.strip()[-300:]}")


_DIRECTION = Param("direction", "up (to the worker) or down (the worker's answers)", default="down",
                   choices=("up", "down"))
_JITTER = Param("jitter", "plus or minus this, uniform, in ms", lo=0, hi=60000, default=0.0)


def _proxy(name: str, toxic: str, description: str, params: tuple[Param, ...] = (),
           cli_args: tuple[str, ...] = (), fields: tuple[tuple[str, str], ...] = ()) -> list[Fault]:
    """A proxy toxic and its undoing, both journaled as the worker's DEGRADED and back."""
    return [ProxyToxic(name, description, inverse=f"{name}-off", journal_truth=states.DEGRADED, params=params,
                       cli_args=cli_args, toxic=toxic, fields=fields),
            ProxyToxicOff(f"{name}-off", f"clears a {name}", journal_truth=states.RUNNING)]


_PROXY_FAULTS = [
    *_proxy("latency", "latency", "the proxy delays each chunk on the worker's stream by ms (+- jitter)",
            (Param("ms", "the delay, in ms", lo=0, hi=60000), _JITTER, _DIRECTION), ("ms",),
            (("ms", "latency"),)),
    *_proxy("bandwidth", "bandwidth", "the proxy caps the worker's stream at rate KB/s",
            (Param("rate", "KB/s (1 KB = 1000 bytes)", lo=0.001, hi=1e7), _DIRECTION), ("rate",)),
    *_proxy("blackhole", "blackhole", "the proxy drops the bytes one way; the connection stays open",
            (Param("direction", "up (to the worker) or down (its answers)", default="up",
                   choices=("up", "down")),), ("direction",)),
    *_proxy("slice", "slice", "the proxy forwards the worker's stream in pieces of size bytes, delay_ms apart",
            (Param("size", "bytes a piece", lo=1, hi=65536, default=4.0),
             Param("delay_ms", "between pieces, in ms", lo=0, hi=60000, default=10.0), _DIRECTION), ("size",)),
    *_proxy("reset", "reset", "the proxy resets the worker's connections, and each new one, while on"),
    *_proxy("delay", "delay", "the proxy delays each heartbeat by ms (+- jitter)",
            (Param("ms", "the delay, in ms", lo=0, hi=60000), _JITTER), ("ms",), (("ms", "delay"),)),
    *_proxy("duplicate", "duplicate", "the proxy sends a share p of the heartbeats twice",
            (Param("p", "the share, 0 to 1", lo=0, hi=1),), ("p",)),
    *_proxy("reorder", "reorder", "the proxy holds a share p of the heartbeats back past the next one",
            (Param("p", "the share, 0 to 1", lo=0, hi=1),), ("p",)),
]
# The file libfaketime reads the process's clock setting from, at every
# clock call (FAKETIME_NO_CACHE): the worker's and the lease lab's images
# preload it and name this file (their Dockerfiles). It lives in the target's
# own /tmp, a tmpfs: nothing on the host, gone with a restart.
CLOCK_FILE = "/tmp/labctl-clock"
# Written as the target's own user (`docker exec`, no capability): to a
# temporary file, then renamed, so libfaketime never reads half of one.
# $1 the file, $2 libfaketime's rate, $3 the rate's ppm off 1. The offset
# keeps the clock from jumping when the rate changes: libfaketime reports
# start + offset + (now - start) * rate, with `start` the program's own start
# (its constructor runs as the program starts), so offset = age * (1 - rate).
# The program is tini's child (ppid 1); /proc/uptime and its start time
# (field 22 of /proc/PID/stat) are both in the kernel's ticks since boot,
# USER_HZ = 100 on Linux.
CLOCK_SCRIPT = (
    'f=$1; rate=$2; ppm=$3; start=;'
    ' for d in /proc/[0-9]*; do s=$(cat "$d/stat" 2>/dev/null) || continue; s=${s##*) };'
    ' set -- $s; if [ "$2" = 1 ]; then start=${20}; break; fi; done;'
    ' [ -n "$start" ] || { echo "no program runs under tini"; exit 3; };'
    ' read -r up _ < /proc/uptime; up=${up%.*}${up#*.};'
    ' off=$(( -(up - start) * ppm / 100 )); sign=+; [ "$off" -lt 0 ] && sign=- && off=$(( -off ));'
    ' printf "%s%d.%06d x%s\\n" "$sign" $((off / 1000000)) $((off % 1000000)) "$rate" > "$f.new"'
    ' && mv -f "$f.new" "$f" && cat "$f"')
SKEW_SCRIPT = 'printf "%s\\n" "$2" > "$1.new" && mv -f "$1.new" "$1" && cat "$1"'
CLOCK_TARGETS = labels.CLOCK_SERVICES


@dataclass(frozen=True)
class Clock(Fault):
    """A process's own view of the time, through libfaketime: its wall clock
    jumps by `seconds` (skew), or its clocks run `ppm` fast or slow from now
    on (drift), or (off) both back to the true time. The worker's monotonic
    clock is never faked (FAKETIME_DONT_FAKE_MONOTONIC in its image: its beat
    schedule stays true); a lease holder's is (Python's time.sleep fails with
    EINVAL under libfaketime 0.9.10's DONT_FAKE_MONOTONIC), and its lease
    belief runs on it. The host's clock and every other process's are untouched."""
    kind: str = "off"  # skew, drift or off
    survives_restart: bool = False  # a restarted container starts with an empty /tmp

    def setting(self, t: Target) -> list[str]:
        """The script and its arguments after the file."""
        if self.kind == "skew":
            return [SKEW_SCRIPT, f"{float(t.params['seconds']):+.3f} x1"]
        ppm = float(t.params["ppm"]) if self.kind == "drift" else 0.0
        return [CLOCK_SCRIPT, f"{1 + ppm / 1e6:.6f}", str(int(round(ppm)))]

    def apply(self, engine: Engine, t: Target) -> None:
        if t.service not in CLOCK_TARGETS:
            raise LabError(ExitCode.USAGE, f"{self.name}: {t.service}'s image does not preload libfaketime",
                           "target the worker or a lease lab's service")
        if self.kind != "off":
            clash = [r["fault"] for r in journal.pending(t.lab_id) if r.get("target") == t.service
                     and r.get("fault") in ("skew", "drift") and r.get("id") != t.fault_id]
            if clash:
                raise LabError(ExitCode.USAGE, f"cannot {self.name} {t.container}: a {clash[0]} of its clock is "
                               "still on", f"undo it first (`labctl fault {clash[0]}-off`)")
        script, *args = self.setting(t)
        code, out = engine.exec(t.container, ["sh", "-c", script, "sh", CLOCK_FILE, *args])
        if code != 0:
            raise LabError(ExitCode.ENGINE_ERROR, f"{self.name}: writing {CLOCK_FILE} in {t.container} failed "
                           f"(exit {code}): {out.strip()[-200:]}")


_CLOCK_FAULTS = [
    Clock("skew", "the target's wall clock jumps by seconds (libfaketime); its monotonic clock too on a lease "
          "lab's service", inverse="skew-off", journal_truth=states.SKEWED, kind="skew", cli_args=("seconds",),
          params=(Param("seconds", "the jump, in seconds: ahead if positive, behind if negative",
                        lo=-86400, hi=86400),)),
    Clock("skew-off", "the target's clock back to the true time", journal_truth=states.RUNNING),
    Clock("drift", "the target's clocks run ppm fast (positive) or slow (negative) from now on (libfaketime); "
          "the worker's wall clock only", inverse="drift-off", journal_truth=states.SKEWED, kind="drift",
          cli_args=("ppm",),
          params=(Param("ppm", "parts per million: -500000 is half speed, 1000 is 3.6 s an hour fast",
                        lo=-990000, hi=1000000),)),
    Clock("drift-off", "the target's clocks back to the true time and rate", journal_truth=states.RUNNING),
]


_TO = Param("to", "the service whose traffic from the target is dropped", choices=SERVICES)
FAULTS: dict[str, Fault] = {f.name: f for f in (
    ProcessKill("crash", "SIGKILL to the process inside the container: no cleanup, restart by policy"),
    ContainerKill("kill", "docker kill: the operator kills the container; no restart by policy", inverse="start"),
    Freezer("pause", "docker pause: the cgroup freezer; the process cannot tell", inverse="unpause"),
    Freezer("unpause", "docker unpause", freeze=False),
    ProcessSignal("sigstop", "kill -STOP inside the container", inverse="sigcont",
                  journal_truth=states.SIGSTOPPED),
    ProcessSignal("sigcont", "kill -CONT inside the container", signal="CONT", journal_truth=states.RUNNING),
    BitFlip("bitflip", "the worker flips one random bit of a share p of the squares it sends; nothing dies, "
            "nothing is logged", inverse="bitflip-off", journal_truth=states.DEGRADED, cli_args=("p",),
            params=(Param("p", "the share of results corrupted, 0 to 1", lo=0, hi=1, default=0.05),)),
    BitFlip("bitflip-off", "the worker stops flipping bits", on=False, journal_truth=states.RUNNING),
    NetworkLink("partition", "docker network disconnect", inverse="heal"),
    NetworkLink("heal", "docker network connect", connect=True),
    Lifecycle("stop", "docker stop: SIGTERM, then SIGKILL after the grace period", inverse="start"),
    Lifecycle("start", "docker start", running=True, starts_container=True),
    NetRule("oneway", "iptables in the target's namespace: what it sends to `to` is dropped, the reverse is not",
            inverse="oneway-off", journal_truth=states.ONEWAY, params=(_TO,), cli_args=("target", "to")),
    NetRuleOff("oneway-off", "removes a oneway's rules", journal_truth=states.RUNNING),
    NetRule("loss", "iptables: a random share p of the target's UDP to `to` (the heartbeats) is dropped",
            inverse="loss-off", journal_truth=states.DEGRADED, udp_share=True, cli_args=("p",), params=(
                Param("p", "the share of packets dropped, 0 to 1", lo=0, hi=1),
                Param("to", "where the UDP goes", default="monitor", choices=SERVICES))),
    NetRuleOff("loss-off", "removes a loss's rule", journal_truth=states.RUNNING),
    DutyCycle("slow", "SIGSTOP/SIGCONT duty cycle: stopped `percent` % of every period; alive but crawling",
              inverse="slow-off", journal_truth=states.DEGRADED, cli_args=("percent",), params=(
                  Param("percent", "the share of each period the processes are stopped, 1 to 99", lo=1, hi=99),
                  Param("period_ms", "the period, in ms", lo=20, hi=1000, default=100.0))),
    DutyCycleOff("slow-off", "stops a slow's duty cycle and resumes the target", journal_truth=states.RUNNING),
    *_PROXY_FAULTS,
    *_CLOCK_FAULTS,
)}


def get(name: str) -> Fault:
    try:
        return FAULTS[name]
    except KeyError:
        raise LabError(ExitCode.USAGE, f"unknown fault {name!r}", "pick one of " + ", ".join(FAULTS)) from None


def undoes(name: str) -> list[Fault]:
    """The faults whose inverse `name` is (start -> kill, stop; sigcont -> sigstop)."""
    return [f for f in FAULTS.values() if f.inverse == name]


def nothing_to_undo(engine: Engine, lab_id: str, name: str, service: str) -> str | None:
    """Why the inverse `name`, given by hand, would change nothing: no fault
    it undoes is journaled as on, and the engine already shows what it would
    bring about (for a signal, a rule or a toxic the engine shows nothing:
    the journal alone knows). None when it may undo something, or undoes nothing."""
    undone = undoes(name)
    if not undone or any(r.get("inverse") == name and r.get("target") == service for r in journal.pending(lab_id)):
        return None
    t = Target(lab_id, service)
    if get(name).reached(engine, t) is not None:
        return None  # on without labctl's journal (a `docker pause` by hand), or gone: let it act, or say why not
    st = engine.inspect(t.container)
    return f"no {' or '.join(f.name for f in undone)} of the {service} is on" + (
        f" ({t.container} is {st.status})" if st else "")


# ----------------------------------------------------------------------- journaled application


def _said(e: Exception) -> str:
    return e.what if isinstance(e, LabError) else f"{type(e).__name__}: {e}"


def _transient(e: BaseException) -> bool:
    return isinstance(e, EngineRefused) and e.transient


def confirm(engine: Engine, fault: Fault, t: Target) -> None:
    """Polls until the engine shows the state the fault intends. An engine
    that said yes and did not do it (seen with dozens of labs at once) is a
    refusal worth another try: EngineRefused, transient."""
    try:
        wait_for(lambda: fault.reached(engine, t) is None, REACH_S, REACH_POLL_S,
                 f"the engine to show {fault.name} done", seen=lambda: fault.reached(engine, t) or "done")
    except EngineRefused:
        raise
    except LabError as e:
        raise EngineRefused(f"the engine accepted {fault.name} but did not do it: {e.what}",
                            "see `labctl doctor`; the engine may be overloaded", status=503) from None


def _attempt(engine: Engine, fault: Fault, t: Target, record: dict[str, Any], tries: list[float]) -> None:
    """Applies the mechanism, again after each transient refusal, journaling each
    refused try that is tried again; `tries` ends holding the number of tries
    and when the last one began (the moment a fault that needed several took effect)."""

    def count(rs: RetryCallState) -> None:
        tries[:] = [rs.attempt_number, time.time(), 0.0]

    def journal_retry(rs: RetryCallState) -> None:
        err = rs.outcome.exception() if rs.outcome else None
        journal.append(t.lab_id, {**record, "phase": journal.RETRY, "attempt": rs.attempt_number,
                                  "error": str(err)})

    try:
        for attempt in Retrying(retry=retry_if_exception(_transient), stop=stop_after_attempt(ATTEMPTS),
                                wait=RETRY_WAIT, before=count, before_sleep=journal_retry, reraise=True):
            with attempt:
                took = fault.apply(engine, t)
                confirm(engine, fault, t)
                if took:
                    tries[2] = took
    except LabError as e:
        after = f" after {tries[0]:.0f} tries" if tries[0] > 1 else ""
        raise LabError(e.code, f"{fault.name} of {t.container} failed{after}: {e.what}", e.todo) from None


def apply(engine: Engine, lab_id: str, fault: str, service: str = "worker", step: int | None = None,
          params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Journals the fault and its inverse, applies it, journals the outcome."""
    f = get(fault)
    settings = f.settings(params or {})
    fid = f"{int(time.time() * 1e6):x}-{fault}"
    t = Target(lab_id, service, settings, fid)
    record = {"id": fid, "fault": fault, "target": service, "inverse": f.inverse, "step": step,
              "engine": getattr(engine, "name", DEFAULT), **({"params": settings} if settings else {})}
    intent = journal.append(lab_id, {**record, "phase": journal.INTENT})
    outcome: dict[str, Any] = {"phase": journal.FAILED}
    tries: list[float] = [0, 0.0, 0.0]
    try:
        _attempt(engine, f, t, record, tries)
        # After refused tries, the fault took effect during the last one, not
        # at the intent; and a helper's stamp says when, within it.
        took = tries[2] or (tries[1] if tries[0] > 1 else 0.0)
        outcome = {"phase": journal.APPLIED, **({"from_ts": took} if took else {})}
    except BaseException as e:  # a Ctrl-C part-way too
        outcome["error"] = _said(e) if isinstance(e, Exception) else type(e).__name__
        raise
    finally:
        journal.append(lab_id, {**record, **outcome, "attempt": int(tries[0])})
        if outcome["phase"] == journal.FAILED and f.undo_on_failure and f.inverse:
            # Whatever part of it took effect: the journal now calls it closed.
            with contextlib.suppress(Exception):
                revert(engine, lab_id, intent)
    return intent


def revert(engine: Engine, lab_id: str, intent: dict[str, Any]) -> None:
    """Applies a journaled fault's inverse; 'already reverted' and 'gone' are fine."""
    inverse = intent.get("inverse")
    if not inverse:
        return
    t = Target(lab_id, intent["target"], dict(intent.get("params") or {}), str(intent["id"]))
    record = {"id": f"{intent['id']}-revert", "of": intent["id"], "fault": inverse, "target": t.service,
              "step": intent.get("step"), "engine": getattr(engine, "name", DEFAULT)}
    outcome: dict[str, Any] = {"phase": journal.REVERT_FAILED}
    tries: list[float] = [0, 0.0]
    try:
        try:
            _attempt(engine, get(inverse), t, record, tries)
        except Exception as e:
            # Gone, or already undone (unpaused, reconnected, started): reverted.
            if not any(k in str(e).lower() for k in ALREADY_UNDONE):
                outcome["error"] = _said(e)
                raise
        outcome = {"phase": journal.REVERTED}
    finally:
        journal.append(lab_id, {**record, **outcome, "attempt": int(tries[0])})


def revert_pending(engine: Engine, lab_id: str) -> int:
    """Reverts every pending fault, each tried even when one before it fails
    (a slow left running behind a failed heal would go on); then raises the
    first failure. Returns how many were reverted."""
    n = 0
    first: Exception | None = None
    for intent in journal.pending(lab_id):
        try:
            revert(engine, lab_id, intent)
            n += 1
        except Exception as e:
            first = first or e
    if first is not None:
        raise first
    return n
