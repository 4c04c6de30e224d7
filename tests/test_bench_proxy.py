"""bench/bench_proxy.py's lab row compares compose.yaml with the same lab as
it ran before the proxy: this checks the two files it derives, no engine."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_proxy  # noqa: E402


def test_the_proxied_lab_is_compose_yaml_with_this_checkout_s_images():
    doc = bench_proxy.lab_compose(True, "labctl-x")
    lab = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert set(doc["services"]) == set(lab["services"])
    for name, svc in doc["services"].items():
        assert svc["image"] == f"labctl-x-{name}:latest" and "build" not in svc
        want = {k: v for k, v in lab["services"][name].items() if k != "build"}
        assert {k: v for k, v in svc.items() if k != "image"} == want


def test_the_direct_lab_puts_the_worker_on_the_network_in_the_proxy_s_place():
    doc = bench_proxy.lab_compose(False, "labctl-x")
    assert "proxy" not in doc["services"]
    w = doc["services"]["worker"]
    assert "network_mode" not in w and w["networks"] == {"lab": {"aliases": ["worker"]}}
    assert "--listen=0.0.0.0:7000" in w["command"] and "--heartbeat-udp=monitor:7001" in w["command"]
    assert not any("127.0.0.1" in a for a in w["command"])
    assert w["depends_on"] == ["monitor"]
    # Everything else as the lab has it: the same limits, the same hardening.
    lab = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["worker"]
    for key in ("read_only", "cap_drop", "security_opt", "user", "mem_limit", "cpus", "pids_limit", "volumes"):
        assert w[key] == lab[key], key
    sup = doc["services"]["supervisor"]
    assert "--worker=worker:7000" in sup["command"]
