"""Maintenance: staged files into their tables, small files into large ones, old ``calls`` days out.

One pass, under one lock shared by every process on the home (``results/_staging/.lock``, an
``flock`` the kernel lets go of when its holder dies, however it dies), does in order:

1. **commit** each table's staged files (legacy files too: this is the one-time conversion of a home
   written before Delta) in one Delta commit per table that records each writer's highest number —
   see :mod:`registry.results.staging` for why that makes it exactly-once — then deletes the staged
   files the table already holds, a minute after they were written so a reader that listed them
   before the commit can still open them;
2. **compact** (when asked) each day with enough small files into files of ``target_bytes``;
3. **retain**: with ``ARBITER_RESULTS_RETAIN_DAYS``, drop ``calls`` and ``feedback`` days older than
   that — the two that grow with traffic (a live-scored call writes one of each) — never another
   table: runs, events, learnings and calibrations are the history decisions were made on;
4. **tidy** the log: a checkpoint every 100 commits, expired log entries and compacted-away files
   out after an hour.

A process that finds the lock held skips the pass (another process is doing the same work), so two
``arbiter serve`` on one home never both compact. Readers never take the lock; writers never wait
for it (a flush only writes a staged file).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from registry.errors import StoreError
from registry.results import staging
from registry.results.delta import PARTITION, DeltaResults
from registry.results.schemas import SCHEMAS, now_utc


class ResultsTables(Protocol):
    """What maintenance needs of the store (:class:`registry.results.store.ResultsStore`, which
    imports this module to commit when staged files pile up: so this one names only the shape)."""

    results_dir: Path

    def delta(self, table: str) -> DeltaResults: ...


_log = logging.getLogger(__name__)

# An old-layout file numbered at or below the last conversion's: its rows are most likely in the table (a
# conversion killed between its commit and its deletes), but it may be an old copy put back: never deleted.
_CONVERTED_ALREADY = ("an old-layout file written no later than the last conversion of this table: its rows are "
                      "most likely in the table already; delete it after a look, or give it a new modification "
                      "time (touch) to have it converted")
STAGED_GRACE_S = 60.0  # a committed staged file is deleted only this long after it was written
# Two sizes of compacted file. Today's files are compacted to 16 MB, so each compaction rewrites at most
# that much, not the whole day so far; a day that is over is compacted once more into files of 256 MB
# (a day of 10 requests/s is about 70 MB: one file), so the file count grows with days, not with flushes.
TODAY_TARGET_BYTES = 16 * 1024 * 1024
TARGET_BYTES = 256 * 1024 * 1024
STALE_TEMPORARY_S = 3600.0  # a writer's temporary file this old was left by a writer killed mid-write
# Staged files read by one DuckDB query while committing. Its union of the files' schemas costs more than
# linearly: 20,000 legacy files read at once took 115 s and 3 GB of memory.
READ_CHUNK = 500
RETAINED_TABLES = ("calls", "feedback")  # the only tables retention ever shortens: they grow with traffic


@dataclass
class PassReport:
    """What one maintenance pass did, per table (``results compact --json`` prints it)."""

    ran: bool = True  # False: another process held the lock
    committed_rows: dict[str, int] = field(default_factory=dict)
    committed_files: dict[str, int] = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)
    compacted: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> {files_removed, files_added}
    dropped_rows: int = 0
    vacuumed_files: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"ran": self.ran, "committed_rows": self.committed_rows, "committed_files": self.committed_files,
                "quarantined": self.quarantined, "compacted": self.compacted, "dropped_rows": self.dropped_rows,
                "vacuumed_files": self.vacuumed_files}


class Maintenance:
    """Example::

        Maintenance(store).run(compact=True)        # what `arbiter results compact` does
        Maintenance(store).run(wait=False)          # serve's tick: skip when another process is at it
    """

    def __init__(self, store: ResultsTables, *, retain_days: int | None = None, target_bytes: int = TARGET_BYTES,
                 min_small_files: int = 2, staged_grace_s: float = STAGED_GRACE_S) -> None:
        self.store = store
        self.retain_days = retain_days
        self.target_bytes = target_bytes
        self.min_small_files = min_small_files
        self.staged_grace_s = staged_grace_s

    def run(self, *, compact: bool = False, wait: bool = True) -> PassReport:
        """One pass; with ``wait=False`` it returns ``PassReport(ran=False)`` at once if the lock is held."""
        with _maintenance_lock(self.store.results_dir, wait=wait) as held:
            report = PassReport(ran=held)
            if not held:
                return report
            for table in SCHEMAS:
                self._commit(table, report)
            if self.retain_days is not None:
                self._retain(report)
            for table in SCHEMAS:  # tidying lists the table's files: with compaction (serve: each minute), not each commit
                if compact:
                    self._compact(table, report)
                if compact and self.store.delta(table).exists():
                    report.vacuumed_files += self.store.delta(table).tidy()
            return report

    def commit(self) -> PassReport:
        """Only the commit step (what a process that writes rarely does after writing)."""
        with _maintenance_lock(self.store.results_dir, wait=False) as held:
            report = PassReport(ran=held)
            if held:
                for table in SCHEMAS:
                    self._commit(table, report)
            return report

    def _commit(self, table: str, report: PassReport) -> None:
        staging.remove_stale_temporaries(self.store.results_dir, table, STALE_TEMPORARY_S)
        files = staging.staged(self.store.results_dir, table)
        if not files:
            return
        delta = self.store.delta(table)
        snapshot = delta.snapshot()
        committed = {w: snapshot.committed(w) if snapshot else 0 for w in {f.writer for f in files}}
        done = [f for f in files if f.seq <= committed[f.writer]]
        self._remove([f for f in done if f.writer != staging.LEGACY_WRITER])
        for f in done:
            if f.writer == staging.LEGACY_WRITER:  # a conversion killed before it deleted it, or an old copy
                self._quarantine(table, f, _CONVERTED_ALREADY, report, what="was converted already")
        readable = [f for f in staging.pending(files, committed.__getitem__) if self._readable(table, f, report)]
        if not readable:
            return
        try:
            rows = _append(delta, table, readable)
        except StoreError:
            # A file whose footer is sound but whose data is not (a corrupt page) fails the commit of
            # them all: each is read alone, the failing ones are quarantined, the rest committed.
            if not self._quarantine_unreadable(table, readable, report):
                raise
            if not readable:
                return
            rows = _append(delta, table, readable)
        delta.checkpoint_if_due()
        report.committed_rows[table] = report.committed_rows.get(table, 0) + rows
        report.committed_files[table] = report.committed_files.get(table, 0) + len(readable)
        for f in readable:
            if f.writer == staging.LEGACY_WRITER:  # just converted, and no reader of ours writes these
                f.path.unlink(missing_ok=True)

    def _readable(self, table: str, staged_file: staging.StagedFile, report: PassReport) -> bool:
        """Whether a staged file's footer is one of this table's (:func:`staging.schema_problem`);
        one that is not, or cannot be read, is quarantined."""
        try:
            problem = staging.schema_problem(pq.read_schema(staged_file.path), table)
        except FileNotFoundError:
            return False
        except (OSError, pa.ArrowException) as exc:
            problem = str(exc)
        if problem is not None:
            self._quarantine(table, staged_file, problem, report)
        return problem is None

    def _quarantine_unreadable(self, table: str, files: list[staging.StagedFile], report: PassReport) -> bool:
        """Read each of ``files`` alone; quarantine the ones that fail and take them out of ``files``.
        Whether there were any (none: the commit failed for another reason, a full disk)."""
        unreadable = []
        for f in files:
            try:
                _read_aligned(table, [f.path])
            except StoreError as exc:
                self._quarantine(table, f, str(exc), report)
                unreadable.append(f)
        for f in unreadable:
            files.remove(f)
        return bool(unreadable)

    def _quarantine(self, table: str, staged_file: staging.StagedFile, reason: str, report: PassReport, *,
                    what: str = "is not a readable {table} file") -> None:
        """Move a file that is not a readable ``table`` file (or an old-layout file converted already)
        to ``results/_quarantine`` (kept for a person to look at), with one logged line naming it."""
        target = self.store.results_dir / "_quarantine" / table / staged_file.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staged_file.path, target)
        except FileNotFoundError:
            return
        _log.error("%s %s, moved to %s: %s", staged_file.path, what.format(table=table), target,
                   reason.strip().splitlines()[0] if reason.strip() else "unreadable")
        report.quarantined.append(str(target))

    def _remove(self, done: list[staging.StagedFile]) -> None:
        cutoff = time.time() - self.staged_grace_s
        for f in done:
            try:
                if f.path.stat().st_mtime < cutoff:
                    f.path.unlink()
            except FileNotFoundError:
                pass

    def _retain(self, report: PassReport) -> None:
        cutoff = (now_utc() - timedelta(days=self.retain_days or 0)).date()
        for table in RETAINED_TABLES:
            delta = self.store.delta(table)
            if delta.exists():
                report.dropped_rows += delta.drop_days_before(cutoff)

    def _compact(self, table: str, report: PassReport) -> None:
        delta = self.store.delta(table)
        if not delta.exists():
            return
        today = now_utc().date().isoformat()
        closed = delta.small_file_days(self.target_bytes, 2)  # a closed day is compacted once, whatever its count
        current = delta.small_file_days(TODAY_TARGET_BYTES, self.min_small_files)
        for day in sorted({d for d in closed if d < today} | {d for d in current if d >= today}):
            metrics = delta.compact(day, self.target_bytes if day < today else TODAY_TARGET_BYTES)
            totals = report.compacted.setdefault(table, {"files_removed": 0, "files_added": 0})
            totals["files_removed"] += int(metrics.get("numFilesRemoved") or 0)
            totals["files_added"] += int(metrics.get("numFilesAdded") or 0)


class Maintainer:
    """``arbiter serve``'s background maintenance: a commit pass every ``commit_s`` and a compaction
    pass every ``compact_s``, on its own thread, skipping a pass another process is running.

    A failed pass is logged and tried again next time; it never stops the thread or the gateway."""

    def __init__(self, maintenance: Maintenance, *, commit_s: float = 5.0, compact_s: float = 60.0) -> None:
        self.maintenance = maintenance
        self.commit_s = commit_s
        self.compact_s = compact_s
        self.passes = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="arbiter-results-maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop, then one last commit so what this process staged is in its table."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self._pass(compact=False)

    def _loop(self) -> None:
        last_compaction = time.monotonic()
        while not self._stop.wait(self.commit_s):
            due = time.monotonic() - last_compaction >= self.compact_s
            if self._pass(compact=due) and due:
                last_compaction = time.monotonic()

    def _pass(self, *, compact: bool) -> bool:
        """One pass; False when another process held the lock. A due compaction then stays due: that
        process may be only committing, and two gateways' commit passes would otherwise skip it for ever."""
        try:
            ran = self.maintenance.run(compact=compact, wait=False).ran
            self.passes += 1 if ran else 0
            self.last_error = None
            return ran
        except Exception as exc:  # noqa: BLE001 — maintenance must never take the gateway down
            self.failures += 1
            self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _log.error("results maintenance failed (tried again in %.0f s): %s", self.commit_s, self.last_error,
                       exc_info=not isinstance(exc, StoreError))
            return True  # tried: a compaction that fails (a full disk) waits its period, not every commit


