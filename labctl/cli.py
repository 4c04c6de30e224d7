"""Command line. The only module that prints or decides the exit code."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.live import Live as RichLive
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from labctl import (
    __version__,
    blind,
    check,
    engines,
    faults,
    images,
    journal,
    junit,
    lab,
    labels,
    lease,
    live,
    observe,
    rundir,
    runlog,
    scenario,
    timeline,
    view,
)
from labctl import doctor as smoke_test
from labctl.engine import Connection, Engine, is_engine_gone
from labctl.errors import ExitCode, LabError
from labctl.grade import catalog as grade_catalog
from labctl.grade import runner as grade_runner

console = Console(width=None if sys.stdout.isatty() else 130)


def error(msg: str) -> None:
    """One line on stderr, never wrapped: scripts and tests read it."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()

DEMO = ("scenario-crash", "scenario-pause", "scenario-partition")


def parse_duration(text: str) -> float:
    """'30', '30s', '2m', '1.5s' -> seconds."""
    t = text.strip().lower()
    mult = 60 if t.endswith("m") else 1
    t = t.rstrip("ms") if t.endswith(("s", "m")) else t
    try:
        v = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a duration like 30s or 2m, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"wants a positive duration, got {text!r}")
    return v


def lab_name(text: str) -> str:
    try:
        return labels.check_lab_id(text)
    except LabError as e:
        raise argparse.ArgumentTypeError(e.what) from None


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"wants a positive number, got {text!r}")
    return v


def fault_help() -> str:
    """Each fault with what it does and what undoes it, from the registry."""
    width = max(map(len, faults.FAULTS))
    def settings(f: faults.Fault) -> str:
        if not f.params:
            return ""
        each = [p.name + (f"={p.default:g}" if isinstance(p.default, float) else f"={p.default}" if p.default
                          else "") + f" ({p.help})" for p in f.params]
        return f"; settings: {'; '.join(each)}; e.g. `labctl fault {f.name} " + " ".join(
            f.cli_args).upper() + "`"

    return "faults:\n" + "\n".join(
        f"  {f.name:<{width}}  {f.description}" + (f" (undo: {f.inverse})" if f.inverse else "") + settings(f)
        for f in faults.FAULTS.values())


DOCTOR_HELP = "check the engine (it must run a container), compose plugin, base image and disk"
DOCTOR_DESCRIPTION = (
    "Checks the engine, compose plugin, base image and disk, and runs a throwaway container on the default bridge "
    "and one on a labelled user network. Exit 0: all ok; 1: a check failed; "
    f"{int(ExitCode.ENGINE_UNREACHABLE)}: the engine is not reachable; "
    f"{int(ExitCode.ENGINE_ERROR)}: the engine answers but cannot run a container (the failed step says why).")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="labctl", description="Crash, pause and partition, side by side.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("--version", action="version", version=f"labctl {__version__}")
    add_engine_options(ap)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    sub.add_parser("doctor", help=DOCTOR_HELP, description=DOCTOR_DESCRIPTION)
    p = sub.add_parser("base", help="build the local run-time base and builder images from the Debian archive")
    p.add_argument("--force", action="store_true")
    p = sub.add_parser("build", help="build the lab's images (cached by source hash)")
    p.add_argument("--base", help="base image (default: upstream if present, else the local base)")
    p.add_argument("--force", action="store_true")
    add_up_parser(sub)
    add_demo_parser(sub)
    p = sub.add_parser("down", help="revert faults and remove a lab (or all)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lab", type=lab_name)
    g.add_argument("--all", action="store_true")
    sub.add_parser("recover", help="restore a clean engine: every labctl fault reverted, every lab removed")
    sub.add_parser("status", help="each lab's truth and monitor verdict now, and its containers")
    p = sub.add_parser("watch", help="the live view of labs already running (Ctrl-C detaches, the labs go on)")
    p.add_argument("labs", nargs="*", metavar="LAB", help="default: every lab")
    p = sub.add_parser("logs", help="a lab's logs")
    p.add_argument("service", nargs="?", choices=labels.ALL_SERVICES)
    p.add_argument("--lab", type=lab_name)
    p.add_argument("-f", "--follow", action="store_true")
    p = sub.add_parser("scenarios", help="list scenarios with their lessons")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--validate", metavar="FILE", help="check a scenario file, print every problem, and exit")
    g.add_argument("--schema", action="store_true", help="print every key a scenario file takes (markdown; "
                                                         "docs/scenarios.md)")
    p = sub.add_parser("check", help="judge a run from its files alone (exit 0 or 1, like a test)")
    p.add_argument("run_dir", type=Path)
    p = sub.add_parser("report", help="a run's report")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", choices=("md", "json"), default="md")
    sub.add_parser("runs", help="the recorded runs, newest first")
    add_serve_parser(sub)
    add_fault_parser(sub)
    p = sub.add_parser("grade", help="grade students' answers, each in a locked-down container",
                       description="Grades each SUBMISSION (a directory, .zip or .tar.gz of the exercise files). "
                                   "Exit 0: every test passed; 1: some failed; "
                                   f"{int(ExitCode.GRADER_ERROR)}: the grader itself broke somewhere.")
    p.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION")
    p.add_argument("--exercise", default="all", help="1, 2, 3, 4, a list like 1,3, or all (default)")
    p.add_argument("--out", type=Path, metavar="DIR", help="where the reports go (default grades/<utc-time>/)")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="submissions graded at once")
    p.add_argument("--seed", type=int, metavar="N", help="replay the generated inputs of an earlier run")
    p.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                   help="run each fault test N times; one that passes only sometimes is reported flaky")
    add_handout_parser(sub)
    add_pack_parsers(sub)
    return ap


def add_demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="crash, pause and partition side by side")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--base")
    add_junit_option(p)


def add_junit_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--junit", type=Path, metavar="FILE",
                   help="also write the expectations as JUnit XML (one testcase each; for CI), "
                        "even when a lab fails, errors or is interrupted")


def add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="a web page with every running lab live, fault buttons and the finished runs",
                       description="Serves a page (for a projector) with every running lab's lanes growing live, "
                                   "buttons for the live faults, and the finished runs. Binds to 127.0.0.1; another "
                                   "address needs --public, and then every request needs the token it prints.")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="the port (default 8080; 0: any free one)")
    p.add_argument("--public", action="store_true",
                   help="allow a non-loopback --host; a token in the URL then guards every request")


