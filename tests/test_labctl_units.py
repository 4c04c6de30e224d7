"""labctl's pure logic: scenarios, compose reading, events, truth, judging,
the oracle, the fault journal, and the CLI's errors. No engine needed."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from tenacity import wait_none

from helpers import LABCTL, ROOT
from labctl import check, cli, compose, faults, journal, labels, observe, oracle, runlog, scenario, states
from labctl.cli import parse_duration
from labctl.engine import ContainerState, Engine
from labctl.errors import EngineRefused, ExitCode, LabError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


GOOD = """
name: t
lesson: a lesson
lab: {items: 10, rate: 5}
timeline:
  - {at: 1, do: pause, for: 2}
expect:
  windows: [{step: 1, monitor: PAUSED}]
  job: {completes: true}
"""


def test_builtin_scenarios_all_parse_and_have_lessons():
    scs = scenario.builtin()
    names = {s.name for s in scs}
    assert {"scenario-crash", "scenario-pause", "scenario-partition", "scenario-sigstop", "scenario-stale-lock",
            "scenario-graceful", "scenario-corrupt", "scenario-process-data"} <= names
    assert all(s.lesson and s.path.stem == s.name for s in scs)


@pytest.mark.parametrize(
    "text, where",
    [
        (GOOD.replace("lesson: a lesson", "lesson: a lesson\ncolour: red"), "colour: unknown key"),
        (GOOD.replace("items: 10", "items: ten"), "lab.items: expected a whole number, got a string 'ten'"),
        (GOOD.replace("items: 10", "items: 2.5"), "lab.items: expected a whole number"),
        (GOOD.replace("do: pause", "do: explode"), "timeline[0].do: 'explode' is not one of"),
        (GOOD.replace("for: 2", "for: -3"), "timeline[0].for: must be 0 or more, got -3"),
        (GOOD.replace("for: 2", "for: 0"), "timeline[0].for: must be more than 0"),
        (GOOD.replace("at: 1", "at: -1"), "timeline[0].at: must be 0 or more"),
        (GOOD.replace("at: 1,", "fro: 1,"), "timeline[0].fro: unknown key"),
        (GOOD.replace("monitor: PAUSED", "monitor: SLEEPY"), "expect.windows[0].monitor: 'SLEEPY' is not one of"),
        (GOOD.replace("step: 1", "step: 4"), "expect.windows[0].step: must be 1 or less"),
        (GOOD.replace("completes: true", "completes: 1"), "expect.job.completes: expected true or false"),
        (GOOD.replace("do: pause, for: 2", "do: crash, for: 2"), "timeline[0].for: 'crash' has no inverse"),
        ("name: [1, 2]\nlesson: x\n", "name: expected a string, got a list"),
        ("- just a list\n", ": expected a mapping, got a list"),
        ("name: t\nlesson: x\nlab: {timeout_ms: 100, interval_ms: 200}\n", "lab.timeout_ms: must exceed"),
        ("name: t\n  lesson: [\n", "line 2: not valid YAML"),
    ],
)
def test_bad_scenarios_name_file_and_key(tmp_path, text, where):
    with pytest.raises(LabError) as ei:
        scenario.load(write(tmp_path, text))
    assert ei.value.code == ExitCode.BAD_SCENARIO
    assert ei.value.what.startswith("s.yaml: ")
    assert where in ei.value.what


def test_validate_cli_exit_codes(tmp_path):
    good = subprocess.run([*LABCTL, "scenarios", "--validate", str(write(tmp_path, GOOD))], capture_output=True,
                          text=True, cwd=ROOT)
    assert good.returncode == 0 and "ok (t: 1 step(s)" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("do: pause", "do: explode"))
    p = subprocess.run([*LABCTL, "scenarios", "--validate", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == ExitCode.BAD_SCENARIO
    assert p.stderr.strip().startswith("labctl: error: bad.yaml: timeline[0].do:")
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["up"], 2, "the following arguments are required"),
        (["up", "scenario-nope"], ExitCode.NOT_FOUND, "no scenario named 'scenario-nope'"),
        (["up", "scenario-pause", "--lab", "Bad_Name"], 2, "bad lab name"),
        (["fault", "explode"], 2, "invalid choice"),
        (["fault", "pause", "--for", "soon"], 2, "wants a duration"),
        (["down", "--lab", "x", "--all"], 2, "not allowed with"),
        (["up", "scenario-pause", "scenario-crash", "--lab", "one"], ExitCode.USAGE, "--lab names one lab"),
    ],
)
def test_cli_argument_errors(args, code, text):
    p = subprocess.run([*LABCTL, *args], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert p.returncode == code
    assert text in p.stderr
    assert "Traceback" not in p.stderr


def test_engine_unreachable_gives_its_exit_code_and_one_line():
    p = subprocess.run([*LABCTL, "up", "scenario-pause"], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert p.returncode == ExitCode.ENGINE_UNREACHABLE
    assert p.stderr.startswith("labctl: error: the Docker engine is not reachable")
    assert "Traceback" not in p.stderr


def test_parse_duration():
    assert parse_duration("30") == 30 and parse_duration("30s") == 30 and parse_duration("2m") == 120
    assert parse_duration("1.5s") == 1.5
    for bad in ("", "x", "-1", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


# ------------------------------------------------------------------ compose


def test_compose_interpolation_and_services():
    assert compose.interpolate("--a=${X:-5}", {}) == "--a=5"
    assert compose.interpolate("--a=${X:-5}", {"X": "7"}) == "--a=7"
    assert compose.interpolate("${X}", {}) == ""
    svcs = compose.services({"LAB_ITEMS": "123", "LAB_RESTART_LIMIT": "4"})
    assert set(svcs) == {"monitor", "proxy", "worker", "supervisor"}
    assert "--generate=123" in svcs["supervisor"].command
    assert svcs["worker"].restart == {"Name": "on-failure", "MaximumRetryCount": 4}
    for s in svcs.values():
        assert s.read_only and s.cap_drop == ["ALL"] and s.security_opt == ["no-new-privileges:true"]
        assert s.user == "10001:10001" and s.mem_limit and s.pids_limit
        assert s.mount == "/lab" and "/tmp" in s.tmpfs


def test_compose_file_is_hardened_and_never_mounts_the_socket():
    text = (ROOT / "compose.yaml").read_text()
    assert "docker.sock" not in text
    doc = yaml.safe_load(text)
    assert doc["networks"]["lab"]["internal"] is True


# ------------------------------------------------------------------ events and truth


def test_parse_log_lines():
    ts = "2026-11-29T11:00:00.500000000Z"
    ev = observe.parse_log_line("monitor", f'{ts} {{"ts": 1.0, "source": "monitor", "kind": "tick"}}')
    assert ev == {"ts": 1.0, "source": "monitor", "kind": "tick"}
    w = observe.parse_log_line("worker", f"{ts} worker[7]: warn: recovered stale lock of pid 3")
    assert w["source"] == "worker" and w["pid"] == 7 and w["level"] == "warn"
    assert w["ts"] == pytest.approx(1795950000.5)
    e = observe.parse_log_line("worker", f"{ts} ERROR: Corrupted data -10")
    assert e["level"] == "error" and e["message"] == "Corrupted data -10"
    s = observe.parse_log_line("supervisor", f"{ts} 2026-11-29 11:00:00,500 - WARNING - item 3: corrupted")
    assert s["level"] == "warning" and s["message"] == "item 3: corrupted"
    assert observe.parse_log_line("worker", "garbage") is None


def eng(ts, action, **kw):
    return {"ts": ts, "source": "engine", "kind": kw.pop("kind", "container"), "action": action,
            "service": "worker", **kw}


def test_truth_timeline_from_engine_and_journal():
    evs = [
        eng(1, "start"), eng(2, "pause"), eng(3, "unpause"),
        eng(4, "disconnect", kind="network"), eng(5, "connect", kind="network"),
        {"ts": 6, "source": "labctl", "kind": "fault", "phase": "applied", "fault": "sigstop", "target": "worker"},
        {"ts": 7, "source": "labctl", "kind": "fault", "phase": "reverted", "fault": "sigcont", "target": "worker"},
        eng(8, "die", exit_code=139), eng(9, "start"), eng(10, "die", exit_code=0),
        eng(11, "start", service="monitor"),
    ]
    assert runlog.truth_timeline(evs) == [
        (1, "RUNNING"), (2, "PAUSED"), (3, "RUNNING"), (4, "PARTITIONED"), (5, "RUNNING"), (6, "SIGSTOPPED"),
        (7, "RUNNING"), (8, "CRASHED"), (9, "RUNNING"), (10, "STOPPED")]
    tl = runlog.truth_timeline(evs)
    assert runlog.state_at(tl, 2.5) == "PAUSED" and runlog.state_at(tl, 0.5) is None


def mon(ts, verdict, heartbeat_only="ALIVE"):
    return {"ts": ts, "source": "monitor", "kind": "tick", "verdict": verdict, "heartbeat_only": heartbeat_only}


def test_judge_windows_latency_and_job(tmp_path):
    sc = scenario.load(write(tmp_path, GOOD))
    evs = [
        eng(0, "start"),
        {"ts": 1.0, "source": "labctl", "kind": "fault", "phase": "intent", "step": 1, "fault": "pause"},
        {"ts": 1.01, "source": "labctl", "kind": "fault", "phase": "applied", "step": 1, "fault": "pause"},
        eng(1.02, "pause"), mon(1.5, "HEALTHY"), mon(2.9, "PAUSED", "DEAD"),
        {"ts": 3.0, "source": "labctl", "kind": "fault", "phase": "reverted", "step": 1, "fault": "unpause"},
    ]
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"processed": 1}')
    evs.append({"ts": 9, "source": "engine", "kind": "container", "action": "die", "service": "supervisor",
                "exit_code": 0})
    checks, _ = check.judge(sc, evs, tmp_path, 10)
    by = {c.name: c for c in checks}
    assert by["step 1 pause: monitor says PAUSED"].ok
    assert by["the job completes"].ok
    late = [e if e.get("verdict") != "PAUSED" else {**e, "ts": 3.0} for e in evs]
    sc.expect.windows[0].within_ms = 1500
    (out / "summary.json").unlink()
    checks, _ = check.judge(sc, late, tmp_path, 10)
    by = {c.name: c for c in checks}
    assert not by["step 1 pause: monitor says PAUSED"].ok and "later than 1.50 s" in by[
        "step 1 pause: monitor says PAUSED"].detail
    assert not by["the job completes"].ok


# ------------------------------------------------------------------ oracle


def test_oracle_catches_lost_duplicated_and_wrong_rows(tmp_path):
    (tmp_path / "input.dat").write_bytes(b"1\n2\n-10\n999\nabc\n3")
    out = tmp_path / "out"
    out.mkdir()

    def put(results, corrupted="3,-10\n", rejected="5,Malformed input: abc\n", dead="4,999,crashed,2\n"):
        (out / "results.csv").write_text("index,n,square\n" + results)
        (out / "corrupted.csv").write_text("index,value\n" + corrupted)
        (out / "rejected.csv").write_text("index,reason\n" + rejected)
        (out / "dead-letter.csv").write_text("index,item,reason,crashes\n" + dead)

    put("1,1,1\n2,2,4\n6,3,9\n")
    assert oracle.compare(out, tmp_path / "input.dat", 999) == []
    put("1,1,1\n6,3,9\n")
    assert any("lost" in p for p in oracle.compare(out, tmp_path / "input.dat", 999))
    put("1,1,1\n2,2,4\n2,2,4\n6,3,9\n")
    assert any("more than once" in p for p in oracle.compare(out, tmp_path / "input.dat", 999))
    put("1,1,1\n2,2,5\n6,3,9\n")
    assert any("squared is 4, not 5" in p for p in oracle.compare(out, tmp_path / "input.dat", 999))
    put("1,1,1\n2,2,4\n6,3,9\n", dead="")
    assert any("dead-letter.csv" in p for p in oracle.compare(out, tmp_path / "input.dat", 999))


# ------------------------------------------------------------------ journal


def test_journal_pending_and_cut_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    journal.append("l1", {"id": "a", "phase": "intent", "fault": "pause", "target": "worker", "inverse": "unpause"})
    journal.append("l1", {"id": "a", "phase": "applied", "fault": "pause", "target": "worker", "inverse": "unpause"})
    journal.append("l1", {"id": "b", "phase": "intent", "fault": "partition", "target": "worker", "inverse": "heal"})
    journal.append("l1", {"id": "c", "phase": "intent", "fault": "crash", "target": "worker", "inverse": None})
    with open(journal.path("l1"), "a") as f:
        f.write('{"ts": 1, "kind": "fault", "phase": "rev')  # a kill -9 mid-write
    assert [p["id"] for p in journal.pending("l1")] == ["b", "a"]
    journal.append("l1", {"id": "a-revert", "of": "a", "phase": "reverted", "fault": "unpause", "target": "worker"})
    assert [p["id"] for p in journal.pending("l1")] == ["b"]
    assert json.loads(journal.path("l1").read_text().splitlines()[0])["source"] == "labctl"
    assert journal.path("l1") == tmp_path / "l1" / "journal.jsonl"


def test_fresh_lab_ids_never_collide(monkeypatch):
    seq = iter(["pause-aaaa", "pause-aaaa", "pause-bbbb", "pause-cccc", "pause-dddd"])
    monkeypatch.setattr(labels, "new_lab_id", lambda name: next(seq))
    monkeypatch.setattr(cli.lab, "lab_ids", lambda engine: ["pause-bbbb"])
    monkeypatch.setattr(cli.Engine, "open", classmethod(lambda cls, timeout=60: None))
    sc = scenario.resolve("scenario-pause")
    assert cli.fresh_ids([sc, sc, sc]) == ["pause-aaaa", "pause-cccc", "pause-dddd"]


# ------------------------------------------------------------------ the fault registry


class RecordingEngine:
    """Records which engine call each fault makes; a container that dies at the first kill."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.pid = 10

    def inspect(self, name):
        return ContainerState("id", name, "running", None, 0, self.pid, {}, [])

    def exec(self, name, cmd, user=None):
        self.calls.append(("exec", name, cmd[-1]))
        self.pid += 1  # the crash: a new process, by the restart policy
        return 0, ""

    def __getattr__(self, call):
        return lambda *args, **kw: self.calls.append((call, *args))


