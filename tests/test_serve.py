"""labctl serve: the page's safety (paths, tokens, hosts), its stream's format
and lane updates without an engine; then a real lab in a real browser
(Debian's chromium through its chromedriver): a pause shown on the page
within a second, a fault button that works, a screenshot kept."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import LABCTL, ROOT, connect_when_ready, free_port, labctl, wait_until
from labctl import journal, serve, states
from labctl.errors import LabError

SECRET = "the secret outside the runs directory"
ARTIFACTS = Path(os.environ.get("LABCTL_ARTIFACTS") or ROOT / "tests" / "artifacts")


# ------------------------------------------------------------------ fixtures without an engine


class _StubFeed:
    """A lab the hub believes runs: its id and a fixed list of updates."""

    def __init__(self, lab_id: str, updates: list[dict[str, Any]]):
        self.lab_id = lab_id
        self.scenario = "scenario-stub"
        self.updates = updates

    def since(self, n: int) -> list[dict[str, Any]]:
        return self.updates[n:]


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """A runs directory with one run, a secret beside it, and a symlink from inside pointing out."""
    root = tmp_path / "runs"
    run = root / "lab-1" / "20260101T000000Z"
    run.mkdir(parents=True)
    (run / "report.md").write_text("# report\n")
    (run / "verdict.json").write_text(json.dumps({"ok": True, "checks": [{"name": "c", "ok": True, "detail": "d"}]}))
    (run / "summary.json").write_text(json.dumps({"scenario": "scenario-pause"}))
    (tmp_path / "secret.txt").write_text(SECRET)
    (run / "link-out.txt").symlink_to(tmp_path / "secret.txt")
    (run / "dir-out").symlink_to(tmp_path)
    monkeypatch.setenv("LABCTL_RUNS", str(root))
    return root


class _Served:
    def __init__(self, srv: serve.Server, pressed: list[tuple[str, str, str, dict[str, Any]]]):
        self.srv = srv
        self.pressed = pressed
        self.port = srv.port

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """The raw path is sent as given (http.client does not normalise it)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.putrequest(method, path, skip_host=True)
            hdrs = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if body is not None:
                hdrs["Content-Length"] = str(len(body))
            for k, v in hdrs.items():
                c.putheader(k, v)
            c.endheaders(body)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()


def _serve(public: bool, host: str = "127.0.0.1"):
    pressed: list[tuple[str, str, str, dict[str, Any]]] = []

    def press(lab_id: str, kind: str, target: str, params: dict[str, Any]) -> str:
        pressed.append((lab_id, kind, target, params))
        return f"{kind} {target}"

    hub = serve.Hub(None)
    hub.feeds["lab-1"] = _StubFeed("lab-1", [{"lab": "lab-1", "type": "hello", "t0": 1.0}])  # type: ignore[assignment]
    srv = serve.Server((host, 0), hub, public=public, press_fn=press)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    return _Served(srv, pressed), t


@pytest.fixture
def served(runs):
    s, t = _serve(public=False)
    yield s
    s.srv.close()
    t.join(5)


@pytest.fixture
def served_public(runs):
    s, t = _serve(public=True)
    yield s
    s.srv.close()
    t.join(5)


# ------------------------------------------------------------------ paths


def test_a_run_file_is_served(served):
    status, body = served.request("GET", "/runs/lab-1/20260101T000000Z/report.md")
    assert (status, body) == (200, b"# report\n")
    status, body = served.request("GET", "/api/runs")
    assert status == 200
    assert json.loads(body)[0]["path"] == "lab-1/20260101T000000Z"