def add_up_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="run scenarios, each in its own lab, side by side")
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    p.add_argument("--lab", type=lab_name, help="lab name (one scenario only)")
    p.add_argument("--keep", action="store_true", help="leave the labs running afterwards")
    p.add_argument("--live", action="store_true",
                   help=f"play the timeline, then keep the job streaming ({live.LIVE_RATE:g} items/s at most) for "
                        "faults by hand until Ctrl-C or `labctl down`; then judge the run")
    p.add_argument("--base")
    p.add_argument("--seed", type=int, metavar="N",
                   help="a blind scenario only: the seed that picks the fault (same seed, same fault and timing)")
    p.add_argument("--answer", metavar="FAULT",
                   help="a blind scenario only: your answer, instead of being asked at the end")
    add_junit_option(p)


def add_fault_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fault", help="inject a fault into a running lab", epilog=fault_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=list(faults.FAULTS))
    p.add_argument("values", nargs="*", metavar="VALUE",
                   help="the fault's settings: in order (`loss 0.4`, `oneway worker monitor`, `slow 80`), "
                        "or as KEY=VALUE (`period_ms=500`)")
    p.add_argument("--lab", type=lab_name)
    p.add_argument("--target", default="worker", choices=(*scenario.TARGETS, *labels.LEASE_SERVICES))
    p.add_argument("--for", dest="for_s", type=parse_duration, metavar="DURATION",
                   help="revert after this long (30s, 2m); Ctrl-C reverts too")


def add_engine_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--engine", action="append", metavar="ENGINE",
                    help="a Docker context's name or a DOCKER_HOST URL (unix://, tcp://, ssh://); repeat it for "
                         "several engines: up and demo spread their labs over them (least busy first); status, "
                         "logs, fault, down and recover cover them all; other commands use the first")
    ap.add_argument("--all-engines", action="store_true",
                    help="every context in the Docker config, and the default engine")


def add_handout_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("handout", help="write the students' starting folder: skeletons, data generator, README",
                       description="Writes DIR (a valid submission for `labctl grade`): a skeleton with its contract "
                                   "for each exercise file, the data generator, and a README on running and grading.")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR, overwriting the handout's files")


def add_pack_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pack", help="the whole lab in one file, for a machine with no network",
                       description="Writes one tar: the images (docker save, xz), labctl and its dependencies as "
                                   "wheels, the scenarios, the docs, the students' handout, install.sh and a "
                                   "SHA-256 manifest of every member.")
    p.add_argument("--output", type=Path, metavar="FILE", help="default: labctl-pack-VERSION.tar here")
    p.add_argument("--level", type=int, choices=range(10), default=9, metavar="0-9",
                   help="xz compression level of the images (default 9: smallest, slowest)")
    p = sub.add_parser("unpack", help="check a pack, then load its images into the engine",
                       description="Checks every member of FILE against its manifest before anything else "
                                   f"(exit {int(ExitCode.BAD_PACK)} naming the member at fault), writes the docs, "
                                   "handout, scenarios, wheels and install.sh into DIR, and loads the images into "
                                   "the engine (every --engine named).")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--dir", type=Path, metavar="DIR", help="where the files go (default: FILE without .tar)")


def main(argv: list[str]) -> int:
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return ExitCode.USAGE if e.code not in (0, None) else ExitCode.OK
    args.unreachable = []
    try:
        # Single-engine commands (build, doctor, grade...) use the first one named.
        Engine.default_connection = engines.parse(args.engine[0]) if args.engine else Connection()
        code = int(COMMANDS[args.cmd](args))
        return int(ExitCode.ENGINE_UNREACHABLE) if code == ExitCode.OK and args.unreachable else code
    except LabError as e:
        if args.debug:
            traceback.print_exc()
        error(e.message())
        return int(e.code)
    except KeyboardInterrupt:
        error("labctl: interrupted; run `labctl recover` if anything was left behind")
        return int(ExitCode.INTERRUPTED)
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        if is_engine_gone(e):
            error(f"labctl: error: lost the Docker engine ({type(e).__name__}); start it again and run "
                      "`labctl recover`")
            return int(ExitCode.ENGINE_UNREACHABLE)
        error(f"labctl: error: {type(e).__name__}: {e}; rerun with --debug for the traceback")
        return int(ExitCode.INTERNAL)


def say(msg: str) -> None:
    console.print(msg, markup=False, highlight=False)


# ----------------------------------------------------------------------- commands


def cmd_doctor(args: argparse.Namespace) -> int:
    problems = 0

    def line(ok: bool, what: str, detail: str) -> None:
        nonlocal problems
        problems += not ok
        console.print(f"[{'green' if ok else 'red'}]{'ok ' if ok else 'BAD'}[/] {what}: {escape(detail)}",
                      highlight=False)

    try:
        engine = Engine.open(timeout=10)
        v = engine.version()
        line(True, "engine", f"Docker {v.get('Version')} (API {v.get('ApiVersion')}), reachable")
    except LabError as e:
        line(False, "engine", e.what + "; " + (e.todo or ""))
        return ExitCode.ENGINE_UNREACHABLE
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True) \
        if shutil.which("docker") else None
    if plugin is not None and plugin.returncode == 0:
        line(True, "compose plugin", plugin.stdout.strip())
    else:  # labctl drives the engine itself: only plain `docker compose up` needs it (a pack's machine may lack it)
        console.print("[yellow]-- [/] compose plugin: missing; labctl does not need it, plain `docker compose up` "
                      "does: `make` installs it into ~/.docker/cli-plugins", highlight=False)
    base = images.local_base_ref()
    has_up = engine.image_exists(images.UPSTREAM_BASE)
    has_local = engine.image_exists(base)
    line(has_up or has_local, "base image",
         images.UPSTREAM_BASE if has_up else (base if has_local else f"none; run `labctl base` (builds {base})"))
    builder = images.local_builder_ref()
    line(has_up or engine.image_exists(builder), "builder image",
         builder if engine.image_exists(builder) else f"none; run `labctl base` (builds {builder})")
    # Only building the bases needs it: with both there (a pack unpacked), its absence is fine.
    bases = has_local and engine.image_exists(builder)
    line(bool(shutil.which("mmdebstrap")) or bases, "mmdebstrap", "installed" if shutil.which("mmdebstrap") else (
        "not installed; not needed, both bases are there" if bases else "missing; apt-get install mmdebstrap"))
    free = shutil.disk_usage(engine.info().get("DockerRootDir", "/")).free / 2**30
    line(free > 3, "disk", f"{free:.1f} GiB free for the engine" + ("" if free > 3 else "; free some space"))
    image = images.installed_base(engine)
    if image is None:
        line(False, "smoke test", "not run: no base image to run; run `labctl build`")
        return ExitCode.FAILED
    # The engine can answer and still fail to run a container (its docker0 gone): the smoke test tells.
    smoke_engine = engine.with_timeout(smoke_test.CALL_TIMEOUT_S)
    try:
        steps = smoke_test.smoke(smoke_engine, image)
    finally:
        smoke_engine.close()
    for st in steps:
        line(st.ok, f"smoke test, {st.name}", st.detail if st.ok else f"{st.detail}; {st.todo}")
    if not all(st.ok for st in steps):
        return ExitCode.ENGINE_ERROR
    return ExitCode.OK if problems == 0 else ExitCode.FAILED


