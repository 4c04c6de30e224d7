#!/usr/bin/env python3
"""The lab's monitor beside the detectors users already run, on the same faults.

For each of crash (`docker kill`), pause (`docker pause`), partition
(`docker network disconnect`) and a slow worker (a SIGSTOP/SIGCONT duty
cycle, stopped 80 % of every 100 ms) one real lab runs through labctl (the
four side by side), and every detector is measured in that same run:

- the lab's monitor (flock oracle + volume heartbeat + phi): its `verdict`
  events; the baseline column the others are read against;
- its phi accrual observer alone (`phi_suspect` on the monitor's ticks);
- the heartbeat-only timeout (`heartbeat_only` on the monitor's ticks);
- Docker's HEALTHCHECK with Docker's default timings (interval 30 s,
  timeout 30 s, retries 3, start period 0) and a tuned one (interval 1 s,
  timeout 1 s, retries 3): EMULATED;
- a Kubernetes liveness probe (tcpSocket) with Kubernetes' defaults
  (periodSeconds 10, timeoutSeconds 1, failureThreshold 3): EMULATED, no
  cluster runs here.

Why emulated: an engine-side probe exec'd inside the worker just as
`docker pause` freezes it freezes with it and wedges the whole engine (seen
in this project; labctl disables every HEALTHCHECK). So this bench keeps the
probes' timing semantics in its own process (Docker: the next probe starts
`interval` after the last one ended, a probe past `timeout` fails, `retries`
failures in a row -> unhealthy, a success -> healthy; Kubernetes: a probe
every `periodSeconds` start to start, past `timeoutSeconds` fails,
`failureThreshold` failures in a row -> the kubelet would restart it, which
the emulation records and does not do) and performs each probe as a TCP
connect to `worker:7000`, Kubernetes' tcpSocket probe, run by `docker exec`
in the lab's *monitor* container: the worker is reached over the lab's
network as a probe would reach it, and nothing is ever exec'd in a
container a fault freezes. The probe's own time is measured inside the
monitor container, so the `docker exec` start-up is not charged to it; the
probe is cut at its timeout, name lookup included; it closes with a reset,
since the worker serves one client: a probe's connection replaces the
supervisor's, and a clean close with no lines ends the worker (exit 0).
Probes count once the worker serves (as after a startup probe).

Each fault lasts `--window` seconds (default 130, enough for Docker's
defaults, which need 60 to 90 s plus up to three probes' own time), from the run's journal (labctl's fault
records in events.jsonl: the intent, or `from_ts` after refused tries, to
`reverted`). Per fault and detector: the time from the fault's start to the
first right verdict, and the number of wrong verdicts in the window (see
`RIGHT`). Writes table.md, results.json and detectors.png under --out.

    python bench/detectors.py [--window 130] [--faults crash,pause,partition,slow] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from labctl import labels  # noqa: E402

LABCTL = [sys.executable, "-m", "labctl"]
FAULTS = ("crash", "pause", "partition", "slow")
# The labctl fault behind each: `kill` is docker kill, which no restart policy undoes.
LABCTL_FAULT = {"crash": "kill", "pause": "pause", "partition": "partition", "slow": "slow"}
FAULT_AT_S = 5.0
RATE = 250.0
ALIVE, DEAD = "ALIVE", "DEAD"
PROBE_PORT = 7000


# ----------------------------------------------------------------------- the detectors


@dataclass(frozen=True)
class Probe:
    """One emulated probe's timings (Docker HEALTHCHECK or Kubernetes liveness)."""
    style: str  # "docker" or "k8s"
    interval_s: float
    timeout_s: float
    retries: int


@dataclass(frozen=True)
class Detector:
    key: str
    title: str
    probe: Probe | None = None  # None: read from the monitor's events


