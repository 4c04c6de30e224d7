"""Subnets for lab networks once the engine's default pools run out.

Docker hands each new network a whole /16 (or /20) from its default
address pools: about 30 networks in all, which 30 labs at once (one
network each) plus the default bridge exhaust ("could not find an
available, non-overlapping IPv4 address pool"). A lab needs a handful of
addresses, so when the engine refuses (or, with many networks made at
once, trips over its own allocations), labctl asks for a /24 of its own
choosing instead: inside 172.16.0.0/12, the private range Docker's own
defaults are cut from, clear of every subnet the engine already uses and,
for an engine on this machine, of every route the host has (a lab's
bridge must never shadow a real network). Pure logic: the caller passes
what is in use.
"""
from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

POOL = ipaddress.IPv4Network("172.16.0.0/12")
# First choice: the part of POOL outside Docker's default pools (which take
# 172.17.0.0/16 to 172.31.0.0/16 whole), so that labctl's picks never race
# the engine's own allocator; 256 lab networks.
PREFERRED = ipaddress.IPv4Network("172.16.0.0/16")
PREFIX = 24
ROUTES = Path("/proc/net/route")
IPv4Net = ipaddress.IPv4Network


def own_subnet_needed(message: str) -> bool:
    """Whether an engine's refusal to create a network is about its address
    pools: used up, or (networks made at the same moment) the pool it chose
    was taken meanwhile ("Pool overlaps with other one on this address space")."""
    m = message.lower()
    return ("non-overlapping" in m and "address pool" in m) or "pool overlaps" in m


def parse(subnets: Iterable[str]) -> list[IPv4Net]:
    """The IPv4 networks among these strings (IPv6 and junk are skipped)."""
    out = []
    for s in subnets:
        try:
            net = ipaddress.ip_network(s, strict=False)
        except ValueError:
            continue
        if isinstance(net, IPv4Net):
            out.append(net)
    return out


def host_routes(path: Path = ROUTES) -> list[IPv4Net]:
    """The destinations of this machine's IPv4 routes, the default route aside."""
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return []
    out = []
    for line in lines:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            dest = ipaddress.IPv4Address(bytes.fromhex(f[1])[::-1])
            mask = ipaddress.IPv4Address(bytes.fromhex(f[7])[::-1])
        except ValueError:
            continue
        if int(mask):
            out.append(IPv4Net(f"{dest}/{mask}", strict=False))
    return out


def candidates(used: Iterable[IPv4Net], pool: IPv4Net = POOL, prefix: int = PREFIX,
               rng: random.Random | None = None, preferred: IPv4Net | None = PREFERRED) -> Iterator[IPv4Net]:
    """Free subnets of `pool`, those in `preferred` first, each group from a
    random start (labs made at the same moment by several labctl threads or
    processes rarely pick the same one; the engine refuses a clash, and the
    caller looks again)."""
    taken = list(used)
    rng = rng or random.SystemRandom()
    free = [net for net in pool.subnets(new_prefix=prefix) if not any(net.overlaps(t) for t in taken)]
    first = [n for n in free if preferred is not None and n.subnet_of(preferred)]
    rest = [n for n in free if not (preferred is not None and n.subnet_of(preferred))]
    for group in (first, rest):
        if group:
            start = rng.randrange(len(group))
            yield from group[start:] + group[:start]
