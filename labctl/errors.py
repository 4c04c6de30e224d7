"""Exit codes and the one exception type that carries a user-facing message."""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # ran, but an expectation or a check did not hold
    USAGE = 2
    ENGINE_UNREACHABLE = 3
    LAB_EXISTS = 4
    IMAGE_MISSING = 5
    BAD_SCENARIO = 6
    BUILD_FAILED = 7
    NOT_FOUND = 8
    ENGINE_ERROR = 9
    GRADER_ERROR = 10  # labctl grade: the harness broke, not the student's code
    BAD_SUBMISSION = 11  # labctl grade: an archive refused (unsafe paths, links, bombs) or unreadable
    BAD_PACK = 12  # labctl unpack: a member damaged, missing, extra or unsafe
    INTERNAL = 70
    INTERRUPTED = 130


class LabError(Exception):
    """An error the user can act on: `labctl: error: <what>; <todo>`."""

    def __init__(self, code: ExitCode, what: str, todo: str | None = None):
        super().__init__(what)
        self.code = code
        self.what = what
        self.todo = todo

    def message(self) -> str:
        return f"labctl: error: {self.what}" + (f"; {self.todo}" if self.todo else "")


class EngineRefused(LabError):
    """The engine answered no. A server-side failure (HTTP 5xx, e.g. `OCI runtime
    pause failed: unable to freeze` with dozens of labs at once) can pass on a
    second try; a conflict (not running, already paused) or a 404 will not."""

    def __init__(self, what: str, todo: str | None = None, status: int | None = None):
        super().__init__(ExitCode.ENGINE_ERROR, what, todo)
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status is not None and self.status >= 500
