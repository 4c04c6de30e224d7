"""The lab's images as built: no build tools in a run-time image, a worker
that needs nothing but libc, and a builder that can link static C.

Each check runs a throwaway container (hardened like the lab's, with no
network) from the image with its own entrypoint, and removes it afterwards,
also when the check fails.
"""
from __future__ import annotations

import json
import re
import subprocess
import uuid

import pytest

pytestmark = pytest.mark.docker

SERVICES = ("worker", "monitor", "supervisor")


def image_of(service: str) -> str:
    """The image this checkout's `labctl build` tagged for a service (its
    compose project's name, so another checkout's build cannot stand in)."""
    from labctl import compose

    return f"{compose.checkout_project()}-{service}:latest"



BUILD_TOOLS = ("gcc", "cc", "c99", "make", "ld", "as", "apt-get", "dpkg", "perl")
HARDENED = ("--network", "none", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
            "--user", "10001:10001", "--pids-limit", "64", "--memory", "128m", "--tmpfs", "/tmp:size=16m")
# The worker's dynamic dependencies as the loader lists them: libc, the
# loader itself, and the kernel's vDSO (no file).
LIBC_ONLY = re.compile(r"^(linux-vdso\.so\.1|libc\.so\.6|/lib(64)?/ld-linux[-\w.]*\.so\.\d)\b")


def run_in(image: str, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    name = f"labctl-imagetest-{uuid.uuid4().hex[:8]}"
    try:
        return subprocess.run(["docker", "run", "--rm", "--name", name, *HARDENED, "--entrypoint", "sh", image,
                               "-c", script], capture_output=True, text=True, timeout=timeout)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def inspect(image: str) -> dict:
    p = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)[0]


def on_local_base(image: str) -> bool:
    """Built FROM labctl's run-time base (its label is inherited), not an
    upstream slim image, which brings apt along."""
    from labctl import labels

    return labels.BASE_RECIPE in (inspect(image)["Config"].get("Labels") or {})


@pytest.mark.parametrize("service", SERVICES)
def test_run_time_images_hold_no_build_tools(built, service):
    image = image_of(service)
    tools = BUILD_TOOLS if on_local_base(image) else tuple(t for t in BUILD_TOOLS if t not in ("apt-get", "dpkg",
                                                                                               "perl"))
    p = run_in(image, f'for t in {" ".join(tools)}; do command -v "$t" || true; done; echo done')
    assert p.returncode == 0, p.stderr
    found = [ln for ln in p.stdout.split() if ln != "done"]
    assert not found, f"{image} carries build tools: {found}"
    assert p.stdout.split()[-1:] == ["done"], p.stdout + p.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_run_time_images_are_small(built, service):
    image = image_of(service)
    if not on_local_base(image):
        pytest.skip("built on an upstream base")
    size = inspect(image)["Size"]
    assert size < 100 * 2**20, f"{image} is {size / 2**20:.0f} MB (the run-time base was about 61 MB)"


def test_the_worker_needs_only_libc(built):
    # No ldd in the image (it belongs to libc-bin): the loader lists what the binary needs.
    # Without the image's LD_PRELOAD (libfaketime, for the clock faults): the binary's own needs.
    p = run_in(image_of("worker"), 'unset LD_PRELOAD; for ld in /lib64/ld-linux*.so.* /lib/ld-linux*.so.*; do '
                                       '[ -x "$ld" ] && exec "$ld" --list /usr/local/bin/worker; done; exit 127')
    assert p.returncode == 0, p.stdout + p.stderr
    needed = [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
    assert any(ln.startswith("libc.so.6") for ln in needed), needed
    assert all(LIBC_ONLY.match(ln) for ln in needed), f"the worker needs more than libc: {needed}"


def test_the_builder_links_static_c(built, engine):
    """What grading's compile steps need: gcc, make and the static libc."""
    from labctl import images

    builder = images.local_builder_ref()
    if not engine.image_exists(builder):
        pytest.skip(f"no local builder {builder}")
    p = run_in(builder, "command -v make >/dev/null && printf 'int main(void) { return 7; }\\n' > /tmp/t.c "
                        "&& gcc -static -O2 -o /tmp/t /tmp/t.c && test -s /tmp/t && echo built")
    assert p.returncode == 0 and p.stdout.split()[-1:] == ["built"], p.stdout + p.stderr
    assert "error" not in p.stderr, p.stderr


def test_the_fault_tools_image_has_iptables_and_no_compiler(built, engine):
    from labctl import images

    ref = images.ensure_tools(engine, lambda _: None)
    p = run_in(ref, "iptables --version; for t in gcc cc make python3 apt-get; do command -v $t || true; done")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    assert lines[0].startswith("iptables v1.8") and "nf_tables" in lines[0], p.stdout
    assert [ln for ln in lines[1:] if ln.strip()] == [], f"{ref} carries more than it needs: {p.stdout}"
    assert inspect(ref)["Size"] < 40 * 2**20
