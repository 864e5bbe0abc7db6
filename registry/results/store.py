"""The results store: append-only Parquet tables, queried through DuckDB views.

Several processes (a flow, the CLI, later the gateway) write results at once, and DuckDB allows
one writer per database file — so every flush is its own Parquet file, written to a temporary
name and renamed into place (a reader never sees half a file), and DuckDB reads them by glob.
Each row carries ``schema_version``; views read with ``union_by_name`` so files written before a
column was added stay readable (the new column reads as NULL).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from registry.errors import StoreError, UserError

SCHEMA_VERSION = 5  # 2: calls gained api, requested, queue_ms, overhead_ms (the gateway's)
# 3: calls gained features and metadata (JSON text: what an application reports through the tracker);
#    runs gained quality_source ("reference" or "judge:NAME/VERSION") and n_unscored
# 4: every table with the machine's fingerprint gained hardware_class (cpu, cuda, apple: the work pool);
#    calls gained cpu_thread_ms, cpu_overlapped, avg_rss_mb, gpu_ms, energy_mwh, energy_source, energy_model,
#    n_threads, n_gpu_layers;
#    runs gained avg_rss_mb, energy_mwh, energy_mwh_per_1k_tokens, energy_source (docs/costs.md)
# 5: runs gained task_version and task_sha256 (the task file's recorded version, docs/tasks.md);
#    calls gained answer, scores (JSON: each scorer's score) and score_problems (why an item went unscored:
#    a custom scorer that raised, a judge with no valid judgement), kept for benchmark calls only

_HARDWARE = [
    ("hardware_id", pa.string()),
    ("cpu_model", pa.string()),
    ("cpu_cores", pa.int32()),
    ("ram_mb", pa.int64()),
    ("gpu", pa.string()),
    ("os", pa.string()),
    ("llama_cpp_version", pa.string()),
    ("hardware_class", pa.string()),
]

SCHEMAS: dict[str, pa.Schema] = {
    "calls": pa.schema(
        [
            ("call_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("source", pa.string()),
            ("route", pa.string()),
            ("task", pa.string()),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("run_id", pa.string()),
            ("item_id", pa.string()),
            ("prompt_tokens", pa.int32()),
            ("completion_tokens", pa.int32()),
            ("wall_ms", pa.float64()),
            ("ttft_ms", pa.float64()),
            ("tokens_per_s", pa.float64()),
            ("cpu_ms", pa.float64()),
            ("peak_rss_mb", pa.float64()),
            ("gpu_memory_mb", pa.float64()),
            ("gpu_utilization_pct", pa.float64()),
            ("cpu_thread_ms", pa.float64()),
            ("cpu_overlapped", pa.bool_()),
            ("avg_rss_mb", pa.float64()),
            ("gpu_ms", pa.float64()),
            ("energy_mwh", pa.float64()),
            ("energy_source", pa.string()),
            ("energy_model", pa.string()),
            ("n_threads", pa.int32()),  # what llama.cpp ran with (null for a served model)
            ("n_gpu_layers", pa.int32()),
            ("ok", pa.bool_()),
            ("error", pa.string()),
            ("quality", pa.float64()),
            ("api", pa.string()),
            ("requested", pa.string()),
            ("queue_ms", pa.float64()),
            ("overhead_ms", pa.float64()),
            ("features", pa.string()),
            ("metadata", pa.string()),
            ("answer", pa.string()),
            ("scores", pa.string()),
            ("score_problems", pa.string()),
            *_HARDWARE,
            ("schema_version", pa.int32()),
        ]
    ),
    "runs": pa.schema(
        [
            ("run_id", pa.string()),
            ("mlflow_run_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("task", pa.string()),
            ("task_version", pa.int32()),
            ("task_sha256", pa.string()),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("dataset_sha256", pa.string()),
            ("n", pa.int32()),
            ("n_ok", pa.int32()),
            ("quality", pa.float64()),
            ("quality_source", pa.string()),
            ("n_unscored", pa.int32()),
            ("p50_ms", pa.float64()),
            ("p95_ms", pa.float64()),
            ("ttft_p50_ms", pa.float64()),
            ("tokens_per_s", pa.float64()),
            ("cpu_ms_per_token", pa.float64()),
            ("peak_rss_mb", pa.float64()),
            ("load_ms", pa.float64()),
            ("warmup_ms", pa.float64()),
            ("avg_rss_mb", pa.float64()),
            ("energy_mwh", pa.float64()),
            ("energy_mwh_per_1k_tokens", pa.float64()),
            ("energy_source", pa.string()),
            *_HARDWARE,
            ("schema_version", pa.int32()),
        ]
    ),
    "events": pa.schema(
        [
            ("event_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("kind", pa.string()),
            ("route", pa.string()),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("detail", pa.string()),
            ("schema_version", pa.int32()),
        ]
    ),
    # Task learnings (registry/selection/learnings.py): append-only; the latest row per (task, key) wins.
    "learnings": pa.schema(
        [
            ("ts", pa.timestamp("us", tz="UTC")),
            ("task", pa.string()),
            ("key", pa.string()),
            ("value", pa.string()),
            ("source", pa.string()),
            ("schema_version", pa.int32()),
        ]
    ),
    "judge_calibration": pa.schema(
        [
            ("calibration_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("criterion", pa.string()),
            ("n", pa.int32()),
            ("n_failed", pa.int32()),
            ("accuracy", pa.float64()),
            ("spearman", pa.float64()),
            ("mean_abs_error", pa.float64()),
            ("dataset_sha256", pa.string()),
            ("seconds_per_item", pa.float64()),
            ("mlflow_run_id", pa.string()),
            *_HARDWARE,
            ("schema_version", pa.int32()),
        ]
    ),
}


_DUCKDB_TYPES = {"string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN",
                 "timestamp[us, tz=UTC]": "TIMESTAMPTZ"}


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: float | datetime | None) -> str | None:
    """A moment (epoch seconds or an aware datetime) as ISO 8601 in UTC, ``+00:00`` suffix: the
    form every ``--json`` answer uses for times; None stays None (a step not started yet)."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat()


