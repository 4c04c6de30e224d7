"""compose.yaml as a user types it: `docker compose` alone, offline.

The README says compose alone runs the healthy lab. These tests run exactly
the commands a user types, with no registry reachable (the base image is the
local one labctl built), and check that the images carry no engine-side
health probe that could race `docker pause`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ROOT
from labctl.compose import ENV_FILE, checkout_project

pytestmark = pytest.mark.docker


def compose(project: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    # A small job so each run is short; everything else is compose.yaml's defaults.
    env = {**os.environ, "LAB_ITEMS": "2000"}
    env.pop("LAB_BASE_IMAGE", None)
    return subprocess.run(["docker", "compose", "-p", project, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def project(built, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A compose project in a copy of the checkout, removed with its images and volume, also on failure.

    One per module: its images are built once (by the first test that needs
    them: `up` builds what is missing) and reused."""
    name = f"lctest-{uuid.uuid4().hex[:6]}"
    src = tmp_path_factory.mktemp("compose") / "src"
    shutil.copytree(ROOT / "images", src / "images", ignore=shutil.ignore_patterns("build", "__pycache__"))
    shutil.copy(ROOT / "compose.yaml", src / "compose.yaml")
    yield name, src
    down = compose(name, "down", "--volumes", "--rmi", "local", "--timeout", "2", cwd=src)
    assert down.returncode == 0, down.stderr
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={name}"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert not left, f"containers of {name} left behind: {left}"


def logged_events(name: str, service: str, cwd: Path) -> list[dict]:
    out = compose(name, "logs", "--no-color", "--no-log-prefix", service, cwd=cwd).stdout
    evs = []
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                evs.append(json.loads(line))
            except ValueError:
                continue
    return evs


def test_compose_up_build_works_offline(project):
    """`docker compose -p x up -d --build` with no registry: the base is local, no frontend is fetched."""
    name, src = project
    p = compose(name, "up", "-d", "--build", cwd=src, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "no such host" not in p.stderr and "failed to solve" not in p.stderr
    ps = compose(name, "ps", "-a", "--format", "json", cwd=src)
    services = {json.loads(ln)["Service"] for ln in ps.stdout.splitlines() if ln.strip()}
    assert services == {"worker", "proxy", "monitor", "supervisor"}
    down = compose(name, "down", "--volumes", "--timeout", "2", cwd=src)
    assert down.returncode == 0, down.stderr


def test_attached_compose_up_returns_ten_times_in_a_row(project):
    """As a user types it: `docker compose up` returns when the job is done, every time."""
    name, src = project
    for attempt in range(10):
        p = compose(name, "up", cwd=src, timeout=600 if attempt == 0 else 120)
        assert p.returncode == 0, f"run {attempt + 1}: exit {p.returncode}\n{p.stdout[-2000:]}{p.stderr[-2000:]}"
        sup = logged_events(name, "supervisor", src)
        done = [e for e in sup if e.get("kind") == "done"]
        assert done and done[-1]["exit_code"] == 0 and done[-1]["read"] == 2000, f"run {attempt + 1}: {done}"
        # The healthy lab: 999 is an ordinary reading under plain compose.
        assert done[-1]["worker_crashes"] == 0 and done[-1]["dead_lettered"] == 0, done[-1]
        # The data's fault points: -10 and -25 are reported as corrupted, 0 and 999 are squared.
        assert done[-1]["corrupted"] == 2 and done[-1]["processed"] == 1998, done[-1]
        mon = logged_events(name, "monitor", src)
        assert mon and mon[-1]["kind"] == "stop" and mon[-1]["verdict"] == "STOPPED", mon[-3:]
        # The proxy, the worker's network front, leaves after the worker's clean stop too.
        px = logged_events(name, "proxy", src)
        assert px and px[-1]["kind"] == "stop" and px[-1]["reason"] == "the worker stopped cleanly", px[-3:]
        down = compose(name, "down", "--volumes", "--timeout", "2", cwd=src)
        assert down.returncode == 0, down.stderr


def test_no_engine_side_health_probe(project, engine):
    """No HEALTHCHECK in the images nor in the containers compose creates: a
    probe exec'd as `docker pause` freezes the container wedges the engine."""
    name, src = project
    p = compose(name, "up", "-d", cwd=src, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    for service in ("worker", "proxy", "monitor", "supervisor"):
        # The images compose just built, and the ones labctl built from the same Dockerfiles.
        for ref in (f"{name}-{service}", f"{checkout_project()}-{service}:latest"):
            image = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Healthcheck}}", ref],
                                   capture_output=True, text=True, check=True)
            assert image.stdout.strip() == "null", f"{ref} has a HEALTHCHECK: {image.stdout}"
        cont = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Healthcheck}}",
                               f"{name}-{service}-1"], capture_output=True, text=True, check=True)
        hc = json.loads(cont.stdout)
        assert hc is None or hc.get("Test") == ["NONE"], f"{service}: {hc}"


def test_each_checkout_runs_its_own_images(built, tmp_path):
    """`labctl build` wrote this checkout's .env: plain `docker compose` here
    uses a project of its own (so image names no other checkout moves) and
    the bases labctl built, by content hash; the images it names exist."""
    env = dict(line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if line and line[0] != "#")
    assert env["COMPOSE_PROJECT_NAME"] == checkout_project() != "labctl"
    assert ":bookworm-" in env["LAB_BASE_IMAGE"] and ":bookworm-" in env["LAB_BUILDER_IMAGE"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "LAB_"))}
    p = subprocess.run(["docker", "compose", "config", "--images"], cwd=ROOT, env=clean, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.split()) == sorted(f"{checkout_project()}-{s}"
                                              for s in ("monitor", "proxy", "supervisor", "worker"))
    for image in p.stdout.split():
        assert subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0, image
    # Another checkout (another path) gets another project.
    other = tmp_path / "labctl"
    other.mkdir()
    assert checkout_project(other) != checkout_project() and checkout_project(other).startswith("labctl-")
