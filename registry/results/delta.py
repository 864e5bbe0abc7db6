"""One results table as a Delta Lake table (delta-rs, the ``deltalake`` package), partitioned by day.

Why Delta (docs/results.md has the measurements): an ACID log gives every reader one consistent set
of files — a compaction swaps a thousand small files for one in a single atomic commit, so no reader
ever counts a row twice or misses one — and it brings compaction (``optimize.compact``), deletion of
old partitions, ``vacuum``, checkpoints and *application transactions* (what makes moving staged
files in exactly-once, :mod:`registry.results.staging`) from a well-kept library instead of a
hand-made manifest. DuckDB stays the query engine: it reads the files the log lists.

Only the maintenance pass writes here, one process at a time (:mod:`registry.results.maintenance`
holds the lock), so commits never race each other; readers only read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
from deltalake import (
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import DeltaError, TableNotFoundError

from registry.errors import StoreError

PARTITION = "day"  # the UTC date of ``ts`` (YYYY-MM-DD): live checks read only the days they need
CHECKPOINT_EVERY = 100  # commits: a reader replays at most this many JSON commits after the last checkpoint
# Kept short because nothing here travels back in time: a reader opens the newest version and runs one
# query. An hour bounds the log and removed files to what an hour of commits writes, however long `serve` runs.
CONFIGURATION = {
    "delta.logRetentionDuration": "interval 1 hours",
    "delta.deletedFileRetentionDuration": "interval 1 hours",
    "delta.checkpointInterval": str(CHECKPOINT_EVERY),
}
T = TypeVar("T")
_NO_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
# zstd: a third smaller than snappy on these rows. Row groups of 128 Ki rows: a query for the last 15
# minutes skips the rest of the day's file by the row groups' ts statistics (one group was the whole day).
_WRITER = WriterProperties(compression="ZSTD", max_row_group_size=128 * 1024)


class DeltaResults:
    """One table's Delta log at ``results/<table>/``: the snapshot readers take, the commits maintenance makes.

    Keeps its :class:`DeltaTable` open and brings it up to date incrementally, so a live check
    every few seconds reads only the commits made since the last one. That handle moves on under a
    :class:`Snapshot` taken from it (another thread's read, this process's maintenance): a snapshot
    reads through :meth:`_read_at`, which answers at the snapshot's own version."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._table: DeltaTable | None = None
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return (self.path / "_delta_log").is_dir()

    def snapshot(self) -> Snapshot | None:
        """The newest version's files and transactions, or None while the table has no commit yet."""
        with self._lock:
            table = self._open()
            if table is None:
                return None
            return Snapshot(self, table)

    def _read_at(self, snapshot: Snapshot, read: Callable[[DeltaTable], T]) -> T:
        """``read`` on ``snapshot``'s version. While the shared handle is still there, it is read
        (under the lock: delta-rs's handle is not for two threads at once); once it has moved on, the
        snapshot gets its own handle at its version (a full load, tens of milliseconds, but rare: a
        commit must land between a reader's snapshot and its reads). Without this a reader could take
        a writer's number from one version and the files from the next, and count a row twice."""
        with self._lock:
            if snapshot._table is self._table and snapshot._table.version() != snapshot.version:
                try:
                    snapshot._table = DeltaTable(self.path, version=snapshot.version)
                except (DeltaError, OSError) as exc:
                    raise StoreError(f"{self.path}: version {snapshot.version} of the results table cannot "
                                     f"be read: {_first_line(exc)}") from exc
            return read(snapshot._table)

    def _open(self) -> DeltaTable | None:
        try:
            if self._table is None:
                if not self.exists():
                    return None
                self._table = DeltaTable(self.path)
            else:
                self._table.update_incremental()
            return self._table
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as exc:
            raise StoreError(f"{self.path}: the results table's log cannot be read: {_first_line(exc)}") from exc

    def append(self, rows: pa.RecordBatchReader | pa.Table, transactions: dict[str, int], operation: str) -> int:
        """Add ``rows`` (with a ``day`` column) in one commit that also records each writer's highest
        staged number; returns the new version."""
        with self._lock:
            table = self._open()
            try:
                write_deltalake(
                    table if table is not None else self.path, rows, mode="append", partition_by=[PARTITION],
                    configuration=CONFIGURATION if table is None else None,
                    commit_properties=CommitProperties(
                        custom_metadata={"arbiter.operation": operation},
                        app_transactions=[Transaction(writer, seq) for writer, seq in sorted(transactions.items())],
                    ),
                    writer_properties=_WRITER, schema_mode="merge", post_commithook_properties=_NO_HOOKS,
                )
            except (DeltaError, OSError) as exc:
                raise StoreError(f"{self.path}: commit failed, nothing was added: {_first_line(exc)}") from exc
            # A handle written through is brought to the new version by delta-rs; a table created by
            # path is opened now. Either way no reload of the whole log (tens of ms, more as it grows).
            table = self._open()
            assert table is not None
            return table.version()

    def small_file_days(self, target_bytes: int, min_files: int) -> list[str]:
        """Days with at least ``min_files`` files under ``target_bytes``: where a compaction pays."""
        with self._lock:
            table = self._open()
            if table is None:
                return []
            actions = _actions(table)
        counts: dict[str, int] = {}
        for day, size in zip(actions["day"], actions["size"], strict=True):
            if size < target_bytes:
                counts[day] = counts.get(day, 0) + 1
        return sorted(day for day, n in counts.items() if n >= min_files)

    def compact(self, day: str, target_bytes: int) -> dict[str, Any]:
        with self._lock:
            table = self._require()
            try:
                return table.optimize.compact(
                    partition_filters=[(PARTITION, "=", day)], target_size=target_bytes, max_concurrent_tasks=1, writer_properties=_WRITER,
                    commit_properties=CommitProperties(custom_metadata={"arbiter.operation": "compact"}),
                    post_commithook_properties=_NO_HOOKS,
                )
            except (DeltaError, OSError) as exc:
                raise StoreError(f"{self.path}: compaction of {day} failed, the table is as it was: "
                                 f"{_first_line(exc)}") from exc

    def drop_days_before(self, cutoff: date) -> int:
        """Remove whole partitions older than ``cutoff`` (a metadata commit: no file is rewritten)."""
        with self._lock:
            table = self._require()
            try:
                metrics = table.delete(
                    f"{PARTITION} < '{cutoff.isoformat()}'",
                    commit_properties=CommitProperties(custom_metadata={"arbiter.operation": "retention"}),
                    post_commithook_properties=_NO_HOOKS,
                )
            except (DeltaError, OSError) as exc:
                raise StoreError(f"{self.path}: retention failed, nothing was removed: {_first_line(exc)}") from exc
            return int(metrics.get("num_deleted_rows") or 0)

    def tidy(self) -> int:
        """Checkpoint when due, drop expired log entries, delete files removed over an hour ago
        (lite vacuum: only files the log removed, never a file it never knew). Returns files deleted."""
        with self._lock:
            table = self._require()
            try:
                if _commits_since_checkpoint(self.path, table.version()) >= CHECKPOINT_EVERY:
                    table.create_checkpoint()
                table.cleanup_metadata()
                deleted = table.vacuum(retention_hours=1, enforce_retention_duration=False, dry_run=False,
                                       post_commithook_properties=_NO_HOOKS)
            except (DeltaError, OSError) as exc:
                raise StoreError(f"{self.path}: tidying the log failed, the table is as it was: "
                                 f"{_first_line(exc)}") from exc
            return len(deleted)

    def checkpoint_if_due(self) -> None:
        with self._lock:
            table = self._require()
            if _commits_since_checkpoint(self.path, table.version()) >= CHECKPOINT_EVERY:
                try:
                    table.create_checkpoint()
                except (DeltaError, OSError) as exc:
                    raise StoreError(f"{self.path}: checkpoint failed: {_first_line(exc)}") from exc

    def _require(self) -> DeltaTable:
        table = self._open()
        if table is None:
            raise StoreError(f"{self.path}: no results table yet")
        return table


