"""`labctl serve`: a page that shows every running lab live, one column per
lab, with the lanes of timeline.png; buttons for the live faults; and a
browser of the finished runs.

How an event reaches the page: a follower per lab reads the monitor's and the
supervisor's logs (observe.parse_log_line, as the live view does), the
engine's event stream (observe.EngineRecorder's translation: the ground
truth) and the lab's fault journal (runs/<lab>/journal.jsonl, tailed). Each
event becomes lane updates (`Lanes`), which the server streams to the page as
Server-Sent Events; the page draws them (labctl/serve_static/).

Safety: it binds to 127.0.0.1 unless told `--public`. Every fault request
(POST) needs the server's token in the `X-Labctl-Token` header: a page from
another origin cannot set that header without a CORS preflight, which is
never granted, nor read the token from our page. On loopback the token is
written into the page, and a request whose Host header is not a loopback name
is refused (DNS rebinding); with `--public` every request needs the token in
the URL (`?token=`), which labctl prints once. Files are served only from
under the runs directory, resolved (symlinks too) and checked to stay there.
"""
from __future__ import annotations

import html
import ipaddress
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from labctl import faults, images, journal, labels, observe, rundir, runlog, states
from labctl.engine import Engine
from labctl.errors import ExitCode, LabError
from labctl.runlog import Event

TOKEN_HEADER = "X-Labctl-Token"
DISCOVER_S = 1.0  # how often the engine is asked which labs run
JOURNAL_POLL_S = 0.1  # the journal is a file: tailed this often
KEEPALIVE_S = 1.0  # a `clock` update this often on every stream: the page's clock and a keepalive
LINGER_S = 20.0  # a lab gone from the engine is followed this long more, for its verdict
FOLLOWED = ("monitor", "supervisor")
# The faults the page offers, as (label, fault, its undoing); a button applies
# the fault, or reverts it when it is in force (as `labctl fault INVERSE` does).
BUTTONS = (("pause", "pause", "unpause"), ("sigstop", "sigstop", "sigcont"), ("partition", "partition", "heal"),
           ("crash", "crash", None), ("slow 80%", "slow", "slow-off"), ("loss 40%", "loss", "loss-off"))
BUTTON_PARAMS: dict[str, dict[str, Any]] = {"slow": {"percent": 80}, "loss": {"p": 0.4}}
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
CONTENT_TYPES = {".png": "image/png", ".json": "application/json", ".md": "text/plain; charset=utf-8",
                 ".jsonl": "text/plain; charset=utf-8", ".yaml": "text/plain; charset=utf-8",
                 ".txt": "text/plain; charset=utf-8", ".log": "text/plain; charset=utf-8"}
LOOPBACK_NAMES = ("localhost",)


# ----------------------------------------------------------------------- pure parts (unit-tested)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, public: bool) -> None:
    """A non-loopback address only with --public (and then a token guards every request)."""
    if not is_loopback(host) and not public:
        raise LabError(ExitCode.USAGE, f"--host {host} is not a loopback address",
                       "add --public to serve the network (every request then needs the token labctl prints)")


def sse_message(data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One Server-Sent Event: optional id, one data line of JSON, a blank line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return (head + "data: " + json.dumps(data, separators=(",", ":")) + "\n\n").encode()


def run_file(root: Path, url_path: str) -> Path | None:
    """The file under root that a /runs/... URL path names, or None.

    The path is decoded once; what a second decoding would change (a `%` left),
    a `..` or `.` segment, a backslash, a NUL or an absolute part refuses it;
    the result is resolved (symlinks followed) and must stay under root and be
    a regular file."""
    decoded = unquote(url_path, errors="strict")
    if any(c in decoded for c in ("%", "\\", "\x00")) or decoded.startswith("/"):
        return None
    parts = decoded.split("/")
    if not parts or any(p in ("", ".", "..") for p in parts):
        return None
    root = root.resolve()
    try:
        found = (root / Path(*parts)).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not found.is_relative_to(root) or not found.is_file():
        return None
    return found


def host_allowed(host_header: str | None, port: int) -> bool:
    """On a loopback bind: the Host a browser sends for a loopback URL, nothing else."""
    if not host_header:
        return False
    if host_header.startswith("["):
        name, _, rest = host_header[1:].partition("]")
        given = rest[1:] if rest.startswith(":") else rest
    else:
        name, _, given = host_header.partition(":")
    return is_loopback(name) and given in (str(port), "")


def fault_label(rec: Event) -> str:
    params = rec.get("params") or {}
    return " ".join([str(rec.get("fault")), *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in params.items())])