MECHANISMS = {
    "crash": ("exec", "labctl-l1-worker", "kill -KILL -1"),
    "kill": ("kill", "labctl-l1-worker", "SIGKILL"),
    "pause": ("pause", "labctl-l1-worker"),
    "unpause": ("unpause", "labctl-l1-worker"),
    "sigstop": ("exec", "labctl-l1-worker", "kill -STOP -1"),
    "sigcont": ("exec", "labctl-l1-worker", "kill -CONT -1"),
    # The worker lives in the proxy's network namespace: its link is the proxy's.
    "partition": ("disconnect", "labctl-l1-net", "labctl-l1-proxy"),
    "heal": ("reconnect", "labctl-l1-net", "labctl-l1-proxy"),
    "stop": ("stop", "labctl-l1-worker"),
    "start": ("start", "labctl-l1-worker"),
}


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_each_fault_has_its_mechanism_inverse_and_description(name):
    f = faults.get(name)
    assert f.name == name and len(f.description) > 5
    assert type(f) is not faults.Fault, "every fault is a mechanism's subclass"
    eng = RecordingEngine()
    f.apply(eng, faults.Target("l1", "worker"))
    assert eng.calls and eng.calls[0][:len(MECHANISMS[name])] == MECHANISMS[name]
    if f.inverse:
        undo = faults.get(f.inverse)
        assert undo.inverse is None, "an inverse is not undone in turn"
        assert f in faults.undoes(undo.name)


