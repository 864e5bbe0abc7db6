"""How a command shows progress on long work: bars on a terminal, a line per finished unit otherwise.

``terminal_progress`` installs a reporter (``registry.evaluation.progress``) for a block; the code
that runs items tells it of each one. On a terminal each version × task is a rich bar,
``smollm2-135m/1 · qa/1 ━━━━━━━━━━━━━━ 12/30 ETA 0:00:20``, kept once finished; when the output is
a file or a pipe (CI, ``make demo > log``) each finished unit is one plain line,
``benchmarked smollm2-135m/1 · qa/1: 30 items in 41 s``, since redrawn bars would fill a log with
control codes. Under ``--json`` the command installs nothing.

Progress goes to **stderr**, and the terminal test is on stderr: stdout carries the command's result
(its table, its JSON) for a reader or a script, progress is commentary on the way there. So
``arbiter benchmark > runs.txt`` still shows live bars while the file gets the result alone, and a
script reading ``--json`` from stdout never has to skip anything.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from registry.evaluation.progress import Tracker, reporting

# Items take seconds to minutes (a judged one): rich's default 30 s window would often hold no
# sample and show no ETA, so the rate is taken over the whole unit of work.
_SPEED_WINDOW_S = 3600.0


@contextmanager
def terminal_progress(enabled: bool = True, *, lines: bool = True) -> Iterator[None]:
    """Show progress of the work done in this block on stderr: bars on a terminal, otherwise a line
    per finished unit (unless not ``lines``: for work of seconds, whose result says it all); nothing
    when not ``enabled`` (pass ``not as_json``)."""
    if not enabled:
        yield
        return
    console = Console(stderr=True)
    if console.is_terminal and not console.is_dumb_terminal:
        bars = Bars(console)
        with reporting(bars):
            try:
                yield
            finally:
                bars.close()
    elif lines:
        with reporting(Lines(sys.stderr)):
            yield
    else:
        yield


class Bars:
    """A rich bar per unit of work, shared by every thread; the display starts with the first unit."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _TimeColumn(),
            console=console, speed_estimate_period=_SPEED_WINDOW_S,
        )
        self._lock = threading.Lock()
        self._live = False

    def start(self, label: str, total: int, verb: str) -> Tracker:
        with self._lock:
            if not self._live:
                self._progress.start()
                self._live = True
        return _Bar(self._progress, self._progress.add_task(label, total=total))

    def close(self) -> None:
        """Stop redrawing; the bars stay on the terminal as they last were."""
        with self._lock:
            if self._live:
                self._progress.stop()
                self._live = False


class _Bar:
    def __init__(self, progress: Progress, task_id: TaskID) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, done: int, total: int) -> None:
        self._progress.update(self._task_id, completed=done, total=total)

    def end(self, ok: bool) -> None:
        self._progress.stop_task(self._task_id)  # its clock stops where the work did


class _TimeColumn(ProgressColumn):
    """``ETA 0:00:20`` while running, ``in 0:00:41`` once finished."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text(f"in {_clock(task.finished_time or task.elapsed)}", style="progress.elapsed")
        remaining = task.time_remaining
        return Text(f"ETA {_clock(remaining) if remaining is not None else '-:--:--'}", style="progress.remaining")


class Lines:
    """A line per finished unit of work, for output that is not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def start(self, label: str, total: int, verb: str) -> Tracker:
        return _Line(self, label, verb)

    def write(self, line: str) -> None:
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class _Line:
    def __init__(self, lines: Lines, label: str, verb: str) -> None:
        self._lines = lines
        self._label = label
        self._verb = verb
        self._done = 0
        self._started = time.monotonic()

    def advance(self, done: int, total: int) -> None:
        self._done = done

    def end(self, ok: bool) -> None:
        if ok:  # a unit cut short by an error says nothing: the command's error line does
            elapsed = time.monotonic() - self._started
            self._lines.write(f"{self._verb} {self._label}: {self._done} items in {_seconds(elapsed)}")


def _clock(seconds: float | None) -> str:
    return str(timedelta(seconds=round(seconds or 0)))


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