def cmd_base(args: argparse.Namespace) -> int:
    engine = Engine.open()
    images.build_bases(engine, say, force=args.force)
    return ExitCode.OK


def build_progress(status: Status) -> Callable[[str, str], None]:
    """The builds' output: the spinner's line on a terminal; elsewhere (logs,
    CI) each Dockerfile step and, in a long step, a line every 10 s, each
    named by its service (the images build side by side)."""
    last = [0.0]

    def on_line(service: str, line: str) -> None:
        if console.is_terminal:
            status.update(f"building {service}: {line[:90]}")
        elif line.startswith("Step ") or time.monotonic() - last[0] >= images.HEARTBEAT_S:
            last[0] = time.monotonic()
            say(f"  {service}: {line[:110]}")

    return on_line


def ensure_images(engine: Engine, base_override: str | None, build: bool) -> dict[str, str]:
    choice = images.choose_base(engine, base_override, say)
    if choice.note:
        say(f"labctl: {choice.note}")
    if build:
        with console.status("building images") as status:
            return images.build_all(engine, choice.ref, say, build_progress(status), builder=choice.builder)
    return images.require_images(engine, choice.ref, choice.builder)


def cmd_build(args: argparse.Namespace) -> int:
    engine = Engine.open()
    choice = images.choose_base(engine, args.base, say)
    if choice.note:
        say(f"labctl: {choice.note}")
    with console.status("building images") as status:
        images.build_all(engine, choice.ref, say, build_progress(status), force=args.force, builder=choice.builder)
    return ExitCode.OK


def open_engines(args: argparse.Namespace, timeout: float = 60) -> list[Engine]:
    """Every engine the command covers that answers. Each that does not is
    one line on stderr naming it (and exit 3 at the end); the command goes
    on with the others. None answering: the first one's error."""
    failed: list[LabError] = []
    found = engines.open_all(engines.connections(args.engine, args.all_engines), failed.append,
                             lambda c: Engine.open(timeout=timeout, conn=c))
    if not found:
        for e in failed[1:]:
            error(e.message())
        raise failed[0]
    for e in failed:
        error(e.message())
    args.unreachable = failed
    return found


def provision(engs: list[Engine], base: str | None) -> list[tuple[Engine, dict[str, str]]]:
    """The lab's images on every engine: built (or found up to date) on the
    first one that has a base image, then streamed from it to each engine
    that lacks them, or built there when that fails. An engine that can get
    them neither way is one line on stderr and runs no lab."""
    src = engines.source_engine(engs, lambda e: images.installed_base(e) is not None)
    refs = ensure_images(src, base, build=True)
    out = [(src, refs)]
    for eng in engs:
        if eng is src:
            continue
        try:
            engines.copy_images(src, eng, refs, say)
            out.append((eng, refs))
        except Exception as e:
            what = e.what if isinstance(e, LabError) else f"{type(e).__name__}: {e}"
            error(f"labctl: error: engine {eng.name}: streaming the images failed ({what}); building them there")
            try:
                out.append((eng, ensure_images(eng, base, build=True)))
            except Exception as e2:
                error(f"labctl: error: engine {eng.name}: no images ({e2}); its share of the labs goes elsewhere")
    return sorted(out, key=lambda er: engs.index(er[0]))  # as named: a tie in placement goes to the first


def make_runs(scenarios: list[scenario.Scenario], lab_ids: list[str], keep: bool, base: str | None,
              engs: list[Engine] | None, cancel: threading.Event, live_mode: bool) -> list[lab.LabRun]:
    """One run per scenario, placed on the engines, its images ready."""
    ready = provision(engs or [Engine.open()], base)
    if any(faults.get(st.do).needs_tools for sc in scenarios for st in sc.timeline):
        for eng, _ in ready:
            images.ensure_tools(eng, say)
    placed = [ready[i] for i in engines.place([e for e, _ in ready], len(scenarios))]
    if len(ready) > 1:
        for sc, lid, (eng, _) in zip(scenarios, lab_ids, placed, strict=True):
            say(f"lab {lid}: {sc.name} on engine {eng.name}")
    scenarios = crowd_beats(scenarios, [eng for eng, _ in placed])
    runs = [(lease.LeaseLabRun if sc.lab.kind == "lease" else lab.LabRun)(eng.clone(), sc, lid, refs, keep, cancel)
            for sc, lid, (eng, refs) in zip(scenarios, lab_ids, placed, strict=True)]
    for r in runs:
        r.live_mode = live_mode
        if live_mode:
            live.claim(r.lab_id)
    return runs


def crowd_beats(scenarios: list[scenario.Scenario], placed: list[Engine]) -> list[scenario.Scenario]:
    """Slower beats on an engine crowded with labs (scenario.for_crowd), said
    once per engine. The crowd is this run's labs and the labs already on the
    engine: a class's server where each student runs `labctl up` crowds too."""
    out = list(scenarios)
    for eng in dict.fromkeys(placed):  # each engine once, in order
        mine = [i for i, e in enumerate(placed) if e is eng]
        labs = len(mine) + len(lab.lab_ids(eng))
        if not scenario.crowded(labs, 1):
            continue  # not even on one core: no need to ask the engine
        try:
            cores = int(eng.info().get("NCPU") or 0) or os.cpu_count() or 1
        except LabError:
            cores = os.cpu_count() or 1
        if not scenario.crowded(labs, cores):
            continue
        for i in mine:
            out[i] = scenario.for_crowd(out[i])
        slowed = sum(1 for i in mine if out[i] is not scenarios[i])
        if slowed:
            where = f" on engine {eng.name}" if len(set(placed)) > 1 else ""
            say(f"labctl: {labs} labs on {cores} cores{where}: the workers of {slowed} beat every "
                f"{scenario.CROWD_HEARTBEAT_MS} ms, not {scenario.LabParams().heartbeat_ms} (a crowd has no CPU "
                "to spare for fast beats; silence waits for the fixed timeout)")
    return out


