"""What everyone saw: the programs' event streams, the engine's ground truth,
and labctl's fault journal, merged on one clock.

Live: the monitor's and supervisor's stdout are followed (their events drive
the side-by-side view), and the worker's state is polled from the engine.
Final: the complete logs and the engine's event history are read once more
after the run, so events.jsonl holds everything, in order, exactly once.
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from labctl import journal, labels, runlog, states
from labctl.engine import Engine
from labctl.runlog import Event

_WORKER_LINE = re.compile(r"^worker\[(\d+)\]: (\w+): (.*)$")
# The worker's count of the results its bitflip fault corrupted (worker.c), an event of its own.
_BITFLIP_LINE = re.compile(r"^bitflip: (\d+) result\(s\) flipped while on \(p ([0-9.]+)\)$")


def parse_docker_ts(text: str) -> float:
    """RFC 3339 with nanoseconds, as the engine prints it -> Unix seconds."""
    base, _, frac = text.rstrip("Z").partition(".")
    ts = datetime.fromisoformat(base + "+00:00").timestamp()
    return ts + (float("0." + frac[:9]) if frac else 0.0)


# A process stamps its events with its own clock, which a clock fault moves
# (faults.Clock, on labels.CLOCK_SERVICES). Such an event whose stamp is this
# far from the moment the engine received its line is put on the engine's
# clock, the run's one clock.
OWN_CLOCK_TRUSTED_S = 0.25


def on_engine_clock(ev: Event, received: float) -> Event:
    """The event, its `ts` the engine's (the process's own kept as `own_ts`)
    when the process's clock is off by more than OWN_CLOCK_TRUSTED_S."""
    own = ev.get("ts")
    if isinstance(own, (int, float)) and abs(own - received) > OWN_CLOCK_TRUSTED_S:
        return {**ev, "ts": received, "own_ts": own}
    return ev


def parse_log_line(service: str, raw: str) -> Event | None:
    """One `docker logs --timestamps` line -> an event (docs/events.md)."""
    stamp, _, text = raw.partition(" ")
    try:
        ts = parse_docker_ts(stamp)
    except ValueError:
        return None
    text = text.rstrip("\r\n")
    if not text:
        return None
    if text.startswith("{"):
        try:
            ev = json.loads(text)
            if isinstance(ev, dict) and "kind" in ev and "source" in ev:
                return on_engine_clock(ev, ts) if service in labels.CLOCK_SERVICES else ev
        except ValueError:
            pass
    if service == "worker":
        m = _WORKER_LINE.match(text)
        flips = _BITFLIP_LINE.match(m.group(3)) if m else None
        if m and flips:
            return {"ts": ts, "source": "worker", "kind": "bitflip", "pid": int(m.group(1)),
                    "flipped": int(flips.group(1)), "p": float(flips.group(2))}
        if m:
            return {"ts": ts, "source": "worker", "kind": "log", "pid": int(m.group(1)), "level": m.group(2),
                    "message": m.group(3)}
        if text.startswith("ERROR: "):
            return {"ts": ts, "source": "worker", "kind": "log", "level": "error", "message": text[7:]}
    # Anything else (the supervisor's console log, a traceback) is kept as a log line.
    level = "info"
    for lv in ("CRITICAL", "ERROR", "WARNING", "INFO"):
        if f" - {lv} - " in text:
            level = lv.lower()
            text = text.split(f" - {lv} - ", 1)[1]
            break
    return {"ts": ts, "source": service, "kind": "log", "level": level, "message": text[:500]}


def log_events(engine: Engine, lab_id: str, service: str) -> list[Event]:
    name = labels.container_name(lab_id, service)
    try:
        raw = b"".join(engine.logs(name, follow=False))
    except Exception:
        return []
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        ev = parse_log_line(service, line)
        if ev:
            out.append(ev)
    return out


ENGINE_ACTIONS = ("create", "start", "die", "kill", "stop", "pause", "unpause", "restart", "oom", "destroy",
                  "connect", "disconnect")