DETECTORS = (
    Detector("monitor", "lab monitor (flock+volume+phi), baseline"),
    Detector("phi", "phi accrual alone"),
    Detector("heartbeat-only", "heartbeat-only timeout"),
    Detector("docker-default", "Docker HEALTHCHECK 30s/30s/3 (emulated)", Probe("docker", 30.0, 30.0, 3)),
    Detector("docker-tuned", "Docker HEALTHCHECK 1s/1s/3 (emulated)", Probe("docker", 1.0, 1.0, 3)),
    Detector("k8s-liveness", "K8s liveness tcpSocket 10s/1s/3 (emulated)", Probe("k8s", 10.0, 1.0, 3)),
)
BASELINE = "monitor"

# What is right for each fault. A liveness detector (two verdicts, ALIVE or
# DEAD) is right to call a crash, a pause and a partition DEAD (the worker
# serves nothing) and a slow worker ALIVE (it is alive and working). The
# lab's monitor is right with the fault's own name, and for the slow worker
# with SLOW or HEALTHY.
RIGHT_MONITOR = {"crash": {"CRASHED"}, "pause": {"PAUSED"}, "partition": {"PARTITIONED"},
                 "slow": {"SLOW", "HEALTHY"}}
RIGHT_BINARY = {"crash": {DEAD}, "pause": {DEAD}, "partition": {DEAD}, "slow": {ALIVE}}
# Not yet right, and not wrong either: the verdict before a detector has
# noticed (its latency, which the time to the right verdict measures). Once
# it has been right, going back to these is a wrong verdict (a flap).
NOT_YET = {"monitor": {"HEALTHY", "UNKNOWN"}, "binary": {ALIVE}}
# Never counted: a Docker healthcheck before its first result ("starting").
NEUTRAL = {None, "UNKNOWN"}


@dataclass
class ProbeResult:
    start: float  # wall clock, as events.jsonl's ts
    duration_s: float  # the probe's own time, measured where it ran
    ok: bool  # the connect succeeded (before any timeout)
    detail: str = ""


def probe_failed(p: ProbeResult, timeout_s: float) -> bool:
    return (not p.ok) or p.duration_s > timeout_s


def result_time(p: ProbeResult, timeout_s: float) -> float:
    """When the prober learns the outcome: at the end, or at the timeout."""
    return p.start + min(p.duration_s, timeout_s)


def docker_next_start(prev: ProbeResult, probe: Probe) -> float:
    """Docker waits `interval` after a probe ended (or was cut at its timeout)."""
    return result_time(prev, probe.timeout_s) + probe.interval_s


def k8s_next_start(prev_start: float, probe: Probe, now: float) -> float:
    """The kubelet's ticker: every period, start to start; a tick missed while a probe ran is skipped."""
    nxt = prev_start + probe.interval_s
    while nxt < now:
        nxt += probe.interval_s
    return nxt


def probe_verdicts(results: list[ProbeResult], probe: Probe) -> list[tuple[float, str | None]]:
    """The detector's state after each probe, as (time the result came, ALIVE | DEAD | None).

    Docker: `starting` (None) until the first result; `retries` failures in
    a row -> unhealthy (DEAD); any success -> healthy (ALIVE). Kubernetes:
    a liveness probe counts as a success until it fails; `failureThreshold`
    failures in a row -> DEAD (the kubelet would restart the container here:
    the emulation records it and keeps probing, and a success clears it).
    """
    state: str | None = None if probe.style == "docker" else ALIVE
    out: list[tuple[float, str | None]] = []
    fails = 0
    for p in sorted(results, key=lambda r: r.start):
        if probe_failed(p, probe.timeout_s):
            fails += 1
            if fails >= probe.retries:
                state = DEAD
        else:
            fails = 0
            state = ALIVE
        out.append((result_time(p, probe.timeout_s), state))
    return out