class Snapshot:
    """What one version of a table holds: its files (by day) and each writer's highest staged number.

    Every answer is at :attr:`version`, however far the table has moved since (see
    :meth:`DeltaResults._read_at`)."""

    def __init__(self, owner: DeltaResults, table: DeltaTable) -> None:
        self._owner = owner
        self._table = table
        self.version = table.version()

    def files(self, since_day: str | None = None) -> list[str]:
        predicate = None if since_day is None else [(PARTITION, ">=", since_day)]
        return self._owner._read_at(self, lambda table: table.file_uris(file_pruning_predicate=predicate))

    def columns(self) -> set[str]:
        """The table's columns: every column some file of it has (a file older than a column lacks it)."""
        return self._owner._read_at(self, lambda table: {field.name for field in table.schema().fields})

    def committed(self, writer: str) -> int:
        """The highest staged number of ``writer`` already in the table (0: none)."""
        return self._owner._read_at(self, lambda table: table.transaction_version(writer) or 0)


def _actions(table: DeltaTable) -> dict[str, list[Any]]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return {"day": actions.column(f"partition.{PARTITION}").to_pylist(),
            "size": actions.column("size_bytes").to_pylist()}


def _commits_since_checkpoint(path: Path, version: int) -> int:
    last = path / "_delta_log" / "_last_checkpoint"
    try:
        checkpoint = int(json.loads(last.read_text())["version"])
    except (OSError, ValueError, KeyError):
        checkpoint = -1
    return version - checkpoint


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
