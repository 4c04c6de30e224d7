"""labctl build's images side by side (images.side_by_side, build_all), with
no engine: the legacy builder waits about a second a step on the storage
driver, so the images build at once, and one failure still lets the others
end and is the one raised."""
from __future__ import annotations

import threading

import pytest

from labctl import compose, images
from labctl.errors import ExitCode, LabError


def test_results_come_in_job_order_whatever_order_they_end_in():
    later = threading.Event()

    def first():
        assert later.wait(5), "the second job never ran beside the first"
        return "a"

    def second():
        later.set()
        return "b"

    assert images.side_by_side([first, second]) == ["a", "b"]


def test_jobs_run_at_once_but_never_more_than_the_threads():
    lock = threading.Lock()
    active, peak = [0], [0]
    pair = threading.Barrier(2, timeout=5)  # passes only with two jobs running at once

    def job(i):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        pair.wait()
        with lock:
            active[0] -= 1
        return i

    assert images.side_by_side([lambda i=i: job(i) for i in range(6)], threads=2) == list(range(6))
    assert peak[0] == 2


def test_the_first_failure_in_job_order_is_raised_after_every_job_ended():
    ran = []
    slow_failure_may_end = threading.Event()

    def ok():
        ran.append("ok")

    def fails_first_in_order():
        assert slow_failure_may_end.wait(5)
        ran.append("value")
        raise ValueError("first in order")

    def fails_earlier_in_time():
        ran.append("key")
        slow_failure_may_end.set()
        raise KeyError("earlier in time")

    def last():
        ran.append("last")

    with pytest.raises(ValueError, match="first in order"):
        images.side_by_side([ok, fails_first_in_order, fails_earlier_in_time, last])
    assert sorted(ran) == ["key", "last", "ok", "value"]


class FakeEngine:
    """Builds by waiting until every image's build has begun: build_all
    passes only if it starts them all before any ends."""

    def __init__(self, n: int, fail: str | None = None):
        self.all_started = threading.Barrier(n, timeout=5)
        self.fail = fail
        self.built: list[str] = []
        self.tags: list[str] = []

    def image_id(self, ref):
        return "sha256:" + ref

    @staticmethod
    def name(path):
        return path.rstrip("/").rsplit("/", 1)[-1]  # images/<service>: the context's folder

    def image_exists(self, ref):
        return False

    def build(self, path, tag, buildargs, labels, on_line):
        on_line(f"Step 1/1 : FROM {buildargs['BASE_IMAGE']}")
        self.all_started.wait()
        if self.fail and self.name(path) == self.fail:
            raise LabError(ExitCode.BUILD_FAILED, f"building {tag} failed: syntax", "fix it")
        self.built.append(self.name(path))
        return "sha256:x"

    def tag(self, ref, repo, tag):
        self.tags.append(f"{repo}:{tag}")


def distinct_images() -> list[str]:
    refs = images.image_refs(FakeEngine(1), "labctl-base:latest")  # type: ignore[arg-type]
    first: dict[str, str] = {}
    for name, ref in refs.items():
        first.setdefault(ref, name)
    return list(first.values())


def test_build_all_builds_each_image_once_all_at_once(monkeypatch, tmp_path):
    monkeypatch.setattr(compose, "ENV_FILE", tmp_path / ".env")
    monkeypatch.setattr(compose, "write_env", lambda base, builder: False)
    wanted = distinct_images()
    assert len(wanted) >= 5 and "worker" in wanted and "lease" in wanted
    # The fake's barrier waits for every build at once: more images than threads would hang it.
    assert len(wanted) <= images.BUILD_THREADS, "raise BUILD_THREADS or size FakeEngine's barrier"
    engine = FakeEngine(len(wanted))
    lines: list[tuple[str, str]] = []
    said: list[str] = []
    images.build_all(engine, "labctl-base:latest", said.append, lambda s, line: lines.append((s, line)))  # type: ignore[arg-type]
    assert sorted(engine.built) == sorted(wanted)
    assert {s for s, _ in lines} == set(wanted)  # every line names its service
    assert all(any(m.startswith(f"{s}: built ") for m in said) for s in wanted)
    project = compose.checkout_project()
    assert {f"{project}-{s}:latest" for s in compose.all_services({})} <= set(engine.tags)


def test_build_all_raises_the_failed_image_s_error_once_the_others_ended(monkeypatch):
    monkeypatch.setattr(compose, "write_env", lambda base, builder: False)
    wanted = distinct_images()
    engine = FakeEngine(len(wanted), fail="monitor")
    with pytest.raises(LabError) as err:
        images.build_all(engine, "labctl-base:latest", lambda s: None, lambda s, line: None)  # type: ignore[arg-type]
    assert err.value.code == ExitCode.BUILD_FAILED and "syntax" in err.value.what
    assert sorted(engine.built) == sorted(set(wanted) - {"monitor"})
    assert engine.tags == []  # nothing tagged as built when one build failed


def test_every_lab_dockerfile_labels_its_image_managed_and_its_component():
    """build_all gives the engine only the source hash: the rest is the Dockerfile's."""
    for svc in {s.build_context for s in compose.all_services({}).values()}:
        text = (svc / "Dockerfile").read_text()
        assert 'io.labctl.managed="true"' in text, svc
        assert f'io.labctl.component="{svc.name}"' in text, svc


def test_a_ctrl_c_while_waiting_tells_the_jobs_they_are_abandoned():
    import os
    import signal

    abandoned = threading.Event()
    release = threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def job():
        signal.pthread_kill(main, signal.SIGINT)  # the user's Ctrl-C, while the main thread waits
        release.wait(5)

    try:
        with pytest.raises(KeyboardInterrupt):
            images.side_by_side([job], abandoned=abandoned)
        assert abandoned.is_set()
        said: list[str] = []
        quiet = images.quiet_after(abandoned, said.append)
        quiet("a build line after the Ctrl-C")
        assert said == []
    finally:
        release.set()
    assert os.getpid()  # still here: the job's thread is a daemon, nothing waits for it


def test_a_failed_base_build_leaves_no_rootfs_behind(monkeypatch, tmp_path):
    monkeypatch.setattr(images.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(images.shutil, "which", lambda name: "/usr/bin/" + name)

    def fails(cmd, env, log):
        (tmp_path / next(p.name for p in tmp_path.iterdir()) / "rootfs.tar").write_bytes(b"x" * 1024)
        return ["E: cannot download"]

    monkeypatch.setattr(images, "run_with_progress", fails)

    class NoImage:
        def image_exists(self, ref):
            return False

    with pytest.raises(LabError) as err:
        images.build_base(NoImage(), lambda s: None, images.TOOLS)  # type: ignore[arg-type]
    assert "mmdebstrap failed" in err.value.what
    assert list(tmp_path.iterdir()) == []