def run_labs(scenarios: list[scenario.Scenario], lab_ids: list[str], keep: bool, base: str | None,
             engs: list[Engine] | None = None, blind_run: bool = False,
             sink: list[lab.RunResult] | None = None, live_mode: bool = False) -> tuple[int, list[lab.RunResult]]:
    """Runs the labs side by side. `sink` gets every lab's result, a lab that
    raised as a result with its error, before anything is raised (--junit)."""
    timeline.preload()
    cancel = threading.Event()
    runs = make_runs(scenarios, lab_ids, keep, base, engs, cancel, live_mode)
    results: list[lab.RunResult | None] = [None] * len(runs)
    errors: list[LabError | None] = [None] * len(runs)

    all_done = threading.Event()
    left = [len(runs)]
    left_lock = threading.Lock()

    def go(i: int) -> None:
        try:
            results[i] = runs[i].run()
        except LabError as e:
            errors[i] = e
        finally:
            if live_mode:  # this lab is judged and gone: a `down` of it waits no longer
                live.release(runs[i].lab_id)
            with left_lock:
                left[0] -= 1
                if left[0] == 0:
                    all_done.set()

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(len(runs))]
    for t in threads:
        t.start()
    interrupted = False
    try:
        watch(threads, [r.live for r in runs], all_done, blind_run)
    except KeyboardInterrupt:
        # A live lab's Ctrl-C is its end, not an interruption: it is judged.
        interrupted = not live_mode
        cancel.set()
        # Cleanup must finish: a second Ctrl-C is ignored until it has.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        error("labctl: stopping the live labs; judging what they did..." if live_mode else
              "labctl: interrupted; reverting faults and removing the labs...")
        for t in threads:
            t.join(120)
        signal.signal(signal.SIGINT, old)
    finally:
        if live_mode:
            for r in runs:
                live.release(r.lab_id)
    if sink is not None:
        sink.extend(r if r is not None else lab.RunResult(lid, sc.name, run.run_dir, error=e.message() if e else None)
                    for r, e, lid, sc, run in zip(results, errors, lab_ids, scenarios, runs, strict=True))
    for e in errors:
        if e is not None:
            raise e
    done = [r for r in results if r is not None]
    if not blind_run:  # a blind run's table comes after the answer, with the reveal
        console.print(view.final_table(done))
    return outcome(done, interrupted), done


# A frame of the live view; it ends early when the last lab is done, so that
# no run waits out a frame after its end. Not Thread.join(timeout): a Ctrl-C
# landing inside it can leave the thread looking finished (a CPython bug
# before 3.13), and the cleanup's own join then waits for nothing.
FRAME_S = 0.25
WATCH_PRINT_S = 5.0  # `labctl watch` into a file or a pipe: a table this often


def watch(threads: list[threading.Thread], lives: list[observe.Live], all_done: threading.Event,
          blind_run: bool = False) -> None:
    """The side-by-side view until every lab's thread is done: live on a
    terminal, else one line per change of a lab's state (logs, CI). A blind
    run's view shows the supervisor alone."""
    render = view.blind_table if blind_run else view.table
    if console.is_terminal:
        with RichLive(render(lives), console=console, refresh_per_second=4) as rl:
            while any(t.is_alive() for t in threads):
                rl.update(render(lives))
                all_done.wait(FRAME_S)
            rl.update(render(lives))
        return
    if blind_run:
        watch_blind_lines(threads, lives, all_done)
        return
    last: dict[str, tuple[str, ...]] = {}
    while any(t.is_alive() for t in threads):
        for lv in lives:
            if isinstance(lv, lease.LeaseLive):
                text = view.lease_line(lv)
                if last.get(lv.lab_id) != (text,):
                    last[lv.lab_id] = (text,)
                    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)
                continue
            key = (lv.phase, lv.step, lv.truth, lv.monitor, lv.heartbeat_only, lv.supervisor, lv.sender_clock)
            if last.get(lv.lab_id) != key:
                last[lv.lab_id] = key
                print(f"{time.strftime('%H:%M:%S')} {lv.scenario:<22} {lv.phase:<10} "
                      f"step={lv.step or '-':<24} truth={lv.truth:<11} monitor={lv.monitor:<11} "
                      f"heartbeat-only={lv.heartbeat_only:<5} supervisor={lv.supervisor:<12} "
                      f"acked={lv.acked}/{lv.total} sender-clock={lv.sender_clock}", flush=True)
        all_done.wait(FRAME_S)
    console.print(view.table(lives))


def watch_blind_lines(threads: list[threading.Thread], lives: list[observe.Live], all_done: threading.Event) -> None:
    """A blind run without a terminal: a line per change of what the supervisor
    shows, and each line it logs, nothing of the fault or the other observers."""
    last: dict[str, tuple[object, ...]] = {}
    logged: dict[str, int] = {}
    while any(t.is_alive() for t in threads):
        for lv in lives:
            key = (lv.phase, lv.supervisor, lv.crashes, lv.timeouts, lv.restarts)
            if last.get(lv.lab_id) != key:
                last[lv.lab_id] = key
                print(f"{time.strftime('%H:%M:%S')} {view.blind_line(lv)}", flush=True)
            new, logged[lv.lab_id] = lv.supervisor_log_count - logged.get(lv.lab_id, 0), lv.supervisor_log_count
            for line in lv.supervisor_log[-new:] if new > 0 else []:
                print(f"{time.strftime('%H:%M:%S')} {lv.scenario:<22} supervisor log: {line}", flush=True)
        all_done.wait(FRAME_S)
    console.print(view.blind_table(lives))


def outcome(done: list[lab.RunResult], interrupted: bool) -> ExitCode:
    if interrupted:
        return ExitCode.INTERRUPTED
    lost = [r for r in done if r.engine_lost]
    if lost:
        error(lost[0].error or "labctl: error: lost the Docker engine; start it again and run `labctl recover`")
        return ExitCode.ENGINE_UNREACHABLE
    return ExitCode.OK if done and all(r.ok for r in done) else ExitCode.FAILED