TRAVERSALS = [
    "/runs/../secret.txt",
    "/runs/lab-1/../../secret.txt",
    "/runs/%2e%2e/secret.txt",
    "/runs/%2E%2E/secret.txt",
    "/runs/lab-1%2f..%2f..%2fsecret.txt",
    "/runs/lab-1/20260101T000000Z/%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt",
    "/runs/%252e%252e/secret.txt",  # double-encoded: decoded once, a `%` is left
    "/runs/%252e%252e%252fsecret.txt",
    "/runs/..%5csecret.txt",  # a backslash
    "/runs/..\\secret.txt",
    "/runs//etc/passwd",  # absolute
    "/runs/%2fetc%2fpasswd",
    "/runs/%2Fetc/passwd",
    "/runs/lab-1/20260101T000000Z/link-out.txt",  # a symlink pointing out
    "/runs/lab-1/20260101T000000Z/dir-out/secret.txt",
    "/runs/%c0%ae%c0%ae/secret.txt",  # overlong UTF-8 for ..
    "/runs/lab-1/20260101T000000Z/report.md%00.png",
    "/runs/./lab-1/20260101T000000Z/report.md",
    "/runs/lab-1",  # a directory
    "/runs/",
    "/../secret.txt",
    "/static/../serve.py",
    "/static/%2e%2e/serve.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_nothing_outside_the_runs_directory(served, path):
    status, body = served.request("GET", path)
    assert status in (400, 403, 404), (path, status)
    assert SECRET.encode() not in body
    assert b"root:" not in body and b"import" not in body


def test_run_file_resolves_inside_only(runs):
    assert serve.run_file(runs, "lab-1/20260101T000000Z/report.md") == (runs / "lab-1/20260101T000000Z/report.md")
    for bad in ("../secret.txt", "%2e%2e/secret.txt", "lab-1/20260101T000000Z/link-out.txt", "/etc/passwd",
                "%2fetc%2fpasswd", "lab-1/./20260101T000000Z/report.md", "lab-1//x"):
        assert serve.run_file(runs, bad) is None, bad


# ------------------------------------------------------------------ tokens and hosts


def _fault(served, token: str | None, ctype: str = "application/json", lab: str = "lab-1",
           body: dict[str, Any] | None = None, host: str | None = None, query: str = "") -> tuple[int, bytes]:
    headers = {"Content-Type": ctype}
    if token is not None:
        headers[serve.TOKEN_HEADER] = token
    if host is not None:
        headers["Host"] = host
    return served.request("POST", f"/api/lab/{lab}/fault{query}", json.dumps(body or {"kind": "pause"}).encode(),
                          headers)


def test_a_fault_needs_the_token_in_its_header(served):
    assert _fault(served, None)[0] == 403
    assert _fault(served, "wrong")[0] == 403
    # In the URL is not enough: a link or a form could carry it; a header needs a preflight.
    assert _fault(served, None, query=f"?token={served.srv.token}")[0] == 403
    assert _fault(served, served.srv.token, ctype="text/plain")[0] == 415  # what a cross-site form can send
    assert not served.pressed
    status, body = _fault(served, served.srv.token)
    assert status == 200, body
    assert served.pressed == [("lab-1", "pause", "worker", {})]


def test_a_fault_is_checked_before_it_is_pressed(served):
    t = served.srv.token
    assert _fault(served, t, lab="no-such-lab")[0] == 404
    assert _fault(served, t, body={"kind": "format-the-disk"})[0] == 400
    assert _fault(served, t, lab="..")[0] == 404
    assert not served.pressed


def test_loopback_refuses_a_foreign_host_header(served):
    """DNS rebinding: a page from evil.example that resolves to 127.0.0.1."""
    assert served.request("GET", "/", headers={"Host": "evil.example"})[0] == 403
    assert served.request("GET", "/", headers={"Host": f"evil.example:{served.port}"})[0] == 403
    assert _fault(served, served.srv.token, host=f"evil.example:{served.port}")[0] == 403
    assert served.request("GET", "/", headers={"Host": f"localhost:{served.port}"})[0] == 200
    assert not served.pressed


def test_the_loopback_page_carries_the_token_and_no_external_fetch(served):
    status, body = served.request("GET", "/")
    page = body.decode()
    assert status == 200
    assert f'content="{served.srv.token}"' in page
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched from elsewhere
    for name in serve.STATIC:
        status, text = served.request("GET", f"/static/{name}")
        assert status == 200
        assert b"https://" not in text and b"http://" not in text.replace(b"http://www.w3.org/2000/svg", b"")


def test_public_needs_the_token_on_every_request(served_public):
    s = served_public
    assert s.request("GET", "/")[0] == 403
    assert s.request("GET", "/?token=wrong")[0] == 403
    assert s.request("GET", "/runs/lab-1/20260101T000000Z/report.md")[0] == 403
    assert s.request("GET", "/api/runs")[0] == 403
    status, body = s.request("GET", f"/?token={s.srv.token}", headers={"Host": "lab.example:80"})
    assert status == 200
    assert f"static/app.js?token={s.srv.token}" in body.decode()
    assert s.request("GET", f"/runs/lab-1/20260101T000000Z/report.md?token={s.srv.token}")[0] == 200
    assert s.srv.url().endswith(f"?token={s.srv.token}")


def test_another_address_needs_public():
    with pytest.raises(LabError) as e:
        serve.check_bind("0.0.0.0", public=False)
    assert "--public" in e.value.message()
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        serve.check_bind(host, public=False)
    serve.check_bind("0.0.0.0", public=True)


def test_cli_refuses_another_address_without_public():
    p = labctl("serve", "--host", "0.0.0.0", "--port", "1")
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("labctl: error: --host 0.0.0.0 is not a loopback address; add --public")


@pytest.mark.parametrize("host,ok", [("127.0.0.1:8080", True), ("localhost:8080", True), ("[::1]:8080", True),
                                     ("127.0.0.1:8081", False), ("evil.example:8080", False), ("", False),
                                     ("127.0.0.1.evil.example:8080", False)])
def test_host_allowed(host, ok):
    assert serve.host_allowed(host, 8080) is ok


# ------------------------------------------------------------------ the stream


def test_sse_message_format():
    msg = serve.sse_message({"type": "state", "lane": "monitor", "state": "PAUSED\nx"}, 7).decode()
    assert msg.startswith("id: 7\ndata: {")
    assert msg.endswith("}\n\n")
    assert msg.count("\n") == 3  # a newline inside a value stays escaped in the JSON
    assert json.loads(msg.split("data: ", 1)[1])["state"] == "PAUSED\nx"
    assert serve.sse_message({"a": 1}) == b'data: {"a":1}\n\n'


def test_the_stream_starts_with_a_reset_then_the_updates(served):
    c = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    c.request("GET", "/api/events", headers={"Host": f"127.0.0.1:{served.port}"})
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type") == "text/event-stream"
    first = []
    while len(first) < 2:
        line = r.readline().decode()
        if line.startswith("data: "):
            first.append(json.loads(line[6:]))
    c.close()
    assert [u["type"] for u in first] == ["reset", "hello"]


def test_lanes_from_events():
    lanes = serve.Lanes()
    out: list[dict[str, Any]] = []
    feed = [
        {"ts": 1.0, "source": "engine", "kind": "container", "action": "start", "service": "worker"},
        {"ts": 1.1, "source": "monitor", "kind": "tick", "verdict": "HEALTHY", "heartbeat_only": "ALIVE",
         "phi_suspect": False, "processed": 5, "udp_beats": 1},
        {"ts": 1.3, "source": "monitor", "kind": "tick", "verdict": "HEALTHY", "heartbeat_only": "ALIVE",
         "phi_suspect": False, "processed": 9, "udp_beats": 2},
        {"ts": 2.0, "source": "labctl", "kind": "fault", "id": "f1", "fault": "pause", "inverse": "unpause",
         "target": "worker", "phase": journal.INTENT},
        {"ts": 2.01, "source": "engine", "kind": "container", "action": "pause", "service": "worker"},
        {"ts": 2.02, "source": "labctl", "kind": "fault", "id": "f1", "fault": "pause", "target": "worker",
         "phase": journal.APPLIED},
        {"ts": 2.8, "source": "monitor", "kind": "verdict", "verdict": "PAUSED", "heartbeat_only": "ALIVE"},
        {"ts": 3.0, "source": "supervisor", "kind": "state", "state": "timed_out"},
        {"ts": 5.0, "source": "engine", "kind": "container", "action": "unpause", "service": "worker"},
        {"ts": 5.01, "source": "labctl", "kind": "fault", "id": "f1-revert", "of": "f1", "fault": "unpause",
         "target": "worker", "phase": journal.REVERTED},
    ]
    for ev in feed:
        out += lanes.absorb(ev)
    changes = [(u["lane"], u["state"]) for u in out if u["type"] == "state"]
    assert changes == [(states.TRUTH, "RUNNING"), (states.MONITOR, "HEALTHY"), (states.HEARTBEAT_ONLY, "ALIVE"),
                       (states.PHI, "ALIVE"), (states.TRUTH, "PAUSED"), (states.MONITOR, "PAUSED"),
                       (states.SUPERVISOR, "timed_out"), (states.TRUTH, "RUNNING")]
    windows = [u for u in out if u["type"] == "fault"]
    assert windows == [{"type": "fault", "id": "f1", "name": "pause", "start": 2.0, "end": None, "target": "worker"},
                       {"type": "fault", "id": "f1", "end": 5.01}]
    assert [u["type"] for u in out].count("beat") == 1
    assert [u["processed"] for u in out if u["type"] == "items"] == [5, 9]


# ------------------------------------------------------------------ a real lab, a real browser


def _browser(tmp_path: Path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/host-deps.sh installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager: never download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1700,1100", f"--user-data-dir={tmp_path / 'chromium'}",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--disable-extensions", "--disable-features=Translate",
                # Loopback only: every other name unresolvable, every other address through a dead proxy.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver))


def _lane(drv, lab_id: str, lane: str) -> str:
    return drv.execute_script(
        "const l = document.querySelector("
        "`section.lab[data-lab='${arguments[0]}'] .lane[data-lane='${arguments[1]}']`);"
        "return l ? l.dataset.state : null;", lab_id, lane) or ""


def _seen(drv, lab_id: str) -> dict[str, dict[str, float]]:
    return drv.execute_script("return window.labctlSeen[arguments[0]] || {};", lab_id)


def _click(drv, lab_id: str, kind: str) -> None:
    from selenium.webdriver.common.by import By

    drv.find_element(By.CSS_SELECTOR, f"section.lab[data-lab='{lab_id}'] .buttons button[data-kind='{kind}']").click()


def _status(drv, lab_id: str) -> str:
    return drv.execute_script(
        "const s = document.querySelector(`section.lab[data-lab='${arguments[0]}'] .status`);"
        "return s ? s.textContent : '';", lab_id)


@pytest.fixture
def browser(tmp_path):
    drv = _browser(tmp_path)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_pause_reaches_the_page_and_a_button_works(built, labs, procs, browser, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LABCTL_RUNS": str(labs.runs)}
    port = free_port()
    server_log = procs.open(tmp_path / "serve.log", "w")
    procs.popen([*LABCTL, "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=server_log,
                stderr=subprocess.STDOUT)
    connect_when_ready(port, 30).close()
    browser.get(f"http://127.0.0.1:{port}/")
    wait_until(lambda: browser.execute_script("return document.getElementById('conn').textContent") == "live",
               20, 0.1, "the page's stream")
    lab_id = labs.new("serve")
    up_log = procs.open(tmp_path / "up.log", "w")
    up = procs.popen([*LABCTL, "up", "scenario-pause", "--lab", lab_id, "--keep"], cwd=ROOT, env=env,
                     stdout=up_log, stderr=subprocess.STDOUT)
    wait_until(lambda: _lane(browser, lab_id, "monitor") == "HEALTHY", 90, 0.05, "the lab's column, HEALTHY")
    wait_until(lambda: _lane(browser, lab_id, "monitor") == "PAUSED", 60, 0.02, "the monitor lane to say PAUSED")
    browser.save_screenshot(str(ARTIFACTS / "serve-paused.png"))
    # A button: after the scenario's unpause, pause by hand, then undo it with the same button.
    wait_until(lambda: _lane(browser, lab_id, "truth") == "RUNNING" and browser.execute_script(
        f"return !!document.querySelector(\"section.lab[data-lab='{lab_id}'] button[data-kind='pause']\")"),
        30, 0.05, "the scenario's unpause, and the button to offer pause again")
    _click(browser, lab_id, "pause")
    wait_until(lambda: "done: pause" in _status(browser, lab_id), 20, 0.05, "the pause button's answer")
    wait_until(lambda: _lane(browser, lab_id, "truth") == "PAUSED", 5, 0.02, "the button's pause on the truth lane")
    wait_until(lambda: browser.execute_script(
        f"return !!document.querySelector(\"section.lab[data-lab='{lab_id}'] button[data-kind='unpause']\")"),
        5, 0.05, "the button to offer unpause")
    browser.save_screenshot(str(ARTIFACTS / "serve-button-pause.png"))
    _click(browser, lab_id, "unpause")
    wait_until(lambda: _lane(browser, lab_id, "truth") == "RUNNING", 10, 0.02, "the button's unpause")
    assert up.wait(120) in (0, 1), (tmp_path / "up.log").read_text()[-3000:]
    wait_until(lambda: browser.execute_script(
        f"const t = document.querySelector(\"section.lab[data-lab='{lab_id}'] table.verdict\");"
        "return t && !t.hidden && t.rows.length > 3;"), 30, 0.1, "the expectation table")
    browser.save_screenshot(str(ARTIFACTS / "serve-final.png"))
    _check_latency(browser, lab_id, labs.runs)
    _check_journal(labs.runs / lab_id / "journal.jsonl")
    _check_runs_browser(browser, lab_id)


def _check_runs_browser(drv, lab_id: str) -> None:
    """The finished run in the runs browser (key R): its timeline, verdict and report."""
    from selenium.webdriver.common.by import By

    drv.find_element(By.TAG_NAME, "body").send_keys("r")
    row = wait_until(lambda: drv.find_elements(By.CSS_SELECTOR, f"#runlist tr[data-run^='{lab_id}/']"), 10, 0.1,
                     "the run in the runs list")
    row[0].click()
    wait_until(lambda: drv.execute_script(
        "const i = document.getElementById('run-timeline');"
        "return i.complete && i.naturalWidth > 0 && document.querySelectorAll('#run-verdict tr').length > 3"
        " && document.getElementById('run-report').textContent.length > 50;"), 15, 0.1,
        "the run's timeline, verdict and report")
    drv.save_screenshot(str(ARTIFACTS / "serve-runs.png"))


def _check_latency(drv, lab_id: str, runs: Path) -> None:
    """From the engine's pause (its own timestamp) and from the monitor's
    PAUSED (its event's) to the page showing each: the page's own clock
    (Date.now(), the same host clock) when the lane first drew the state."""
    run = next((runs / lab_id).glob("2*"))
    evs = [json.loads(ln) for ln in (run / "events.jsonl").read_text().splitlines() if ln.strip()]
    pause = next(e["ts"] for e in evs if e["source"] == "engine" and e.get("action") == "pause"
                 and e.get("service") == "worker")
    said = next(e["ts"] for e in evs if e["source"] == "monitor" and e.get("verdict") == "PAUSED" and e["ts"] >= pause)
    seen = _seen(drv, lab_id)
    truth_s = seen["truth"]["PAUSED"] / 1000 - pause
    monitor_s = seen["monitor"]["PAUSED"] / 1000 - pause
    page_s = seen["monitor"]["PAUSED"] / 1000 - said
    report = (f"engine pause -> truth lane PAUSED {truth_s:.3f} s; engine pause -> monitor lane PAUSED "
              f"{monitor_s:.3f} s (the monitor said it {said - pause:.3f} s after the pause); "
              f"monitor's event -> page {page_s:.3f} s")
    (ARTIFACTS / "serve-latency.txt").write_text(report + "\n")
    print(report)
    assert 0 <= truth_s < 1.0, report
    assert page_s < 0.5, report
    assert monitor_s < 1.0, report


def _check_journal(path: Path) -> None:
    """The button went through labctl fault's path: journaled, applied, then reverted."""
    recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    by_hand = [r for r in recs if r.get("step") is None]
    assert [(r["fault"], r["phase"]) for r in by_hand] == [
        ("pause", "intent"), ("pause", "applied"), ("unpause", "reverted")], by_hand
