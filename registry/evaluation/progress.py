"""Progress on long work: the one process-wide place a command says how to show it.

A benchmark runs deep inside a Prefect flow called in-process, and a callable is no flow parameter
(Prefect validates and records parameters). So the command installs a reporter for the duration
of the work (``reporting``), and the code that runs items asks for it (``tracked``), however many
layers lie between them. The reporter is a plain module global, not a ``ContextVar``: Prefect may
run a task's code in a worker thread of the same process, which would not see a context variable
set in the command's thread. With no reporter installed (a library caller, a test, ``--json``)
progress costs a no-op call per item.

How progress looks (bars on a terminal, a line per finished unit of work otherwise) belongs to the
CLI (``registry/cli/progress.py``); this module only carries it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

ItemDone = Callable[[int, int], None]
"""Told ``(items done, items in the run)`` after each item."""


class Tracker(Protocol):
    """One unit of work being shown, e.g. one version × task."""

    def advance(self, done: int, total: int) -> None:
        """``done`` of ``total`` items are finished."""

    def end(self, ok: bool) -> None:
        """The work is over: ``ok`` when it finished, ``False`` when an error cut it short."""


class Reporter(Protocol):
    """Shows any number of units of work, possibly from several threads."""

    def start(self, label: str, total: int, verb: str) -> Tracker:
        """A unit of work named ``label`` (``smollm2-135m/1 · qa/1``) of ``total`` items; ``verb`` says
        what was done to them, for a line once it finishes (``benchmarked``)."""


class _Silent:
    """The default: nothing shown, nothing measured."""

    def start(self, label: str, total: int, verb: str) -> Tracker:
        return self

    def advance(self, done: int, total: int) -> None:
        pass

    def end(self, ok: bool) -> None:
        pass


_SILENT = _Silent()
_lock = threading.Lock()
_current: Reporter = _SILENT


def current() -> Reporter:
    """The reporter installed by the command running now (a silent one when none is)."""
    return _current


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Install ``reporter`` for this block, in every thread of the process; the previous one is back
    afterwards, so blocks nest."""
    global _current
    with _lock:
        previous, _current = _current, reporter
    try:
        yield reporter
    finally:
        with _lock:
            _current = previous


@contextmanager
def tracked(label: str, total: int, verb: str) -> Iterator[ItemDone]:
    """Show one unit of work through the current reporter; yields the ``on_item`` callback to call
    after each item, and ends the unit when the block does (cut short if the block raised)."""
    tracker = current().start(label, total, verb)
    try:
        yield tracker.advance
    except BaseException:
        tracker.end(ok=False)
        raise
    tracker.end(ok=True)