class Lanes:
    """One lab's events -> the page's lane updates: a lane's new state, a
    point of the items lane, a beat, a fault window opening or closing."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}
        self.truth_events: list[Event] = []
        self.beats: int | None = None
        self.open: dict[str, Event] = {}  # fault windows open, by the intent's id

    def absorb(self, ev: Event) -> list[dict[str, Any]]:
        src, kind = ev.get("source"), ev.get("kind")
        ts = float(ev.get("ts") or time.time())
        if src == "monitor" and kind in ("tick", "verdict"):
            return self._monitor(ts, ev)
        if src == "supervisor":
            out = self._state(states.SUPERVISOR, ts, ev.get("state") if kind == "state" else None)
            if kind == "done":
                out += self._state(states.SUPERVISOR, ts, states.DONE)
            if kind in ("progress", "state", "start") and ("acked" in ev or "total" in ev):
                out.append({"type": "acked", "ts": ts, "acked": ev.get("acked", 0), "total": ev.get("total")})
            return out
        if src == "engine" or (src == "labctl" and kind == "fault"):
            out = self._fault(ts, ev) if src == "labctl" else []
            self.truth_events.append(ev)
            self.truth_events.sort(key=lambda e: e["ts"])
            seen = runlog.truth_timeline(self.truth_events)
            return out + (self._state(states.TRUTH, max(ts, seen[-1][0]), seen[-1][1]) if seen else [])
        return []

    def _monitor(self, ts: float, ev: Event) -> list[dict[str, Any]]:
        phi = (states.DEAD if ev["phi_suspect"] else states.ALIVE) if "phi_suspect" in ev else None
        out = (self._state(states.MONITOR, ts, ev.get("verdict"))
               + self._state(states.HEARTBEAT_ONLY, ts, runlog.heartbeat_only_of(ev))
               + self._state(states.PHI, ts, phi)
               + self._state(states.SENDER_CLOCK, ts, ev.get("sender_clock")))
        if ev.get("processed") is not None:
            out.append({"type": "items", "ts": ts, "processed": ev["processed"]})
        beats = ev.get("udp_beats")
        if isinstance(beats, int):
            if self.beats is not None and beats > self.beats:
                out.append({"type": "beat", "ts": ts})
            self.beats = beats
        return out

    def _state(self, lane: str, ts: float, state: Any) -> list[dict[str, Any]]:
        if not state or self.last.get(lane) == state:
            return []
        self.last[lane] = str(state)
        return [{"type": "state", "lane": lane, "ts": ts, "state": str(state)}]

    def _fault(self, ts: float, rec: Event) -> list[dict[str, Any]]:
        phase, fid = rec.get("phase"), str(rec.get("id"))
        if phase == journal.INTENT:
            self.open[fid] = rec
            return []
        if phase == journal.FAILED:
            return [{"type": "fault", "id": fid, "failed": True}] if self.open.pop(fid, None) else []
        if phase == journal.APPLIED and fid in self.open:
            intent = self.open[fid]
            start = max(float(intent["ts"]), float(rec.get("from_ts") or 0))
            if not intent.get("inverse"):  # a crash or a kill: a mark, not a window
                del self.open[fid]
                return [{"type": "fault", "id": fid, "name": fault_label(intent), "start": start, "end": ts,
                         "target": intent.get("target")}]
            return [{"type": "fault", "id": fid, "name": fault_label(intent), "start": start, "end": None,
                     "target": intent.get("target")}]
        if phase in (journal.REVERTED, journal.REVERT_FAILED) and rec.get("of"):
            return [{"type": "fault", "id": str(rec["of"]), "end": ts}] if self.open.pop(str(rec["of"]), None) else []
        return []


# ----------------------------------------------------------------------- following the labs


class Feed:
    """One lab's updates, in order; its threads follow the lab until stopped."""

    def __init__(self, hub: Hub, engine: Engine, lab_id: str, scenario: str):
        self.hub = hub
        self.engine = engine
        self.lab_id = lab_id
        self.scenario = scenario
        self.t0 = time.time()
        self.updates: list[dict[str, Any]] = []
        self.lanes = Lanes()
        self.stop = threading.Event()
        self.gone_at: float | None = None
        self.verdict_sent = False
        self._lock = threading.Lock()
        self.recorder: _PushRecorder | None = None

    def push(self, ev: Event) -> None:
        with self._lock:
            for u in self.lanes.absorb(ev):
                self.updates.append({"lab": self.lab_id, **u})
        self.hub.notify()

    def add(self, update: dict[str, Any]) -> None:
        with self._lock:
            self.updates.append({"lab": self.lab_id, **update})
        self.hub.notify()

    def since(self, n: int) -> list[dict[str, Any]]:
        with self._lock:
            return self.updates[n:]

    def start(self) -> None:
        st = [c for c in self.engine.containers(labels.filters(self.lab_id)) if c.started_at[:4] not in ("", "0001")]
        if st:
            self.t0 = min(observe.parse_docker_ts(c.started_at) for c in st)
        self.add({"type": "hello", "scenario": self.scenario, "t0": self.t0,
                  "buttons": [{"label": b[0], "fault": b[1], "inverse": b[2]} for b in BUTTONS]})
        self.recorder = _PushRecorder(self.engine.clone(), self.lab_id, self)
        self.recorder.start()
        self.seed_truth()
        for service in FOLLOWED:
            threading.Thread(target=self.follow, args=(service,), daemon=True,
                             name=f"serve-{self.lab_id}-{service}").start()
        threading.Thread(target=self.tail_journal, daemon=True, name=f"serve-{self.lab_id}-journal").start()

    def seed_truth(self) -> None:
        """The worker's state now, for a lab that ran before the server: the
        engine's stream gives only what happens from here on."""
        w = self.engine.inspect(labels.container_name(self.lab_id, "worker"))
        if w is None or w.started_at[:4] in ("", "0001"):
            return
        ts = observe.parse_docker_ts(w.started_at)
        if self.recorder is not None:
            self.recorder.ids[w.id] = "worker"
            owner = self.engine.inspect(labels.netns_container(self.lab_id, "worker"))
            if owner is not None:
                self.recorder.ids[owner.id] = labels.NETNS_OWNER["worker"]
        self.push({"ts": ts, "source": "engine", "kind": "container", "action": "start", "service": "worker"})
        base = {"source": "engine", "kind": "container", "service": "worker"}
        if w.status == "paused":
            self.push({**base, "ts": ts, "action": "pause"})
        elif w.status in ("exited", "dead", "restarting"):
            ended = observe.parse_docker_ts(w.finished_at) if w.finished_at[:4] not in ("", "0001") else ts
            self.push({**base, "ts": ended, "action": "die", "exit_code": w.exit_code, "oom_killed": w.oom_killed})

    def follow(self, service: str) -> None:
        """A service's log lines as they are printed; the stream is opened
        again (from the last line read) when it ends but the container is
        still there, e.g. before it starts or after a restart."""
        eng = self.engine.clone()
        name = labels.container_name(self.lab_id, service)
        last = 0.0
        try:
            while not self.stop.is_set():
                st = eng.inspect(name)
                if st is None and self.gone_at is not None:
                    return
                if st is None or st.status == "created":
                    self.stop.wait(0.1)
                    continue
                last = self._read_logs(eng, name, service, last)
                self.stop.wait(0.5)
        except Exception:
            return  # the engine went away: the page keeps what it has
        finally:
            eng.close()

    def _read_logs(self, eng: Engine, name: str, service: str, last: float) -> float:
        buf = ""
        for chunk in eng.logs(name, follow=True, since=last or None):
            buf += chunk.decode("utf-8", "replace")
            *lines, buf = buf.split("\n")
            for line in lines:
                try:
                    stamp = observe.parse_docker_ts(line.partition(" ")[0])
                except ValueError:
                    continue
                if stamp <= last:
                    continue  # read before the stream was opened again
                last = stamp
                ev = observe.parse_log_line(service, line)
                if ev and ev.get("kind") != "log":
                    self.push(ev)
            if self.stop.is_set():
                break
        return last

    def tail_journal(self) -> None:
        """The fault journal (a file), read as it grows; then the run's verdict once it is written."""
        path = journal.path(self.lab_id)
        offset, partial = 0, ""
        while not self.stop.wait(JOURNAL_POLL_S):
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                    offset += len(data)
            except FileNotFoundError:
                data = b""
            *lines, partial = (partial + data.decode("utf-8", "replace")).split("\n")
            for line in lines:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and float(rec.get("ts", 0)) >= self.t0 - 1:
                    self.push(rec)
            if not self.verdict_sent:
                self.look_for_verdict()

    def look_for_verdict(self) -> None:
        for d in sorted(rundir.lab_dir(self.lab_id).glob("2*"), reverse=True):
            v = d / rundir.VERDICT
            if v.is_file() and v.stat().st_mtime >= self.t0 - 1:
                doc = rundir.read_verdict(d)
                if "checks" in doc:
                    self.verdict_sent = True
                    self.add({"type": "verdict", "ok": doc.get("ok"), "checks": doc["checks"],
                              "run": f"{self.lab_id}/{d.name}"})
                return

    def end(self) -> None:
        self.stop.set()
        if self.recorder is not None:
            self.recorder.stop()
        self.engine.close()