def cmd_up(args: argparse.Namespace) -> int:
    scs = [scenario.resolve(s) for s in args.scenarios]
    check_blind_args(args, scs)
    if args.live and scs[0].blind is not None:
        raise LabError(ExitCode.USAGE, "a blind game ends with its answer; it cannot run live", "drop --live")
    if args.live and args.keep:
        raise LabError(ExitCode.USAGE, "--live runs the lab until it is stopped, then judges and removes it",
                       "drop --keep")
    if args.lab and len(scs) > 1:
        raise LabError(ExitCode.USAGE, "--lab names one lab, but several scenarios were given",
                       "drop --lab (names are derived per scenario) or run one scenario")
    engs = engines_for_labs(args, scs)
    if args.lab and len(engs) > 1:
        for eng in engs:
            if args.lab in lab.lab_ids(eng):
                raise LabError(ExitCode.LAB_EXISTS, f"lab {args.lab!r} already exists on engine {eng.name}",
                               f"pick another --lab name, or remove it with `labctl down --lab {args.lab}`")
    ids = [args.lab] if args.lab else fresh_ids(scs, engs)
    if scs[0].blind is not None:
        return with_junit(args.junit, scs, ids, lambda sink: play_blind(args, scs[0], ids[0], engs, sink))
    if args.live:
        scs = [live.make_live(sc) for sc in scs]
    return with_junit(args.junit, scs, ids, lambda sink: run_labs(scs, ids, args.keep, args.base, engs, sink=sink,
                                                                  live_mode=args.live)[0])


def engines_for_labs(args: argparse.Namespace, scs: list[scenario.Scenario]) -> list[Engine]:
    """open_engines(); with --junit, no engine at all is each lab's failed `run`
    too: a CI job's report then says why nothing ran."""
    if args.junit is not None:
        check_writable(args.junit)
    try:
        return open_engines(args)
    except LabError as e:
        if args.junit is not None:
            lid = getattr(args, "lab", None) or "-"  # demo names no lab
            junit.write(args.junit, [lab.RunResult(lid, sc.name, rundir.runs_root(), error=e.message()) for sc in scs])
        raise


def check_writable(path: Path) -> None:
    """Before the labs run, not after: a typo in --junit should not cost a run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LabError(ExitCode.USAGE, f"--junit {path}: cannot create its directory ({e.strerror})",
                       "name a file in a writable directory") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise LabError(ExitCode.USAGE, f"--junit {path}: not a writable file", "name a file in a writable directory")


def with_junit(path: Path | None, scs: list[scenario.Scenario], ids: list[str],
               go: Callable[[list[lab.RunResult]], int]) -> int:
    """Runs `go` and, with --junit, writes what it got whatever happens: a lab
    that never got as far as a result is a failed `run` saying why."""
    if path is not None:
        check_writable(path)
    got: list[lab.RunResult] = []
    why = "did not run"
    try:
        return go(got)
    except LabError as e:
        why = e.message()
        raise
    except KeyboardInterrupt:
        why = "labctl: error: interrupted"
        raise
    except Exception as e:
        why = f"labctl: error: {type(e).__name__}: {e}"
        raise
    finally:
        if path is not None:
            seen = {r.lab_id for r in got}
            got += [lab.RunResult(lid, sc.name, rundir.lab_dir(lid), error=why)
                    for sc, lid in zip(scs, ids, strict=True) if lid not in seen]
            junit.write(path, got)


# ----------------------------------------------------------------------- blind triage (scenario-blind)


def check_blind_args(args: argparse.Namespace, scs: list[scenario.Scenario]) -> None:
    """--seed and --answer play a blind scenario, which runs alone; --answer is one of its choices."""
    blinds = [sc for sc in scs if sc.blind is not None]
    if blinds and len(scs) > 1:
        raise LabError(ExitCode.USAGE, f"{blinds[0].name} is a blind scenario and runs alone, but {len(scs)} "
                       "scenarios were given", f"run it by itself: `labctl up {blinds[0].name} --seed N`")
    given = [opt for opt, v in (("--seed", args.seed), ("--answer", args.answer)) if v is not None]
    if given and not blinds:
        what = f"{scs[0].name} is not one" if len(scs) == 1 else "none of the scenarios given is one"
        verb = "play" if len(given) > 1 else "plays"
        raise LabError(ExitCode.USAGE, f"{' and '.join(given)} {verb} a blind scenario, and {what}",
                       "drop it, or play one: `labctl up scenario-blind --seed N [--answer FAULT]`")
    if args.seed is not None and args.seed < 0:
        raise LabError(ExitCode.USAGE, f"--seed wants a whole number, 0 or more, got {args.seed}")
    if args.answer is not None:
        assert blinds[0].blind is not None
        choices = blinds[0].blind.choices
        args.answer = blind.normalise(args.answer, choices) or _bad_answer(args.answer, choices)


def _bad_answer(given: str, choices: list[str]) -> NoReturn:
    raise LabError(ExitCode.USAGE, f"--answer {given!r} is not one of {', '.join(choices)}",
                   "name the fault you think it was")


def play_blind(args: argparse.Namespace, sc: scenario.Scenario, lab_id: str, engs: list[Engine],
               sink: list[lab.RunResult] | None = None) -> int:
    """Runs the fault the seed picks with the supervisor's view alone, takes the
    answer, then reveals the truth, records the game and shows the checks."""
    assert sc.blind is not None
    game = blind.derive(sc.blind, args.seed if args.seed is not None else blind.random_seed())
    say(f"blind triage, seed {game.seed}: one of {', '.join(game.choices)} will hit the worker; you see only "
        f"the supervisor. Name the fault at the end. (The same game: labctl up {sc.name} --seed {game.seed})")
    if any(faults.get(f).needs_tools for f in game.choices):  # for any choice, so that a build tells nothing
        for eng in engs:
            images.ensure_tools(eng, say)
    with tempfile.TemporaryDirectory(prefix="labctl-blind-") as d:
        concrete = blind.write_concrete(sc, game, Path(d))
        code, done = run_labs([concrete], [lab_id], args.keep, args.base, engs, blind_run=True, sink=sink)
    answer, how = blind_answer(args, game, interrupted=code == ExitCode.INTERRUPTED)
    for r in done:
        reveal(r, game, answer, how)
    console.print(view.final_table(done))
    return code


def blind_answer(args: argparse.Namespace, game: blind.Game, interrupted: bool) -> tuple[str | None, str]:
    """The answer and how it came: flag (--answer), prompt, none (no terminal, EOF, Ctrl-C) or interrupted."""
    if interrupted:
        return None, "interrupted"
    if args.answer is not None:
        return args.answer, "flag"
    if not sys.stdin.isatty():
        say("no answer: --answer was not given and there is no terminal to ask on")
        return None, "none"
    listing = ", ".join(f"{i} {c}" for i, c in enumerate(game.choices, 1))
    while True:
        try:
            text = input(f"Which fault was it? ({listing}; a name or its number): ")
        except (EOFError, KeyboardInterrupt):
            say("\nno answer")
            return None, "none"
        got = blind.normalise(text, game.choices)
        if got is not None:
            return got, "prompt"
        say(f"{text.strip()!r} is not one of {', '.join(game.choices)}")


def reveal(r: lab.RunResult, game: blind.Game, answer: str | None, how: str) -> None:
    """The truth and every observer's lane; blind.json and the report get the game."""
    rd = r.run_dir
    events = runlog.read_events(rd / rundir.EVENTS) if (rd / rundir.EVENTS).exists() else []
    say("")
    for line in blind.reveal_lines(game, answer, events):
        say(line)
    if not rd.is_dir():
        say("the run left no directory: the game is not recorded")
        return
    blind.record(rd, game, answer, how)
    if (rd / rundir.TIMELINE).exists():
        say(f"every lane, drawn: {rd / rundir.TIMELINE}")
    if (rd / rundir.REPORT).exists():
        try:
            check.check_run(rd)  # report.md again, now with the game in it
        except Exception as e:
            error(f"labctl: error: the report could not take the game ({type(e).__name__}: {e}); "
                  f"it is in {rd / blind.FILE}")


