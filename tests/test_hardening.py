"""Nothing left behind, nothing lost, no one let in: the lab under abuse.

Docker-marked tests use the real engine: Ctrl-C and kill -9 of labctl in the
middle of a fault, the engine vanishing mid-run, ten labs at once, and the
containers' security settings as the engine reports them.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from helpers import LABCTL, ROOT, labctl, labelled, wait_until

docker = pytest.mark.docker


def spawn_up(tmp: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*LABCTL, "up", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "LABCTL_RUNS": str(tmp), **(env or {})})


def journal_has(tmp: Path, lab: str, phase: str, fault: str) -> bool:
    p = tmp / lab / "journal.jsonl"
    if not p.exists():
        return False
    for ln in p.read_text().splitlines():
        try:
            r = json.loads(ln)
        except ValueError:
            continue
        if r.get("phase") == phase and r.get("fault") == fault:
            return True
    return False


def nothing_paused_or_left(engine, lab: str) -> None:
    assert labelled(engine, lab) == ([], [], []), labelled(engine, lab)
    assert not [c for c in engine.containers({"status": "paused"}) if lab in c.name]


# ------------------------------------------------------------------ Ctrl-C and kill -9


@docker
@pytest.mark.parametrize("fault", ["pause", "partition"])
def test_ctrl_c_in_the_middle_of_a_fault_reverts_and_removes_everything(built, engine, tmp_path, fault):
    lab = f"t-int-{fault[:4]}-{uuid.uuid4().hex[:4]}"
    p = spawn_up(tmp_path, f"scenario-{fault}", "--lab", lab)
    try:
        wait_until(lambda: journal_has(tmp_path, lab, "applied", fault), 90, 0.1, what=f"the {fault} to be applied")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err[-2000:]
    assert "interrupted" in err
    nothing_paused_or_left(engine, lab)
    assert journal_has(tmp_path, lab, "reverted", {"pause": "unpause", "partition": "heal"}[fault])


@docker
def test_ctrl_c_while_booting_leaves_nothing(built, engine, tmp_path):
    lab = f"t-boot-{uuid.uuid4().hex[:4]}"
    p = spawn_up(tmp_path, "scenario-crash", "--lab", lab)
    wait_until(lambda: labelled(engine, lab)[0], 60, 0.05, what="the lab's first container")
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=120)
    assert p.returncode == 130
    nothing_paused_or_left(engine, lab)


@docker
@pytest.mark.parametrize("fault", ["pause", "partition"])
def test_kill_9_mid_fault_then_recover_restores_a_clean_engine(built, engine, tmp_path, fault):
    lab = f"t-k9-{fault[:4]}-{uuid.uuid4().hex[:4]}"
    p = spawn_up(tmp_path, f"scenario-{fault}", "--lab", lab)
    try:
        wait_until(lambda: journal_has(tmp_path, lab, "applied", fault), 90, 0.1, what=f"the {fault} to be applied")
        p.kill()
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    worker = engine.inspect(f"labctl-{lab}-worker")
    if fault == "pause":
        assert worker.status == "paused", "labctl died mid-pause: the worker is still frozen"
    else:
        assert f"labctl-{lab}-net" not in worker.networks, "labctl died mid-partition: still cut off"
    r = labctl("recover", runs=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"lab {lab}: reverted 1 fault(s), removed 3 container(s), 1 network(s), 1 volume(s)" in r.stdout
    nothing_paused_or_left(engine, lab)
    again = labctl("recover", runs=tmp_path)
    assert again.returncode == 0


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
        threading.Thread(target=self._accept, daemon=True).start()

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
        self.cut = True
        self.srv.close()
        self.path.unlink(missing_ok=True)
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass


@docker
def test_the_engine_vanishing_mid_run_is_reported_and_recoverable(built, engine, tmp_path):
    lab = f"t-gone-{uuid.uuid4().hex[:4]}"
    proxy = SocketProxy(Path(f"/tmp/labctl-proxy-{uuid.uuid4().hex[:6]}.sock"))
    p = spawn_up(tmp_path, "scenario-pause", "--lab", lab, env={"DOCKER_HOST": f"unix://{proxy.path}"})
    try:
        wait_until(lambda: journal_has(tmp_path, lab, "applied", "pause"), 90, 0.1, what="the pause to be applied")
        proxy.pull_the_plug()
        out, err = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 3, (out[-1500:], err[-1500:])
    assert f"lab {lab}: lost the Docker engine mid-run" in err and "labctl recover" in err
    assert "Traceback" not in err
    # The journal still knows the pause: recover (through the real engine) undoes it.
    r = labctl("recover", runs=tmp_path)
    assert r.returncode == 0 and f"lab {lab}: reverted 1 fault(s)" in r.stdout, r.stdout + r.stderr
    nothing_paused_or_left(engine, lab)


# ------------------------------------------------------------------ concurrency and security


@docker
def test_ten_labs_at_once_all_meet_their_expectations(built, engine, tmp_path):
    scs = ["scenario-pause", "scenario-partition", "scenario-crash", "scenario-corrupt", "scenario-sigstop",
           "scenario-graceful", "scenario-pause", "scenario-partition", "scenario-crash", "scenario-corrupt"]
    r = labctl("up", *scs, runs=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    labs = [d.name for d in tmp_path.iterdir() if d.is_dir()]
    assert len(labs) == 10 and len(set(labs)) == 10, "names never collide"
    for d in tmp_path.iterdir():
        meta = json.loads(next(d.glob("2*/summary.json")).read_text())
        assert meta["ok"], (d.name, [c for c in meta["checks"] if not c["ok"]])
    assert labelled(engine) == ([], [], [])


@docker
def test_containers_are_locked_down(built, engine, tmp_path):
    lab = f"t-sec-{uuid.uuid4().hex[:4]}"
    r = labctl("up", "scenario-corrupt", "--lab", lab, "--keep", runs=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
    try:
        api = engine.api
        for svc in ("worker", "monitor", "supervisor"):
            a = api.inspect_container(f"labctl-{lab}-{svc}")
            hc = a["HostConfig"]
            assert a["Config"]["User"] == "10001:10001", svc
            assert hc["ReadonlyRootfs"] is True and hc["CapDrop"] == ["ALL"], svc
            assert "no-new-privileges:true" in hc["SecurityOpt"], svc
            assert hc["Memory"] > 0 and hc["PidsLimit"] > 0 and hc["NanoCpus"] > 0, svc
            assert not hc["Privileged"]
            mounts = json.dumps(a["Mounts"]) + json.dumps(hc.get("Binds") or [])
            assert "docker.sock" not in mounts, svc
        net = api.inspect_network(f"labctl-{lab}-net")
        assert net["Internal"] is True
        # A process inside really is uid 10001 and cannot write its root.
        out = api.exec_start(api.exec_create(f"labctl-{lab}-monitor",
                                             ["sh", "-c", "id -u; touch /x 2>&1 || echo ro"])["Id"]).decode()
        assert out.split()[0] == "10001" and "ro" in out
    finally:
        labctl("down", "--lab", lab, runs=tmp_path)
    assert labelled(engine, lab) == ([], [], [])
