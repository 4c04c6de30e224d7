"""`labctl doctor` runs a real smoke test: a container on the default bridge and
one on a labelled user network, each run to its end, then removed.

Unit tests drive labctl/doctor.py with a fake engine that fails the way a
broken engine does (`could not find bridge docker0`, the issue's case);
docker-marked tests run the real thing and check nothing is left behind.
"""
from __future__ import annotations

import pytest

from helpers import labctl, labelled
from labctl import doctor, images, labels
from labctl.engine import ContainerState
from labctl.errors import EngineRefused, ExitCode, LabError

BRIDGE_GONE = ("failed to create endpoint labctl-doctor-t1-probe-bridge on network bridge: "
               "could not find bridge docker0: route ip+net: no such network interface")


class FakeEngine:
    """Records every call; containers 'run' to exit 0 unless told otherwise."""

    def __init__(self, start_error: Exception | None = None, status: str = "exited", exit_code: int = 0,
                 network_error: Exception | None = None, remove_error: Exception | None = None):
        self.start_error, self.status, self.exit_code = start_error, status, exit_code
        self.network_error, self.remove_error = network_error, remove_error
        self.created: dict[str, dict] = {}
        self.networks_made: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []

    def create_probe(self, **kw) -> str:
        self.calls.append(("create", kw["name"]))
        self.created[kw["name"]] = kw
        return "id-" + kw["name"]

    def start(self, name: str) -> None:
        self.calls.append(("start", name))
        if self.start_error:
            raise self.start_error

    def inspect(self, name: str) -> ContainerState | None:
        if name not in self.created:
            return None
        return ContainerState(id="id-" + name, name=name, status=self.status,
                              exit_code=self.exit_code if self.status == "exited" else 0, restart_count=0,
                              pid=0 if self.status == "exited" else 4242, labels=self.created[name]["labels"],
                              networks=[self.created[name]["network"]])

    def logs_text(self, name: str, tail: int | str = "all") -> str:
        return "eth0 up\n" if self.exit_code == 0 else "sh: 1: eth0 missing\n"

    def create_network(self, name: str, labels: dict[str, str]) -> str:
        self.calls.append(("create_network", name))
        if self.network_error:
            raise self.network_error
        self.networks_made[name] = labels
        return "net-id"

    def remove_container(self, name: str) -> None:
        self.calls.append(("remove_container", name))
        if self.remove_error:
            raise self.remove_error
        self.created.pop(name, None)  # not found is fine, as the real engine's

    def remove_network(self, name: str) -> None:
        self.calls.append(("remove_network", name))
        self.networks_made.pop(name, None)

    def containers(self, filters: dict) -> list[ContainerState]:
        want = dict(x.split("=", 1) for x in filters["label"])
        return [st for n in list(self.created) if (st := self.inspect(n))
                and all(st.labels.get(k) == v for k, v in want.items())]

    def networks(self, filters: dict) -> list[tuple[str, str]]:
        want = dict(x.split("=", 1) for x in filters["label"])
        return [("net-id", n) for n, lb in self.networks_made.items() if all(lb.get(k) == v for k, v in want.items())]


def by_name(steps: list[doctor.Step]) -> dict[str, doctor.Step]:
    return {s.name: s for s in steps}


# ---------------------------------------------------------------------------- unit: the failure path


def test_bridge_gone_names_the_step_quotes_the_engine_and_says_what_to_do():
    refused = EngineRefused(f"the engine refused starting labctl-doctor-t1-probe-bridge: {BRIDGE_GONE}",
                            "`labctl status` shows the lab's containers", status=500)
    eng = FakeEngine(start_error=refused)
    steps = doctor.smoke(eng, "labctl-base:latest", lab_id="doctor-t1", run_deadline_s=2)
    bad = [s for s in steps if not s.ok]
    assert bad, steps
    first = bad[0]
    assert first.name == "default bridge: start it"
    assert "could not find bridge docker0" in first.detail and BRIDGE_GONE in first.detail
    assert "sudo systemctl restart docker" in first.todo and "docker0" in first.todo
    # The step after the failed start never ran: nothing waited on a container that never started.
    assert "default bridge: run it to its end" not in by_name(steps)
    # The cleanup ran, last, and removed every container it created and the network.
    assert steps[-1].name == "cleanup" and steps[-1].ok, steps[-1]
    removed = {n for c, n in eng.calls if c in ("remove_container", "remove_network")}
    assert {"labctl-doctor-t1-probe-bridge", "labctl-doctor-t1-probe-user", "labctl-doctor-t1-net"} <= removed
    assert not eng.created and not eng.networks_made


def test_the_user_network_is_tried_even_when_the_default_bridge_fails():
    eng = FakeEngine(start_error=EngineRefused(f"the engine refused starting x: {BRIDGE_GONE}", status=500))
    names = [s.name for s in doctor.smoke(eng, "img", lab_id="doctor-t2", run_deadline_s=2)]
    assert names == ["default bridge: create a container", "default bridge: start it", "user network: create it",
                     "user network: create a container", "user network: start it", "cleanup"]


