"""Lab networks past the engine's default address pools: labctl.subnets
(pure) and, with the engine, 45 labelled networks at once (the default
pools hold about 30)."""
from __future__ import annotations

import ipaddress
import random
import threading

import pytest

from labctl import labels, subnets

REFUSAL = ("could not find an available, non-overlapping IPv4 address pool among the defaults to assign "
           "to the network")


def test_the_engines_refusals_about_pools_are_recognised_and_nothing_else():
    assert subnets.own_subnet_needed(f"500 Server Error: Internal Server Error ({REFUSAL})")
    assert subnets.own_subnet_needed('403 Client Error: Forbidden ("Pool overlaps with other one on this address '
                                     'space")')
    assert not subnets.own_subnet_needed("network lab-x already exists")
    assert not subnets.own_subnet_needed("could not find bridge docker0")


def test_creating_a_network_tries_other_subnets_only_when_the_subnet_was_the_problem():
    """A refusal about pools: labctl's own subnets, each taken one tried once
    more; any other refusal (a name taken) is the answer at once."""
    import docker

    from labctl.engine import Engine
    from labctl.errors import LabError

    def refusal(msg: str) -> docker.errors.APIError:
        return docker.errors.APIError(msg, explanation=msg)

    tried: list[str | None] = []

    def make(answers):
        eng = object.__new__(Engine)
        eng._subnets_in_use = lambda: []

        def create(name, labels_, subnet):
            tried.append(subnet)
            a = answers.pop(0)
            if isinstance(a, Exception):
                raise a
            return a

        eng._create_network = create
        return eng

    ok = make([refusal(REFUSAL), refusal("Pool overlaps with other one on this address space"), "net-id"])
    assert ok.create_network("labctl-x-net", {}) == "net-id"
    assert tried[0] is None and len(tried) == 3 and all(t and t.endswith("/24") for t in tried[1:])
    tried.clear()
    taken = make([refusal(REFUSAL), refusal("network with name labctl-x-net already exists"), "never"])
    with pytest.raises(LabError) as ei:
        taken.create_network("labctl-x-net", {})
    assert len(tried) == 2 and "already exists" in ei.value.what


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
    # Outside Docker's default pools first: 172.16.0.0/16, each /24 once, then the rest.
    got = list(subnets.candidates(subnets.parse(["172.17.0.0/16", "172.16.5.0/24"]), rng=random.Random(3)))
    assert all(n.subnet_of(subnets.PREFERRED) for n in got[:255]) and len(set(got[:255])) == 255
    assert not any(n.subnet_of(subnets.PREFERRED) for n in got[255:])


@pytest.mark.docker
def test_networks_made_at_once_all_come_up(engine):
    """40 at once: the engine's own allocator trips over itself ("Pool overlaps")."""
    lab_id = f"subnets-{random.randrange(16**6):06x}"
    errors: list[str] = []

    def make(i: int) -> None:
        try:
            engine.clone().create_network(f"labctl-test-{lab_id}-{i}", labels.lab_labels(lab_id))
        except Exception as e:  # collected: the assertion below names them
            errors.append(str(getattr(e, "what", e)))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(40)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:3]
        assert len(engine.networks(labels.filters(lab_id))) == 40
    finally:
        for _, name in engine.networks(labels.filters(lab_id)):
            engine.remove_network(name)


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