def _append(delta: DeltaResults, table: str, files: list[staging.StagedFile]) -> int:
    """Commit ``files``' rows in one Delta commit that records each writer's highest number (a file
    that could not be read is out of the folder, quarantined, before that, so no later reader takes
    it for committed); returns the rows added. The rows stream into the commit :data:`READ_CHUNK`
    files at a time: memory holds one chunk, however many files (an old home converted after weeks)."""
    transactions: dict[str, int] = {}
    for f in files:
        transactions[f.writer] = max(transactions.get(f.writer, 0), f.seq)
    operation = "convert-legacy" if staging.LEGACY_WRITER in transactions else "commit-staged"
    paths = [f.path for f in files]
    added = 0

    def chunks() -> Iterator[pa.RecordBatch]:
        nonlocal added
        for start in range(0, len(paths), READ_CHUNK):
            rows = _read_aligned(table, paths[start:start + READ_CHUNK])
            added += rows.num_rows
            yield from rows.combine_chunks().to_batches()  # one batch per chunk, not one per file

    target = SCHEMAS[table].append(pa.field(PARTITION, pa.string()))
    delta.append(pa.RecordBatchReader.from_batches(target, chunks()), transactions, operation)
    return added


def _read_aligned(table: str, paths: list[Path]) -> pa.Table:
    """The files' rows in the table's current schema (a column an older file lacks reads as NULL),
    plus the ``day`` partition column from ``ts`` in UTC."""
    schema = SCHEMAS[table]
    connection = duckdb.connect(":memory:")
    try:
        connection.execute("set TimeZone = 'UTC'")
        files = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"
        present = {row[0] for row in connection.execute(
            f"describe select * from read_parquet({files}, union_by_name=true, hive_partitioning=false)").fetchall()}
        columns = [f"{name}" if name in present else f"null as {name}" for name in schema.names]
        arrow = connection.sql(
            f"select {', '.join(columns)}, strftime(ts, '%Y-%m-%d') as {PARTITION} "
            f"from read_parquet({files}, union_by_name=true, hive_partitioning=false)").to_arrow_table()
    except duckdb.Error as exc:
        raise StoreError(f"staged {table} files cannot be read together: {str(exc).splitlines()[0]}") from exc
    finally:
        connection.close()
    target = schema.append(pa.field(PARTITION, pa.string()))
    try:
        return arrow.cast(target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise StoreError(f"staged {table} files do not fit the table's schema: {exc}") from exc


@contextmanager
def _maintenance_lock(results_dir: Path, *, wait: bool) -> Iterator[bool]:
    folder = results_dir / staging.STAGING
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
