"""The lease lab: DDIA chapter 8's zombie lease holder, run, judged and drawn.

compose.lease.yaml's four containers: a lease service that grants one
time-bounded lease with a token that only grows, a store that can refuse a
write whose token is lower than one it has accepted (fencing), and two
holders, alice and bob, that increment a counter in the store while each
believes it holds the lease (images/lease). A scenario pauses the holder as it
starts to think (`on_event: alice.read`) for longer than the lease: the lease
expires, bob takes it with the next token and writes, alice wakes and writes
with her old token, not knowing she was paused. Fencing on, the store refuses
her; fencing off, it accepts, and bob's increments are lost.

The checker judges the run from its events alone (judge()): the lease
service's grants never overlap; the holders' beliefs do (the zombie); and in
the store's view the accepted writes' tokens never go back and no update is
lost, or, with fencing off, the checker finds exactly that lost update.
"""
from __future__ import annotations

import heapq
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl import compose, dependability, faults, labels, observe, runlog, states
from labctl.check import Check
from labctl.engine import ContainerSpec, wait_for
from labctl.errors import ExitCode, LabError
from labctl.lab import BOOT_POLL_S, BOOT_TIMEOUT_S, POLL_S, LabRun
from labctl.runlog import Event
from labctl.scenario import ON_EVENT_TIMEOUT_S, LeaseExpect, Scenario, Step
from labctl.timeline import Column  # the lease lab's picture takes timeline.png's column

FREE = "free"  # the lease service's lane when no one holds the lease
HOLDS, WAITS = "holds", "waits"  # a holder's belief
# How long after the scenario's end the holders get to leave cleanly (SIGTERM: release, exit 0).
STOP_TIMEOUT_S = 5


# ----------------------------------------------------------------------- live view


@dataclass
class LeaseLive(observe.Live):
    """What the view shows of a lease lab, fed by the four services' events."""
    lease_holder: str = "-"
    lease_token: int | None = None
    believes: dict[str, str] = field(default_factory=dict)  # holder -> "holds 33" / "waits"
    holder_truth: dict[str, str] = field(default_factory=dict)  # holder -> the engine's state
    accepted: int = 0
    fenced: int = 0
    stale: int = 0
    counter: int | None = None
    started_services: set[str] = field(default_factory=set)
    # (service, kind) -> how many such events arrived: a step waits for the next one.
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)

    def absorb(self, ev: Event) -> None:
        with self.mutex:
            src, kind = str(ev.get("source")), str(ev.get("kind"))
            who = str(ev.get("client")) if src == "holder" else src
            self.seen[(who, kind)] += 1
            if kind == "start":
                self.started_services.add(who)
            if src == "lease":
                if kind == "granted":
                    self.lease_holder, self.lease_token = str(ev.get("client")), ev.get("token")
                elif kind in ("expired", "released") and ev.get("client") == self.lease_holder:
                    self.lease_holder = FREE
            elif src == "store":
                if kind == "accepted":
                    self.accepted += 1
                    self.stale += bool(ev.get("stale"))
                    self.counter = ev.get("value") if isinstance(ev.get("value"), int) else self.counter
                elif kind == "fenced":
                    self.fenced += 1
            elif src == "holder" and kind == "believes":
                self.believes[who] = f"{HOLDS} {ev.get('token')}" if ev.get("holds") else WAITS


ROWS = [
    ("step", "fault / step"),
    ("lease", "lease service: holder (token)"),
    ("alice", "alice believes / engine"),
    ("bob", "bob believes / engine"),
    ("store", "store: accepted / fenced / stale"),
    ("counter", "counter"),
    ("phase", "lab"),
]


def cell(live: LeaseLive, key: str) -> str:
    if key == "lease":
        tok = f" ({live.lease_token})" if live.lease_holder not in ("-", FREE) else ""
        return f"{live.lease_holder}{tok}"
    if key in labels.LEASE_HOLDERS:
        return f"{live.believes.get(key, '-')} / {live.holder_truth.get(key, '-')}"
    if key == "store":
        return f"{live.accepted} / {live.fenced} / {live.stale}"
    if key == "counter":
        return "-" if live.counter is None else str(live.counter)
    return str(getattr(live, key) or "-")