def monitor_verdicts(events: list[dict[str, Any]], field_: str) -> list[tuple[float, str | None]]:
    """The monitor's verdicts (`verdict`, `heartbeat_only`) or its phi observer's
    (`phi`: DEAD when `phi_suspect`), as changes over its ticks and verdict events."""
    out: list[tuple[float, str | None]] = []
    for e in events:
        if e.get("source") != "monitor" or e.get("kind") not in ("tick", "verdict"):
            continue
        if field_ == "phi":
            if "phi_suspect" not in e:
                continue
            v: str | None = DEAD if e["phi_suspect"] else ALIVE
        else:
            v = e.get(field_)
            if v is None:
                continue
        if not out or out[-1][1] != v:
            out.append((float(e["ts"]), v))
    return out


# ----------------------------------------------------------------------- the fault and the score


@dataclass
class Window:
    fault: str  # labctl's name: kill, pause, partition, slow
    start: float
    end: float | None  # None: never reverted in the recording
    intent: float = 0.0  # when labctl set out to apply it; its revert began `for` seconds later


def fault_window(events: list[dict[str, Any]]) -> Window | None:
    """The first fault of the run, from labctl's journal records: from its intent
    (or `from_ts`, when the engine refused some tries) to its `reverted`."""
    intent = applied = reverted = None
    for e in events:
        if e.get("source") != "labctl" or e.get("kind") != "fault":
            continue
        if intent is None and e.get("phase") == "intent":
            intent = e
        elif intent is not None and e.get("id") == intent["id"] and e.get("phase") == "applied":
            applied = e
        elif intent is not None and e.get("of") == intent["id"] and e.get("phase") in ("reverted", "revert-failed"):
            reverted = e
    if intent is None:
        return None
    start = float(applied["from_ts"]) if applied and "from_ts" in applied else float(intent["ts"])
    return Window(str(intent["fault"]), start, float(reverted["ts"]) if reverted else None, float(intent["ts"]))


@dataclass
class Score:
    time_to_right_s: float | None  # None: never right within the window
    wrong: int
    wrong_said: list[str] = field(default_factory=list)
    first_slow_s: float | None = None  # the monitor on the slow worker: when it first said SLOW


def score(verdicts: list[tuple[float, str | None]], fault: str, start: float, end: float,
          binary: bool) -> Score:
    """Time from `start` to the first right verdict within [start, end], and the
    wrong verdicts in it (the state already in force at `start` counts too)."""
    right = (RIGHT_BINARY if binary else RIGHT_MONITOR)[fault]
    not_yet = NOT_YET["binary" if binary else "monitor"]  # for the slow worker these are right
    at_start: str | None = None
    seq: list[tuple[float, str | None]] = []
    for ts, v in sorted(verdicts, key=lambda x: x[0]):
        if ts <= start:
            at_start = v
        elif ts <= end:
            seq.append((ts, v))
    ttr: float | None = None
    first_slow: float | None = None
    wrong_said: list[str] = []
    prev: object = object()
    for ts, v in [(start, at_start), *seq]:
        if v == prev:
            continue
        prev = v
        if v == "SLOW" and first_slow is None:
            first_slow = ts - start
        if v in right:
            if ttr is None:
                ttr = ts - start
        elif v in NEUTRAL or (ttr is None and v in not_yet):
            continue
        else:
            wrong_said.append(f"{v}@{ts - start:.1f}s")
    return Score(ttr, len(wrong_said), wrong_said, first_slow)


# ----------------------------------------------------------------------- the table and the plot