class _PushRecorder(observe.EngineRecorder):
    """The engine's events for one lab, each passed on to the feed as it comes."""

    def __init__(self, engine: Engine, lab_id: str, feed: Feed):
        super().__init__(engine, lab_id)
        self.feed = feed

    def translate(self, e: dict[str, Any]) -> Event | None:
        ev = super().translate(e)
        if ev is not None:
            self.feed.push(ev)
        return ev


class Hub:
    """Finds the running labs (every DISCOVER_S) and keeps a Feed for each."""

    def __init__(self, engine: Engine | None):
        self.engine = engine
        self.feeds: dict[str, Feed] = {}
        self.stop = threading.Event()
        self.changed = threading.Condition()
        self.version = 0  # counts notify(): a stream waits only if nothing came since it last looked
        self._lock = threading.Lock()

    def notify(self) -> None:
        with self.changed:
            self.version += 1
            self.changed.notify_all()

    def start(self) -> None:
        if self.engine is not None:
            threading.Thread(target=self.discover, daemon=True, name="serve-discover").start()

    def running(self) -> dict[str, str]:
        """Lab id -> scenario, for every lab whose containers exist (grading sandboxes aside)."""
        assert self.engine is not None
        found: dict[str, str] = {}
        for c in self.engine.containers(labels.filters()):
            lab_id, service = c.labels.get(labels.LAB), c.labels.get(labels.SERVICE)
            if lab_id and service in labels.SERVICES and labels.GRADE not in c.labels:
                found[lab_id] = c.labels.get(labels.SCENARIO, "?")
        return found

    def discover(self) -> None:
        while not self.stop.is_set():
            try:
                self.update(self.running())
            except Exception:
                pass  # the engine did not answer this time: the next look may
            self.stop.wait(DISCOVER_S)
        for feed in self.current():
            feed.end()

    def update(self, running: dict[str, str]) -> None:
        assert self.engine is not None
        now = time.time()
        for lab_id, sc in running.items():
            feed = self.feeds.get(lab_id)
            if feed is None or feed.stop.is_set():
                feed = Feed(self, self.engine.clone(), lab_id, sc)
                with self._lock:
                    self.feeds[lab_id] = feed
                feed.start()
            feed.gone_at = None
        for lab_id, feed in list(self.feeds.items()):
            if lab_id in running:
                continue
            feed.gone_at = feed.gone_at or now
            if now - feed.gone_at > LINGER_S:
                feed.end()
                feed.add({"type": "ended"})
                with self._lock:
                    self.feeds.pop(lab_id, None)

    def current(self) -> list[Feed]:
        with self._lock:
            return list(self.feeds.values())

    def stream(self, lab_id: str | None) -> Iterator[list[dict[str, Any]]]:
        """Batches of updates for one lab (or every lab), from the start; an
        empty batch every KEEPALIVE_S or so when nothing happens."""
        cursors: dict[int, int] = {}
        while not self.stop.is_set():
            with self.changed:
                looked = self.version
            batch: list[dict[str, Any]] = []
            for feed in self.current():
                if lab_id is None or feed.lab_id == lab_id:
                    new = feed.since(cursors.get(id(feed), 0))
                    cursors[id(feed)] = cursors.get(id(feed), 0) + len(new)
                    batch += new
            if batch:
                yield batch
                continue
            with self.changed:
                if self.version == looked:
                    self.changed.wait(KEEPALIVE_S)
            if self.version == looked:
                yield []