def new_id() -> str:
    return uuid.uuid4().hex


class ResultsStore:
    """Append rows, query with SQL.

    Example::

        store = ResultsStore(settings.results_dir)
        store.append("events", [{"kind": "register", "model": "smollm2-135m", "version": 1}])
        store.query("select kind, count(*) as n from events group by kind")
    """

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = results_dir

    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> Path | None:
        """Write ``rows`` as one new Parquet file (temp name, then rename). Returns its path."""
        schema = _schema(table)
        if not rows:
            return None
        columns = {name: [row.get(name) for row in rows] for name in schema.names}
        columns["schema_version"] = [SCHEMA_VERSION] * len(rows)
        unknown = set().union(*(row.keys() for row in rows)) - set(schema.names)
        if unknown:
            raise StoreError(f"{table}: unknown columns {sorted(unknown)}; add them to SCHEMAS with a new schema version")
        try:
            arrow = pa.table(columns, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StoreError(f"{table}: rows do not fit the table's schema: {exc}") from exc
        folder = self.results_dir / table
        folder.mkdir(parents=True, exist_ok=True)
        stamp = now_utc().strftime("%Y%m%dT%H%M%S%f")
        final = folder / f"part-{stamp}-{new_id()[:8]}.parquet"
        temporary = folder / f".{final.name}.tmp"
        pq.write_table(arrow, temporary)
        os.replace(temporary, final)
        return final

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per table over its Parquet files."""
        connection = duckdb.connect(":memory:")
        for table, schema in SCHEMAS.items():
            folder = self.results_dir / table
            if any(folder.glob("part-*.parquet")):
                pattern = str(folder / "part-*.parquet").replace("'", "''")
                source = f"read_parquet('{pattern}', union_by_name=true)"
                present = {row[0] for row in connection.execute(f"describe select * from {source}").fetchall()}
                # A column no file has yet (every file predates it) still exists, as NULL of its type.
                missing = [f"cast(null as {_DUCKDB_TYPES[str(f.type)]}) as {f.name}" for f in schema
                           if f.name not in present]
                connection.execute(f"create view {table} as select *{''.join(', ' + m for m in missing)} from {source}")
            else:
                empty = schema.empty_table()
                connection.register(f"_{table}_empty", empty)
                connection.execute(f"create view {table} as select * from _{table}_empty")
        return connection

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run SQL over the views; rows come back as dicts."""
        return query_on(self.connect(), sql, params)

    def leaderboard(self, task: str | None = None) -> list[dict[str, Any]]:
        """The latest benchmark run of each version per task version and hardware, best quality first;
        a task's newest version first (figures from two versions of a task are not comparable)."""
        rows = self.query(
            """
            select task, task_version, model, version, quality,
                   coalesce(quality_source, 'reference') as quality_source,
                   p50_ms, p95_ms, tokens_per_s, n, n_ok,
                   cpu_ms_per_token, peak_rss_mb, energy_mwh_per_1k_tokens, energy_source,
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