def poll_holders(engine: Any, lab_id: str, live: LeaseLive) -> None:
    """The holders' states as the engine reports them now (a SIGSTOP shows
    only in the timeline, from the journal)."""
    for h in labels.LEASE_HOLDERS:
        st = engine.inspect(labels.container_name(lab_id, h))
        if st is None:
            live.holder_truth[h] = states.GONE
        elif st.status == "paused":
            live.holder_truth[h] = states.PAUSED
        elif st.status == "running":
            live.holder_truth[h] = states.RUNNING if labels.network_name(lab_id) in st.networks \
                else states.PARTITIONED
        else:
            live.holder_truth[h] = states.STOPPED if st.exit_code == 0 else states.CRASHED


# ----------------------------------------------------------------------- the run


class LeaseLabRun(LabRun):
    """One lease lab: boot it (alice first, so she holds the lease), play the
    timeline (a step may wait for a holder's event), run to the scenario's
    duration, stop the holders cleanly, judge."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.live: LeaseLive = LeaseLive(self.lab_id, self.sc.name)

    def specs(self) -> dict[str, ContainerSpec]:
        return {name: compose.for_lab(spec, self.lab_id, self.sc.name, self.images[name])
                for name, spec in compose.services(self.sc.lab.env(), kind="lease").items()}

    def boot(self) -> None:
        live = self.live
        self.engine.create_volume(labels.volume_name(self.lab_id), labels.lab_labels(self.lab_id))
        specs = self.specs()
        for name in labels.LEASE_SERVICES:
            self.engine.create_container(specs[name])
        live.phase = "booting"
        self.start_together(("lease", "store"))
        # A log stream opened on a container not yet started ends at once: each is followed once it runs.
        self.follow("lease")
        self.follow("store")
        self._wait(lambda: {"lease", "store"} <= live.started_services, "the lease service and the store to start",
                   lambda: f"started: {sorted(live.started_services) or 'none'}")
        # alice first, and holding the lease before bob starts: the story needs its zombie to be alice.
        self.engine.start(labels.container_name(self.lab_id, "alice"))
        self.follow("alice")
        self._wait(lambda: live.lease_holder == "alice", "alice to take the lease",
                   lambda: f"lease holder {live.lease_holder}")
        self.engine.start(labels.container_name(self.lab_id, "bob"))
        self.follow("bob")
        self._wait(lambda: "bob" in live.started_services, "bob to start", lambda: "no `start` from bob yet")

    def _wait(self, cond: Any, what: str, seen: Any) -> None:
        wait_for(lambda: cond() or self.cancel.is_set(), BOOT_TIMEOUT_S, BOOT_POLL_S,
                 f"lab {self.lab_id}: {what}", seen=seen)

    def timeline(self, t0: float) -> None:
        """Each step at its time (or at its service's next event after it),
        reverted `for` seconds after it took effect; then on to the duration."""
        agenda: list[tuple[float, int, bool]] = [(t0 + s.at, i, False) for i, s in enumerate(self.sc.timeline, 1)]
        heapq.heapify(agenda)
        applied: dict[int, dict[str, Any]] = {}
        while agenda:
            when, i, is_revert = heapq.heappop(agenda)
            step = self.sc.timeline[i - 1]
            if not self._until(when):
                if self.live_mode:
                    self.wait_for_job(time.time())  # stopped early: the holders still leave cleanly
                return
            if is_revert:
                self.live.step = f"{i}: {step.inverse}"
                faults.revert(self.engine, self.lab_id, applied.pop(i))
                continue
            if step.on_event and not self._await_event(i, step):
                return
            self.live.step = f"{i}: {step.do} {step.target}" + (f" for {step.for_s:g}s" if step.for_s else "")
            applied[i] = faults.apply(self.engine, self.lab_id, step.do, step.target, step=i, params=step.params)
            if step.for_s:
                heapq.heappush(agenda, (time.time() + step.for_s, i, True))
        self.live.step = "live: until stopped" if self.live_mode else "lab running"
        self.wait_for_job(t0 + self.sc.duration_s)

    def _until(self, when: float) -> bool:
        """Waits until `when`, keeping the view's truth fresh; False on a
        cancel, or a live lab's stop request (`labctl down`)."""
        from labctl import live

        while time.time() < when:
            if self.cancel.wait(min(POLL_S, max(0.0, when - time.time()))):
                return False
            if self.live_mode and live.stop_requested(self.lab_id):
                return False
            poll_holders(self.engine, self.lab_id, self.live)
        return True

    def _await_event(self, i: int, step: Step) -> bool:
        assert step.on_event is not None
        svc, kind = step.on_event
        self.live.step = f"{i}: {step.do} {step.target} at {svc}'s next {kind}"
        before = self.live.seen[step.on_event]
        deadline = time.time() + ON_EVENT_TIMEOUT_S
        while self.live.seen[step.on_event] <= before:
            if time.time() > deadline:
                raise LabError(ExitCode.ENGINE_ERROR, f"lab {self.lab_id}: step {i} waited "
                               f"{ON_EVENT_TIMEOUT_S:g} s for {svc}'s next `{kind}` event, which never came",
                               "`labctl logs` shows what the service did")
            if self.cancel.wait(0.005):  # an event is followed within milliseconds of being printed
                return False
        return True

    def wait_for_job(self, deadline: float) -> None:
        """A lease lab has no job: it runs to the scenario's duration, then the
        holders are stopped (SIGTERM: they release and say `stop`), then the rest."""
        if not self._until(deadline) and not self.live_mode:
            return
        self.live.step = "stopping"
        for names in (labels.LEASE_HOLDERS, ("lease", "store")):
            for n in names:
                try:
                    self.engine.stop(labels.container_name(self.lab_id, n), STOP_TIMEOUT_S)
                except Exception:
                    pass  # gone already: the final collection reads what it printed

    def collect_services(self) -> tuple[str, ...]:
        return labels.LEASE_SERVICES

    def volume_container(self) -> str:
        return labels.container_name(self.lab_id, "store")

    def summary(self, events: list[Event], t_start: float, t_end: float) -> dict[str, Any]:
        facts = Facts.of(events, t_end)
        return {
            "lab": self.lab_id, "scenario": self.sc.name, "lesson": self.sc.lesson, "engine": self.engine.name,
            "kind": "lease", "started": t_start, "ended": t_end, "error": self.result.error,
            "fencing": self.sc.lab.fencing, "accepted": len(facts.accepted), "fenced": len(facts.fenced),
            "stale": sum(1 for a in facts.accepted if a.stale), "counter": facts.counter,
            "timeline": [{"at": s.at, "do": s.do, "target": s.target, "for": s.for_s,
                          **({"on_event": ".".join(s.on_event)} if s.on_event else {})} for s in self.sc.timeline],
            "params": self.sc.lab.__dict__,
            "dependability": dependability.of_holders(events, labels.LEASE_HOLDERS, t_end),
        }

    def judge(self, events: list[Event], t_start: float, t_end: float) -> None:
        from labctl import check, rundir  # check imports this module's judge: no cycle at import time

        render(Column(self.sc.name, events, t_start, t_end), self.run_dir / rundir.TIMELINE)
        self.result.checks = check.check_run(self.run_dir).checks


# ----------------------------------------------------------------------- facts and the checker


@dataclass
class Write:
    ts: float
    client: str
    token: int
    value: int
    stale: bool = False


@dataclass
class Grant:
    client: str
    token: int
    start: float
    end: float | None = None  # expired or released, by the service's word


@dataclass
class Facts:
    """What the events say, read once: the service's grants, each holder's
    belief, the store's accepted and fenced writes, the holders' attempts."""
    grants: list[Grant]
    beliefs: dict[str, list[tuple[float, float, int | None]]]  # holder -> (from, to, token) while it held it
    accepted: list[Write]
    fenced: list[Write]
    attempts: list[Write]  # every `wrote` a holder logged (ok or not)
    counter: int | None
    end: float

    @classmethod
    def of(cls, events: list[Event], end: float) -> Facts:
        grants: list[Grant] = []
        open_belief: dict[str, tuple[float, int | None]] = {}
        beliefs: dict[str, list[tuple[float, float, int | None]]] = {h: [] for h in labels.LEASE_HOLDERS}
        accepted: list[Write] = []
        fenced: list[Write] = []
        attempts: list[Write] = []
        counter = None
        for e in events:
            src, kind, ts = e.get("source"), e.get("kind"), float(e["ts"])
            if src == "lease":
                if kind == "granted" and not e.get("renewal"):
                    grants.append(Grant(str(e["client"]), int(e["token"]), ts))
                elif kind in ("expired", "released"):
                    for g in reversed(grants):
                        if g.token == e.get("token") and g.end is None:
                            g.end = ts
                            break
            elif src == "store" and kind in ("accepted", "fenced"):
                w = Write(ts, str(e.get("client")), int(e.get("token", -1)), int(e.get("value") or 0),
                          bool(e.get("stale")))
                (accepted if kind == "accepted" else fenced).append(w)
                if kind == "accepted":
                    counter = w.value
            elif src == "holder":
                who = str(e.get("client"))
                if kind == "believes":
                    if e.get("holds") and who not in open_belief:
                        open_belief[who] = (ts, e.get("token"))
                    elif not e.get("holds") and who in open_belief:
                        since, tok = open_belief.pop(who)
                        beliefs.setdefault(who, []).append((since, ts, tok))
                elif kind == "wrote":
                    attempts.append(Write(ts, who, int(e.get("token", -1)), int(e.get("value") or 0)))
                elif kind == "stop" and who in open_belief:
                    since, tok = open_belief.pop(who)
                    beliefs.setdefault(who, []).append((since, ts, tok))
        for who, (since, tok) in open_belief.items():
            beliefs.setdefault(who, []).append((since, end, tok))
        return cls(grants, beliefs, accepted, fenced, attempts, counter, end)

    def overlaps(self) -> list[tuple[float, float]]:
        """The spans where both holders believed they held the lease."""
        a, b = (self.beliefs.get(h, []) for h in labels.LEASE_HOLDERS)
        out = []
        for s1, e1, _ in a:
            for s2, e2, _ in b:
                lo, hi = max(s1, s2), min(e1, e2)
                if lo < hi:
                    out.append((lo, hi))
        return sorted(out)

    def zombie_writes(self) -> list[Write]:
        """Writes a holder sent with a token older than one the service had granted since."""
        return [w for w in self.attempts
                if any(g.token > w.token and g.start < w.ts for g in self.grants)]

    def token_regressions(self) -> list[tuple[Write, int]]:
        """Accepted writes with a token below one accepted before them, with that highest."""
        out, highest = [], None
        for w in self.accepted:
            if highest is not None and w.token < highest:
                out.append((w, highest))
            highest = w.token if highest is None else max(highest, w.token)
        return out

    def interleaved(self) -> list[tuple[int, int]]:
        """Token pairs whose accepted writes interleave in the store's order (a
        token's writes resuming after a newer token's): leases overlapping in
        the store's view."""
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for k, w in enumerate(self.accepted):
            first.setdefault(w.token, k)
            last[w.token] = k
        return sorted({(t1, t2) for t1 in first for t2 in first
                       if t1 < t2 and first[t2] < last[t1]})

    def lost_updates(self) -> list[tuple[Write, int, int]]:
        """Accepted writes that set the counter to no more than it already was:
        (the write, the value it overwrote, increments lost)."""
        out, prev = [], None
        for w in self.accepted:
            if prev is not None and w.value <= prev:
                out.append((w, prev, prev - w.value + 1))
            prev = w.value
        return out

    def grant_overlaps(self) -> list[tuple[Grant, Grant]]:
        """Consecutive grants where the next began before the last had ended, by the service's own word."""
        return [(g1, g2) for g1, g2 in zip(self.grants, self.grants[1:], strict=False)
                if g1.end is None or g2.start < g1.end]


def judge(sc: Scenario, events: list[Event], run_end: float, run_start: float | None = None) -> list[Check]:
    exp = sc.expect.lease or LeaseExpect()
    f = Facts.of(events, run_end)
    t0 = run_start if run_start is not None else (float(events[0]["ts"]) if events else 0.0)

    def at(ts: float) -> str:
        return f"+{ts - t0:.1f} s"

    checks: list[Check] = []
    bad_grants = f.grant_overlaps()
    checks.append(Check(
        "the lease service never granted the lease to two holders at once", not bad_grants and bool(f.grants),
        (f"{len(f.grants)} grant(s), tokens {', '.join(str(g.token) for g in f.grants)}" if not bad_grants else
         f"token {bad_grants[0][1].token} ({bad_grants[0][1].client}) granted at {at(bad_grants[0][1].start)} "
         f"while token {bad_grants[0][0].token} still held") if f.grants else "no grant at all"))
    tokens = [g.token for g in f.grants]
    checks.append(Check("its tokens only grow", tokens == sorted(set(tokens)),
                        ", ".join(map(str, tokens)) or "none"))
    overlap = f.overlaps()
    zombies = f.zombie_writes()
    if exp.zombie:
        checks.append(Check(
            "a zombie: two holders believed they held the lease at once", bool(overlap),
            f"{sum(e - s for s, e in overlap):.1f} s from {at(overlap[0][0])}" if overlap else "never"))
        checks.append(Check(
            "the zombie wrote with a token older than a newer grant", bool(zombies),
            f"{zombies[0].client} wrote token {zombies[0].token} at {at(zombies[0].ts)}" if zombies else "never"))
    regress, inter, lost = f.token_regressions(), f.interleaved(), f.lost_updates()
    if exp.safe:
        checks.append(Check(
            "no accepted write carries a token lower than an earlier accepted one", not regress,
            f"{len(f.accepted)} accepted writes, tokens never went back" if not regress else
            f"{regress[0][0].client}'s write with token {regress[0][0].token} accepted at "
            f"{at(regress[0][0].ts)} after token {regress[0][1]}"))
        checks.append(Check(
            "no two holders' leases overlap in the store's view", not inter,
            "each token's writes end before the next token's begin" if not inter else
            f"token {inter[0][0]}'s writes resume after token {inter[0][1]}'s"))
        checks.append(Check(
            "no lost update: every accepted write raised the counter", not lost,
            f"counter {f.counter} after {len(f.accepted)} accepted writes" if not lost else
            f"{lost[0][0].client}'s write (token {lost[0][0].token}) at {at(lost[0][0].ts)} set the counter to "
            f"{lost[0][0].value} over {lost[0][1]}: {lost[0][2]} increment(s) lost"))
    else:
        # Fencing off: the store must have let the zombie through, and the checker must say what that cost.
        checks.append(Check(
            "unsafe without fencing: the store accepted a write with a token lower than an earlier one",
            bool(regress),
            f"{regress[0][0].client}'s token {regress[0][0].token} accepted at {at(regress[0][0].ts)} after "
            f"token {regress[0][1]}: the lost update below" if regress else "not found: fencing was not tested"))
        checks.append(Check(
            "unsafe without fencing: the checker finds the lost update", bool(lost),
            f"{lost[0][0].client}'s write (token {lost[0][0].token}) set the counter to {lost[0][0].value} over "
            f"{lost[0][1]}: {lost[0][2]} increment(s) of the new holder lost" if lost else "none found"))
    if exp.min_fenced:
        first = f.fenced[0] if f.fenced else None
        checks.append(Check(
            f"the store fenced off at least {exp.min_fenced} stale write(s)", len(f.fenced) >= exp.min_fenced,
            f"{len(f.fenced)}: first {first.client}'s token {first.token} at {at(first.ts)}" if first else "none"))
    return checks


# ----------------------------------------------------------------------- the picture


LANES = ("lease service\n(its holder)", "alice believes", "alice\n(engine)", "bob believes", "bob\n(engine)",
         "store: accepted\nwrites (token)")
# Holders in colours no engine state uses (Okabe-Ito's reddish purple and sky blue: apart for colour-blind eyes too).
HOLDER_COLORS = {"alice": "#cc79a7", "bob": "#56b4e9", FREE: "#bdbdbd", HOLDS: "#2e7d32", WAITS: "#e0e0e0"}
OVERLAP_SHADE = "#e53935"  # where two holders believe they hold the lease


def lanes_of(col: Column) -> list[runlog.Seen]:
    f = Facts.of(col.events, col.t1)
    service: runlog.Seen = [(col.t0, FREE)]
    for g in f.grants:
        service.append((g.start, g.client))
        if g.end is not None:
            service.append((g.end, FREE))
    out = [sorted(service)]
    for h in labels.LEASE_HOLDERS:
        belief: runlog.Seen = [(col.t0, WAITS)]
        for s, e, _ in f.beliefs.get(h, []):
            belief += [(s, HOLDS), (e, WAITS)]
        out += [belief, runlog.truth_timeline(col.events, h)]
    return out


def render(col: Column, path: Path) -> dict[str, str]:
    """The lease lab's picture: the service's truth, each holder's belief and
    state, the store's writes; the span where both believe shaded red."""
    from labctl import timeline

    plt = timeline._pyplot()
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(LANES), 1, figsize=(9.5, 6.8), squeeze=False,
                             gridspec_kw={"hspace": 0.4})
    lanes = [axes[r][0] for r in range(len(LANES))]
    span = max(col.t1 - col.t0, 1.0)
    colors = {**timeline.COLORS, **HOLDER_COLORS}
    used: set[str] = set()
    for ax, changes in zip(lanes, lanes_of(col), strict=False):
        for start, width, state in timeline.segments(changes, col.t0, col.t1):
            used.add(state)
            ax.broken_barh([(start, width)], (0.15, 0.7), color=colors.get(state, "#757575"))
            if width / span > 0.08:
                ax.text(start + width / 2, 0.5, state, ha="center", va="center", fontsize=9, clip_on=True,
                        color="black" if state in (WAITS, FREE) else "white", fontweight="bold")
        ax.set_ylim(0, 1)
        ax.set_yticks([])
    f = Facts.of(col.events, col.t1)
    draw_store(lanes[-1], f, col, colors)
    overlaps = f.overlaps()
    for s, e in overlaps:
        for ax in lanes[1:5]:
            ax.axvspan(s - col.t0, e - col.t0, color=OVERLAP_SHADE, alpha=0.25, zorder=0, lw=0)
    windows = timeline.draw_fault_windows(lanes, col)
    for r, ax in enumerate(lanes):
        ax.set_xlim(0, span)
        ax.set_ylabel(LANES[r], rotation=0, ha="right", va="center", fontsize=9)
        if r < len(lanes) - 1:
            ax.set_xticklabels([])
    lanes[-1].set_xlabel("seconds since the lab started", fontsize=9)
    lanes[0].set_title(col.title, fontsize=11, fontweight="bold", pad=16)
    handles = [Patch(color=colors[s], label=s) for s in colors if s in used]
    handles += [Patch(color=OVERLAP_SHADE, alpha=0.25, label="two holders believe they hold it"),
                Patch(color=timeline.FAULT_SHADE, alpha=0.35, label="fault window")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.2, right=0.97, top=0.9, bottom=0.16)
    meta = {"Lanes": "|".join(n.replace("\n", " ") for n in LANES), "Columns": "1",
            "FaultWindows": str(windows), "Overlaps": str(len(overlaps))}
    fig.savefig(path, dpi=110, metadata=meta)
    plt.close(fig)
    return meta


