"""labctl pack / unpack (issue 11): the manifest (every member checked,
a damaged, missing, extra or unsafe one refused, naming it), install.sh's
own check, the wheel's copy of the lab's sources (the same content-hash
tags), and the whole round trip into a second engine that has never seen
the images, then a scenario there."""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from helpers import ROOT, labctl
from labctl import compose, images, pack
from labctl.errors import ExitCode, LabError

INSTALL_SH = ROOT / "scripts" / "pack-install.sh"


def make_stage(root: Path) -> Path:
    stage = root / "stage"
    (stage / "wheels").mkdir(parents=True)
    (stage / "docs").mkdir()
    (stage / pack.IMAGES).write_bytes(os.urandom(3000))
    (stage / "wheels" / "labctl-0.1.0-py3-none-any.whl").write_bytes(b"wheel" * 100)
    (stage / "docs" / "README.md").write_text("# the lab\n")
    return stage


@pytest.fixture
def packed(tmp_path) -> Path:
    out = tmp_path / "p.tar"
    pack.write_pack(make_stage(tmp_path), out, lambda s: None)
    return out


def raw_tar(path: Path, members: dict[str, bytes], manifest: dict[str, bytes] | None = None,
            manifest_text: str | None = None) -> Path:
    """A tar of members with a manifest of `manifest` (default: the members themselves)."""
    listed = members if manifest is None else manifest
    text = manifest_text if manifest_text is not None else pack.manifest_text(
        {n: hashlib.sha256(b).hexdigest() for n, b in listed.items()})
    with tarfile.open(path, "w") as tar:
        for name, data in {pack.MANIFEST: text.encode(), **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def refused(path: Path) -> str:
    with pytest.raises(LabError) as e:
        pack.verify(path, lambda s: None)
    assert e.value.code == ExitCode.BAD_PACK
    assert e.value.message().startswith(f"labctl: error: {path}: ")
    assert e.value.message().endswith("; get a fresh copy of the pack")
    return e.value.what


def test_a_written_pack_verifies_and_lists_every_member(packed):
    got = pack.verify(packed, lambda s: None)
    assert sorted(got) == ["docs/README.md", pack.IMAGES, "wheels/labctl-0.1.0-py3-none-any.whl"]
    with tarfile.open(packed) as tar:
        names = tar.getnames()
        text = tar.extractfile(pack.MANIFEST).read().decode()  # type: ignore[union-attr]
    assert names[0] == pack.MANIFEST  # first: a reader can check as it streams
    assert pack.parse_manifest(packed, text) == got


def test_a_flipped_byte_in_a_member_is_refused_naming_it(packed):
    with tarfile.open(packed) as tar:
        at = tar.getmember("docs/README.md").offset_data
    data = bytearray(packed.read_bytes())
    data[at + 2] ^= 0x01
    packed.write_bytes(bytes(data))
    assert refused(packed) == f"{packed}: member docs/README.md is damaged (sha256 mismatch)"


def test_an_extra_member_is_refused(tmp_path):
    p = raw_tar(tmp_path / "p.tar", {"a": b"1", "evil.sh": b"rm -rf /"}, manifest={"a": b"1"})
    assert refused(p) == f"{p}: member evil.sh is not in the manifest"


def test_a_missing_member_is_refused(tmp_path):
    p = raw_tar(tmp_path / "p.tar", {"a": b"1"}, manifest={"a": b"1", "images.tar.xz": b"x"})
    assert refused(p) == f"{p}: member images.tar.xz is missing"


def test_no_manifest_is_refused(tmp_path):
    p = tmp_path / "p.tar"
    with tarfile.open(p, "w") as tar:
        info = tarfile.TarInfo("a")
        tar.addfile(info, io.BytesIO(b""))
    assert refused(p) == f"{p}: member {pack.MANIFEST} is missing"


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "docs/../../evil", ".."])
def test_an_unsafe_path_is_refused_in_the_tar(tmp_path, name):
    p = raw_tar(tmp_path / "p.tar", {name: b"1"}, manifest={})
    assert "has an unsafe path" in refused(p) and repr(name) in refused(p)


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd"])
def test_an_unsafe_path_is_refused_in_the_manifest(tmp_path, name):
    p = raw_tar(tmp_path / "p.tar", {"a": b"1"}, manifest_text=f"{'0' * 64}  {name}\n")
    assert "has an unsafe path" in refused(p)