def fresh_ids(scs: list[scenario.Scenario], engs: list[Engine] | None = None) -> list[str]:
    """One new lab id per scenario, distinct from each other and from every
    lab the engines have now (a taken name is refused anyway, but never by us)."""
    taken: set[str] = set()
    try:
        for eng in engs or [Engine.open(timeout=10)]:
            taken.update(lab.lab_ids(eng))
    except LabError:
        pass  # run_labs reports the unreachable engine itself
    ids: list[str] = []
    for sc in scs:
        lid = labels.new_lab_id(sc.name)
        while lid in taken or lid in ids:
            lid = labels.new_lab_id(sc.name)
        ids.append(lid)
    return ids


def cmd_demo(args: argparse.Namespace) -> int:
    scs = [scenario.resolve(s) for s in DEMO]
    engs = engines_for_labs(args, scs)
    ids = fresh_ids(scs, engs)
    results: list[lab.RunResult] = []

    def go(sink: list[lab.RunResult]) -> int:
        code, done = run_labs(scs, ids, args.keep, args.base, engs, sink=sink)
        results.extend(done)
        return code

    code = with_junit(args.junit, scs, ids, go)
    dirs = [r.run_dir for r in results if (r.run_dir / "events.jsonl").exists()]
    if dirs:
        out = rundir.runs_root() / f"demo-{rundir.utc_stamp()}"
        out.mkdir(parents=True, exist_ok=True)
        timeline.render_runs(dirs, out / "timeline.png")
        (out / "report.md").write_text("# labctl demo: crash, pause and partition side by side\n\n"
                                       "![timeline](timeline.png)\n\n" + "".join(
                                           f"- [{r.scenario}]({Path('..') / r.run_dir.relative_to(out.parent)}"
                                           f"/report.md): {'passed' if r.ok else 'FAILED'}\n" for r in results))
        say(f"side-by-side timeline: {out / 'timeline.png'}")
    return code


def cmd_down(args: argparse.Namespace) -> int:
    engs = open_engines(args)
    on = [(eng, lid) for eng in engs for lid in lab.lab_ids(eng)]
    if args.lab:
        on = [(eng, lid) for eng, lid in on if lid == args.lab]
        pending = journal.pending(args.lab)
        if not on and pending:  # its journal still holds faults: revert what can be, where they were applied
            on = [(next((e for e in engs if e.name == pending[0].get("engine")), engs[0]), args.lab)]
        if not on:
            say(f"lab {args.lab}: nothing to remove")
            return ExitCode.OK
    elif not args.all and len(on) > 1:
        ids = [lid for _, lid in on]
        raise LabError(ExitCode.USAGE, f"{len(ids)} labs exist ({', '.join(ids)})", "name one with --lab, or --all")
    for eng, lid in on:
        # A live lab's `up` stops it, judges it and removes it itself; a
        # teardown under its feet would lose the run.
        if live.owner(lid) is not None:
            say(f"lab {lid}: asking its live `labctl up` to stop it and judge the run...")
            where = live.runs_of(lid) or rundir.lab_dir(lid)
            if live.request_stop(lid):
                say(f"lab {lid}: stopped and judged by its `labctl up`; its run is in {where}")
            else:
                error(f"labctl: lab {lid}: its live `labctl up` did not stop within {live.STOP_WAIT_S} s; "
                      "removing the lab now, and its run may be incomplete")
        n = lab.teardown(eng, lid)
        where = f" on engine {eng.name}" if len(engs) > 1 else ""
        say(f"lab {lid}{where}: reverted {n['reverted']} fault(s), removed {n['containers']} container(s), "
            f"{n['networks']} network(s), {n['volumes']} volume(s)")
    if not on:
        say("no labs")
    return ExitCode.OK


def cmd_recover(args: argparse.Namespace) -> int:
    args.all, args.lab = True, None
    return cmd_down(args)


def cmd_status(args: argparse.Namespace) -> int:
    engs = open_engines(args)
    cs = [(eng, c) for eng in engs for c in eng.containers(labels.filters())]
    if not cs:
        say("no labs")
        return ExitCode.OK
    many = len(engs) > 1
    now = Table(title="labs now")
    for col in (("engine",) if many else ()) + ("lab", "ground truth (engine)", "monitor verdict",
                                                "heartbeat-only", "live"):
        now.add_column(col)
    for eng in engs:
        for lid in lab.lab_ids(eng):
            if lid.startswith(labels.GRADE_LAB_PREFIX):
                continue
            n = live.now_of(eng, lid)
            now.add_row(*([eng.name] if many else []), lid, n["truth"], n["monitor"], n["heartbeat_only"], n["live"])
    if now.row_count:
        console.print(now)
    t = Table(title="labs")
    for col in (("engine",) if many else ()) + ("lab", "service", "scenario", "status", "exit", "restarts"):
        t.add_column(col)
    for eng, c in sorted(cs, key=lambda ec: labels.describe(ec[1].labels)[:2]):
        t.add_row(*([eng.name] if many else []), *labels.describe(c.labels), c.status,
                  "" if c.status == "running" else str(c.exit_code), str(c.restart_count))
    console.print(t)
    return ExitCode.OK