# The gray faults work through helper containers in the target's namespaces:
# tests/test_gray_faults.py drives them on a real engine.
HELPER_FAULTS = ("oneway", "oneway-off", "loss", "loss-off", "slow", "slow-off")
# The toxics of the worker's proxy, set through its control socket (tests/test_proxy.py, test_gray_faults.py).
PROXY_FAULTS = tuple(n for t in ("latency", "bandwidth", "blackhole", "slice", "reset", "delay", "duplicate",
                                 "reorder") for n in (t, f"{t}-off"))


# The worker's silent data corruption, switched by signals (tests/test_bitflip_units.py, test_bitflip_faults.py).
BITFLIP_FAULTS = ("bitflip", "bitflip-off")
# The clock faults: libfaketime's file in the target's /tmp (tests/test_clock_units.py, test_clock_faults.py).
CLOCK_FAULTS = ("skew", "skew-off", "drift", "drift-off")


def test_registry_is_the_one_list_of_faults(tmp_path):
    assert set(faults.FAULTS) == (set(MECHANISMS) | set(HELPER_FAULTS) | set(PROXY_FAULTS) | set(BITFLIP_FAULTS)
                                  | set(CLOCK_FAULTS))
    with pytest.raises(LabError) as ei:
        faults.get("explode")
    assert ei.value.code == ExitCode.USAGE and ei.value.todo == "pick one of " + ", ".join(faults.FAULTS)
    # Scenario validation offers exactly the registry's faults.
    with pytest.raises(LabError) as ei:
        scenario.load(write(tmp_path, GOOD.replace("do: pause", "do: explode")))
    assert ei.value.what.endswith("'explode' is not one of " + ", ".join(faults.FAULTS))
    assert scenario.load(write(tmp_path, GOOD)).timeline[0].inverse == "unpause"
    # The checker: only the journal can tell a signal, and only `start` is a start by hand.
    assert [f.name for f in faults.FAULTS.values() if f.journal_truth] == [
        "sigstop", "sigcont", *BITFLIP_FAULTS, *HELPER_FAULTS, *PROXY_FAULTS, *CLOCK_FAULTS]
    assert [f.name for f in faults.FAULTS.values() if f.starts_container] == ["start"]
    assert [f.name for f in faults.undoes("start")] == ["kill", "stop"] and faults.undoes("crash") == []


