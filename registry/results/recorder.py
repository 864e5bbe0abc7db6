"""Append ``calls`` and ``events`` rows off the request path.

Writing a Parquet file takes milliseconds; a response must not wait for it. Rows go into an
in-memory queue and one background thread writes whatever has gathered, at least every
``flush_s`` seconds, one staged Parquet file per table per flush (:mod:`registry.results.staging`):
a flush never waits on a Delta commit or a compaction, which the process's maintenance thread does.
``close()`` flushes everything, so a graceful shutdown loses nothing; a SIGKILL loses at most
the rows of the last ``flush_s`` seconds.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from registry.results.store import ResultsStore

_log = logging.getLogger(__name__)


class Recorder:
    """Example::

        recorder = Recorder(store, flush_s=1.0)
        recorder.start()
        recorder.add("calls", row)       # returns at once
        recorder.close()                 # writes what is left
    """

    def __init__(self, store: ResultsStore, *, flush_s: float = 1.0, commits: bool = True) -> None:
        """``commits=False`` in a process whose own maintenance thread commits staged files (``serve``):
        its flushes then never wait on a commit. Elsewhere (the Python facade) a flush commits the
        staged files itself once there are enough of them (``ResultsStore.append``)."""
        self._store = store
        self._flush_s = flush_s
        self._commits = commits
        self._rows: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._flushing = threading.Lock()  # one flush at a time: see flush()
        self._thread = threading.Thread(target=self._run, name="arbiter-recorder", daemon=True)
        self.written = 0
        self.failed_flushes = 0

    def start(self) -> None:
        self._thread.start()

    def add(self, table: str, row: dict[str, Any]) -> None:
        self._rows.put((table, row))

    def flush(self) -> int:
        """Write every queued row now; returns how many were written. Flushes take turns, so when it
        returns, every row added before the call is in the store, including a batch the writer
        thread had already taken off the queue and was writing (a reader that flushes and then
        queries would otherwise miss it)."""
        with self._flushing:
            return self._flush()

    def _flush(self) -> int:
        batches: dict[str, list[dict[str, Any]]] = {}
        while True:
            try:
                table, row = self._rows.get_nowait()
            except queue.Empty:
                break
            batches.setdefault(table, []).append(row)
        written = 0
        for table, rows in batches.items():
            try:
                self._store.append(table, rows, may_commit=self._commits)
                written += len(rows)
            except OSError as exc:  # a full or unmounted disk: keep the rows for the next flush
                self.failed_flushes += 1
                _log.error("could not write %d %s rows (kept for the next flush): %s", len(rows), table, exc)
                for row in rows:
                    self._rows.put((table, row))
            except Exception as exc:  # noqa: BLE001 — rows that do not fit the schema (a bug): never kill the writer
                self.failed_flushes += 1
                _log.error("dropped %d %s rows that cannot be written: %s", len(rows), table, exc)
        self.written += written
        return written

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush()
