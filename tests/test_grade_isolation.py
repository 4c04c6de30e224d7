"""What a student's program can see from inside a grading sandbox, asked
from inside it: only `lo`, no Docker socket, no labctl source or grader
module, no expected output anywhere it can read, a read-only root, uid
10001 with no capability and no-new-privileges, and the pid, memory and CPU
limits the engine reports. And the hostile-snoop fixture, which hunts for
all of that instead of doing exercise 1, graded for real: it fails its
tests with a reason that shows there was nothing to find, and its run
leaves nothing labelled on the engine.

The probe runs as a student's program does (sandbox.run, through the
in-container driver), with a case input of random six-digit readings; the
answers the grader would expect for them ("n,n*n") are computed inside by
the probe itself and looked for in every file it can read in the writable
places, in every .py file of the image, and in every process's command line
and environment.
"""
from __future__ import annotations

import json
import random
import re

import pytest

from helpers import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

FIXTURES = ROOT / "tests" / "fixtures" / "submissions"
SNOOP = FIXTURES / "hostile-snoop"
SEED = 20261206
PROBE_TIMEOUT_S = 60.0
SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/var/run/docker", "/run/containerd/containerd.sock")
# The exercise sheet's programs under the lab's names, as they would be in an image.
LAB_PROGRAMS = {"generate_data.py", "process_data.py", "supervisor.py", "monitor.py", "worker.c"}

PROBE_BODY = r'''
MINE = "/work/src"  # this probe itself
WRITABLE = ("/work", "/tmp", "/dev/shm")
# Strings only labctl's code holds (the driver's nonce variable, its imports).
MARKERS = (b"labctl.grade", b"LABCTL_DRIVER" + b"_NONCE", b"from labctl", b"import labctl")


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def first(*paths):
    for p in paths:
        v = read(p)
        if v is not None:
            return v.strip()
    return None


def cgroup():
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    if v2:
        quota, period = (first("/sys/fs/cgroup/cpu.max") or "max 100000").split()
        return {"version": 2, "pids": first("/sys/fs/cgroup/pids.max"), "memory": first("/sys/fs/cgroup/memory.max"),
                "swap": first("/sys/fs/cgroup/memory.swap.max"), "cpu_quota": quota, "cpu_period": period}
    return {"version": 1, "pids": first("/sys/fs/cgroup/pids/pids.max"),
            "memory": first("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            "memsw": first("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
            "cpu_quota": first("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"),
            "cpu_period": first("/sys/fs/cgroup/cpu/cpu.cfs_period_us",
                                "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us")}


def writes():
    out = {}
    for p in ("/probe", "/etc/probe", "/usr/probe", "/app/probe", "/home/probe", "/var/tmp/probe",
              "/work/case/probe", "/tmp/probe", "/dev/shm/probe"):
        try:
            with open(p, "w") as f:
                f.write("x")
            os.unlink(p)
            out[p] = "ok"
        except OSError as e:
            out[p] = errno.errorcode.get(e.errno, str(e.errno))
    return out


def search(needles):
    found = {"labctl_names": [], "marked": [], "answers": [], "lab_programs": [], "scanned": 0}
    for top, dirs, files in os.walk("/", onerror=lambda e: None):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/dev", MINE)]
        for name in dirs + files:
            if "labctl" in name.lower():
                found["labctl_names"].append(os.path.join(top, name))
            if name in LAB_PROGRAMS and not top.startswith(WRITABLE):
                found["lab_programs"].append(os.path.join(top, name))
        writable = top.startswith(WRITABLE)
        for name in files:
            p = os.path.join(top, name)
            if not (writable or name.endswith(".py")) or os.path.islink(p):
                continue
            try:
                with open(p, "rb") as f:
                    data = f.read(1 << 22)
            except OSError:
                continue
            found["scanned"] += 1
            if any(m in data for m in MARKERS):
                found["marked"].append(p)
            if any(n in data for n in needles):
                found["answers"].append(p)
    return found


def processes(needles):
    out = {}
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        entry = {"role": "me" if pid == os.getpid() else "pid 1" if pid == 1 else "other"}
        for what in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    data = f.read()
            except OSError as e:
                entry[what] = errno.errorcode.get(e.errno, str(e.errno))
                continue
            entry[what] = "holds an answer" if any(n in data for n in needles) else "readable"
            if what == "cmdline":
                argv = [a.decode("utf-8", "replace") for a in data.split(b"\0") if a]
                if any("in-container process driver" in a for a in argv):
                    entry["role"] = "driver"
                    spec = json.loads(argv[-1])
                    entry["spec_keys"] = sorted(spec)
                    entry["spec_files"] = sorted(spec.get("files") or {})
        out[pid] = entry
    return out


status = dict(ln.split(":\t", 1) for ln in read("/proc/self/status").splitlines() if ":\t" in ln)
readings = [int(x) for x in sys.stdin.read().split()]
needles = [b"%d,%d" % (n, n * n) for n in readings]
mounts = {}
for ln in read("/proc/self/mountinfo").splitlines():
    left, right = ln.split(" - ", 1)
    mounts[left.split()[4]] = {"options": left.split()[5].split(","), "type": right.split()[0]}
json.dump({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "net": sorted(os.listdir("/sys/class/net")),
    "sockets": {p: os.path.lexists(p) for p in SOCKETS},
    "status": {k: status.get(k, "").strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                                      "NoNewPrivs", "Seccomp")},
    "writes": writes(), "cgroup": cgroup(), "mounts": mounts,
    "core": [ln.split()[4:6] for ln in read("/proc/self/limits").splitlines() if ln.startswith("Max core")][0],
    "search": search(needles), "processes": processes(needles), "readings": len(readings),
}, sys.stdout)
'''
PROBE = (f"import errno, json, os, sys\nSOCKETS = {SOCKETS!r}\nLAB_PROGRAMS = {sorted(LAB_PROGRAMS)!r}\n"
         + PROBE_BODY)


