"""`labctl grade` in real sandboxes: the lab's own worker, graded as a
student's hardcore_worker.c, scores full marks; wrong workers written here
lose exactly the points of the tests they should fail; hostile ones (an
endless loop, a fork bomb, a 1 GB print, one that looks for a network) fail
within their timeouts and say why; the sandbox is locked down; and nothing
labelled with a grading run is left on the engine afterwards, also when an
assertion fails."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers import labctl
from labctl.grade import reference

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

SEED = 20261130
EXERCISE = 4
# A student's hardcore_worker that keeps the whole contract; the wrong ones
# below are this file with one thing changed.
GOOD = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define LOCK "cworker.lock"
#define SQUARE_MAX 3037000499L

static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

static void on_segv(int sig)
{
    static const char msg[] = "ERROR: segmentation fault, lock removed\n";
    unlink(LOCK);
    write(STDERR_FILENO, msg, sizeof msg - 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int take_lock(void)
{
    int fd = open(LOCK, O_RDWR | O_CREAT, 0644);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "ERROR: %s is held by another worker\n", LOCK);
        return -1;
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || write(fd, buf, (size_t)n) != n)
        return -1;
    return fd;
}

/* 1: a number in *out; 0: not a number; -1: out of range. */
static int parse(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s)
        return 0;
    while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
        end++;
    if (*end)
        return 0;
    if (errno == ERANGE || v > SQUARE_MAX || v < -SQUARE_MAX)
        return -1;
    *out = v;
    return 1;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    int lock = take_lock();
    if (lock < 0)
        return 1;
    char line[4096];
    while (!stop && fgets(line, sizeof line, stdin)) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            int c;
            while ((c = getchar()) != EOF && c != '\n')
                ;
            fprintf(stderr, "ERROR: line too long\n");
            continue;
        }
        long n;
        int r = parse(line, &n);
        if (r == 0)
            fprintf(stderr, "ERROR: Malformed input: %s", line);
        else if (r < 0)
            fprintf(stderr, "ERROR: Out of range: %s", line);
        else if (n == 999)
            *(volatile int *)0 = 1;
        else if (n < 0)
            fprintf(stderr, "ERROR: Corrupted data %ld\n", n);
        else {
            printf("%ld,%ld\n", n, n * n);
            fflush(stdout);
        }
    }
    unlink(LOCK);
    close(lock);
    return 0;
}
"""