def test_fault_help_lists_every_fault_from_the_registry():
    p = subprocess.run([*LABCTL, "fault", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0
    for f in faults.FAULTS.values():
        line = next((ln for ln in p.stdout.splitlines() if ln.split()[:1] == [f.name]), None)
        assert line is not None and f.description in line, (f.name, p.stdout)
        assert ("(undo: " in line) == bool(f.inverse)


# ------------------------------------------------------------------ retrying a refused fault


class RefusingEngine:
    """Refuses to pause (or unpause) `refusals` times the way a loaded engine does, then obeys."""

    def __init__(self, refusals: int, status: int = 500, ignored: int = 0):
        self.refusals, self.status, self.tries = refusals, status, 0
        self.ignored = ignored  # then says yes this many times without doing it
        self.state = "running"

    def pause(self, name):
        self._obey(name, "paused")

    def unpause(self, name):
        self._obey(name, "running")

    def _obey(self, name, state):
        self.tries += 1
        if self.tries <= self.refusals:
            raise EngineRefused(f"the engine refused pausing {name}: OCI runtime pause failed: unable to freeze: "
                                "unknown", "`labctl status` shows the lab's containers", status=self.status)
        if self.tries > self.refusals + self.ignored:
            self.state = state

    def inspect(self, name):
        return ContainerState("id", name, self.state, None, 0, 10, {}, [])


def phases(lab_id: str) -> list[tuple]:
    return [(r["phase"], r.get("attempt")) for r in journal.read(lab_id)]


@pytest.fixture
def no_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCTL_RUNS", str(tmp_path))
    monkeypatch.setattr(faults, "RETRY_WAIT", wait_none())
    monkeypatch.setattr(faults, "REACH_S", 0.3)
    monkeypatch.setattr(faults, "REACH_POLL_S", 0.02)


def test_a_transient_refusal_is_tried_again_and_each_try_journaled(no_wait):
    eng = RefusingEngine(refusals=2)
    intent = faults.apply(eng, "l1", "pause", "worker", step=1)
    assert eng.tries == 3
    assert phases("l1") == [("intent", None), ("retry", 1), ("retry", 2), ("applied", 3)]
    retries = [r for r in journal.read("l1") if r["phase"] == "retry"]
    assert all("unable to freeze" in r["error"] and r["step"] == 1 and r["id"] == intent["id"] for r in retries)
    assert [p["id"] for p in journal.pending("l1")] == [intent["id"]], "applied: the revert is still owed"


def test_a_refusal_that_never_passes_fails_naming_fault_and_container(no_wait):
    eng = RefusingEngine(refusals=99)
    with pytest.raises(LabError) as ei:
        faults.apply(eng, "l1", "pause", "worker")
    assert eng.tries == faults.ATTEMPTS
    assert ei.value.code == ExitCode.ENGINE_ERROR
    assert ei.value.what.startswith(f"pause of labctl-l1-worker failed after {faults.ATTEMPTS} tries: ")
    assert "unable to freeze" in ei.value.what
    tries = list(range(1, faults.ATTEMPTS))
    assert phases("l1") == [("intent", None), *[("retry", n) for n in tries], ("failed", faults.ATTEMPTS)]
    assert "unable to freeze" in journal.read("l1")[-1]["error"]
    assert journal.pending("l1") == []


def test_a_fault_that_took_several_tries_is_timed_from_the_try_that_took(no_wait):
    eng = RefusingEngine(refusals=2)
    t0 = time.time()
    faults.apply(eng, "l1", "pause", "worker", step=1)
    recs = journal.read("l1")
    applied = recs[-1]
    assert applied["phase"] == "applied" and applied["attempt"] == 3
    assert recs[-2]["ts"] <= applied["from_ts"] <= applied["ts"] and applied["from_ts"] >= t0
    events = [{"source": "labctl", "kind": "fault", **r} for r in recs]
    assert runlog.fault_windows(events, run_end=applied["ts"] + 60)[1][0] == applied["from_ts"]
    # One try: no from_ts, the window starts at the intent, as a `docker stop` takes effect during its call.
    faults.apply(RefusingEngine(refusals=0), "l2", "pause", "worker", step=1)
    recs = journal.read("l2")
    assert "from_ts" not in recs[-1]
    events = [{"source": "labctl", "kind": "fault", **r} for r in recs]
    assert runlog.fault_windows(events, run_end=recs[-1]["ts"] + 60)[1][0] == recs[0]["ts"]


def test_a_fault_the_engine_accepted_but_did_not_do_is_tried_again(no_wait):
    eng = RefusingEngine(refusals=0, ignored=1)
    faults.apply(eng, "l1", "pause", "worker")
    assert eng.tries == 2 and eng.state == "paused"
    assert phases("l1") == [("intent", None), ("retry", 1), ("applied", 2)]
    retry = next(r for r in journal.read("l1") if r["phase"] == "retry")
    assert "the engine accepted pause but did not do it" in retry["error"]
    assert "labctl-l1-worker is running, not paused" in retry["error"]


def test_a_fault_never_done_fails_with_what_the_engine_showed(no_wait):
    eng = RefusingEngine(refusals=0, ignored=99)
    with pytest.raises(LabError) as ei:
        faults.apply(eng, "l1", "pause", "worker")
    assert eng.tries == faults.ATTEMPTS and ei.value.code == ExitCode.ENGINE_ERROR
    assert "did not do it" in ei.value.what and "is running, not paused" in ei.value.what


@pytest.mark.parametrize("name,shown,done", [
    ("kill", "running", "exited"), ("stop", "running", "exited"), ("start", "exited", "running"),
    ("pause", "running", "paused"), ("unpause", "paused", "running")])
def test_each_engine_fault_knows_the_state_it_must_reach(name, shown, done):
    class Shows:
        def __init__(self, status):
            self.status = status

        def inspect(self, c):
            return ContainerState("id", c, self.status, None, 0, 10, {}, ["labctl-l1-net"])

    f, t = faults.get(name), faults.Target("l1", "worker")
    assert f.reached(Shows(shown), t) == f"labctl-l1-worker is {shown}, not " + (
        {"kill": "exited or dead", "stop": "exited or dead", "start": "running or restarting",
         "pause": "paused", "unpause": "running or restarting or exited"}[name])
    assert f.reached(Shows(done), t) is None
    # The network: partition is done once the worker's namespace owner (the
    # proxy) is off the lab's network, heal once it is back.
    assert faults.get("partition").reached(Shows("running"), t) == "labctl-l1-proxy is still on labctl-l1-net"
    assert faults.get("heal").reached(Shows("running"), t) is None


def test_a_refusal_that_cannot_pass_is_not_tried_again(no_wait):
    eng = RefusingEngine(refusals=99, status=409)  # e.g. the container is not running
    with pytest.raises(LabError) as ei:
        faults.apply(eng, "l1", "pause", "worker")
    assert eng.tries == 1 and ei.value.what.startswith("pause of labctl-l1-worker failed: ")
    assert phases("l1") == [("intent", None), ("failed", 1)]


def test_a_revert_is_tried_again_too(no_wait):
    intent = faults.apply(RefusingEngine(refusals=0), "l1", "pause", "worker")
    faults.revert(RefusingEngine(refusals=1), "l1", intent)
    assert phases("l1")[2:] == [("retry", 1), ("reverted", 2)]
    assert journal.read("l1")[-1]["of"] == intent["id"] and journal.pending("l1") == []


class FreezerAPI:
    """The Docker API of a loaded engine: unpause and network connect fail
    with HTTP 500 `refusals` times, the way the real engine answers."""

    def __init__(self, refusals: int):
        self.refusals, self.tries = refusals, 0
        self.status = "running"

    def refuse(self, what: str) -> None:
        import docker.errors

        self.tries += 1
        if self.tries <= self.refusals:
            response = type("Response", (), {"status_code": 500, "reason": "Internal Server Error"})()
            raise docker.errors.APIError(what, response=response, explanation=f"{what} failed: unable to thaw")

    def unpause(self, name):
        self.refuse("unpause")
        self.status = "running"

    def pause(self, name):
        self.status = "paused"

    def inspect_container(self, name):
        return {"Id": "id", "Name": f"/{name}", "State": {"Status": self.status, "Pid": 10}}


def real_engine(api) -> Engine:
    """labctl's Engine over a fake API: the refusal travels the real code path."""
    return Engine(type("Client", (), {"api": api, "close": lambda self: None})())


def test_a_refused_unpause_through_the_real_engine_is_retried(no_wait):
    api = FreezerAPI(refusals=2)
    eng = real_engine(api)
    intent = faults.apply(eng, "l1", "pause", "worker")
    faults.revert(eng, "l1", intent)
    assert api.tries == 3
    assert phases("l1")[2:] == [("retry", 1), ("retry", 2), ("reverted", 3)]
    assert journal.pending("l1") == []


def test_an_unpause_refused_for_good_is_an_engine_error_not_a_crash(no_wait):
    eng = real_engine(FreezerAPI(refusals=99))
    intent = faults.apply(eng, "l1", "pause", "worker")
    with pytest.raises(LabError) as ei:
        faults.revert(eng, "l1", intent)
    assert ei.value.code == ExitCode.ENGINE_ERROR and "unable to thaw" in ei.value.what
    assert journal.read("l1")[-1]["phase"] == "revert-failed"


# ------------------------------------------------------------------ names from one lab id


@pytest.mark.parametrize("lab_id", ["pause-ab12", "a", "x-net", "y-lab-2", "worker"])
def test_lab_id_of_every_resource_name(lab_id):
    names = [labels.container_name(lab_id, s) for s in labels.SERVICES]
    names += [labels.network_name(lab_id), labels.volume_name(lab_id)]
    assert [labels.lab_id_of(n) for n in names] == [lab_id] * 6


@pytest.mark.parametrize("name", ["labctl-base", "labctl--net", "other-pause-net", "labctl-pause-ab12-db",
                                  "labctl-Pause-net", "pause-ab12"])
def test_lab_id_of_a_foreign_name_is_none(name):
    assert labels.lab_id_of(name) is None


def test_lab_ids_come_from_labels_and_names():
    from labctl import lab

    class Listing:
        def containers(self, filters):
            return [ContainerState("1", "labctl-a-worker", "running", None, 0, 1, {labels.LAB: "a"}, [])]

        def networks(self, filters):
            return [("n1", labels.network_name("b-net")), ("n2", "labctl-base")]

        def volumes(self, filters):
            return [labels.volume_name("c"), labels.volume_name("a")]

    assert lab.lab_ids(Listing()) == ["a", "b-net", "c"]


# ------------------------------------------------------------------ heartbeat_only, and its old name


def test_heartbeat_only_is_read_under_its_name_and_its_old_one():
    new = mon(1, "PAUSED", "DEAD")
    old = {"ts": 2, "source": "monitor", "kind": "tick", "verdict": "HEALTHY", "naive": "ALIVE"}
    assert runlog.observed([new, old], states.HEARTBEAT_ONLY) == [(1, "DEAD"), (2, "ALIVE")]
    both = {**old, "ts": 3, "heartbeat_only": "DEAD"}
    assert runlog.observed([both], states.HEARTBEAT_ONLY) == [(3, "DEAD")]
    live = observe.Live("l1", "s")
    live.absorb(old)
    assert live.heartbeat_only == "ALIVE"
    live.absorb(new)
    assert live.heartbeat_only == "DEAD" and live.monitor == "PAUSED"


ALIASED = GOOD.replace("windows: [{step: 1, monitor: PAUSED}]",
                       "windows: [{step: 1, monitor: PAUSED, naive: DEAD}]\n  sees: {naive: [ALIVE]}\n"
                       "  never: {naive: [DEAD]}")


def test_scenario_key_naive_is_an_alias_of_heartbeat_only(tmp_path):
    sc = scenario.load(write(tmp_path, ALIASED))
    assert sc.expect.windows[0].heartbeat_only == "DEAD"
    assert sc.expect.sees == {"heartbeat_only": ["ALIVE"]} and sc.expect.never == {"heartbeat_only": ["DEAD"]}
    same = scenario.load(write(tmp_path, ALIASED.replace("naive:", "heartbeat_only:")))
    assert same.expect == sc.expect


@pytest.mark.parametrize(
    "text, where",
    [
        (ALIASED.replace("naive: DEAD}", "naive: DEAD, heartbeat_only: DEAD}"),
         "expect.windows[0].heartbeat_only: given twice, as 'naive' (its old name) and as 'heartbeat_only'"),
        (ALIASED.replace("naive: DEAD}", "naive: SLEEPY}"), "expect.windows[0].naive: 'SLEEPY' is not one of"),
        (ALIASED.replace("sees: {naive: [ALIVE]}", "sees: {naive: [MAYBE]}"), "expect.sees.naive[0]: 'MAYBE'"),
        (ALIASED.replace("never: {naive: [DEAD]}", "never: {naive: DEAD}"), "expect.never.naive: expected a list"),
    ],
)
def test_the_alias_errors_name_the_key_as_written(tmp_path, text, where):
    with pytest.raises(LabError) as ei:
        scenario.load(write(tmp_path, text))
    assert where in ei.value.what


def test_builtin_scenarios_use_the_new_name():
    for path in sorted(scenario.BUILTIN_DIR.glob("*.yaml")):
        expect = yaml.safe_load(path.read_text()).get("expect", {})
        keys = [k for w in expect.get("windows", []) for k in w]
        keys += list(expect.get("sees", {})) + list(expect.get("never", {}))
        assert "naive" not in keys, path.name
    windows = [w for sc in scenario.builtin() for w in sc.expect.windows]
    assert sum(w.heartbeat_only == "DEAD" for w in windows) == 7


# ------------------------------------------------------------------ compose fills the engine's record


def test_compose_for_lab_sets_the_labs_names():
    spec = compose.services({})["worker"]
    assert spec.service == "worker" and spec.build_context.is_dir() and spec.name == ""
    mine = compose.for_lab(spec, "l1", "scenario-pause", "labctl-worker:abc")
    # The worker joins the proxy's network namespace: no network or name of its own.
    assert (mine.name, mine.network, mine.volume, mine.aliases) == (
        "labctl-l1-worker", "container:labctl-l1-proxy", "labctl-l1-lab", [])
    proxy = compose.for_lab(compose.services({})["proxy"], "l1", "scenario-pause", "labctl-proxy:abc")
    assert (proxy.network, proxy.aliases) == ("labctl-l1-net", ["proxy", "worker"])
    assert mine.image == "labctl-worker:abc" and mine.labels[labels.LAB] == "l1"
    assert mine.command == spec.command and mine.restart == spec.restart
    assert spec.name == "", "the service as the file says it is left alone"