def test_a_healthy_engine_passes_every_step_and_the_network_is_labelled():
    eng = FakeEngine()
    steps = doctor.smoke(eng, "labctl-base:latest", lab_id="doctor-t3", run_deadline_s=2)
    assert all(s.ok for s in steps), steps
    assert [s.name for s in steps] == ["default bridge: create a container", "default bridge: start it",
                                       "default bridge: run it to its end", "user network: create it",
                                       "user network: create a container", "user network: start it",
                                       "user network: run it to its end", "cleanup"]
    assert "eth0 up" in by_name(steps)["default bridge: run it to its end"].detail
    # Labelled and named as a lab's, so `labctl recover` / `down --all` find what a killed doctor left.
    created = [n for c, n in eng.calls if c == "create_network"]
    assert created == [labels.network_name("doctor-t3")] and labels.lab_id_of(created[0]) == "doctor-t3"
    assert not eng.networks_made and not eng.created


def test_probes_carry_the_lab_labels_and_the_sandbox_limits():
    eng = FakeEngine()
    seen: list[dict] = []
    real_create = eng.create_probe

    def create_probe(**kw):
        seen.append(kw)
        return real_create(**kw)

    eng.create_probe = create_probe  # type: ignore[method-assign]
    doctor.smoke(eng, "labctl-base:latest", lab_id="doctor-t4", run_deadline_s=2)
    assert [kw["network"] for kw in seen] == ["bridge", "labctl-doctor-t4-net"]
    for kw in seen:
        assert kw["labels"][labels.MANAGED] == "true" and kw["labels"][labels.LAB] == "doctor-t4"
        assert kw["user"] == "10001:10001" and kw["mem_limit"] and kw["pids_limit"] > 0 and kw["nano_cpus"] > 0
        assert kw["image"] == "labctl-base:latest"
    assert eng.calls[-1] == ("remove_network", "labctl-doctor-t4-net")


def test_a_container_that_never_exits_fails_its_step_by_the_deadline_saying_what_it_saw():
    eng = FakeEngine(status="running")
    steps = by_name(doctor.smoke(eng, "img", lab_id="doctor-t5", run_deadline_s=0.5))
    step = steps["default bridge: run it to its end"]
    assert not step.ok
    assert "timed out after" in step.detail and "status running" in step.detail
    assert "sudo systemctl restart docker" in step.todo
    assert steps["cleanup"].ok and not eng.created


def test_a_probe_that_exits_non_zero_quotes_its_output():
    eng = FakeEngine(exit_code=1)
    step = by_name(doctor.smoke(eng, "img", lab_id="doctor-t6", run_deadline_s=2))["default bridge: run it to its end"]
    assert not step.ok and "exited 1" in step.detail and "eth0 missing" in step.detail


def test_a_network_the_engine_refuses_skips_its_probe_and_cleanup_still_runs():
    err = LabError(ExitCode.ENGINE_ERROR, "the engine refused creating network labctl-doctor-t7-net: 500 Server "
                   "Error: failed to create endpoint: no space left on device", "see `labctl doctor`")
    eng = FakeEngine(network_error=err)
    steps = doctor.smoke(eng, "img", lab_id="doctor-t7", run_deadline_s=2)
    step = by_name(steps)["user network: create it"]
    assert not step.ok and "no space left on device" in step.detail and "docker system df" in step.todo
    assert "user network: create a container" not in by_name(steps)
    assert ("remove_network", "labctl-doctor-t7-net") in eng.calls and steps[-1].ok


def test_cleanup_that_fails_says_so_and_what_to_run():
    eng = FakeEngine(remove_error=RuntimeError("engine hiccup"))
    step = doctor.smoke(eng, "img", lab_id="doctor-t8", run_deadline_s=2)[-1]
    assert step.name == "cleanup" and not step.ok
    assert "engine hiccup" in step.detail and "left behind" in step.detail
    assert "labctl down --lab doctor-t8" in step.todo


def test_cleanup_runs_when_doctor_is_interrupted():
    eng = FakeEngine()

    def interrupted(name):
        if name.endswith("probe-user"):  # Ctrl-C while the second probe starts
            raise KeyboardInterrupt

    eng.start = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        doctor.smoke(eng, "img", lab_id="doctor-t9", run_deadline_s=2)
    removed = [n for c, n in eng.calls if c.startswith("remove_")]
    assert removed == ["labctl-doctor-t9-probe-bridge", "labctl-doctor-t9-probe-user", "labctl-doctor-t9-net"]
    assert not eng.created and not eng.networks_made


# ---------------------------------------------------------------------------- unit: build errors