class EngineRecorder:
    """Records the engine's events for one lab as they happen.

    The engine keeps only its last 256 events for later queries; with several
    labs and their healthchecks that is a few seconds, so the ground truth is
    recorded live from before the first container exists."""

    def __init__(self, engine: Engine, lab_id: str):
        self.engine = engine
        self.lab_id = lab_id
        self.names = {labels.container_name(lab_id, s): s for s in labels.ALL_SERVICES}
        self.ids: dict[str, str] = {}
        self.events: list[Event] = []
        self._streams: list[Any] = []  # the engine's event streams, closed by stop()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        for flt in ({"type": ["container"], "label": [f"{labels.LAB}={self.lab_id}"], "event": list(ENGINE_ACTIONS)},
                    {"type": ["network"], "network": [labels.network_name(self.lab_id)],
                     "event": ["connect", "disconnect"]}):
            stream = self.engine.events(flt, since=time.time() - 1)
            self._streams.append(stream)
            t = threading.Thread(target=self._run, args=(stream,), daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self, stream: Any) -> None:
        try:
            for e in stream:
                ev = self.translate(e)
                if ev:
                    with self._lock:
                        self.events.append(ev)
        except Exception:
            return  # closed by stop(), or the engine went away

    def translate(self, e: dict[str, Any]) -> Event | None:
        action = (e.get("Action") or e.get("status") or "").split(":")[0]
        attrs = (e.get("Actor") or {}).get("Attributes") or {}
        ts = e.get("timeNano", e.get("time", 0) * 1e9) / 1e9
        if e.get("Type") == "container":
            service = self.names.get(attrs.get("name", ""))
            if not service or action not in ENGINE_ACTIONS:
                return None
            self.ids[e["Actor"]["ID"]] = service
            ev = {"ts": ts, "source": "engine", "kind": "container", "action": action, "service": service}
            if "exitCode" in attrs:
                ev["exit_code"] = int(attrs["exitCode"])
            if "signal" in attrs:
                ev["signal"] = attrs["signal"]
            return ev
        if e.get("Type") == "network" and action in ("connect", "disconnect"):
            cid = attrs.get("container", "")
            service = self.ids.get(cid) or next((s for i, s in self.ids.items() if i.startswith(cid)), None)
            if service:
                return {"ts": ts, "source": "engine", "kind": "network", "action": action, "service": service}
        return None

    def stop(self) -> list[Event]:
        """Stops recording. By now the run has waited for the supervisor's exit
        and the monitor's last verdict, so the engine has delivered what matters."""
        for s in self._streams:
            try:
                s.close()
            except Exception:
                pass
        for t in self._threads:
            t.join(2)
        self.engine.close()
        with self._lock:
            return sorted(self.events, key=lambda e: e["ts"])


def collect(engine: Engine, lab_id: str, since: float, until: float, engine_evs: list[Event],
            services: tuple[str, ...] = labels.SERVICES) -> list[Event]:
    """Every source, merged and sorted on the shared clock."""
    evs = []
    for service in services:
        evs.extend(log_events(engine, lab_id, service))
    evs.extend(engine_evs)
    evs.extend(r for r in journal.read(lab_id) if since - 1 <= r["ts"] <= until + 1)
    evs.sort(key=lambda e: e["ts"])
    return evs


# ----------------------------------------------------------------------- live state


SUPERVISOR_LOG_KEPT = 20