def draw_store(store: Any, f: Facts, col: Column, colors: dict[str, str]) -> None:
    """The store's lane: each write at its token's height, coloured by writer;
    a stale accepted one marked, a fenced one crossed, the lost update named."""
    for w in f.accepted:
        store.scatter([w.ts - col.t0], [w.token], s=22, color=colors.get(w.client, "#757575"),
                      marker="X" if w.stale else "o", edgecolors="black" if w.stale else "none", zorder=3)
    for w in f.fenced:
        store.scatter([w.ts - col.t0], [w.token], s=60, color="black", marker="x", zorder=3)
        store.annotate(f"fenced: {w.client}'s token {w.token}", (w.ts - col.t0, w.token), xytext=(6, -12),
                       textcoords="offset points", fontsize=8)
    for w, over, n in f.lost_updates():
        store.annotate(f"{w.client}'s stale write accepted: counter {over} -> {w.value}, {n} update(s) lost",
                       (w.ts - col.t0, w.token), xytext=(6, -12), textcoords="offset points", fontsize=8,
                       color="#c62828", fontweight="bold")
    toks = [w.token for w in f.accepted + f.fenced]
    if toks:
        store.set_ylim(min(toks) - 0.8, max(toks) + 0.8)
        store.set_yticks(sorted(set(toks)))