def cell(s: Score | None, fault: str, base: Score | None, window_s: float, key: str) -> str:
    if s is None:
        return "no data"
    if s.time_to_right_s is None:
        t = f"never (> {window_s:.0f} s)"
    elif fault == "slow" and s.time_to_right_s == 0:
        t = "right from the start" if not s.wrong else "right at the start"
        if key == BASELINE and s.first_slow_s is not None:
            t += f" (SLOW at {s.first_slow_s:.1f} s)"
    elif fault == "slow":
        t = f"first verdict at {s.time_to_right_s:.2f} s (`starting` before)" if not s.wrong else \
            f"right at {s.time_to_right_s:.2f} s"
    else:
        t = f"{s.time_to_right_s:.2f} s"
        if key != BASELINE and base is not None and base.time_to_right_s and fault != "slow":
            t += f" ({s.time_to_right_s / base.time_to_right_s:.0f}x)" if s.time_to_right_s >= \
                10 * base.time_to_right_s else f" ({s.time_to_right_s / base.time_to_right_s:.1f}x)"
    w = f"{s.wrong} wrong" + (f" ({', '.join(s.wrong_said[:3])}{', ...' if len(s.wrong_said) > 3 else ''})"
                              if s.wrong else "")
    return f"{t}; {w}"


def table(scores: dict[str, dict[str, Score | None]], window_s: float) -> str:
    dets = [d for d in DETECTORS]
    lines = ["| fault | " + " | ".join(d.title for d in dets) + " |",
             "|---|" + "---|" * len(dets)]
    for fault, row in scores.items():
        base = row.get(BASELINE)
        lines.append(f"| {fault} | " + " | ".join(cell(row.get(d.key), fault, base, window_s, d.key)
                                                  for d in dets) + " |")
    return "\n".join(lines)


