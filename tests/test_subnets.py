"""Lab networks past the engine's default address pools: labctl.subnets
(pure) and, with the engine, 45 labelled networks at once (the default
pools hold about 30)."""
from __future__ import annotations

import ipaddress
import random

import pytest

from labctl import labels, subnets

REFUSAL = ("could not find an available, non-overlapping IPv4 address pool among the defaults to assign "
           "to the network")


def test_the_engines_refusal_is_recognised_and_nothing_else():
    assert subnets.exhausted(f"500 Server Error: Internal Server Error ({REFUSAL})")
    assert not subnets.exhausted("network lab-x already exists")
    assert not subnets.exhausted("Pool overlaps with other one on this address space")


def test_host_routes_are_read_from_proc_net_route_without_the_default_route(tmp_path):
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"  # default via 192.168.0.1
        "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # 192.168.0.0/24
        "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"  # 172.17.0.0/16
        "junk\n")
    assert subnets.host_routes(table) == [ipaddress.IPv4Network("192.168.0.0/24"),
                                          ipaddress.IPv4Network("172.17.0.0/16")]
    assert subnets.host_routes(tmp_path / "absent") == []


def test_candidates_are_free_24s_of_the_private_pool_from_a_random_start():
    used = subnets.parse(["172.16.0.0/13", "172.24.0.0/14", "fd00::/64", "nonsense", "172.28.0.0/15"])
    assert len(used) == 3
    got = list(subnets.candidates(used, rng=random.Random(1)))
    # 172.16.0.0/12 less the /13, /14 and /15 above: 172.30.0.0/15, 512 /24s.
    assert len(got) == 512 and len(set(got)) == 512
    assert all(n.prefixlen == 24 and n.subnet_of(ipaddress.IPv4Network("172.30.0.0/15")) for n in got)
    assert list(subnets.candidates(used, rng=random.Random(2)))[0] != got[0]
    assert list(subnets.candidates([subnets.POOL])) == []


@pytest.mark.docker
def test_more_networks_than_the_default_pools_hold(engine):
    lab_id = f"subnets-{random.randrange(16**6):06x}"
    names = [f"labctl-test-{lab_id}-{i}" for i in range(45)]
    try:
        ids = [engine.create_network(n, labels.lab_labels(lab_id)) for n in names]
        assert len(set(ids)) == 45
        nets = [engine.api.inspect_network(i) for i in ids]
        cidrs = [ipaddress.ip_network(n["IPAM"]["Config"][0]["Subnet"]) for n in nets]
        assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1:])
        assert any(c.prefixlen == subnets.PREFIX for c in cidrs), "the default pools never ran out?"
        assert all(n["Internal"] for n in nets)
    finally:
        for _, name in engine.networks(labels.filters(lab_id)):
            engine.remove_network(name)
    assert engine.networks(labels.filters(lab_id)) == []
