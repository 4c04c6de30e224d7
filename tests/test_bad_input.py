"""Bad input everywhere: the input file, a full volume, the supervisor's
response parser under fuzzing. Each case: a clear message, nothing lost."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness import Platform, assert_exactly_once, start_supervisor
from helpers import SUPERVISOR, load_program

sup = load_program("supervisor", SUPERVISOR)

CASES = {
    "garbage": b"12\nhello\n\x01\x02\x03\n7\n0x10\n1e3\n--5\n   \n",
    "binary-and-nuls": bytes(range(256)) + b"\n4\x005\n\x00\n9\n" + os.urandom(2000).replace(b"\n", b"") + b"\n3\n",
    "ten-mb-line": b"5\n" + b"8" * (10 * 1024 * 1024) + b"\n6\n",
    "empty": b"",
    "no-trailing-newline": b"1\n2\n3",
    "crlf": b"1\r\n2\r\n-10\r\n3\r\n",
    "only-newlines": b"\n\n\n",
}


@pytest.fixture
def platform(procs, tmp_path):
    """A restarting worker, stopped at teardown (procs), also on failure."""
    return procs.add(Platform(tmp_path, extra=["--bug-trigger", "999"])).start()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_files_lose_nothing(platform, procs, tmp_path, name):
    inp = tmp_path / "input.dat"
    inp.write_bytes(CASES[name])
    sup_p, sev = start_supervisor(procs, tmp_path, platform.port, inp)
    assert sup_p.wait(120) == 0, (tmp_path / "supervisor.log").read_text()[-2000:]
    assert_exactly_once(tmp_path / "out", inp)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # Bad input is answered, never a crash: one worker for the whole job.
    assert summary["worker_crashes"] == 0 and platform.start_times[1:] == [], (summary, platform.exits)
    lines = CASES[name].split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    assert summary["read"] == len(lines)
    assert summary["processed"] + summary["corrupted"] + summary["rejected"] + summary["dead_lettered"] == len(lines)
    if name == "ten-mb-line":
        rej = (tmp_path / "out" / "rejected.csv").read_text().splitlines()
        assert len(rej) == 2 and rej[1].startswith("2,Malformed input: line of 10485760 bytes: 8888")


def test_rejected_reasons_are_valid_csv(platform, procs, tmp_path):
    import csv
    import io

    inp = tmp_path / "input.dat"
    inp.write_bytes(b'a,b\n"quoted"\n4\n')
    p, _ = start_supervisor(procs, tmp_path, platform.port, inp)
    assert p.wait(60) == 0
    rows = list(csv.reader(io.StringIO((tmp_path / "out" / "rejected.csv").read_text())))
    assert rows == [["index", "reason"], ["1", "Malformed input: a,b"], ["2", 'Malformed input: "quoted"']]


# ------------------------------------------------------------------ a full volume


def mount_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
def test_full_volume_is_reported_and_outputs_stay_consistent(procs, tmp_path):
    # The worker exits 0 when the first supervisor's connection closes; the
    # rerun needs it back, so this platform restarts it after a clean exit too.
    platform = procs.add(Platform(tmp_path, extra=["--bug-trigger", "999"], restart="always")).start()
    out = tmp_path / "out"
    out.mkdir()
    mount_tmpfs(out, "256k")
    try:
        inp = tmp_path / "input.dat"
        inp.write_text("".join(f"{i % 100 + 1}\n" for i in range(60000)))  # ~700 KB of results
        p = subprocess.run([sys.executable, str(SUPERVISOR), "--worker", f"127.0.0.1:{platform.port}", "--input",
                            str(inp), "--output", str(out), "--give-up-s", "30", "--rate", "20000"],
                           capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 74, p.stderr[-2000:]
        assert "the output volume is full; outputs are consistent up to the last checkpoint" in p.stderr
        ck = json.loads((out / "checkpoint.json").read_text())
        assert 0 < ck["progress"]["next"] < 60000
        # Room again: the same job resumes from the checkpoint, exactly once.
        subprocess.run(["mount", "-o", "remount,size=8m", str(out)], check=True)
        # The worker saw EOF when the first supervisor died; the harness restarted it.
        q = subprocess.run([sys.executable, str(SUPERVISOR), "--worker", f"127.0.0.1:{platform.port}",
                            "--input", str(inp), "--output", str(out), "--give-up-s", "30"], capture_output=True,
                           text=True, timeout=120)
        assert q.returncode == 0, q.stderr[-2000:]
        assert "resuming from checkpoint" in q.stderr
        assert_exactly_once(out, inp)
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)


# ------------------------------------------------------------------ fuzzing the response parser


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=80))
def test_parse_response_never_fails_other_than_protocol_error(data):
    try:
        kind, value = sup.parse_response(data)
    except sup.ProtocolError:
        return
    assert kind in ("result", "corrupted", "rejected")
    if kind == "result":
        n, sq = value
        head, _, tail = data.partition(b",")
        assert n >= 0 and sq == n * n and head.isdigit() and tail.isdigit() and int(head) == n


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3037000499), min_size=1, max_size=30),
       st.integers(min_value=0, max_value=30))
# Pinned so the shifted-answers branch surely runs, whatever hypothesis draws.
@example(values=[1, 2, 3], cut=1)
def test_absorb_accepts_right_answers_and_rejects_shifted_ones(tmp_path_factory, values, cut):
    d = tmp_path_factory.mktemp("absorb")
    items = [str(v).encode() for v in values]
    out = sup.Outputs(d, "x", fresh=True)
    with open(os.devnull, "w") as devnull:
        try:
            s = sup.Supervisor(sup.Config(("x", 1), d / "in", d), items, out,
                               sup.Events("supervisor", None, stream=devnull))
            answers = [b"%d,%d" % (v, v * v) for v in values]
            cut = min(cut, len(answers))
            s.absorb(answers[:cut])
            shifted = answers[cut + 1:] + answers[:1]
            if cut < len(answers) and [a.split(b",")[0] for a in shifted] != [a.split(b",")[0] for a in answers[cut:]]:
                with pytest.raises(sup.ProtocolError):
                    s.absorb(shifted)
            s.absorb(answers[s.p.next:])
            out.checkpoint()
        finally:
            out.close()
    rows = (d / "results.csv").read_text().splitlines()[1:]
    assert rows == [f"{i},{v},{v * v}" for i, v in enumerate(values, 1)]
