"""`--junit FILE`: a run's expectations as JUnit XML, so that a CI job shows
which lesson broke. One testsuite per lab, one testcase per expectation
(classname: the scenario), a `failure` with the checker's detail when it did
not hold, and a testcase `run` failing with the error when the lab itself
broke (or was interrupted) or nothing was checked. The run directory goes in
the suite's `system-out`, where CI shows it beside the failure.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from labctl.lab import RunResult

RUN_CASE = "run"  # the testcase that stands for the lab as a whole
MESSAGE_MAX = 300  # a failure's message attribute; the whole detail is its text


def _case(suite: ET.Element, classname: str, name: str, failure: str | None, kind: str) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name)
    if failure is not None:
        f = ET.SubElement(case, "failure", message=failure[:MESSAGE_MAX], type=kind)
        f.text = failure


def _suite(root: ET.Element, r: RunResult) -> tuple[int, int]:
    suite = ET.SubElement(root, "testsuite", name=f"{r.scenario} ({r.lab_id})")
    for c in r.checks:
        _case(suite, r.scenario, c.name, None if c.ok else c.detail, "expectation")
    if r.error:
        _case(suite, r.scenario, RUN_CASE, r.error, "error")
    elif not r.checks:
        _case(suite, r.scenario, RUN_CASE, "nothing was checked", "error")
    out = ET.SubElement(suite, "system-out")
    out.text = f"run directory: {r.run_dir}\n"
    tests = len(suite.findall("testcase"))
    failures = len(suite.findall("testcase/failure"))
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    return tests, failures


def to_xml(results: list[RunResult]) -> bytes:
    """The JUnit document for these labs' results, in the order given."""
    root = ET.Element("testsuites", name="labctl")
    tests = failures = 0
    for r in results:
        t, f = _suite(root, r)
        tests, failures = tests + t, failures + f
    root.set("tests", str(tests))
    root.set("failures", str(failures))
    root.set("errors", "0")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write(path: Path, results: list[RunResult]) -> None:
    """Writes the file whole or not at all: a CI job reading a cut file would
    report a parse error instead of the lesson that broke."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(to_xml(results))
    tmp.replace(path)
