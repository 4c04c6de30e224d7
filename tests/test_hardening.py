"""Nothing left behind, nothing lost, no one let in: the lab under abuse.

Docker-marked tests use the real engine: Ctrl-C and kill -9 of labctl in the
middle of a fault, the engine vanishing mid-run, ten labs at once, and the
containers' security settings as the engine reports them.

Every labctl a test spawns is registered with `procs` and every lab with
`labs`: at teardown, also after a failure, the processes are stopped and the
labs taken down (their faults reverted), and nothing labelled may be left.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import uuid
from pathlib import Path

import pytest

from helpers import LABCTL, ROOT, checker_verdict, labctl, labelled, wait_until

docker = pytest.mark.docker


class Up:
    """`labctl up` in the background, its output in files (a pipe nobody
    reads while the test waits could fill and block it)."""

    def __init__(self, procs, labs, *args: str, env: dict | None = None):
        n = len(list(labs.runs.parent.glob("up-*.out")))
        self.out_path = labs.runs.parent / f"up-{n}.out"
        self.err_path = labs.runs.parent / f"up-{n}.err"
        out = procs.open(self.out_path, "w")
        err = procs.open(self.err_path, "w")
        self.p = procs.popen([*LABCTL, "up", *args], cwd=ROOT, stdout=out, stderr=err, text=True,
                             env={**os.environ, "LABCTL_RUNS": str(labs.runs), **(env or {})})

    def wait(self, timeout: float) -> tuple[int, str, str]:
        rc = self.p.wait(timeout)
        return rc, self.out_path.read_text(), self.err_path.read_text()


def journal(runs: Path, lab: str) -> list[dict]:
    p = runs / lab / "journal.jsonl"
    if not p.exists():
        return []
    out = []
    for ln in p.read_text().splitlines():
        try:
            out.append(json.loads(ln))
        except ValueError:
            continue  # a line cut by a kill -9
    return out


def journal_has(runs: Path, lab: str, phase: str, fault: str) -> bool:
    return any(r.get("phase") == phase and r.get("fault") == fault for r in journal(runs, lab))


def nothing_paused_or_left(engine, lab: str) -> None:
    assert labelled(engine, lab) == ([], [], []), labelled(engine, lab)
    assert not [c for c in engine.containers({"status": "paused"}) if lab in c.name]


def recover_args(engine, labs, lab: str) -> tuple[str, ...]:
    """`labctl recover` is `down --all`. On an engine shared with labs this
    test did not create, it would take those too: then the test recovers its
    own lab by name, which reads the same journal and reverts the same way."""
    from labctl.lab import lab_ids

    others = set(lab_ids(engine)) - set(labs.all())
    return ("down", "--lab", lab) if others else ("recover",)


# ------------------------------------------------------------------ Ctrl-C and kill -9


@docker
@pytest.mark.parametrize("fault", ["pause", "partition"])
def test_ctrl_c_in_the_middle_of_a_fault_reverts_and_removes_everything(built, engine, labs, procs, fault):
    lab = labs.new(f"int-{fault[:4]}")
    up = Up(procs, labs, f"scenario-{fault}", "--lab", lab)
    wait_until(lambda: journal_has(labs.runs, lab, "applied", fault), 90, 0.1, what=f"the {fault} to be applied")
    up.p.send_signal(signal.SIGINT)
    rc, _, err = up.wait(120)
    assert rc == 130, err[-2000:]
    assert "interrupted" in err
    nothing_paused_or_left(engine, lab)
    assert journal_has(labs.runs, lab, "reverted", {"pause": "unpause", "partition": "heal"}[fault])


@docker
def test_ctrl_c_while_booting_leaves_nothing(built, engine, labs, procs):
    lab = labs.new("boot")
    up = Up(procs, labs, "scenario-crash", "--lab", lab)
    wait_until(lambda: labelled(engine, lab)[0], 60, 0.05, what="the lab's first container")
    up.p.send_signal(signal.SIGINT)
    rc, _, err = up.wait(120)
    assert rc == 130, err[-2000:]
    nothing_paused_or_left(engine, lab)


@docker
@pytest.mark.parametrize("fault", ["pause", "partition"])
def test_kill_9_mid_fault_then_recover_restores_a_clean_engine(built, engine, labs, procs, fault):
    lab = labs.new(f"k9-{fault[:4]}")
    up = Up(procs, labs, f"scenario-{fault}", "--lab", lab)
    wait_until(lambda: journal_has(labs.runs, lab, "applied", fault), 90, 0.1, what=f"the {fault} to be applied")
    up.p.kill()
    assert up.p.wait(10) == -signal.SIGKILL
    worker = engine.inspect(f"labctl-{lab}-worker")
    if fault == "pause":
        assert worker.status == "paused", "labctl died mid-pause: the worker is still frozen"
    else:
        assert f"labctl-{lab}-net" not in worker.networks, "labctl died mid-partition: still cut off"
    r = labctl(*recover_args(engine, labs, lab), runs=labs.runs)
    assert r.returncode == 0, r.stderr
    assert f"lab {lab}: reverted 1 fault(s), removed 4 container(s), 1 network(s), 1 volume(s)" in r.stdout, r.stdout
    nothing_paused_or_left(engine, lab)
    assert journal_has(labs.runs, lab, "reverted", {"pause": "unpause", "partition": "heal"}[fault])
    again = labctl(*recover_args(engine, labs, lab), runs=labs.runs)
    assert again.returncode == 0 and f"lab {lab}: reverted" not in again.stdout, "safe to run twice"


# ------------------------------------------------------------------ the engine vanishing


class SocketProxy:
    """A unix-socket relay to the real engine that the test can pull the plug on."""

    def __init__(self, path: Path, target: str = "/var/run/docker.sock"):
        self.path, self.target = path, target
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(str(path))
        self.srv.listen(64)
        self.conns: list[socket.socket] = []
        self.cut = False
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self):
        while not self.cut:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            u = socket.socket(socket.AF_UNIX)
            u.connect(self.target)
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def pull_the_plug(self):
        """Closes the listener and every relayed connection. Safe to call twice."""
        self.cut = True
        self.srv.close()
        self.path.unlink(missing_ok=True)
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    close = pull_the_plug


@pytest.fixture
def proxy(procs):
    # In /tmp: a unix socket path must fit in 108 bytes, which tmp_path may not.
    return procs.add(SocketProxy(Path(f"/tmp/labctl-proxy-{uuid.uuid4().hex[:6]}.sock")))


@docker
def test_the_engine_vanishing_mid_run_is_reported_and_recoverable(built, engine, labs, procs, proxy):
    lab = labs.new("gone")
    up = Up(procs, labs, "scenario-pause", "--lab", lab, env={"DOCKER_HOST": f"unix://{proxy.path}"})
    wait_until(lambda: journal_has(labs.runs, lab, "applied", "pause"), 90, 0.1, what="the pause to be applied")
    proxy.pull_the_plug()
    rc, out, err = up.wait(180)
    assert rc == 3, (out[-1500:], err[-1500:])
    assert f"lab {lab}: lost the Docker engine mid-run" in err and "labctl recover" in err
    assert "Traceback" not in err
    assert engine.inspect(f"labctl-{lab}-worker").status == "paused", "the pause outlived labctl"
    # The journal still knows the pause: recover (through the real engine) undoes it.
    r = labctl(*recover_args(engine, labs, lab), runs=labs.runs)
    assert r.returncode == 0 and f"lab {lab}: reverted 1 fault(s)" in r.stdout, r.stdout + r.stderr
    nothing_paused_or_left(engine, lab)


# ------------------------------------------------------------------ concurrency and security


@docker
def test_ten_labs_at_once_all_meet_their_expectations(built, engine, labs):
    scs = ["scenario-pause", "scenario-partition", "scenario-crash", "scenario-corrupt", "scenario-sigstop",
           "scenario-graceful", "scenario-pause", "scenario-partition", "scenario-crash", "scenario-corrupt"]
    r = labctl("up", *scs, runs=labs.runs, timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    ids = labs.in_runs()
    assert len(ids) == 10, "ten labs, and their names never collide"
    assert sorted(i.rsplit("-", 1)[0] for i in ids) == sorted(s.removeprefix("scenario-") for s in scs), ids
    for lab in ids:
        runs = list((labs.runs / lab).glob("2*"))
        assert len(runs) == 1, (lab, runs)
        v = checker_verdict(runs[0])
        assert v["ok"] is True, (lab, [c for c in v["checks"] if not c["ok"]])
        assert labelled(engine, lab) == ([], [], []), f"{lab} is torn down after the run"


@docker
def test_containers_are_locked_down(built, engine, labs):
    lab = labs.new("sec")
    r = labctl("up", "scenario-corrupt", "--lab", lab, "--keep", runs=labs.runs)
    assert r.returncode == 0, r.stdout[-3000:]
    api = engine.api
    for svc in ("worker", "proxy", "monitor", "supervisor"):
        a = api.inspect_container(f"labctl-{lab}-{svc}")
        hc = a["HostConfig"]
        assert a["Config"]["User"] == "10001:10001", svc
        assert hc["ReadonlyRootfs"] is True and hc["CapDrop"] == ["ALL"], svc
        assert "no-new-privileges:true" in hc["SecurityOpt"], svc
        assert hc["Memory"] > 0 and hc["PidsLimit"] > 0 and hc["NanoCpus"] > 0, svc
        assert not hc["Privileged"], svc
        mounts = json.dumps(a["Mounts"]) + json.dumps(hc.get("Binds") or [])
        assert "docker.sock" not in mounts, svc
    net = api.inspect_network(f"labctl-{lab}-net")
    assert net["Internal"] is True
    # A process inside really is uid 10001 and cannot write its root.
    probe = "id -u; touch /x 2>/dev/null && echo rw || echo ro"
    out = api.exec_start(api.exec_create(f"labctl-{lab}-monitor", ["sh", "-c", probe])["Id"]).decode()
    assert out.split() == ["10001", "ro"], out