# ----------------------------------------------------------------------- faults from the page


def press(engine: Engine, lab_id: str, kind: str, target: str = "worker",
          params: dict[str, Any] | None = None) -> str:
    """What `labctl fault KIND` does: an inverse reverts the fault in force that
    it undoes; anything else is applied (journaled, confirmed). Says what it did."""
    f = faults.get(kind)
    params = dict(BUTTON_PARAMS.get(kind, {}), **(params or {}))
    f.settings(params)
    for intent in journal.pending(lab_id):
        if intent.get("inverse") == kind and intent.get("target") == target:
            faults.revert(engine, lab_id, intent)
            return f"{kind} {target} (reverts {intent['fault']})"
    if f.needs_tools:
        images.ensure_tools(engine, lambda _msg: None)
    faults.apply(engine, lab_id, kind, target, params=params)
    return f"{kind} {target}"


# ----------------------------------------------------------------------- HTTP


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], hub: Hub, public: bool, token: str | None = None,
                 press_fn: Callable[[str, str, str, dict[str, Any]], str] | None = None):
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, Handler)
        self.hub = hub
        self.public = public
        self.token = token or secrets.token_urlsafe(24)
        self.press_fn = press_fn
        self.port = int(self.server_address[1])

    def url(self) -> str:
        host = str(self.server_address[0])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.public else "")

    def close(self) -> None:
        self.hub.stop.set()
        self.hub.notify()
        self.shutdown()
        self.server_close()


