"""The results store: one Delta Lake table per result kind, queried through DuckDB views.

Writes land as staged Parquet files (:mod:`registry.results.staging`: milliseconds, never waiting on
a commit or a compaction); maintenance (:mod:`registry.results.maintenance`) moves them into the
day-partitioned Delta tables (:mod:`registry.results.delta`) and compacts those. A query sees both:
the files the newest Delta version lists, and the staged files its writers' recorded numbers say
are not in the table yet — so every row is counted once, before and after it moves. docs/results.md
has the layout, the choice of Delta and how to read the tables from outside.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from registry.errors import ArbiterError, StoreError, UserError
from registry.results import staging
from registry.results.delta import DeltaResults
from registry.results.maintenance import Maintenance
from registry.results.schemas import DUCKDB_TYPES, SCHEMA_VERSION, SCHEMAS, iso_utc, new_id, now_utc

__all__ = ["LIVE_DAYS", "SCHEMAS", "SCHEMA_VERSION", "ResultsStore", "iso_utc", "new_id", "now_utc", "query_on"]

# How far back live calls count in the figures read again and again (selection profiles, cost profiles):
# what a version does now, and a read the same size on day 30 as on day 7. Benchmark calls count at any age.
T = TypeVar("T")
LIVE_TABLES = ("calls", "feedback")  # they grow with traffic: a read of a time window lists only its days
LIVE_DAYS = 7
_log = logging.getLogger(__name__)
AUTO_COMMIT_AT = 32  # staged files of one table: a writer that is not `serve` commits them itself past this
_TABLE_NAMES = {table: re.compile(rf"\b{table}\b", re.IGNORECASE) for table in SCHEMAS}


class ResultsStore:
    """Append rows, query with SQL.

    Example::

        store = ResultsStore(settings.results_dir)
        store.append("events", [{"kind": "register", "model": "smollm2-135m", "version": 1}])
        store.query("select kind, count(*) as n from events group by kind")
        store.query("select count(*) from calls where ts >= $1", [since], calls_since=since)  # reads only recent days
    """

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = results_dir
        self._deltas: dict[str, DeltaResults] = {}
        self._deltas_lock = threading.Lock()
        # One database per store (opening one costs 20-80 ms), held in a list that only the finalizer below
        # empties: closed with the store or at exit, and then let go of — a DuckDB object still alive as the
        # interpreter shuts down (a store a daemon thread holds) is reported by DuckDB's bindings as a leak.
        self._database: list[duckdb.DuckDBPyConnection] = []

    def delta(self, table: str) -> DeltaResults:
        """The table's Delta log (one open handle per store, brought up to date on each read)."""
        _schema(table)
        with self._deltas_lock:
            if table not in self._deltas:
                self._deltas[table] = DeltaResults(self.results_dir / table)
            return self._deltas[table]

    def append(self, table: str, rows: Sequence[Mapping[str, Any]], *, may_commit: bool = True) -> Path | None:
        """Write ``rows`` as one staged Parquet file (temp name, then rename); returns its path.

        Readers see the rows as soon as this returns. With ``may_commit`` (every writer but the
        gateway's recorder, whose process runs maintenance on its own thread), a table with
        :data:`AUTO_COMMIT_AT` staged files is committed here, unless another process is at it."""
        schema = _schema(table)
        if not rows:
            return None
        columns = {name: [row.get(name) for row in rows] for name in schema.names}
        columns["schema_version"] = [SCHEMA_VERSION] * len(rows)
        written = now_utc()  # a row without a moment is one of now: every table is partitioned by the day of ts
        columns["ts"] = [written if value is None else value for value in columns["ts"]]
        unknown = set().union(*(row.keys() for row in rows)) - set(schema.names)
        if unknown:
            raise StoreError(f"{table}: unknown columns {sorted(unknown)}; add them to SCHEMAS with a new schema version")
        try:
            arrow = pa.table(columns, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StoreError(f"{table}: rows do not fit the table's schema: {exc}") from exc
        path = staging.stage(self.results_dir, table, arrow)
        if may_commit and self._uncommitted(table) >= AUTO_COMMIT_AT:
            self._commit_staged()
        return path

    def _uncommitted(self, table: str) -> int:
        """How many staged files are not in the table yet. Committed ones stay a minute for readers
        that listed them: counted too, every append for that minute would commit (one file each)."""
        staged = staging.staged(self.results_dir, table)
        if len(staged) < AUTO_COMMIT_AT:
            return len(staged)
        snapshot = self.delta(table).snapshot()
        return len(staged) if snapshot is None else len(staging.pending(staged, snapshot.committed))

    def _commit_staged(self) -> None:
        """Commit the staged files now, unless another process is at it. The rows are written already
        (staged): a commit that fails leaves them staged for the next pass, and never fails the write."""
        try:
            Maintenance(self).commit()
        except (ArbiterError, OSError) as exc:
            _log.warning("staged results stay staged for the next maintenance pass: %s", exc)

    def files(self, table: str, *, since: datetime | None = None) -> list[str]:
        """The Parquet files that hold ``table``'s rows now, each row in exactly one: the newest Delta
        version's files (only days from ``since``'s UTC date on, when given) and the staged files not
        yet in it. The staged files are listed before the log is read: a file committed in between is
        then known to be in the table and skipped, never read twice."""
        return self._sources(table, since)[0]

    def _sources(self, table: str, since: datetime | None) -> tuple[list[str], set[str]]:
        """:meth:`files`, and the columns they hold between them (read from the log and the staged
        files' footers, so building a view does not read every file's footer first)."""
        staged = staging.staged(self.results_dir, table)
        snapshot = self.delta(table).snapshot()
        if snapshot is not None:
            since_day = None if since is None else since.astimezone(UTC).date().isoformat()
            pending = [f.path for f in staging.pending(staged, snapshot.committed)]
            files, columns = snapshot.files(since_day), snapshot.columns()
        else:
            pending, files, columns = [f.path for f in staging.pending(staged, lambda _writer: 0)], [], set()
        for path in pending:
            columns |= _staged_columns(path, table)
            files.append(str(path))
        return files, columns

    def connect(self, tables: Sequence[str] = tuple(SCHEMAS), *, calls_since: datetime | None = None
                ) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with a view per table in ``tables`` over its files;
        ``calls_since`` limits ``calls`` and ``feedback`` (the tables that grow with traffic) to the
        days from that moment on (the caller still filters ``ts``)."""
        connection = self._cursor()
        try:
            for table in tables:
                schema = _schema(table)
                files, present = self._sources(table, calls_since if table in LIVE_TABLES else None)
                if files:
                    listed = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
                    source = f"read_parquet({listed}, union_by_name=true, hive_partitioning=false)"
                    # A column no file has yet (every file predates it) still exists, as NULL of its type.
                    missing = [f"cast(null as {DUCKDB_TYPES[str(f.type)]}) as {f.name}" for f in schema
                               if f.name not in present]
                    connection.execute(
                        f"create temp view {table} as select *{''.join(', ' + m for m in missing)} from {source}")
                else:
                    connection.register(f"_{table}_empty", schema.empty_table())
                    connection.execute(f"create temp view {table} as select * from _{table}_empty")
        except duckdb.Error as exc:
            connection.close()
            raise StoreError(f"results table {table} cannot be read: {str(exc).splitlines()[0]}") from exc
        return connection

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the store's in-memory database: its temp views are its own, so
        threads querying at once never see each other's file lists."""
        with self._deltas_lock:
            if not self._database:
                self._database.append(duckdb.connect(":memory:"))
                weakref.finalize(self, _close_database, self._database)
            return self._database[0].cursor()

    def query(self, sql: str, params: Sequence[Any] | None = None, *, calls_since: datetime | None = None
              ) -> list[dict[str, Any]]:
        """Run SQL over the views it names; rows come back as dicts. A file removed while the query
        was being planned (a staged file committed and deleted, a compacted file vacuumed) makes it
        run once more on the newer files."""
        return self._retried(sql, lambda connection: query_on(connection, sql, params), calls_since)

    def arrays(self, sql: str, params: Sequence[Any] | None = None, *, calls_since: datetime | None = None
               ) -> dict[str, np.ndarray]:
        """Like :meth:`query`, but each column as one numpy array: for reads of many rows (a rollout's
        evidence, hundreds of thousands of calls) where a dict per row would cost seconds."""
        def fetch(connection: duckdb.DuckDBPyConnection) -> dict[str, np.ndarray]:
            try:
                return dict(connection.execute(sql, params or []).fetchnumpy())
            except duckdb.Error as exc:
                raise UserError(f"query failed: {str(exc).splitlines()[0]}") from exc
            finally:
                connection.close()

        return self._retried(sql, fetch, calls_since)

    def _retried(self, sql: str, run: Callable[[duckdb.DuckDBPyConnection], T], calls_since: datetime | None) -> T:
        """``run`` on a connection with the views ``sql`` names; once more if a file vanished meanwhile."""
        tables = [table for table, pattern in _TABLE_NAMES.items() if pattern.search(sql)]
        for attempt in (1, 2):
            try:
                return run(self.connect(tables, calls_since=calls_since))
            except (StoreError, UserError) as exc:
                if attempt == 2 or not _vanished(exc):
                    raise
        raise AssertionError("unreachable")

    def leaderboard(self, task: str | None = None) -> list[dict[str, Any]]:
        """The latest benchmark run of each version per task version and hardware, best quality first;
        a task's newest version first (figures from two versions of a task are not comparable).
        ``energy_mwh_per_answer`` is the run's energy over its answers (its successful calls, which
        are what ``energy_mwh`` sums): the one energy figure that compares a classifier's one-label
        answer with an LLM's generated text."""
        rows = self.query(
            """
            select task, task_version, model, version, quality,
                   coalesce(quality_source, 'reference') as quality_source,
                   p50_ms, p95_ms, tokens_per_s, n, n_ok,
                   cpu_ms_per_token, peak_rss_mb, energy_mwh_per_1k_tokens, energy_source,
                   energy_mwh / nullif(n_ok, 0) as energy_mwh_per_answer,
                   hardware_id, mlflow_run_id, ts
            from (select *, row_number() over (
                      partition by task, task_version, model, version, hardware_id order by ts desc) as latest
                  from runs)
            where latest = 1 and ($1 is null or task = $1)
            order by task, task_version desc nulls last, quality desc, p50_ms asc
            """,
            [task],
        )
        for row in rows:
            row["ts"] = row["ts"].isoformat() if row["ts"] is not None else None
        return rows

    def latest_run(self, task: str, model: str, version: int, hardware_id: str | None = None,
                   task_version: int | None = None) -> dict[str, Any] | None:
        """The newest run of one version on one task: on ``task_version`` when given, else on the newest
        task version it was measured on (figures from two versions of a task are not comparable);
        preferring this hardware when given."""
        rows = self.query(
            """
            select * from runs where task = $1 and model = $2 and version = $3
              and ($5 is null or task_version = $5)
            order by task_version desc nulls last, (hardware_id = $4) desc nulls last, ts desc limit 1
            """,
            [task, model, version, hardware_id, task_version],
        )
        return rows[0] if rows else None


def query_on(connection: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None, *,
             views: Sequence[str] = tuple(SCHEMAS)) -> list[dict[str, Any]]:
    """Run SQL on ``connection`` (closed after), rows as dicts; a failed query is a one-line
    :class:`UserError` naming ``views``, what the connection has to query."""
    try:
        cursor = connection.execute(sql, params or [])
        names = [d[0] for d in cursor.description] if cursor.description else []
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except duckdb.Error as exc:
        raise UserError(f"query failed: {str(exc).splitlines()[0]}; tables are: {', '.join(views)}") from exc
    finally:
        connection.close()


def _schema(table: str) -> pa.Schema:
    try:
        return SCHEMAS[table]
    except KeyError:
        raise StoreError(f"unknown results table {table!r}; tables are: {', '.join(SCHEMAS)}") from None


@functools.lru_cache(maxsize=4096)
def _staged_columns(path: Path, table: str) -> frozenset[str]:
    """A staged file's column names (files never change once named, so the answer is kept). A file
    that is not one of the table's (a foreign or mistyped Parquet file under a staged name: read
    with the others it would add rows nobody wrote, or cast them) is refused naming it, as the
    maintenance pass that quarantines it would."""
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        return frozenset()  # committed and deleted meanwhile: the read itself says so, and is retried
    except (OSError, pa.ArrowException) as exc:
        problem: str | None = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
    else:
        problem = staging.schema_problem(schema, table)
    if problem is not None:
        raise StoreError(f"{path} is not a {table} file ({problem}); the next maintenance pass "
                         "(`arbiter results compact`) moves it to results/_quarantine")
    return frozenset(schema.names)


def _close_database(holder: list[duckdb.DuckDBPyConnection]) -> None:
    while holder:
        holder.pop().close()


def _vanished(exc: BaseException) -> bool:
    """A read that failed because a file it listed is gone (moved into the table, or vacuumed)."""
    text = str(exc)
    return "No such file" in text or "No files found" in text
