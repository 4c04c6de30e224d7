"""docs/ci.md: its GitHub Actions and GitLab examples parse as YAML, have the
shape their CI expects, and every labctl and make command in them exists."""
from __future__ import annotations

import re
import shlex

import pytest
import yaml

from helpers import ROOT
from labctl import cli, scenario

DOC = ROOT / "docs" / "ci.md"


def examples() -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    return [yaml.safe_load(b) for b in blocks]


def commands(doc: dict) -> list[str]:
    """Every shell line of a workflow's steps or a job's script."""
    out: list[str] = []
    for job in (doc.get("jobs") or {}).values():
        out += [step["run"] for step in job.get("steps", []) if "run" in step]
    for job in doc.values():
        if isinstance(job, dict) and "script" in job:
            out += job["script"]
    return [ln for cmd in out for ln in cmd.splitlines() for ln in ln.split("&&")]


def test_both_examples_parse_with_their_shape():
    github, gitlab = examples()
    assert github["jobs"]["lab"]["steps"] and "runs-on" in github["jobs"]["lab"]
    upload = next(s for s in github["jobs"]["lab"]["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()" and {"runs/", "junit.xml"} <= set(upload["with"]["path"].split())
    job = gitlab["lab"]
    assert job["script"] and job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "junit.xml" and "runs/" in job["artifacts"]["paths"]


@pytest.mark.parametrize("which", [0, 1], ids=["github", "gitlab"])
def test_every_command_exists(which):
    lines = commands(examples()[which])
    labctl_lines = [shlex.split(ln) for ln in lines if "labctl" in ln]
    assert any("--junit" in argv for argv in labctl_lines), "the example writes the JUnit file"
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    for ln in lines:
        argv = shlex.split(ln)
        argv = argv[1:] if argv and argv[0] == "sudo" else argv
        if argv and argv[0] == "make":
            assert set(argv[1:]) <= targets, ln
        elif argv and argv[0].endswith("labctl"):
            args = cli.build_parser().parse_args(argv[1:])  # SystemExit on an unknown command or option
            for name in getattr(args, "scenarios", None) or []:
                scenario.resolve(name)