def variant(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


GOOD_PARSE = GOOD[GOOD.index("static int parse("):GOOD.index("int main(void)")]
HOSTILE = {
    "loop": "int main(void) { for (;;) ; }\n",
    "forkbomb": "#include <unistd.h>\nint main(void) { for (;;) fork(); }\n",
    # 1 GiB on stdout, no newline at all, then a failure exit.
    "bigprint": "#include <stdio.h>\n#include <string.h>\nstatic char b[1 << 20];\n"
                "int main(void) { memset(b, 'x', sizeof b);\n"
                "  for (int i = 0; i < 1024; i++) fwrite(b, 1, sizeof b, stdout);\n  return 1; }\n",
    # Reads the interfaces it can see; sends nothing anywhere.
    "netlist": "#include <dirent.h>\n#include <stdio.h>\n"
               "int main(void) { DIR *d = opendir(\"/sys/class/net\"); struct dirent *e;\n"
               "  if (!d) { perror(\"opendir\"); return 1; }\n"
               "  while ((e = readdir(d))) if (e->d_name[0] != '.') puts(e->d_name);\n"
               "  closedir(d); return 0; }\n",
}
WRONG = {
    "good": GOOD,
    # atoi: garbage becomes 0 and "12abc" becomes 12, silently.
    "atoi": variant(GOOD_PARSE, "static int parse(const char *s, long *out)\n{\n    *out = atoi(s);\n"
                                "    return 1;\n}\n\n"),
    "exit0": variant("signal(sig, SIG_DFL);\n    raise(sig);", "exit(0);"),
    "noterm": variant("sigaction(SIGTERM, &sa, NULL);", ""),
    "nopid": variant('"%ld\\n", (long)getpid()', '"%s\\n", "locked"'),
    "syntax": variant("int lock = take_lock();", "int lock = take_lock()"),
    **HOSTILE,
}
# The worker's tests; exercise 4's supervisor tests, if gradable, find no
# supervisor.py in these submissions and say "not submitted".
WORKER_TESTS = {f"4.{i}" for i in range(1, 17)}
RUNTIME = {f"4.{i}" for i in range(2, 16)}
EXPECTED_FAILS = {
    "reference": set(),
    "good": set(),
    "atoi": {"4.9"},
    "exit0": {"4.8"},
    "noterm": {"4.6", "4.14"},
    "nopid": {"4.5"},
    "syntax": {"4.1"} | RUNTIME,
    "loop": RUNTIME,
    "forkbomb": RUNTIME,
    "bigprint": RUNTIME,
    "netlist": RUNTIME - {"4.13"},  # with empty stdin it does exit 0 and leaves no lock
}


def write_submissions(root: Path, names: list[str]) -> list[Path]:
    """One directory per submission; the reference is the lab's own worker,
    made from its sources by labctl.grade.reference (no second copy in git)."""
    paths = []
    for name in names:
        d = root / name
        d.mkdir(parents=True)
        src = reference.files()["hardcore_worker.c"] if name == "reference" else WRONG[name].encode()
        (d / "hardcore_worker.c").write_bytes(src)
        paths.append(d)
    return paths


def grading_resources(engine, run_id: str | None = None, submissions: set[str] | None = None) -> set[str]:
    """Grading containers and volumes: of one run, or of the named submissions (in any run)."""
    from labctl import labels

    found: set[str] = set()
    for sub in sorted(submissions) if submissions else [None]:
        f = labels.grade_filters(run_id, sub)
        found |= {c.name for c in engine.containers(f)} | set(engine.volumes(f))
    return found


@pytest.fixture
def no_leftovers(engine):
    """Nothing a test's grading created may outlive it. The test names the
    submissions it grades (watch.add); at teardown what carries those names is
    reported and removed, also after a failure. Only those: another grading
    run may be at work on the same engine."""
    from labctl import labels

    watch: set[str] = set()
    yield watch
    left = grading_resources(engine, submissions=watch) if watch else set()
    for sub in watch:
        f = labels.grade_filters(None, sub)
        for c in engine.containers(f):
            engine.remove_container(c.id)
        for v in engine.volumes(f):
            engine.remove_volume(v)
    assert not left, f"grading left these behind: {sorted(left)}"


@pytest.fixture(scope="module")
def graded(engine, built, tmp_path_factory):
    """Every submission above graded once, in one run, three at a time."""
    from labctl.grade import runner

    root = tmp_path_factory.mktemp("grade")
    lines: list[str] = []
    run = None
    try:
        run = runner.grade(write_submissions(root / "subs", list(EXPECTED_FAILS)),
                           runner.Options(exercises=[EXERCISE], out_dir=root / "out", jobs=3, seed=SEED),
                           progress=lines.append, engine=engine)
        yield run, {r.submission: r for r in run.results}, lines
    finally:
        # This run's own only: every resource it makes carries its run id.
        left = grading_resources(engine, run.run_id) if run else set()
        assert not left, f"the grading run left these behind: {sorted(left)}"


@pytest.mark.parametrize("name", list(EXPECTED_FAILS))
def test_each_submission_loses_exactly_its_points(graded, name):
    from labctl.grade.catalog import BY_NUMBER

    _, results, lines = graded
    r = results[name]
    assert not r.has_grader_error, r.grader_error
    worker = [t for t in r.tests if t.number in WORKER_TESTS]
    assert {t.number for t in worker} == WORKER_TESTS
    failed = {t.number for t in worker if t.counts_as_failure}
    detail = "\n".join(f"{t.number} {t.status}: {t.output[:400]}" for t in worker if t.counts_as_failure)
    assert failed == EXPECTED_FAILS[name], f"{name}: failed {sorted(failed)}\n{detail}\n{lines}"
    lost = sum(BY_NUMBER[n].points for n in EXPECTED_FAILS[name])
    assert sum(t.score for t in worker) == sum(BY_NUMBER[n].points for n in WORKER_TESTS) - lost
    # The supervisor's tests need supervisor.py, which these submissions lack;
    # 4.25 (their worker under the lab's supervisor) needs only the worker and
    # is judged with the fixtures in test_grade_exercises.py.
    others = [t for t in r.tests if t.number not in WORKER_TESTS and "supervisor.py" in BY_NUMBER[t.number].files]
    assert others and all(t.output.startswith("not submitted") for t in others), [t.output[:100] for t in others]


def test_the_reference_scores_full_marks(graded):
    _, results, _ = graded
    ref = results["reference"]
    from labctl.grade.catalog import BY_NUMBER

    worker_share = sum(BY_NUMBER[n].points for n in WORKER_TESTS)  # the worker's share of exercise 4
    assert worker_share > 0
    assert sum(t.score for t in ref.tests if t.number in WORKER_TESTS) == worker_share
    assert ref.result_for("4.16").status == "passed"  # no async-signal-unsafe call in its handlers


def test_hostile_programs_fail_within_their_timeouts_and_say_why(graded):
    _, results, _ = graded
    for name in ("loop", "forkbomb", "bigprint"):
        r = results[name]
        for t in r.tests:
            # The longest case runs 5.5 s; the host's own deadline adds 15 s.
            assert t.time_s < 25, f"{name} {t.number} took {t.time_s:.1f} s"
        squares = r.result_for("4.2").output
        # The print may end within the time limit; what it shows is its output, cut.
        reason = "bytes in all, the rest cut" if name == "bigprint" else "killed by the grader"
        assert reason in squares, f"{name}: {squares[:600]}"
    assert "did not appear" in results["loop"].result_for("4.15").output


def test_the_sandbox_sees_only_loopback(graded):
    _, results, _ = graded
    out = results["netlist"].result_for("4.2").output
    assert "stdout:\nlo\n" in out, out
    assert "eth" not in out and "docker" not in out


def test_compile_error_is_a_failed_test_with_the_compilers_message(graded):
    _, results, _ = graded
    r = results["syntax"]
    assert "error" in r.result_for("4.1").output and "hardcore_worker.c" in r.result_for("4.1").output
    assert "did not compile" in r.result_for("4.2").output
    assert "error" in r.compile_logs["hardcore_worker.c"]
    assert r.result_for("4.16").status == "passed"  # the static scan reads the source anyway


def test_flagged_handler_calls_are_informational(graded):
    _, results, _ = graded
    r = results["exit0"]
    finding = r.result_for("4.16")
    assert finding.status == "failed" and finding.score == 0 and not finding.counts_as_failure
    assert "exit() in the signal handler on_segv" in finding.output


def test_sandbox_is_locked_down(engine, built, no_leftovers):
    from labctl.grade import runner
    from labctl.grade.sandbox import WORK, RunSpec, Sandbox
    from labctl.labels import new_grade_run_id

    image, base = runner.resolve_images(engine)
    no_leftovers.add("locked")
    with Sandbox(engine, run_id=new_grade_run_id(), submission="locked", image=image, builder_image=base) as sb:
        attrs = engine.api.inspect_container(sb.container)
        hc = attrs["HostConfig"]
        assert hc["NetworkMode"] == "none" and hc["ReadonlyRootfs"] and hc["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in hc["SecurityOpt"]
        assert hc["PidsLimit"] == 64 and hc["Memory"] == hc["MemorySwap"] == 256 * 2**20
        assert hc["NanoCpus"] == 500_000_000
        assert attrs["Config"]["User"] == "10001:10001"
        assert attrs["Config"]["Healthcheck"]["Test"] == ["NONE"]
        assert attrs["Config"]["Labels"]["io.labctl.submission"] == "locked"
        opts = engine.api.inspect_volume(sb.volume)["Options"]
        assert opts["type"] == "tmpfs" and "size=32m" in opts["o"]
        r = sb.run(RunSpec(["sh", "-c", f"id -u; ls /sys/class/net; touch /x 2>&1; touch {WORK}/case/y && echo ok"],
                           timeout=5))
        lines = r.stdout_lines()
        assert lines[0] == "10001" and lines[1] == "lo", lines
        assert "Read-only file system" in r.stdout_text() and lines[-1] == "ok"
        # Input too large for the command line travels through a file, and is gone once read.
        big = RunSpec(["sh", "-c", f"wc -c < data; wc -c; ls -A {WORK}/.in | wc -l"], stdin=b"7\n" * 100_000,
                      files={"data": b"x" * 100_000}, timeout=5)
        assert sb.run(big).stdout_lines() == ["100000", "200000", "0"]
        # A pause from the host freezes the run: it ends late, and says when it was frozen.
        paused = sb.run(RunSpec(["sleep", "0.3"], timeout=5), host_actions=[("pause", 0.1, 1.0)])
        assert paused.exit_code == 0 and paused.elapsed >= 1.0, paused.summary()
        assert [e.fault for e in paused.host_events] == ["pause", "unpause"]


def test_a_frozen_run_hits_the_host_deadline(engine, built, no_leftovers, monkeypatch):
    """The driver itself stopped (SIGSTOP from the program): the host kills
    the sandbox at its own deadline, and the next run gets a fresh one with
    the compiled binary put back."""
    from labctl.grade import runner, sandbox
    from labctl.grade.sandbox import RunSpec, Sandbox
    from labctl.labels import new_grade_run_id

    monkeypatch.setattr(sandbox, "HOST_GRACE_S", 3.0)
    image, base = runner.resolve_images(engine)
    src = b"#include <signal.h>\n#include <unistd.h>\nint main(void) { kill(getppid(), SIGSTOP); pause(); }\n"
    no_leftovers.add("frozen")
    with Sandbox(engine, run_id=new_grade_run_id(), submission="frozen", image=image, builder_image=base) as sb:
        sb.put_files({"freeze.c": src})
        c = sb.compile_c("freeze.c")
        assert c.ok, c.log
        r = sb.run(RunSpec([c.binary], timeout=1))
        assert r.error and r.error.startswith("timed out") and r.host_timed_out, r
        assert sb.replaced == 1
        again = sb.run(RunSpec(["sh", "-c", f"test -x {c.binary} && echo restored"], timeout=5))
        assert again.stdout_lines() == ["restored"], again.summary()


def test_cli_grades_a_directory_of_two(engine, built, tmp_path, no_leftovers):
    subs = write_submissions(tmp_path / "class", ["reference", "nopid"])
    no_leftovers.update({"reference", "nopid"})
    out = tmp_path / "out"
    p = labctl("grade", *map(str, subs), "--exercise", "4", "--out", str(out), "--jobs", "2", "--seed", str(SEED),
               timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "labctl grade: reference: " in p.stderr and "labctl grade: nopid: " in p.stderr, p.stderr
    for name in ("reference", "nopid"):
        for f in ("results.json", "junit.xml", "feedback.md"):
            assert (out / name / f).is_file(), f"{name}/{f} missing"
    docs = {n: json.loads((out / n / "results.json").read_text()) for n in ("reference", "nopid")}
    assert docs["nopid"]["extra_data"]["seed"] == SEED
    failed = {n: [t["number"] for t in d["tests"] if t["status"] == "failed" and t["number"] in WORKER_TESTS]
              for n, d in docs.items()}
    assert failed == {"reference": [], "nopid": ["4.5"]}
    worker_score = {n: sum(t["score"] for t in d["tests"] if t["number"] in WORKER_TESTS) for n, d in docs.items()}
    assert worker_score["reference"] - worker_score["nopid"] == 5  # 4.5's points, nothing else
    # Nor under the lab's supervisor (4.25): its crash handler's ERROR line is not taken for an answer.
    assert docs["reference"]["score"] - docs["nopid"]["score"] == 5
    rows = {r["submission"]: float(r["total"]) for r in csv.DictReader((out / "grades.csv").open())}
    assert rows == {"reference": docs["reference"]["score"], "nopid": docs["nopid"]["score"]}
