"""Which processes a test or the suite started, found by what they inherited rather than by who
their parent is: a process whose parent was killed is re-parented to init, so a parent chain no
longer leads to it, but its environment still carries the ``ARBITER_HOME`` (or the suite's mark)
it was started with.

(Importable as ``processes``, like ``support``.)
"""

from __future__ import annotations

import contextlib
import os
import time

import psutil
import pytest

SUITE_MARK = "ARBITER_TEST_SUITE"  # set by the root conftest; every process the suite starts inherits it


def _environ(process: psutil.Process) -> dict[str, str]:
    with contextlib.suppress(psutil.Error):  # gone meanwhile, a zombie, or another user's process
        return process.environ()
    return {}


def started_with(name: str, value: str) -> list[psutil.Process]:
    """Live processes other than this one whose environment has ``name=value``."""
    return [p for p in psutil.process_iter() if p.pid != os.getpid() and _environ(p).get(name) == value
            and _alive(p)]


def _alive(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return process.status() != psutil.STATUS_ZOMBIE
    return False


def describe(processes: list[psutil.Process]) -> str:
    lines = []
    for p in processes:
        with contextlib.suppress(psutil.Error):
            lines.append(f"pid {p.pid} (parent {p.ppid()}, {time.time() - p.create_time():.0f} s old, "
                         f"{p.memory_info().rss >> 20} MB): {' '.join(p.cmdline())[:200]}")
    return "\n".join(lines)


def left_after(name: str, value: str, *, within_s: float) -> list[psutil.Process]:
    """The processes started with ``name=value`` still alive after waiting up to ``within_s`` for
    them to exit (a server shutting down takes a moment)."""
    deadline = time.monotonic() + within_s
    while (left := started_with(name, value)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def assert_none_left(home: os.PathLike[str] | str, *, within_s: float = 30) -> None:
    """No process started for ``home`` (its ``ARBITER_HOME``) is alive ``within_s`` from now."""
    left = left_after("ARBITER_HOME", str(home), within_s=within_s)
    assert not left, f"still running {within_s:.0f} s after the command ended:\n{describe(left)}"


class SuiteLeavesNoProcess:
    """A pytest plugin: at the end of the session, every process the suite started has ended.

    It fails the run rather than warn: a warning at the end of a long run goes unread, and the
    orphans it would name (Prefect servers at ~200 MB each) slow down the very suite that left them.
    Whatever is found is listed and then killed, so a failed check leaves nothing behind either."""

    def __init__(self, grace_s: float = 30) -> None:
        self.grace_s = grace_s

    @pytest.hookimpl(trylast=True)  # after session fixtures are torn down (their servers stopped)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput"):  # an xdist worker: the controller checks once for all
            return
        left = left_after(SUITE_MARK, os.environ[SUITE_MARK], within_s=self.grace_s)
        if not left:
            return
        message = f"{len(left)} process(es) started by the tests still running {self.grace_s:.0f} s after the last test:"
        session.config.get_terminal_writer().line(f"\n{message}\n{describe(left)}", red=True, bold=True)
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