@dataclass
class Live:
    """What the side-by-side view shows for one lab; updated by threads."""
    lab_id: str
    scenario: str
    phase: str = "starting"
    truth: str = "-"
    monitor: str = "-"
    heartbeat_only: str = "-"
    phi: float = 0.0
    sender_clock: str = "-"
    supervisor: str = "-"
    acked: int = 0
    total: int = 0
    processed: int = 0
    corrupted: int = 0
    dead_lettered: int = 0
    crashes: int = 0
    timeouts: int = 0
    lock: str = "-"
    step: str = ""
    restarts: int = 0
    proxy_ready: bool = False  # the worker's proxy relays (its `start` event): the worker may start
    # The supervisor's latest log lines (the blind view shows them), and how many it has logged in all.
    supervisor_log: list[str] = field(default_factory=list)
    supervisor_log_count: int = 0
    started: float = field(default_factory=time.time)
    # Serialises absorb(): the follow threads of several services feed one Live.
    # The view reads fields without it (a value at most one event old is fine
    # on screen). `lock` is the flock probe's result, not a mutex.
    mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def absorb(self, ev: Event) -> None:
        with self.mutex:
            src, kind = ev.get("source"), ev.get("kind")
            if src == "proxy" and kind == "start":
                self.proxy_ready = True
            elif src == "monitor" and kind in ("tick", "verdict"):
                self.monitor = ev.get("verdict", self.monitor)
                self.heartbeat_only = runlog.heartbeat_only_of(ev) or self.heartbeat_only
                self.phi = ev.get("phi", self.phi)
                self.sender_clock = ev.get("sender_clock", self.sender_clock)
                self.lock = ev.get("lock", self.lock)
            elif src == "supervisor":
                if kind == "state":
                    self.supervisor = ev["state"]
                elif kind == "progress":
                    self.acked, self.total = ev["acked"], ev["total"]
                    self.processed, self.corrupted = ev["processed"], ev["corrupted"]
                    self.dead_lettered = ev["dead_lettered"]
                elif kind == "start":
                    self.total = ev["total"]
                elif kind == "crash":
                    self.crashes += 1
                elif kind == "timeout":
                    self.timeouts += 1
                elif kind == "dead_letter":
                    self.dead_lettered += 1
                elif kind == "log":
                    self.supervisor_log = [*self.supervisor_log[-(SUPERVISOR_LOG_KEPT - 1):], str(ev.get("message"))]
                    self.supervisor_log_count += 1
                elif kind == "done":
                    self.supervisor = states.DONE
                    self.acked = self.total
                    self.processed, self.corrupted = ev["processed"], ev["corrupted"]
                    self.dead_lettered = ev["dead_lettered"]


def follow(engine: Engine, lab_id: str, service: str, live: Live, stop: threading.Event) -> None:
    """Feeds a service's events into `live` as they are printed."""
    name = labels.container_name(lab_id, service)
    buf = ""
    try:
        for chunk in engine.logs(name, follow=True):
            if stop.is_set():
                break
            buf += chunk.decode("utf-8", "replace")
            *lines, buf = buf.split("\n")
            for line in lines:
                ev = parse_log_line(service, line)
                if ev:
                    live.absorb(ev)
    except Exception:
        return  # the container went away: the final collection reads the rest
    finally:
        engine.close()  # this thread's own connection


def poll_truth(engine: Engine, lab_id: str, live: Live) -> None:
    """The worker's state as the engine reports it now (a signal from the journal)."""
    st = engine.inspect(labels.container_name(lab_id, "worker"))
    if st is None:
        live.truth = states.GONE
        return
    live.restarts = st.restart_count
    if st.status == "paused":
        truth = states.PAUSED
    elif st.status == "running":
        owner = engine.inspect(labels.netns_container(lab_id, "worker"))
        truth = states.RUNNING if owner and labels.network_name(lab_id) in owner.networks else states.PARTITIONED
        # The faults the engine cannot see (a signal, a duty cycle, a rule in
        # the worker's namespace), read from the journal as the checker reads
        # them: only the worker's, and only one still in force.
        journaled = runlog.truth_timeline(journal.read(lab_id))
        if journaled and journaled[-1][1] != states.RUNNING:
            truth = journaled[-1][1]
    elif st.status == "restarting":
        truth = states.OOM if st.oom_killed else states.CRASHED
    elif st.status == "exited":
        truth = states.STOPPED if st.exit_code == 0 else (states.OOM if st.oom_killed else states.CRASHED)
    else:
        truth = st.status.upper()
    live.truth = truth