def cmd_watch(args: argparse.Namespace) -> int:
    """The side-by-side view of labs already running; Ctrl-C detaches."""
    engine = open_engines(args)[0]
    running = [lid for lid in lab.lab_ids(engine) if not lid.startswith(labels.GRADE_LAB_PREFIX)]
    unknown = [lid for lid in args.labs if lid not in running]
    if unknown:
        raise LabError(ExitCode.NOT_FOUND, f"no lab named {unknown[0]!r}",
                       "`labctl status` lists the labs" if running else "start one with `labctl up SCENARIO --live`")
    ids = args.labs or running
    if not ids:
        raise LabError(ExitCode.NOT_FOUND, "no lab is running", "start one with `labctl up SCENARIO --live`")
    w = live.Watcher(engine, ids)
    w.start()
    try:
        if console.is_terminal:
            with RichLive(view.table(w.lives), console=console, refresh_per_second=4) as rl:
                while True:
                    w.poll()
                    rl.update(view.table(w.lives))
                    w.stop.wait(FRAME_S)
        else:
            while True:  # a log, not a terminal: a table every few seconds
                w.poll()
                console.print(view.table(w.lives))
                w.stop.wait(WATCH_PRINT_S)
    except KeyboardInterrupt:
        say(f"detached from {', '.join(ids)}; the lab(s) go on (`labctl down` removes them)")
        return ExitCode.OK
    finally:
        w.close()


def pick_lab(engs: list[Engine], given: str | None) -> tuple[Engine, str]:
    """The lab a command acts on, and the engine that runs it."""
    on = [(eng, lid) for eng in engs for lid in lab.lab_ids(eng)]
    ids = [lid for _, lid in on]
    if given:
        if given not in ids:
            raise LabError(ExitCode.NOT_FOUND, f"no lab named {given!r}",
                           "`labctl status` lists the labs" if ids else "start one with `labctl up SCENARIO --keep`")
        return next(x for x in on if x[1] == given)
    if len(on) == 1:
        return on[0]
    if not ids:
        raise LabError(ExitCode.NOT_FOUND, "no lab is running", "start one with `labctl up SCENARIO --keep`")
    raise LabError(ExitCode.USAGE, f"{len(ids)} labs exist ({', '.join(ids)})", "name one with --lab")


def cmd_logs(args: argparse.Namespace) -> int:
    engine, lid = pick_lab(open_engines(args), args.lab)
    # A lease lab has containers of its own: every service the lab has.
    services = [args.service] if args.service else [
        s for s in labels.ALL_SERVICES if engine.inspect(labels.container_name(lid, s)) is not None]
    if args.follow:
        if len(services) != 1:
            raise LabError(ExitCode.USAGE, "-f follows one service", "name it: labctl logs worker -f")
        for chunk in engine.logs(labels.container_name(lid, services[0]), follow=True):
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
        return ExitCode.OK
    for s in services:
        text = engine.logs_text(labels.container_name(lid, s))
        for ln in text.splitlines():
            sys.stdout.write(f"{s:>10} | {ln}\n")
    return ExitCode.OK


def cmd_scenarios(args: argparse.Namespace) -> int:
    if args.schema:
        from labctl import schema  # only this command needs the table

        sys.stdout.write(schema.markdown())  # not rich: it would wrap the tables' lines
        return ExitCode.OK
    if args.validate:
        problems = scenario.validate(Path(args.validate))
        if problems:
            # One `labctl: error:` line per problem, all at once, so one edit can fix them all.
            raise LabError(ExitCode.BAD_SCENARIO, "\nlabctl: error: ".join(problems),
                           "fix the scenario file; docs/scenarios.md (`labctl scenarios --schema`) has every key")
        sc = scenario.load(Path(args.validate))
        say(f"{args.validate}: ok ({sc.name}: {len(sc.timeline)} step(s), "
            f"{len(sc.expect.windows)} window expectation(s)"
            + (f"; blind, one of {', '.join(sc.blind.choices)} by the seed" if sc.blind else "")
            + f"; duration_s {sc.duration_s:g} s{'' if sc.duration_given else ', derived'})")
        return ExitCode.OK
    t = Table(title="scenarios (labctl up NAME)", show_lines=False)
    t.add_column("name", no_wrap=True)
    t.add_column("lesson")
    for sc in scenario.builtin():
        t.add_row(sc.name, sc.lesson)
    console.print(t)
    return ExitCode.OK


def fault_settings(f: faults.Fault, values: list[str], target: str) -> tuple[str, dict[str, str]]:
    """`labctl fault NAME VALUE...`: the target and the settings, from values
    in the fault's order (its cli_args) or as KEY=VALUE."""
    params: dict[str, str] = {}
    order = list(f.cli_args)
    for v in values:
        key, eq, val = v.partition("=")
        if not eq:
            if not order:
                raise LabError(ExitCode.USAGE, f"{f.name} takes no more values, got {v!r}",
                               f"`labctl fault --help` lists {f.name}'s settings")
            key, val = order.pop(0), v
        elif key in order:
            order.remove(key)
        if key == "target":
            if val not in scenario.TARGETS:
                raise LabError(ExitCode.USAGE, f"target {val!r} is not one of " + ", ".join(scenario.TARGETS))
            target = val
        else:
            params[key] = val
    return target, params


def cmd_fault(args: argparse.Namespace) -> int:
    engine, lid = pick_lab(open_engines(args), args.lab)
    kind = args.kind
    f = faults.get(kind)
    inverse = f.inverse
    args.target, params = fault_settings(f, args.values, args.target)
    f.settings(params)  # a bad value is a usage error before the lab is touched
    if args.target in labels.LEASE_SERVICES and kind not in scenario.LEASE_FAULTS:
        raise LabError(ExitCode.USAGE, f"{kind} does not apply to the lease lab's {args.target}",
                       "a lease lab takes " + ", ".join(scenario.LEASE_FAULTS))
    if f.needs_tools:
        images.ensure_tools(engine, say)
    if args.for_s and not inverse:
        raise LabError(ExitCode.USAGE, f"{kind} has no inverse to apply after --for", "drop --for")
    # An inverse given by hand closes the journaled fault it undoes.
    for intent in journal.pending(lid):
        if intent.get("inverse") == kind and intent.get("target") == args.target:
            faults.revert(engine, lid, intent)
            say(f"lab {lid}: {kind} {args.target} (reverts the {intent['fault']} of "
                f"{time.strftime('%H:%M:%S', time.localtime(intent['ts']))})")
            return ExitCode.OK
    idle = faults.nothing_to_undo(engine, lid, kind, args.target)
    if idle is not None:
        say(f"lab {lid}: {idle}; {kind} has nothing to undo")
        return ExitCode.OK
    intent = faults.apply(engine, lid, kind, args.target, params=params)
    shown = "".join(f" {k}={v:g}" if isinstance(v, float) else f" {k}={v}"
                    for k, v in (intent.get("params") or {}).items())
    say(f"lab {lid}: {kind} {args.target}{shown}" + (f" for {args.for_s:g}s" if args.for_s else ""))
    if not args.for_s:
        if inverse:
            target = "" if args.target == "worker" else f" --target {args.target}"
            say(f"undo with `labctl fault {inverse} --lab {lid}{target}` (or `labctl down`)")
        return ExitCode.OK
    try:
        deadline = time.monotonic() + args.for_s
        while time.monotonic() < deadline:
            time.sleep(min(0.2, deadline - time.monotonic()))  # waiting out a duration, by design
    except KeyboardInterrupt:
        say("interrupted: reverting now")
    finally:
        faults.revert(engine, lid, intent)
        say(f"lab {lid}: {inverse} {args.target}")
    return ExitCode.OK


