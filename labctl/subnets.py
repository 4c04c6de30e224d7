"""Subnets for lab networks once the engine's default pools run out.

Docker hands each new network a whole /16 (or /20) from its default
address pools: about 30 networks in all, which 30 labs at once (one
network each) plus the default bridge exhaust ("could not find an
available, non-overlapping IPv4 address pool"). A lab needs a handful of
addresses, so when the engine refuses, labctl asks for a /24 of its own
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
PREFIX = 24
ROUTES = Path("/proc/net/route")
IPv4Net = ipaddress.IPv4Network


def exhausted(message: str) -> bool:
    """Whether an engine's refusal to create a network means its default pools are used up."""
    m = message.lower()
    return "non-overlapping" in m and "address pool" in m


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
               rng: random.Random | None = None) -> Iterator[IPv4Net]:
    """Free subnets of `pool`, from a random start (labs made at the same
    moment by several labctl threads or processes rarely pick the same one;
    the engine refuses a clash, and the caller takes the next)."""
    taken = list(used)
    free = [net for net in pool.subnets(new_prefix=prefix) if not any(net.overlaps(t) for t in taken)]
    if not free:
        return
    start = (rng or random.SystemRandom()).randrange(len(free))
    yield from free[start:] + free[:start]