def grading_resources(engine, run_id: str) -> set[str]:
    from labctl import labels

    f = labels.grade_filters(run_id)
    return {c.name for c in engine.containers(f)} | set(engine.volumes(f))


@pytest.fixture(scope="module")
def sandbox(engine, built):
    from labctl.grade import runner
    from labctl.grade.sandbox import Sandbox
    from labctl.labels import new_grade_run_id

    image, base = runner.resolve_images(engine)
    run_id = new_grade_run_id()
    try:
        with Sandbox(engine, run_id=run_id, submission="isolation", image=image, builder_image=base) as sb:
            yield sb
    finally:
        left = grading_resources(engine, run_id)
        assert not left, f"the sandbox left these behind: {sorted(left)}"


@pytest.fixture(scope="module")
def probe(sandbox):
    """What the probe found, and the readings it was given."""
    from labctl.grade.sandbox import RunSpec

    rng = random.Random(SEED)
    readings = rng.sample(range(100_000, 1_000_000), 20)
    data = "".join(f"{n}\n" for n in readings).encode()
    sandbox.put_files({"probe.py": PROBE.encode()})
    r = sandbox.run(RunSpec(["python3", "/work/src/probe.py"], stdin=data, files={"input.dat": data},
                            timeout=PROBE_TIMEOUT_S))
    assert r.exit_code == 0 and r.stdout_total == len(r.stdout), r.summary(4000)
    doc = json.loads(r.stdout)
    assert doc["readings"] == len(readings)
    return doc


def test_only_loopback(probe):
    assert probe["net"] == ["lo"]


def test_no_docker_socket(probe):
    assert not any(probe["sockets"].values()), probe["sockets"]


def test_uid_10001_with_no_capability_and_no_new_privileges(engine, probe):
    assert (probe["uid"], probe["gid"], probe["groups"]) == (10001, 10001, [10001])
    caps = {k: v for k, v in probe["status"].items() if k.startswith("Cap")}
    assert caps and all(int(v, 16) == 0 for v in caps.values()), caps
    assert probe["status"]["NoNewPrivs"] == "1"
    if any("seccomp" in o for o in engine.api.info().get("SecurityOptions") or []):
        assert probe["status"]["Seccomp"] == "2", "the engine's seccomp filter applies"


def test_read_only_root_writable_only_where_the_sandbox_says(probe):
    from labctl.grade.sandbox import CASE_DIR

    outside = {p: e for p, e in probe["writes"].items() if not p.startswith((CASE_DIR, "/tmp/", "/dev/shm/"))}
    # EROFS where the directory exists; ENOENT where it does not (/app is not
    # in the base image), and a read-only root cannot grow it either.
    assert outside and set(outside.values()) <= {"EROFS", "ENOENT"}, probe["writes"]
    assert outside["/probe"] == "EROFS" and outside["/etc/probe"] == "EROFS", probe["writes"]
    inside = {p: e for p, e in probe["writes"].items() if p not in outside}
    assert set(inside.values()) == {"ok"}, inside
    m = probe["mounts"]
    assert "ro" in m["/"]["options"]
    assert m["/work"]["type"] == "tmpfs" and m["/tmp"]["type"] == "tmpfs"
    assert {"noexec", "nosuid"} <= set(m["/tmp"]["options"])
    assert probe["core"] == ["0", "0"], "no core files"


