"""One isolated lab: create it, run a scenario's timeline in it, judge what
every observer concluded, keep the evidence, tear it down."""
from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl import check, compose, dependability, faults, labels, observe, rundir, runlog, states, timeline
from labctl.engine import DEFAULT, ContainerSpec, Engine, is_engine_gone, wait_for
from labctl.errors import ExitCode, LabError
from labctl.scenario import Scenario, Step, run_file_text

BOOT_TIMEOUT_S = 30
POLL_S = 0.25
# The boot's waits read only labctl's own memory (the followers' latest
# verdicts), so they can look often: each look saved is a tenth of a second
# off every run.
BOOT_POLL_S = 0.04


# ----------------------------------------------------------------------- lifecycle


def resources(engine: Engine, lab_id: str | None = None) -> dict[str, list[str]]:
    f = labels.filters(lab_id)
    return {
        "containers": [c.name for c in engine.containers(f)],
        "networks": [n for _, n in engine.networks(f)],
        "volumes": engine.volumes(f),
    }


def lab_ids(engine: Engine) -> list[str]:
    ids = {c.labels[labels.LAB] for c in engine.containers(labels.filters()) if labels.LAB in c.labels}
    names = [n for _, n in engine.networks(labels.filters())] + engine.volumes(labels.filters())
    ids.update(i for i in map(labels.lab_id_of, names) if i)
    return sorted(ids)


def teardown(engine: Engine, lab_id: str) -> dict[str, int]:
    """Reverts journaled faults, then removes everything labelled with the lab.
    Tolerates what is already gone, so it can run twice."""
    reverted = 0
    try:
        reverted = faults.revert_pending(engine, lab_id)
    except Exception:
        pass  # removal below unpauses and disconnects anyway
    found = resources(engine, lab_id)
    for name in found["containers"]:
        engine.remove_container(name)
    for name in found["networks"]:
        engine.remove_network(name)
    for name in found["volumes"]:
        engine.remove_volume(name)
    return {"reverted": reverted, **{k: len(v) for k, v in found.items()}}


def claim(engine: Engine, lab_id: str) -> None:
    """Creates the lab's network: the name is the claim. Refuses a taken name
    without touching what is there."""
    found = resources(engine, lab_id)
    if any(found.values()):
        what = ", ".join(f"{len(v)} {k}" for k, v in found.items() if v)
        raise LabError(ExitCode.LAB_EXISTS, f"lab {lab_id!r} already exists ({what})",
                       f"pick another --lab name, or remove it with `labctl down --lab {lab_id}`")
    engine.create_network(labels.network_name(lab_id), labels.lab_labels(lab_id))


# ----------------------------------------------------------------------- results


@dataclass
class RunResult:
    lab_id: str
    scenario: str
    run_dir: Path
    checks: list[check.Check] = field(default_factory=list)
    error: str | None = None
    engine_lost: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)


# ----------------------------------------------------------------------- one run