def cmd_check(args: argparse.Namespace) -> int:
    v = check.check_run(args.run_dir)
    t = Table(title=f"check {args.run_dir}")
    for col in ("check", "", "detail"):
        t.add_column(col)
    for c in v.checks:
        t.add_row(c.name, "[green]ok[/]" if c.ok else "[bold red]FAIL[/]", c.detail)
    console.print(t)
    say(f"{'passed' if v.ok else 'FAILED'}: {sum(c.ok for c in v.checks)}/{len(v.checks)} checks; "
        f"findings in {args.run_dir / rundir.REPORT}")
    return ExitCode.OK if v.ok else ExitCode.FAILED


def cmd_report(args: argparse.Namespace) -> int:
    rd = args.run_dir
    if not (rd / rundir.REPORT).exists():
        check.check_run(rd)
    if args.format == "json":
        # What happened (the lab's summary) and what the checker concluded, in one document.
        doc = {**rundir.read_summary(rd), **rundir.read_verdict(rd)}
        game = blind.read(rd)
        if game is not None:
            doc["blind"] = game
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write((rd / rundir.REPORT).read_text())
    return ExitCode.OK


def cmd_runs(args: argparse.Namespace) -> int:
    root = rundir.runs_root()
    dirs = rundir.run_dirs()
    if not dirs:
        say(f"no runs under {root}")
        return ExitCode.OK
    t = Table(title=f"runs under {root} (newest first)")
    for col in ("time (UTC)", "lab", "scenario", "result", "directory"):
        t.add_column(col)
    for d in dirs:
        ok = rundir.read_verdict(d).get("ok")
        t.add_row(d.name, d.parent.name, rundir.read_summary(d).get("scenario", "?"),
                  "[green]passed[/]" if ok else ("[red]FAILED[/]" if ok is False else "?"), str(d))
    console.print(t)
    return ExitCode.OK


def cmd_grade(args: argparse.Namespace) -> int:
    opts = grade_runner.Options(exercises=grade_catalog.parse_exercises(args.exercise), out_dir=args.out,
                                jobs=args.jobs, seed=args.seed, repeat=args.repeat)
    # Progress goes to stderr as each submission finishes; the table is the result.
    run = grade_runner.grade(args.submissions, opts, progress=lambda line: error(f"labctl grade: {line}"))
    t = Table(title=f"grades (seed {run.results[0].seed if run.results else opts.seed})")
    for col in ("submission", "score", "failed", "flaky", "grader error"):
        t.add_column(col)
    for r in run.results:
        failed = [x.number for x in r.tests if x.counts_as_failure]
        t.add_row(r.submission, f"{r.score:g} / {r.max_score:g}", ", ".join(failed) or "-",
                  ", ".join(x.number for x in r.flaky) or "-", r.grader_error or ("yes" if r.has_grader_error else "-"))
    console.print(t)
    say(f"reports in {run.out_dir}")
    return run.exit_code


def cmd_serve(args: argparse.Namespace) -> int:
    from labctl import serve  # imported here: only this command needs it

    serve.check_bind(args.host, args.public)
    srv = serve.make_server(Engine.open(), args.host, args.port, args.public)
    say(f"labctl serve: {srv.url()}" + ("  (the token is printed only this once)" if args.public else ""))
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        say("labctl serve: stopped")
    finally:
        srv.hub.stop.set()
        srv.server_close()
    return ExitCode.OK


def cmd_handout(args: argparse.Namespace) -> int:
    from labctl import handout  # imported here: only this command needs it

    written = handout.write(args.dir, force=args.force)
    for path in written:
        say(f"wrote {path}")
    say(f"next: read {args.dir / handout.README}; grade it with `labctl grade {args.dir} --exercise N`")
    return ExitCode.OK


def cmd_pack(args: argparse.Namespace) -> int:
    from labctl import pack  # imported here: only these two commands need it

    out: Path = args.output or pack.default_output()
    pack.pack(Engine.open(timeout=600), out, say, args.level)
    say(f"next: on the other machine `labctl unpack {out.name}`; without labctl there: "
        f"`mkdir lab && tar -xf {out.name} -C lab && lab/{pack.INSTALL}`")
    return ExitCode.OK


def cmd_unpack(args: argparse.Namespace) -> int:
    from labctl import pack

    t0 = time.monotonic()
    say(f"checking every member of {args.file} against its manifest...")
    hashes = pack.verify(args.file, say)
    say(f"{args.file}: all {len(hashes)} members match {pack.MANIFEST} ({time.monotonic() - t0:.0f} s)")
    dest: Path = args.dir or args.file.parent / (args.file.name.removesuffix(".tar") + ("" if
                                                 args.file.name.endswith(".tar") else ".d"))
    pack.extract(args.file, dest, hashes, say)
    ready = True
    for eng in open_engines(args, timeout=600):  # a load's answer comes once the engine has unpacked it all
        pack.load_images(args.file, eng, hashes[pack.IMAGES], say)
        ready = pack.check_loaded(eng, say) and ready
    where = "".join(f" --engine {e}" for e in args.engine or [])
    say(f"next: `labctl{where} doctor`, then `labctl{where} up scenario-partition`; the students' folder: "
        f"{dest / 'handout'}; the docs: {dest / 'docs'}")
    return ExitCode.OK if ready else ExitCode.IMAGE_MISSING


COMMANDS = {
    "doctor": cmd_doctor, "base": cmd_base, "build": cmd_build, "up": cmd_up, "demo": cmd_demo,
    "down": cmd_down, "recover": cmd_recover, "status": cmd_status, "logs": cmd_logs, "watch": cmd_watch,
    "scenarios": cmd_scenarios, "fault": cmd_fault, "check": cmd_check, "report": cmd_report, "runs": cmd_runs,
    "grade": cmd_grade, "handout": cmd_handout, "pack": cmd_pack, "unpack": cmd_unpack, "serve": cmd_serve,
}