def test_limits_inside_are_the_ones_the_engine_reports(engine, sandbox, probe):
    from labctl.grade.sandbox import Limits

    hc = engine.api.inspect_container(sandbox.container)["HostConfig"]
    lim = Limits()
    assert hc["PidsLimit"] == lim.pids
    assert hc["Memory"] == hc["MemorySwap"] == int(lim.memory.removesuffix("m")) * 2**20
    cg = probe["cgroup"]
    assert int(cg["pids"]) == hc["PidsLimit"], cg
    assert int(cg["memory"]) == hc["Memory"], cg
    if cg["version"] == 1:
        if cg["memsw"] is not None:  # only with the kernel's swap accounting
            assert int(cg["memsw"]) == hc["MemorySwap"], "no swap on top of the memory"
    else:
        assert cg["swap"] == "0", cg
    assert int(cg["cpu_quota"]) / int(cg["cpu_period"]) == pytest.approx(hc["NanoCpus"] / 1e9), cg


def test_no_grader_code_or_expected_output_on_the_filesystem(probe):
    found = probe["search"]
    assert found["scanned"] > 100, found  # the image's Python library was read
    assert found["labctl_names"] == [], found["labctl_names"]
    assert found["marked"] == [], "files holding labctl's code"
    assert found["answers"] == [], "files holding the answers to the case's input"


def test_processes_hold_no_answer_and_the_driver_hides_its_environment(probe):
    procs = probe["processes"]
    assert all("holds an answer" not in (p.get("cmdline"), p.get("environ")) for p in procs.values()), procs
    drivers = [p for p in procs.values() if p["role"] == "driver"]
    assert len(drivers) == 1, procs
    # Undumpable: its environment (the result line's nonce) cannot be read...
    assert drivers[0]["environ"] == "EACCES"
    # ...but its command line can, and holds this case's spec: the input and
    # what to do, no expected output (docs/grading.md, the threat model).
    assert drivers[0]["cmdline"] == "readable" and drivers[0]["spec_files"] == ["input.dat"]
    assert not any(re.search("expect|answer|oracle|want", k) for k in drivers[0]["spec_keys"]), drivers[0]


def test_no_reference_program_in_the_sandbox(probe):
    """The lab's own answers (its supervisor image's /app) are not in a sandbox: a student's
    program could read them or run them instead of its own."""
    assert probe["search"]["lab_programs"] == []


def test_the_snoop_fails_cleanly_finds_nothing_and_leaves_nothing(engine, built, tmp_path):
    from labctl.grade import runner

    spec = json.loads((SNOOP / "expect.json").read_text())
    lines: list[str] = []
    run = runner.grade([SNOOP], runner.Options(exercises=[1], out_dir=tmp_path / "out", jobs=1, seed=SEED),
                       progress=lines.append, engine=engine)
    assert not grading_resources(engine, run.run_id), "the snoop's grading left resources behind"
    doc = json.loads((tmp_path / "out" / "hostile-snoop" / "results.json").read_text())
    assert doc["extra_data"]["grader_error"] is None, lines
    assert run.exit_code == 1, lines
    tests = {t["number"]: t for t in doc["tests"]}
    failed = {n for n, t in tests.items() if t["status"] == "failed" and "not submitted" not in t["output"]}
    assert failed == set(spec["fail"]), {n: tests[n]["output"][:800] for n in failed ^ set(spec["fail"])}
    assert tests["1.7"]["status"] == "passed", "it ends by itself, without a traceback"
    for n in failed:
        assert tests[n]["extra_data"]["time_s"] < 30, (n, tests[n]["extra_data"]["time_s"])
    out = tests["1.4"]["output"]
    assert "no INFO line holding the reading and its square" in out, out
    # What it printed, in the student's feedback: nothing of the grader's to find.
    assert re.search(r"grader files or expected outputs found: none \(\d+ names looked at",
                     out), out
    assert "/var/run/docker.sock absent" in out and "/run/docker.sock absent" in out, out
    assert "answer-like keys: none" in out and "environ not readable (Permission denied)" in out, out
    assert "nothing of the grader's to copy" in out, out