class LabRun:
    """Runs one scenario in its own lab; thread-safe towards the view via `live`."""

    def __init__(self, engine: Engine, sc: Scenario, lab_id: str, images: dict[str, str], keep: bool,
                 cancel: threading.Event):
        self.engine = engine
        self.sc = sc
        self.lab_id = lab_id
        self.images = images
        self.keep = keep
        self.cancel = cancel
        self.live = observe.Live(lab_id, sc.name)
        self.run_dir = rundir.new_run_dir(lab_id)
        self.result = RunResult(lab_id, sc.name, self.run_dir)
        self._stop_follow = threading.Event()
        self.recorder: observe.EngineRecorder | None = None
        # Run live (labctl/live.py): the job streams until a Ctrl-C (the
        # cancel) or `labctl down` asks it to stop; neither is an interruption.
        self.live_mode = False

    # -- the lab's containers

    def specs(self) -> dict[str, ContainerSpec]:
        specs = {name: compose.for_lab(spec, self.lab_id, self.sc.name, self.images[name])
                 for name, spec in compose.services(self.sc.lab.env()).items()}
        if self.sc.lab.program == "process-data":
            lab = self.sc.lab
            sup = specs["supervisor"]
            sup.entrypoint = ["tini", "--", "sh", "-c"]
            sup.command = [f"python3 /app/generate_data.py {lab.items} --seed {lab.seed} --output /lab/input.dat"
                           " && exec python3 /app/process_data.py /lab/input.dat"]
        return specs

    def run(self) -> RunResult:
        t_start = time.time()
        claimed = False
        try:
            self.recorder = observe.EngineRecorder(self.engine.clone(), self.lab_id)
            self.recorder.start()
            claim(self.engine, self.lab_id)
            claimed = True
            self.boot()
            self.live.phase = "running"
            self.timeline(time.time())
        except LabError as e:
            self.result.error = e.message()
            if e.code == ExitCode.LAB_EXISTS and not claimed:
                self.live.phase = "refused"
                raise
        except Exception as e:
            if is_engine_gone(e):
                self.result.engine_lost = True
                which = "" if self.engine.name == DEFAULT else f" {self.engine.name}"
                self.result.error = (f"labctl: error: lab {self.lab_id}: lost the Docker engine{which} mid-run "
                                     f"({type(e).__name__}); start it again and run `labctl recover`")
            else:
                self.result.error = f"labctl: error: lab {self.lab_id}: {type(e).__name__}: {e}"
        finally:
            if claimed:
                self.finish(t_start)
            elif self.recorder:
                self.recorder.stop()  # nothing to record: its streams, threads and connection go now
        return self.result

    def boot(self) -> None:
        """Creates the lab's volume and containers and starts them in order, each
        once the one before is ready: the monitor and worker, then the supervisor."""
        live = self.live
        self.engine.create_volume(labels.volume_name(self.lab_id), labels.lab_labels(self.lab_id))
        specs = self.specs()
        for name in labels.SERVICES:
            self.engine.create_container(specs[name])
        live.phase = "booting"
        self.start_together(("monitor", "proxy"))
        self.follow("monitor")
        self.follow("proxy")
        # The worker joins the proxy's network namespace and beats through it:
        # it starts once the proxy relays. Under load (30 labs on two cores)
        # the proxy's interpreter can take seconds to start, and beats sent
        # before then are lost: a monitor would rightly call that silence.
        wait_for(lambda: live.proxy_ready or self.cancel.is_set(), BOOT_TIMEOUT_S, BOOT_POLL_S,
                 f"lab {self.lab_id}: the worker's proxy to start", seen=lambda: "no `start` event from the proxy yet")
        self.engine.start(labels.container_name(self.lab_id, "worker"))
        if self.sc.lab.program == "supervisor":
            # The naive worker takes no flock, so the monitor never sees it
            # HEALTHY; its pidfile appearing is all there is to wait for.
            pidfile_only = self.sc.lab.worker_mode == "naive"
            wait_for(lambda: (live.lock in (states.LOCK_FREE, states.LOCK_HELD) if pidfile_only
                              else live.monitor == states.HEALTHY) or self.cancel.is_set(),
                     BOOT_TIMEOUT_S, BOOT_POLL_S, f"lab {self.lab_id}: the worker to come up",
                     seen=lambda: f"monitor {live.monitor}, lock {live.lock}, worker {live.truth}")
        self.engine.start(labels.container_name(self.lab_id, "supervisor"))
        self.follow("supervisor")
        if self.sc.lab.program == "supervisor":
            # The timeline counts from the job's start, not the container's:
            # with many labs booting, the interpreter alone can take seconds.
            wait_for(lambda: live.supervisor in (states.STREAMING, states.ISOLATING, states.DONE)
                     or self.cancel.is_set(), BOOT_TIMEOUT_S, BOOT_POLL_S,
                     f"lab {self.lab_id}: the supervisor to start streaming",
                     seen=lambda: f"supervisor {live.supervisor}")

    def start_together(self, services: tuple[str, ...]) -> None:
        """Starts independent containers at once: each start takes the engine
        a quarter of a second (network attach), a tenth of the headline run."""
        others = [self.engine.clone() for _ in services[1:]]
        errors: list[BaseException] = []

        def start(eng: Engine, name: str) -> None:
            try:
                eng.start(labels.container_name(self.lab_id, name))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=start, args=(eng, name), daemon=True)
                   for eng, name in zip(others, services[1:], strict=True)]
        try:
            for t in threads:
                t.start()
            start(self.engine, services[0])
            for t in threads:
                t.join()
        finally:
            for eng in others:
                eng.close()
        if errors:
            raise errors[0]

    def follow(self, service: str) -> None:
        threading.Thread(target=observe.follow, args=(self.engine.clone(), self.lab_id, service, self.live,
                                                      self._stop_follow), daemon=True).start()

    def timeline(self, t0: float) -> None:
        """Applies each step at its time, reverts it after `for`, then waits for the job."""
        agenda: list[tuple[float, int, Step, bool]] = []
        for i, step in enumerate(self.sc.timeline, 1):
            agenda.append((t0 + step.at, i, step, False))
            if step.for_s:
                agenda.append((t0 + step.at + step.for_s, i, step, True))
        agenda.sort(key=lambda a: (a[0], a[3] is False))
        applied: dict[int, dict[str, Any]] = {}
        for when, i, step, is_revert in agenda:
            while time.time() < when:
                if self.cancel.wait(min(POLL_S, max(0.0, when - time.time()))) or self._stop_requested():
                    return
                observe.poll_truth(self.engine, self.lab_id, self.live)
            if is_revert:
                self.live.step = f"{i}: {step.inverse}"
                faults.revert(self.engine, self.lab_id, applied.pop(i))
            else:
                self.live.step = f"{i}: {step.do} {step.target}" + (f" for {step.for_s:g}s" if step.for_s else "")
                applied[i] = faults.apply(self.engine, self.lab_id, step.do, step.target, step=i,
                                          params=step.params)
        if self.live_mode:
            self.live.step = "live: until stopped"
            self.wait_live()
            return
        self.live.step = "job running"
        self.wait_for_job(t0 + self.sc.duration_s)

    def _stop_requested(self) -> bool:
        """A live lab's stop request from `labctl down` (labctl/live.py)."""
        from labctl import live

        return self.live_mode and live.stop_requested(self.lab_id)

    def wait_live(self) -> None:
        """Until Ctrl-C, `labctl down`'s stop request, or the job's end."""
        from labctl import live  # the live lab's owner file and stop request

        sup = labels.container_name(self.lab_id, "supervisor")
        while not self.cancel.is_set() and not live.stop_requested(self.lab_id):
            observe.poll_truth(self.engine, self.lab_id, self.live)
            st = self.engine.inspect(sup)
            if st is None or st.status == "exited":
                return
            self.cancel.wait(POLL_S)

    def stop_job(self) -> None:
        """A live lab's end: SIGTERM to the supervisor, whose outputs are
        consistent up to its last checkpoint (the checker judges that much)."""
        try:
            self.engine.stop(labels.container_name(self.lab_id, "supervisor"), 5)
        except Exception:
            pass  # gone already: its volume is read through another container

    def wait_for_job(self, deadline: float) -> None:
        """Until the supervisor exits (then a little longer, so the monitor sees
        the worker's own end of the job too), the deadline, or a cancel."""
        sup = labels.container_name(self.lab_id, "supervisor")
        while time.time() < deadline and not self.cancel.is_set():
            observe.poll_truth(self.engine, self.lab_id, self.live)
            st = self.engine.inspect(sup)
            if st and st.status == "exited":
                end = time.time() + 2 * self.sc.lab.interval_ms / 1000 + 1.0
                while time.time() < end and self.live.monitor not in (states.STOPPED, states.CRASHED):
                    if self.cancel.wait(POLL_S):
                        break
                return
            self.cancel.wait(POLL_S)
        if not self.cancel.is_set():
            sc = self.sc
            self.result.error = (f"labctl: error: the job did not end within duration_s ({sc.duration_s:g} s"
                                 f"{'' if sc.duration_given else ', derived'}) of {sc.path.name}; give a longer "
                                 f"duration_s in {sc.path} (docs/scenarios.md)")

    def finish(self, t_start: float) -> None:
        live = self.live
        live.phase = "collecting"
        if self.live_mode:
            self.stop_job()
        try:
            faults.revert_pending(self.engine, self.lab_id)
        except Exception:
            pass
        self._stop_follow.set()
        t_end = time.time()
        events: list[runlog.Event] | None = None
        try:
            events = self.gather(t_start, t_end)
        except Exception as e:
            self._collect_failed(e)
        # Once the events and the volume are on disk the lab is no longer
        # needed: removing it overlaps drawing and judging (half a second each).
        removal: threading.Thread | None = None
        removal_error: list[Exception] = []
        try:
            if not self.keep:
                live.phase = "tearing down"
                removal = threading.Thread(target=self._remove, args=(removal_error,),
                                           name=f"teardown-{self.lab_id}", daemon=True)
                removal.start()
            if events is not None:
                try:
                    self.judge(events, t_start, t_end)
                except Exception as e:
                    self._collect_failed(e)
        finally:
            if removal is not None:
                removal.join()
            for err in removal_error:
                self.result.engine_lost = self.result.engine_lost or is_engine_gone(err)
                self.result.error = self.result.error or f"labctl: error: teardown failed: {err}"
            stopped_live = self.live_mode  # a live lab's Ctrl-C is its end, not an interruption
            live.phase = "passed" if self.result.ok else (
                "interrupted" if self.cancel.is_set() and not stopped_live else "FAILED")

    def _remove(self, errors: list[Exception]) -> None:
        try:
            teardown(self.engine, self.lab_id)
        except Exception as e:
            errors.append(e)

    def _collect_failed(self, e: Exception) -> None:
        if is_engine_gone(e):
            self.result.engine_lost = True
        if self.result.error is None:
            self.result.error = f"labctl: error: collecting the run failed: {type(e).__name__}: {e}"

    def gather(self, t_start: float, t_end: float) -> list[runlog.Event]:
        """Writes everything the run directory needs from the engine: the
        events, the volume, the summary. After it the lab can go."""
        rd = self.run_dir
        rd.mkdir(parents=True, exist_ok=True)
        (rd / rundir.SCENARIO).write_text(run_file_text(self.sc))
        engine_evs = self.recorder.stop() if self.recorder else []
        events = observe.collect(self.engine, self.lab_id, t_start - 1, t_end + 1, engine_evs,
                                 self.collect_services())
        with open(rd / rundir.EVENTS, "w") as f:
            for e in events:
                f.write(json.dumps(e, separators=(",", ":")) + "\n")
        self.copy_volume(self.volume_container(), rd / rundir.VOLUME)
        if self.cancel.is_set() and not self.live_mode:
            self.result.error = self.result.error or "labctl: error: interrupted"
        rundir.write_json(rd / rundir.SUMMARY, self.summary(events, t_start, t_end))
        return events

    def collect_services(self) -> tuple[str, ...]:
        """The services whose logs hold the run's events."""
        return labels.SERVICES

    def volume_container(self) -> str:
        """A container of the lab that mounts its volume, to read it through."""
        return labels.container_name(self.lab_id, "supervisor")

    def judge(self, events: list[runlog.Event], t_start: float, t_end: float) -> None:
        """Draws the timeline and judges the run from its files alone; needs no engine."""
        rd = self.run_dir
        timeline.render([timeline.Column(self.sc.name, events, t_start, t_end)], rd / rundir.TIMELINE)
        verdict = check.check_run(rd)
        self.result.checks = verdict.checks

    def summary(self, events: list[runlog.Event], t_start: float, t_end: float) -> dict[str, Any]:
        """What happened in the run (summary.json); the checker's verdict goes to verdict.json."""
        st = self.engine.inspect(labels.container_name(self.lab_id, "supervisor"))
        job_path = self.run_dir / rundir.VOLUME / "out" / "summary.json"
        return {
            "lab": self.lab_id, "scenario": self.sc.name, "lesson": self.sc.lesson, "engine": self.engine.name,
            "started": t_start, "ended": t_end, "error": self.result.error,
            "supervisor_exit": st.exit_code if st and st.status == "exited" else None,
            "job": json.loads(job_path.read_text()) if job_path.exists() else None,
            "worker_restarts": runlog.policy_restarts(events),
            "dependability": dependability.of_run(events, self.sc.lab.rate, t_end),
            "timeline": [{"at": s.at, "do": s.do, "target": s.target, "for": s.for_s} for s in self.sc.timeline],
            "params": self.sc.lab.__dict__,
            "live": self.live_mode,
        }

    def copy_volume(self, container: str, dest: Path) -> None:
        """The lab's volume, read through a stopped container (labctl mounts nothing)."""
        try:
            data = b"".join(self.engine.get_archive(container, "/lab/."))
        except Exception:
            return
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")
        # The archive's top directory is "." or "lab": flatten it.
        inner = dest / "lab"
        if inner.is_dir() and not (dest / "out").exists():
            for p in inner.iterdir():
                p.rename(dest / p.name)
            inner.rmdir()