def plot(scores: dict[str, dict[str, Score | None]], window_s: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faults = list(scores)
    fig, axes = plt.subplots(len(faults), 1, figsize=(9, 2.1 * len(faults) + 0.8), sharex=True, squeeze=False)
    colors = {"monitor": "#2b7bba", "phi": "#5fa55a", "heartbeat-only": "#9a9a9a", "docker-default": "#d1495b",
              "docker-tuned": "#edae49", "k8s-liveness": "#8e5ea2"}
    lo = 0.01
    for ax, fault in zip(axes[:, 0], faults, strict=True):
        row = scores[fault]
        for i, d in enumerate(DETECTORS):
            s = row.get(d.key)
            y = len(DETECTORS) - 1 - i
            if s is None:
                ax.text(lo * 1.1, y, "no data", va="center", fontsize=8)
                continue
            if s.time_to_right_s is None:
                ax.barh(y, window_s - lo, left=lo, color="white", edgecolor=colors[d.key], hatch="//")
                label = f"never right in {window_s:.0f} s"
            elif fault == "slow" and s.time_to_right_s == 0:
                ax.barh(y, 0, left=lo)
                label = "right from the start" if not s.wrong else "right at the start"
                if d.key == BASELINE and s.first_slow_s is not None:
                    label += f" (SLOW at {s.first_slow_s:.1f} s)"
            else:
                t = max(s.time_to_right_s, lo * 1.01)
                ax.barh(y, t - lo, left=lo, color=colors[d.key])
                label = f"{s.time_to_right_s:.2f} s"
                if fault == "slow" and not s.wrong:
                    label = f"first verdict at {label} (`starting` before)"
            if s.wrong:
                label += f"   ✗ {s.wrong} wrong"
            x = window_s if s.time_to_right_s is None else max(s.time_to_right_s or lo, lo)
            ax.text(min(x * 1.08, window_s * 1.1), y, label, va="center", fontsize=8,
                    color="#b00020" if s.wrong else "black")
        ax.set_yticks(range(len(DETECTORS)))
        ax.set_yticklabels([d.title for d in reversed(DETECTORS)], fontsize=7)
        ax.set_title(f"{fault}", fontsize=9, loc="left")
        ax.set_xscale("log")
        ax.set_xlim(lo, window_s * 8)
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[-1, 0].set_xlabel("time from the fault's start to the first right verdict (s, log); "
                           "✗ wrong verdicts in the window")
    fig.suptitle("Failure detectors on the same faults, one run (Docker and Kubernetes probes emulated: "
                 "TCP connect from the monitor container)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------- the real run


# Closed with a reset (SO_LINGER 0), not a FIN as a kubelet's tcpSocket probe does: the
# worker serves one client, a new connection replaces the current one (the
# supervisor's, which reconnects), and a clean close with no lines ends the
# worker (exit 0). The first run of this bench, with FIN, stopped every worker.
PROBE_CODE = ("import os,socket,struct,threading,time\n"
              "r=[0,'timeout']\n"
              "def go():\n"
              " try:\n"
              "  s=socket.create_connection(('worker',{port}),timeout={t})\n"
              "  s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0));s.close();r[:]=[1,'']\n"
              " except Exception as e:\n"
              "  r[1]=type(e).__name__\n"
              "t=time.monotonic()\n"
              "th=threading.Thread(target=go,daemon=True);th.start();th.join({t})\n"
              "print(r[0],round(time.monotonic()-t,4),r[1],flush=True)\n"
              "os._exit(0)\n")
# The probe is cut at its timeout, the name lookup included (under a partition
# it takes the resolver 10 s to give up), as Docker and the kubelet cut theirs.


def run_probe(monitor: str, timeout_s: float) -> ProbeResult:
    """One TCP connect to worker:7000 from inside the lab's monitor container."""
    start = time.time()
    try:
        p = subprocess.run(["docker", "exec", monitor, "python3", "-S", "-c",
                            PROBE_CODE.format(port=PROBE_PORT, t=timeout_s)],
                           capture_output=True, text=True, timeout=timeout_s + 20)
    except subprocess.TimeoutExpired:
        return ProbeResult(start, timeout_s + 20, False, "docker exec timed out")
    parts = p.stdout.split()
    if p.returncode != 0 or len(parts) < 2:
        return ProbeResult(start, time.time() - start, False, (p.stderr or p.stdout).strip()[-120:])
    # Start of the connect: the exec's start-up is the emulation's, not the probe's.
    dur = float(parts[1])
    return ProbeResult(time.time() - dur, dur, parts[0] == "1", parts[2] if len(parts) > 2 else "")


def container_running(name: str) -> bool:
    p = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True)
    return p.returncode == 0 and p.stdout.strip() == "true"


class Prober(threading.Thread):
    """One emulated detector on one lab: probes on its own schedule until stopped."""

    def __init__(self, lab_id: str, det: Detector, stop: threading.Event):
        super().__init__(daemon=True, name=f"{lab_id}-{det.key}")
        self.monitor = labels.container_name(lab_id, "monitor")
        self.det = det
        self.stop = stop
        self.results: list[ProbeResult] = []
        self.ready_at: float | None = None

    def run(self) -> None:
        probe = self.det.probe
        assert probe is not None
        while not container_running(self.monitor):
            if self.stop.wait(0.2):
                return
        # Probes count once the worker serves (as after a Kubernetes startupProbe):
        # a lab's boot is not the fault under test.
        while not run_probe(self.monitor, 1.0).ok:
            if self.stop.wait(0.3):
                return
        self.ready_at = time.time()
        # Docker: the first probe comes `interval` after the container started; Kubernetes: at once.
        nxt = time.time() + (probe.interval_s if probe.style == "docker" else 0.0)
        # `docker exec` takes a while to start the probe (0.1 to 0.5 s on a loaded
        # machine): each exec is launched that much early, so the connect itself
        # keeps the schedule (a running mean of how late the last ones came).
        self.lag = 0.2
        while not self.stop.is_set():
            if self.stop.wait(max(0.0, nxt - self.lag - time.time())):
                return
            r = run_probe(self.monitor, probe.timeout_s)
            self.results.append(r)
            self.lag = min(1.0, max(0.0, 0.5 * self.lag + 0.5 * (self.lag + r.start - nxt)))
            nxt = docker_next_start(r, probe) if probe.style == "docker" else \
                k8s_next_start(r.start, probe, time.time())


def scenario_yaml(fault: str, window_s: float, tail_s: float) -> str:
    step = {"at": FAULT_AT_S, "do": LABCTL_FAULT[fault], "for": window_s}
    if fault == "slow":
        step["percent"] = 80
    duration = FAULT_AT_S + window_s + tail_s
    doc = {
        "name": f"detectors-{fault}",
        "lesson": "bench/detectors.py: every detector on the same fault",
        # The job outlives the run on purpose (at 250 items/s it would take
        # longer than the whole run): no worker ends its job inside a window.
        "lab": {"items": int(RATE * (duration + 60)), "rate": RATE, "give_up_s": int(duration + 120)},
        "timeline": [step],
        "duration_s": duration,
        "expect": {"job": {"completes": False}},
    }
    return json.dumps(doc)  # JSON is YAML


def events_of(runs: Path, lab_id: str) -> list[dict[str, Any]]:
    files = sorted((runs / lab_id).glob("*/events.jsonl"))
    if not files:
        return []
    return [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]


def scores_of(events: list[dict[str, Any]], probes: dict[str, list[ProbeResult]], fault: str,
              window_s: float) -> tuple[dict[str, Score | None], Window | None]:
    w = fault_window(events)
    if w is None:
        return {d.key: None for d in DETECTORS}, None
    # The window closes when the revert begins (the step's `for` after the intent), not
    # when its `reverted` record is written: the worker is back by then.
    end = w.intent + window_s if w.end is None else min(w.end, w.intent + window_s)
    out: dict[str, Score | None] = {}
    for d in DETECTORS:
        if d.probe is not None:
            res = probes.get(d.key)
            out[d.key] = score(probe_verdicts(res, d.probe), fault, w.start, end, True) if res else None
        else:
            field_ = {"monitor": "verdict", "phi": "phi", "heartbeat-only": "heartbeat_only"}[d.key]
            v = monitor_verdicts(events, field_)
            out[d.key] = score(v, fault, w.start, end, d.key != "monitor") if v else None
    return out, w


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=130.0,
                    help="seconds each fault lasts (default 130: Docker's defaults need up to 3 x (30 s + a probe))")
    ap.add_argument("--tail", type=float, default=6.0, help="seconds the lab runs after the fault's revert")
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "detectors")
    args = ap.parse_args()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    for f in faults:
        if f not in FAULTS:
            ap.error(f"unknown fault {f!r}: pick from {', '.join(FAULTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"{random.randrange(16**4):04x}"
    lab_ids = {f: f"det-{f}-{tag}" for f in faults}
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f}; faults {', '.join(faults)} at "
          f"t={FAULT_AT_S:g} s for {args.window:g} s, one lab each, side by side", flush=True)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="labctl-bench-detectors-"))
    runs = tmp / "runs"
    env = {**os.environ, "LABCTL_RUNS": str(runs), "PYTHONUNBUFFERED": "1"}
    stop = threading.Event()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    probers: dict[str, list[Prober]] = {}
    try:
        for f in faults:
            sc = tmp / f"detectors-{f}.yaml"
            sc.write_text(scenario_yaml(f, args.window, args.tail))
            log = open(tmp / f"labctl-{f}.log", "wb")
            procs[f] = subprocess.Popen([*LABCTL, "up", str(sc), "--lab", lab_ids[f]], stdout=log,
                                        stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            probers[f] = [Prober(lab_ids[f], d, stop) for d in DETECTORS if d.probe is not None]
            for p in probers[f]:
                p.start()
        for proc in procs.values():
            proc.wait()
        stop.set()
        for ps in probers.values():
            for p in ps:
                p.join(60)
    except KeyboardInterrupt:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(2)
        for proc in procs.values():
            proc.wait(180)
        raise
    finally:
        stop.set()
        for f in procs:  # labctl tears its labs down itself; this is for a run that broke
            subprocess.run([*LABCTL, "down", "--lab", lab_ids[f]], capture_output=True, env=env, cwd=ROOT)
    wall = time.monotonic() - t0

    scores: dict[str, dict[str, Score | None]] = {}
    record: dict[str, Any] = {"window_s": args.window, "wall_s": wall, "faults": {}}
    for f in faults:
        events = events_of(runs, lab_ids[f])
        probes = {p.det.key: p.results for p in probers[f]}
        scores[f], w = scores_of(events, probes, f, args.window)
        if w is None:
            print(f"    {f}: no fault in the run's journal; labctl said: "
                  f"{(tmp / f'labctl-{f}.log').read_text()[-600:]}", flush=True)
        reconnects = sum(1 for e in events if e.get("source") == "supervisor" and e.get("kind") == "connected"
                         and e.get("reconnect"))
        stopped = any(e.get("source") == "monitor" and e.get("verdict") == "STOPPED" for e in events)
        print(f"    {f}: lab {lab_ids[f]}, supervisor reconnects {reconnects} (the probes take its connection)"
              + ("; the worker STOPPED during the run" if stopped else ""), flush=True)
        record["faults"][f] = {"supervisor_reconnects": reconnects, "worker_stopped": stopped,
            "lab": lab_ids[f], "window": asdict(w) if w else None,
            "scores": {k: asdict(s) if s else None for k, s in scores[f].items()},
            "probes": {k: [asdict(r) for r in v] for k, v in probes.items()},
            "verdicts": {k: monitor_verdicts(events, k) for k in ("verdict", "heartbeat_only", "phi")},
        }
        keep = args.out / "runs" / lab_ids[f]
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp / f"labctl-{f}.log", keep / "labctl.log")
        for run_dir in sorted((runs / lab_ids[f]).glob("*/"))[-1:]:
            for name in ("events.jsonl", "summary.json", "timeline.png"):
                if (run_dir / name).exists():
                    shutil.copyfile(run_dir / name, keep / name)
    text = table(scores, args.window)
    notes = (f"\nOne run, {wall:.0f} s wall time; each fault lasted {args.window:g} s. Time = from the fault's "
             "start (labctl's journal) to the detector's first right verdict; (Nx) = that time over the lab "
             "monitor's. Right: CRASHED / PAUSED / PARTITIONED from the monitor, DEAD (unhealthy) from a "
             "liveness detector; for the slow worker SLOW or HEALTHY, and ALIVE. Wrong: any other verdict "
             "in the window, and a return to healthy once right (a flap).\n"
             "Docker HEALTHCHECK and the Kubernetes liveness probe are EMULATED (labctl disables HEALTHCHECK: "
             "a probe exec'd in a container as `docker pause` freezes it wedges the engine): their timing "
             "rules run in this bench, each probe a TCP connect to worker:7000 from the lab's monitor "
             "container (`docker exec`), as a tcpSocket probe; never exec'd in the worker. Each probe is cut "
             "at its timeout (the name lookup included) and closes with a reset, not a FIN: the worker serves "
             "one client, so a probe's connection replaces the supervisor's (it reconnects), and a clean close "
             "with no lines would end the worker. Probes begin once the worker serves (as after a startup "
             "probe); Docker says `starting` until its first probe, one interval later. Expected from "
             "the timings alone, for a fault that fails every probe at once: Docker defaults 60 to 90 s, "
             "tuned 2 to 3 s, Kubernetes defaults 20 to 30 s (plus the probes' own time).\n")
    print(text)
    print(notes, flush=True)
    (args.out / "table.md").write_text(text + "\n" + notes)
    (args.out / "results.json").write_text(json.dumps(record, indent=1))
    plot(scores, args.window, args.out / "detectors.png")
    print(f"wrote {args.out / 'table.md'}, {args.out / 'results.json'}, {args.out / 'detectors.png'}")
    shutil.rmtree(tmp, ignore_errors=True)
    missing = [f for f in faults if any(s is None for s in scores[f].values())]
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
