#!/usr/bin/env python3
"""What the fault proxy costs on the healthy path: supervisor -> worker items/s,
directly and through images/proxy/proxy.py (no toxic on), in the same run.

Two rows:
* the lab: compose.yaml as labctl runs it (the containers, their limits, the
  Docker network) against the same file with the proxy taken out, the
  worker on the lab network as "worker", beating straight to the monitor
  (the lab before the proxy). This is the healthy path the target is about.
* host loopback: the worker, the proxy and the supervisor as plain processes,
  with no CPU limit: the hop's own cost, with nothing to hide it. The
  protocol is a lock-step window (1,024 items out, 1,024 answers back), so
  the extra hop's latency is paid once a window.

Runs alternate (direct, proxied, direct, ...) so that a machine getting busier
or quieter during the run weighs on both; each side's median is reported.
The time is the supervisor's own job duration (summary.json, or its `done`
event in the lab), as in bench_supervisor.py. The target: through the proxy,
within 10 % of direct.

    python bench/bench_proxy.py [--items 300000] [--lab-items 1000000] [--runs 9] [--window 1024]
                                [--path loopback|lab|both]
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "images" / "worker" / "build" / "worker"
SUPERVISOR = ROOT / "images" / "supervisor" / "supervisor.py"
PROXY = ROOT / "images" / "proxy" / "proxy.py"
COMPOSE = ROOT / "compose.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_event(p: subprocess.Popen, kind: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        line = p.stdout.readline()
        if not line:
            break
        e = json.loads(line)
        if e["kind"] == kind:
            return e
    raise SystemExit(f"proxy: no {kind} event within {timeout}s")


def run(tmp: Path, inp: Path, window: int, proxied: bool, tag: str) -> tuple[float, float]:
    """(items/s, proxy CPU seconds) of one job."""
    port = free_port()
    lock = tmp / f"{tag}.lock"
    worker = subprocess.Popen([str(WORKER), "--listen", f"127.0.0.1:{port}", "--lock", str(lock),
                               "--bug-trigger", "none"], stderr=subprocess.DEVNULL)
    proxy = None
    try:
        target = port
        if proxied:
            target = free_port()
            proxy = subprocess.Popen(
                [sys.executable, str(PROXY), "--listen", f"127.0.0.1:{target}", "--upstream", f"127.0.0.1:{port}",
                 "--udp-listen", "", "--control", ""],
                stdout=subprocess.PIPE, bufsize=0)  # unbuffered: select() sees every line still unread
            wait_event(proxy, "listening", 10)  # it opens its port once the worker listens
        else:
            deadline = time.monotonic() + 5
            while not lock.exists():  # lock taken, listening a moment later; a refused connect is retried
                if time.monotonic() > deadline:
                    raise SystemExit("worker did not start")
                time.sleep(0.01)
        out = tmp / f"out-{tag}"
        sup = subprocess.run(
            [sys.executable, str(SUPERVISOR), "--worker", f"127.0.0.1:{target}", "--input", str(inp),
             "--output", str(out), "--window", str(window), "--give-up-s", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        if sup.returncode != 0:
            raise SystemExit(f"{tag}: supervisor exited {sup.returncode}")
        summary = json.loads((out / "summary.json").read_text())
        proxy_cpu = 0.0
        if proxy is not None:
            proxy.send_signal(signal.SIGTERM)
            _, status, ru = os.wait4(proxy.pid, 0)
            proxy.returncode = os.waitstatus_to_exitcode(status)
            proxy_cpu = ru.ru_utime + ru.ru_stime
            if proxy.returncode != 0:
                raise SystemExit(f"{tag}: proxy exited {proxy.returncode}")
        resolved = summary["processed"] + summary["corrupted"] + summary["rejected"]
        if resolved != summary["read"] or summary["dead_lettered"]:
            raise SystemExit(f"{tag}: {resolved} of {summary['read']} items resolved")
        return summary["read"] / summary["duration_s"], proxy_cpu
    finally:
        for p in (proxy, worker):
            if p is not None and p.returncode is None and p.poll() is None:
                p.kill()
                p.wait()


# --------------------------------------------------------------------------- the lab's own path


def lab_compose(proxied: bool, project_images: str) -> dict:
    """compose.yaml as the lab runs it, or as it ran before the proxy: the
    worker on the lab network as "worker", beating straight to the monitor.
    Images are the ones `labctl build` made for this checkout."""
    import yaml

    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    for name, svc in services.items():
        svc.pop("build", None)
        svc["image"] = f"{project_images}-{name}:latest"
    if not proxied:
        del services["proxy"]
        w = services["worker"]
        del w["network_mode"]
        w["depends_on"] = ["monitor"]
        w["networks"] = {"lab": {"aliases": ["worker"]}}
        swap = {"--listen=127.0.0.1:7100": "--listen=0.0.0.0:7000",
                "--heartbeat-udp=127.0.0.1:7101": "--heartbeat-udp=monitor:7001"}
        assert all(a in w["command"] for a in swap), "compose.yaml's worker command changed"
        w["command"] = [swap.get(a, a) for a in w["command"]]
    return doc


def run_lab(tmp: Path, items: int, window: int, proxied: bool, tag: str, project_images: str) -> float:
    """items/s of one healthy compose lab's job, from the supervisor's `done` event."""
    import yaml

    f = tmp / f"compose-{tag}.yaml"
    f.write_text(yaml.safe_dump(lab_compose(proxied, project_images)))
    project = f"labctl-bench-proxy-{os.getpid()}-{tag}"
    env = {**os.environ, "LAB_ITEMS": str(items), "LAB_WINDOW": str(window), "LAB_GIVE_UP_S": "60"}
    compose = ["docker", "compose", "-p", project, "-f", str(f)]
    try:
        # The run ends when its first container does (the supervisor, the job
        # done; the monitor and the proxy linger 3 s after the worker's clean
        # stop). The verdict is the supervisor's own `done` event, not
        # compose's exit code, which tells only which container ended first.
        up = subprocess.run([*compose, "up", "--no-build", "--pull", "never", "--abort-on-container-exit"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
        logs = subprocess.run([*compose, "logs", "--no-log-prefix", "supervisor"], env=env,
                              capture_output=True, text=True, timeout=60).stdout
        done = [json.loads(line) for line in logs.splitlines() if line.startswith("{") and '"kind":"done"' in line]
        if not done:
            raise SystemExit(f"{tag}: no `done` event in the supervisor's log; compose said: {up.stderr[-2000:]}")
        s = done[-1]
        resolved = s["processed"] + s["corrupted"] + s["rejected"]
        if s["exit_code"] != 0 or resolved != s["read"] or s["dead_lettered"]:
            raise SystemExit(f"{tag}: exit {s['exit_code']}, {resolved} of {s['read']} items resolved")
        return s["read"] / s["duration_s"]
    finally:
        subprocess.run([*compose, "down", "-v", "--remove-orphans", "-t", "1"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=300_000, help="items per loopback run")
    ap.add_argument("--lab-items", type=int, default=1_000_000, help="items per lab run")
    ap.add_argument("--runs", type=int, default=9, help="runs of each side, alternating")
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--path", choices=("loopback", "lab", "both"), default="both")
    args = ap.parse_args()
    rows = []
    if args.path in ("loopback", "both"):
        rows.append(loopback(args))
    if args.path in ("lab", "both"):
        rows.append(lab(args))
    print(f"{'path':<44}{'direct':>12}{'proxied':>12}{'ratio':>8}   (target >= 0.90)")
    for name, d, p, _ in rows:
        print(f"{name:<44}{d:>12,.0f}{p:>12,.0f}{p / d:>8.3f}")
    for name, _, _, detail in rows:
        print(f"{name}: {detail}")
    return 0


def loopback(args: argparse.Namespace) -> tuple[str, float, float, str]:
    subprocess.run(["make", "-s", "-C", str(WORKER.parent.parent), "all"], check=True)
    sys.path.insert(0, str(SUPERVISOR.parent))
    import generate_data

    direct, proxied, cpu = [], [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        inp = tmp / "input.dat"
        generate_data.write(str(inp), generate_data.generate(args.items, 1))
        for i in range(args.runs):
            direct.append(run(tmp, inp, args.window, False, f"direct-{i}")[0])
            rate, c = run(tmp, inp, args.window, True, f"proxied-{i}")
            proxied.append(rate)
            cpu.append(c)
    return (f"host loopback, no limits, {args.items:,} items", statistics.median(direct), statistics.median(proxied),
            f"direct {', '.join(f'{r:,.0f}' for r in direct)}; proxied {', '.join(f'{r:,.0f}' for r in proxied)}; "
            f"proxy CPU s {', '.join(f'{c:.2f}' for c in cpu)}")


def lab(args: argparse.Namespace) -> tuple[str, float, float, str]:
    sys.path.insert(0, str(ROOT))
    from labctl import compose

    images = compose.checkout_project()
    for svc in ("monitor", "proxy", "worker", "supervisor"):
        if subprocess.run(["docker", "image", "inspect", f"{images}-{svc}:latest"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"bench_proxy: no image {images}-{svc}:latest; run `labctl build` first")
    direct, proxied = [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i in range(args.runs):
            direct.append(run_lab(tmp, args.lab_items, args.window, False, f"direct-{i}", images))
            proxied.append(run_lab(tmp, args.lab_items, args.window, True, f"proxied-{i}", images))
    return (f"the lab (compose, its limits), {args.lab_items:,} items", statistics.median(direct),
            statistics.median(proxied),
            f"direct {', '.join(f'{r:,.0f}' for r in direct)}; proxied {', '.join(f'{r:,.0f}' for r in proxied)}")


if __name__ == "__main__":
    raise SystemExit(main())