def static_text(name: str) -> str:
    return resources.files("labctl").joinpath("serve_static", name).read_text()


def runs_list() -> list[dict[str, Any]]:
    root = rundir.runs_root()
    out = []
    for d in rundir.run_dirs():
        v = rundir.read_verdict(d)
        out.append({"path": d.relative_to(root).as_posix(), "lab": d.parent.name, "time": d.name,
                    "scenario": rundir.read_summary(d).get("scenario", "?"), "ok": v.get("ok"),
                    "files": [f for f in (rundir.TIMELINE, rundir.REPORT, rundir.VERDICT, rundir.SUMMARY,
                                          rundir.EVENTS) if (d / f).is_file()]})
    demo = sorted((p for p in root.glob("demo-2*") if p.is_dir()), key=lambda p: p.name, reverse=True)
    out += [{"path": d.name, "lab": "demo", "time": d.name.removeprefix("demo-"), "scenario": "demo", "ok": None,
             "files": [f for f in (rundir.TIMELINE, rundir.REPORT) if (d / f).is_file()]} for d in demo]
    return out


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "labctl-serve"

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: the terminal shows the URL and errors only

    # -- checks

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def _token_ok(self, given: str | None) -> bool:
        return given is not None and secrets.compare_digest(given.encode(), self.server.token.encode())

    def _admitted(self) -> bool:
        """Loopback: the Host must be a loopback name (no DNS rebinding).
        Public: the token, in the URL or the header, on every request."""
        if self.server.public:
            given = self._query().get("token") or [""]
            ok = self._token_ok(given[0]) or self._token_ok(
                self.headers.get(TOKEN_HEADER))
        else:
            ok = host_allowed(self.headers.get("Host"), self.server.port)
        if not ok:
            self._send(HTTPStatus.FORBIDDEN, b"forbidden: token or host\n", "text/plain; charset=utf-8")
        return ok

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self._security_headers()
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _security_headers(self) -> None:
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self'; style-src 'self'; "
                         "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")

    def _json(self, doc: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json")

    # -- GET

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = urlsplit(self.path).path
        if not path.startswith("/") or not self._admitted():
            return
        if path == "/":
            self._send(HTTPStatus.OK, self.page().encode(), "text/html; charset=utf-8")
        elif path.startswith("/static/") and path[8:] in STATIC:
            self._send(HTTPStatus.OK, static_text(path[8:]).encode(), STATIC[path[8:]])
        elif path == "/api/labs":
            self._json([{"lab": f.lab_id, "scenario": f.scenario} for f in self.server.hub.current()])
        elif path == "/api/runs":
            self._json(runs_list())
        elif path == "/api/events":
            self.events(None)
        elif path.startswith("/api/lab/") and path.endswith("/events"):
            self.events(path[len("/api/lab/"):-len("/events")])
        elif path.startswith("/runs/"):
            self.run_file(path[len("/runs/"):])
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def page(self) -> str:
        token = html.escape(self.server.token, quote=True)
        return static_text("index.html").replace("{{TOKEN}}", token).replace(
            "{{Q}}", f"?token={token}" if self.server.public else "")

    def run_file(self, rel: str) -> None:
        try:
            found = run_file(rundir.runs_root(), rel)
        except UnicodeDecodeError:
            found = None
        if found is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found under the runs directory\n", "text/plain; charset=utf-8")
            return
        self._send(HTTPStatus.OK, found.read_bytes(), CONTENT_TYPES.get(found.suffix, "application/octet-stream"))

    def events(self, lab_id: str | None) -> None:
        """The SSE stream: a `reset` (the page starts over), then every update, as it comes."""
        if lab_id is not None and not labels.LAB_ID.match(lab_id):
            self._send(HTTPStatus.NOT_FOUND, b"no such lab\n", "text/plain; charset=utf-8")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self._security_headers()
        self.end_headers()
        n = 0
        try:
            self.wfile.write(sse_message({"type": "reset", "ts": time.time()}, n))
            self.wfile.flush()
            for batch in self.server.hub.stream(lab_id):
                out = b""
                for u in batch or [{"type": "clock", "ts": time.time()}]:
                    n += 1
                    out += sse_message(u, n)
                self.wfile.write(out)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return  # the page went away

    # -- POST

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if not self._admitted():
            return
        if not self._token_ok(self.headers.get(TOKEN_HEADER)):
            self._json({"error": f"the {TOKEN_HEADER} header must carry the server's token"}, HTTPStatus.FORBIDDEN)
            return
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["api", "lab"] or parts[3] != "fault" or not labels.LAB_ID.match(parts[2]):
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            self._json({"error": "send application/json"}, HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            return
        self.fault(parts[2])

    def fault(self, lab_id: str) -> None:
        try:
            body = json.loads(self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 4096)) or b"{}")
            kind, target = str(body["kind"]), str(body.get("target") or "worker")
            params = body.get("params") or {}
            if kind not in faults.FAULTS or not isinstance(params, dict):
                raise ValueError(kind)
        except (ValueError, KeyError, TypeError):
            self._json({"error": "the body must be {\"kind\": a fault of `labctl fault --help`}"},
                       HTTPStatus.BAD_REQUEST)
            return
        if lab_id not in {f.lab_id for f in self.server.hub.current()}:
            self._json({"error": f"no lab named {lab_id!r} is running"}, HTTPStatus.NOT_FOUND)
            return
        try:
            assert self.server.press_fn is not None
            did = self.server.press_fn(lab_id, kind, target, params)
        except LabError as e:
            self._json({"error": e.message()}, HTTPStatus.CONFLICT)
            return
        except Exception as e:  # the engine's own failure: the page says it, the server goes on
            self._json({"error": f"{type(e).__name__}: {e}"}, HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        self._json({"ok": True, "did": did})


def make_server(engine: Engine | None, host: str, port: int, public: bool) -> Server:
    """The server, bound and following the labs; serve_forever() runs it."""
    check_bind(host, public)
    hub = Hub(engine)

    def press_fn(lab_id: str, kind: str, target: str, params: dict[str, Any]) -> str:
        assert engine is not None
        eng = engine.clone()
        try:
            return press(eng, lab_id, kind, target, params)
        finally:
            eng.close()

    try:
        srv = Server((host, port), hub, public, press_fn=press_fn if engine is not None else None)
    except OSError as e:
        raise LabError(ExitCode.USAGE, f"cannot listen on {host}:{port} ({e.strerror or e})",
                       "pick another --port, or stop what listens there") from None
    hub.start()
    return srv