def test_a_link_a_twice_listed_member_and_a_garbled_manifest_are_refused(tmp_path):
    p = tmp_path / "link.tar"
    with tarfile.open(p, "w") as tar:
        info = tarfile.TarInfo("docs")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(info)
    assert refused(p) == f"{p}: member docs is not a plain file (a link or a device)"
    h = hashlib.sha256(b"1").hexdigest()
    p = raw_tar(tmp_path / "twice.tar", {"a": b"1"}, manifest_text=f"{h}  a\n{h}  a\n")
    assert refused(p) == f"{p}: {pack.MANIFEST} lists member a twice"
    p = raw_tar(tmp_path / "garbled.tar", {"a": b"1"}, manifest_text="not a manifest\n")
    assert refused(p) == f"{p}: {pack.MANIFEST} line 1 is not `<sha256>  <member>`"


def test_a_cut_short_or_foreign_file_is_refused(packed, tmp_path):
    with tarfile.open(packed) as tar:
        m = tar.getmember(pack.IMAGES)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(packed.read_bytes()[:m.offset_data + 100])
    assert refused(cut) in (f"{cut}: member {pack.IMAGES} is damaged (cut short)",
                            f"{cut}: member {pack.IMAGES} is damaged (sha256 mismatch)")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x89PNG" + os.urandom(2000))
    assert refused(junk).startswith(f"{junk}: not a whole labctl pack")


def test_the_cli_refuses_a_damaged_pack_in_one_line_before_touching_the_engine(packed):
    with tarfile.open(packed) as tar:
        at = tar.getmember(pack.IMAGES).offset_data
    data = bytearray(packed.read_bytes())
    data[at + 1000] ^= 0xFF
    packed.write_bytes(bytes(data))
    nowhere = "unix:///tmp/labctl-no-engine-here.sock"  # an engine touched would be exit 3
    p = labctl("--engine", nowhere, "unpack", str(packed), timeout=60)
    assert p.returncode == ExitCode.BAD_PACK == 12, p.stdout + p.stderr
    assert p.stderr == (f"labctl: error: {packed}: member {pack.IMAGES} is damaged (sha256 mismatch); "
                        "get a fresh copy of the pack\n")
    assert not (packed.parent / "p").exists()  # nothing written either


def test_the_wheel_carries_the_lab_sources_that_give_the_same_tags(tmp_path):
    src = pack.stage_source(tmp_path / "src")
    lab = src / "labctl" / "_lab"
    assert (lab / "compose.yaml").read_bytes() == compose.COMPOSE_FILE.read_bytes()
    for name, svc in compose.services({}).items():
        copy = lab / svc.build_context.relative_to(compose.ROOT)
        assert images.source_hash(copy, "base-id") == images.source_hash(svc.build_context, "base-id"), name
    text = (src / "pyproject.toml").read_text()
    assert '"_lab/compose.yaml"' in text and '"_lab/images/worker/.dockerignore"' in text


