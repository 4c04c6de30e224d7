#!/usr/bin/env python3
"""What the fault proxy costs on the healthy path: supervisor -> worker items/s,
directly and through images/proxy/proxy.py (no toxic on), in the same run.

Runs alternate (direct, proxied, direct, ...) so that a machine getting busier
or quieter during the run weighs on both; each side's median is reported.
The time is the supervisor's own job duration from its summary.json, as in
bench_supervisor.py. The target: through the proxy, within 10 % of direct.

    python bench/bench_proxy.py [--items 300000] [--runs 3] [--window 1024]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=1024)
    args = ap.parse_args()
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
    d_med, p_med = statistics.median(direct), statistics.median(proxied)
    print(f"supervisor -> worker over loopback, {args.items:,} items, window {args.window}, "
          f"{args.runs} runs each, median ({os.cpu_count()} cores)")
    print(f"{'path':<28}{'items/s (median)':>18}   runs")
    print(f"{'direct':<28}{d_med:>18,.0f}   {', '.join(f'{r:,.0f}' for r in direct)}")
    print(f"{'through the proxy':<28}{p_med:>18,.0f}   {', '.join(f'{r:,.0f}' for r in proxied)}")
    print(f"proxied / direct: {p_med / d_med:.3f} (target >= 0.90); proxy CPU s per run: "
          f"{', '.join(f'{c:.2f}' for c in cpu)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