@pytest.mark.parametrize("message", [
    "could not find bridge docker0: route ip+net: no such network interface",
    "failed to create endpoint quirky_hopper on network bridge: failed to add the host pair interfaces",
    "write /var/lib/docker/tmp/x: no space left on device",
    "network 3c1f... not found",
])
def test_a_build_the_engine_broke_blames_the_engine_and_quotes_it(message):
    e = LabError(ExitCode.BUILD_FAILED, f"building labctl-worker:abc failed: {message}",
                 "fix the Dockerfile or sources under images/worker")
    got = images.blame(e)
    assert got.code == ExitCode.ENGINE_ERROR
    assert message in got.what and "the Docker engine failed, not the Dockerfile" in got.what
    assert got.todo and "Dockerfile" not in got.todo
    assert ("docker system df" if "no space" in message else "sudo systemctl restart docker") in got.todo


@pytest.mark.parametrize("message", [
    "The command '/bin/sh -c make -C /src' returned a non-zero code: 2",
    "COPY failed: file not found in build context or excluded by .dockerignore: stat network.c: file does not exist",
    "dockerfile parse error line 3: unknown instruction: RUNN",
])
def test_a_build_the_dockerfile_broke_still_points_at_the_dockerfile(message):
    e = LabError(ExitCode.BUILD_FAILED, f"building labctl-worker:abc failed: {message}",
                 "fix the Dockerfile or sources under images/worker")
    assert images.blame(e) is e


def test_the_issue_s_build_error_through_build_all(monkeypatch):
    class BrokenBuild:
        def image_id(self, ref):
            return "sha256:base"

        def image_exists(self, ref):
            return False

        def build(self, path, tag, buildargs, labels, on_line):
            raise LabError(ExitCode.BUILD_FAILED, f"building {tag} failed: {BRIDGE_GONE}",
                           "fix the Dockerfile or sources under " + path)

    with pytest.raises(LabError) as err:
        images.build_all(BrokenBuild(), "labctl-base:latest", lambda s: None, lambda n, s: None)  # type: ignore[arg-type]
    assert err.value.code == ExitCode.ENGINE_ERROR
    assert "could not find bridge docker0" in err.value.what and "not the Dockerfile" in err.value.what
    assert "sudo systemctl restart docker" in (err.value.todo or "")


# ---------------------------------------------------------------------------- the real engine


def doctor_leftovers(engine) -> tuple[list[str], list[str]]:
    f = {"label": [f"{labels.MANAGED}=true", f"{labels.COMPONENT}={doctor.COMPONENT}"]}
    return [c.name for c in engine.containers(f)], [n for _, n in engine.networks(f)]


@pytest.mark.docker
def test_labctl_doctor_passes_here_lists_its_smoke_steps_and_leaves_nothing(engine, built):
    p = labctl("doctor", timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    out = " ".join(p.stdout.split())  # rich may wrap a long line
    for step in ("default bridge: create a container", "default bridge: start it",
                 "default bridge: run it to its end", "user network: create it", "user network: create a container",
                 "user network: start it", "user network: run it to its end", "cleanup"):
        assert f"ok smoke test, {step}:" in out, p.stdout
    assert "BAD" not in p.stdout
    assert doctor_leftovers(engine) == ([], [])


class KilledBeforeCleanup:
    """The real engine, but removing nothing: doctor killed before its cleanup."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def remove_container(self, name: str) -> None:
        pass

    def remove_network(self, name: str) -> None:
        pass


@pytest.mark.docker
def test_what_a_killed_doctor_leaves_is_hardened_and_recover_finds_it(engine, built, labs):
    from labctl import lab

    lab_id = labs.new("doctor")  # the labs fixture takes it down and checks, also if this test fails
    image = images.installed_base(engine)
    assert image
    steps = doctor.smoke(KilledBeforeCleanup(engine), image, lab_id=lab_id)
    assert all(s.ok for s in steps[:-1]), steps
    assert not steps[-1].ok and "left behind" in steps[-1].detail and f"--lab {lab_id}" in steps[-1].todo
    assert lab_id in lab.lab_ids(engine)
    containers, networks, _ = labelled(engine, lab_id)
    assert sorted(containers) == [labels.container_name(lab_id, "probe-bridge"),
                                  labels.container_name(lab_id, "probe-user")]
    assert networks == [labels.network_name(lab_id)]
    for name in containers:
        a = engine.api.inspect_container(name)
        hc = a["HostConfig"]
        assert a["Config"]["User"] == "10001:10001", name
        assert hc["ReadonlyRootfs"] is True and hc["CapDrop"] == ["ALL"], name
        assert "no-new-privileges:true" in hc["SecurityOpt"], name
        assert hc["Memory"] > 0 and hc["PidsLimit"] > 0 and hc["NanoCpus"] > 0 and not hc["Privileged"], name
        assert a["State"]["ExitCode"] == 0, name
    assert engine.api.inspect_network(labels.network_name(lab_id))["Internal"] is True
    d = labctl("down", "--lab", lab_id, runs=labs.runs, timeout=120)
    assert d.returncode == 0, d.stdout + d.stderr
    assert labelled(engine, lab_id) == ([], [], [])