def test_install_sh_passes_shellcheck():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (make host-deps installs it)")
    p = subprocess.run(["shellcheck", str(INSTALL_SH)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout


def extracted(packed: Path, dest: Path) -> Path:
    dest.mkdir()
    with tarfile.open(packed) as tar:
        tar.extractall(dest, filter="data")
    shutil.copy2(INSTALL_SH, dest / pack.INSTALL)
    return dest


@pytest.mark.parametrize("harm", ["flip", "remove", "add"])
def test_install_sh_refuses_a_damaged_missing_or_extra_member(tmp_path, packed, harm):
    d = extracted(packed, tmp_path / "x")
    # install.sh is a member too in a real pack; here it is added after, so list it.
    with (d / pack.MANIFEST).open("a") as f:
        f.write(f"{hashlib.sha256(INSTALL_SH.read_bytes()).hexdigest()}  {pack.INSTALL}\n")
    readme = d / "docs" / "README.md"
    if harm == "flip":
        readme.write_text("# the lab!\n")
    elif harm == "remove":
        readme.unlink()
    else:
        (d / "docs" / "extra.md").write_text("x")
    p = subprocess.run(["bash", str(d / pack.INSTALL)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "LABCTL_VENV": str(tmp_path / "venv")})
    assert p.returncode == 1, p.stdout + p.stderr
    want = {"flip": "member docs/README.md is damaged (sha256 mismatch)", "remove": "member docs/README.md is missing",
            "add": "member docs/extra.md is not in the manifest"}[harm]
    assert p.stderr == f"install.sh: error: {want}; get a fresh copy of the pack\n", p.stderr
    assert not (tmp_path / "venv").exists()


# ------------------------------------------------------------------ the round trip, into an engine new to the images


@pytest.fixture(scope="module")
def lab_pack(tmp_path_factory):
    """`labctl pack` on this engine (xz level 1 here: the test checks the round trip, not the size;
    LABCTL_TEST_PACK=FILE takes a pack already written instead, to time unpacking the real one)."""
    given = os.environ.get("LABCTL_TEST_PACK")
    if given:
        return Path(given), "[4/4] the manifest and the pack\n(given) MB ("
    out = tmp_path_factory.mktemp("pack") / "lab.tar"
    t0 = time.monotonic()
    p = labctl("pack", "--output", str(out), "--level", "1", timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    print(f"\npack: {out.stat().st_size / 2**20:.0f} MB in {time.monotonic() - t0:.0f} s")
    return out, p.stdout


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_unpack_into_a_fresh_engine_then_a_scenario_runs_there(built, lab_pack, second_engine, tmp_path):
    out, said = lab_pack
    assert re.search(r"^\[4/4\] the manifest and the pack$", said, re.M) and "MB (" in said, said
    e2 = second_engine.url
    eng2 = second_engine.open()
    assert not [r for r in images.image_refs(eng2, images.local_base_ref()).values() if eng2.image_exists(r)]
    assert not eng2.image_exists(images.local_base_ref())  # it has never seen them
    eng2.close()
    t0 = time.monotonic()
    u = labctl("--engine", e2, "unpack", str(out), "--dir", str(tmp_path / "u"), timeout=900)
    took = time.monotonic() - t0
    assert u.returncode == 0, u.stdout[-3000:] + u.stderr[-3000:]
    assert re.search(r"all \d+ members match", u.stdout), u.stdout
    assert f"engine {e2}: the images labctl needs are there" in u.stdout, u.stdout
    for f in ("handout/README.md", "docs/README.md", "scenarios/scenario-partition.yaml", pack.INSTALL,
              pack.MANIFEST):
        assert (tmp_path / "u" / f).is_file(), f
    print(f"unpack into the fresh engine: {took:.0f} s\n{u.stdout}")
    d = labctl("--engine", e2, "doctor", timeout=300)
    assert d.returncode == 0, d.stdout + d.stderr
    runs = tmp_path / "runs"
    up = labctl("--engine", e2, "up", "scenario-partition", runs=runs, timeout=600)
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-3000:]
    # Found up to date: nothing built, nothing streamed (the engine has no network anyway).
    assert up.stdout.count("is up to date") >= 3 and "building" not in up.stdout, up.stdout[:3000]
    labctl("--engine", e2, "down", "--all", runs=runs, timeout=180)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_install_sh_installs_labctl_with_no_index_and_it_finds_the_images(built, lab_pack, second_engine, tmp_path):
    out, _ = lab_pack
    d = tmp_path / "lab"
    d.mkdir()
    subprocess.run(["tar", "-xf", str(out), "-C", str(d)], check=True)
    sock = second_engine.url
    env = {**os.environ, "DOCKER_HOST": sock, "LABCTL_VENV": str(tmp_path / "venv"), "PIP_FIND_LINKS": ""}
    # The second engine is this module's own: forget what the test before loaded, so it is new to them again.
    subprocess.run(["docker", "image", "prune", "-af"], env=env, capture_output=True, check=True, timeout=300)
    eng2 = second_engine.open()
    assert not eng2.image_exists(images.local_base_ref())
    eng2.close()
    t0 = time.monotonic()
    p = subprocess.run([str(d / pack.INSTALL)], capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    print(f"install.sh: {time.monotonic() - t0:.0f} s\n{p.stdout}")
    assert "install.sh: all" in p.stdout and "engine: Docker" in p.stdout and "BAD" not in p.stdout, p.stdout
    # The installed labctl (no checkout near it) computes the pack's tags: nothing to build.
    b = subprocess.run([str(tmp_path / "venv" / "bin" / "labctl"), "build"], capture_output=True, text=True,
                       timeout=300, env=env, cwd=tmp_path)
    assert b.returncode == 0, b.stdout + b.stderr
    # One line an image: the four of the worker lab and the lease lab's one (its four services share it).
    assert b.stdout.count("is up to date") == 5 and "building" not in b.stdout, b.stdout


@pytest.mark.docker
@pytest.mark.timeout(300)
def test_doctor_is_green_without_mmdebstrap_or_the_compose_plugin_once_the_bases_are_there(built, tmp_path):
    """What an unpacked machine may lack: mmdebstrap (the bases are loaded,
    not built) and the Compose plugin (labctl drives the engine itself)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(shutil.which("docker") or "/usr/bin/docker")
    (tmp_path / "cfg").mkdir()
    p = labctl("doctor", env={"PATH": str(bin_dir), "DOCKER_CONFIG": str(tmp_path / "cfg")}, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ok  mmdebstrap: not installed; not needed, both bases are there" in p.stdout, p.stdout
    assert "--  compose plugin: missing; labctl does not need it" in p.stdout, p.stdout
