"""``arbiter results check``: every result table against a Great Expectations suite, at a month's size.

What each table must satisfy (:func:`expectations`): its id present and unique (``call_id``,
``run_id``, ``calibration_id``; for ``events`` the id with its ``ts``, because an alias change
finished again after a kill is one event written twice under one id, see
``registry/catalog/routes.py``, and for ``learnings``, which have no id, task, key and ``ts``);
``ts`` present and not in the future (:data:`CLOCK_SKEW` allowed); times, tokens, counts and
energy not negative; ``energy_source`` one the energy meter writes (:data:`ENERGY_SOURCES`);
``schema_version`` one this code knows. Beside the rows, the files: a quarantined file (rows that
never reached their table), a foreign file in a staging folder, a file in a table's folder its
Delta log does not list — readers never read any of them, so a person must look.

How it scales (measured on 2 cores shared with other work, load 5-6). GE validating a pandas frame
costs ~6.7 s per million ``calls`` rows (into pandas 4 s, validating 2.7 s): three minutes and
gigabytes for a month of one gateway at 10 requests/s (26 M rows). So the suite is GE expectations
held as data (:class:`Expectation`), each also compiled to the SQL predicate that picks the rows it
fails: DuckDB counts every expectation's failing rows exactly in one scan, and the duplicate keys in
one GROUP BY of their hashes; then it fetches at most ``shown`` failing rows per expectation, GE
validates those rows, and the rows GE names are the ones reported, each expectation with its exact
count. A clean table gives GE no row to see (GE, seconds to import, is imported only then). Every
row is checked: 2 M clean rows in 1.9 s; 26 M in 33 s at 1.8 GB peak; 26 M with 1,010 bad rows in
55 s, GE included; a week of them (``--since``) in 15 s. The compiled predicates and GE agree row
for row on every expectation (``tests/results/test_check.py`` runs both on the same rows).

Example::

    report = check(ResultsStore(settings.results_dir))
    report.ok        # False
    report.lines()   # ['calls: 2 rows fail expect_column_values_to_be_between(wall_ms, min_value=0): 9f…, 0c…']
"""

from __future__ import annotations

import functools
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from registry.errors import StoreError
from registry.results import staging
from registry.results.schemas import SCHEMA_VERSION, SCHEMAS, now_utc

if TYPE_CHECKING:
    import pandas as pd

    from registry.results.store import ResultsStore

CLOCK_SKEW = timedelta(minutes=5)  # a row this far ahead of this machine's clock is not "in the future"
SHOWN = 5  # failing rows named per expectation: enough to find them, few enough for one line
QUARANTINE = "_quarantine"  # where maintenance moves a staged file it cannot read (registry/results/maintenance.py)

# What registry/machine/energy.py writes: a CPU part (counter or estimate), plus the GPU's counter when
# there is one. A benchmark run joins its calls' distinct sources with commas ("estimate,rapl").
_CPU_SOURCES = ("rapl", "estimate")
_GPU_PART = "+nvml"
ENERGY_SOURCES = tuple(cpu + gpu for cpu in _CPU_SOURCES for gpu in ("", _GPU_PART))
_ONE_SOURCE = rf"(?:{'|'.join(_CPU_SOURCES)})(?:\{_GPU_PART})?"  # groups that capture nothing: GE warns on others
ENERGY_SOURCE_LIST = rf"^{_ONE_SOURCE}(?:,{_ONE_SOURCE})*$"

FEEDBACK_SIGNALS = ("feedback", "scorer", "judge")  # registry/results/schemas.py: the kinds of live quality

# A table's key: what names one row, so no two rows may share it.
KEYS: dict[str, tuple[str, ...]] = {
    "calls": ("call_id",),
    "runs": ("run_id",),
    "events": ("event_id", "ts"),
    "learnings": ("task", "key", "ts"),
    "judge_calibration": ("calibration_id",),
    "feedback": ("feedback_id", "ts"),
}
_NOT_NEGATIVE: dict[str, tuple[str, ...]] = {
    "calls": ("wall_ms", "ttft_ms", "cpu_ms", "queue_ms", "overhead_ms", "energy_mwh", "prompt_tokens",
              "completion_tokens", "tool_calls"),
    "runs": ("n", "n_ok", "n_unscored", "p50_ms", "p95_ms", "ttft_p50_ms", "cpu_ms_per_token", "load_ms", "warmup_ms",
             "energy_mwh", "energy_mwh_per_1k_tokens"),
    "events": (),
    "learnings": (),
    "judge_calibration": ("n", "n_failed", "seconds_per_item"),
    "feedback": (),
}
# How a failing row is named: by its id, or where it has none (learnings; a row missing it) by what it has.
_TIME = "coalesce(strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%S.%fZ'), 'no time')"
_LABELS = {table: f"coalesce({key}, '(no {key}) at ' || {_TIME})" for table, (key, *_) in KEYS.items()
           if table != "learnings"}
_LABELS["learnings"] = f"coalesce(task, '(no task)') || '/' || coalesce(key, '(no key)') || ' at ' || {_TIME}"
_GX_LOCK = threading.Lock()  # one GE context per process; two validations through one asset at once race


@dataclass(frozen=True)
class Failure:
    """One expectation a table fails: how many rows fail it, and the first few by name."""

    table: str
    expectation: str  # ``expect_column_values_to_be_between(wall_ms, min_value=0)``
    rows: int
    named: int  # how many names the rows have: the rows, or for a uniqueness the keys they share
    examples: tuple[str, ...]

    def line(self) -> str:
        more = f" and {self.named - len(self.examples):,} more" if self.named > len(self.examples) else ""
        named = f": {', '.join(self.examples)}{more}" if self.examples else ""
        rows = f"{self.rows:,} row{'s' * (self.rows != 1)} fail{'s' * (self.rows == 1)}"
        return f"{self.table}: {rows} {self.expectation}{named}"


@dataclass
class TableCheck:
    """One table's verdict: rows checked, failed expectations, or why it could not be read."""

    table: str
    rows: int = 0
    expectations: int = 0
    failures: list[Failure] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "expectations": self.expectations, "error": self.error,
                "seconds": round(self.seconds, 3),
                "failures": [{"expectation": f.expectation, "rows": f.rows, "named": f.named,
                              "examples": list(f.examples)} for f in self.failures]}


@dataclass
class CheckReport:
    """Every table's verdict and the files no reader reads (``results check --json`` prints :meth:`as_dict`)."""

    since: datetime | None
    tables: dict[str, TableCheck] = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)
    pending: dict[str, int] = field(default_factory=dict)  # staged files not in their table yet (not a fault)

    @property
    def ok(self) -> bool:
        return not self.lines()

    def lines(self) -> list[str]:
        """One line per problem: a failed expectation, an unreadable table, a file no reader reads."""
        lines: list[str] = []
        for result in self.tables.values():
            if result.error is not None:
                lines.append(f"{result.table}: cannot be read: {result.error}")
            lines.extend(f.line() for f in result.failures)
        lines.extend(f"{path}: quarantined, its rows are in no table; read it, then move it out of results/"
                     for path in self.quarantined)
        lines.extend(f"{path}: not a file the store wrote, never read; move it out of results/"
                     for path in self.foreign)
        lines.extend(f"{path}: not in its table's Delta log (a killed write's leftover, or put there by hand), "
                     "never read; move it out of results/" for path in self.untracked)
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "since": self.since.isoformat() if self.since else None,
                "tables": {name: result.as_dict() for name, result in self.tables.items()},
                "quarantined": self.quarantined, "foreign": self.foreign, "untracked": self.untracked,
                "pending_staged_files": self.pending, "problems": self.lines()}


def check(store: ResultsStore, tables: Sequence[str] = tuple(SCHEMAS), *, since: datetime | None = None,
          shown: int = SHOWN, now: datetime | None = None) -> CheckReport:
    """Check ``tables`` (rows from ``since`` on, when given) and the files in their folders."""
    now = now or now_utc()
    report = CheckReport(since=since)
    for table in tables:
        report.tables[table] = _check_table(store, table, since, shown, now)
        report.quarantined.extend(_quarantined(store.results_dir, table))
        report.foreign.extend(str(p) for p in staging.foreign_files(store.results_dir, table))
        try:
            report.untracked.extend(_untracked(store.results_dir, table))
        except StoreError as exc:
            report.tables[table].error = report.tables[table].error or str(exc)
        report.pending[table] = _pending(store, table)
    return report


# --------------------------------------------------------------------------- the suite


@dataclass(frozen=True)
class Expectation:
    """One GE expectation as data, its type and keyword arguments as a GE suite's JSON has them:
    compiled to SQL for the scan (:meth:`failing_sql`), built into GE for the rows that fail
    (:meth:`to_gx`), so a clean check never imports GE (seconds)."""

    type: str  # ``expect_column_values_to_be_between``
    column: str | None = None
    column_list: tuple[str, ...] = ()
    min_value: float | datetime | None = None
    max_value: float | datetime | None = None
    value_set: tuple[str, ...] = ()
    regex: str | None = None

    @property
    def key(self) -> tuple[str, ...] | None:
        """The columns a uniqueness expectation keys on; None for one about each row alone."""
        if self.type == "expect_column_values_to_be_unique":
            return (self.column or "",)
        if self.type == "expect_compound_columns_to_be_unique":
            return self.column_list
        return None

    @property
    def columns(self) -> tuple[str, ...]:
        return self.column_list or (self.column or "",)

    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"column": self.column, "column_list": list(self.column_list) or None,
                                  "min_value": self.min_value, "max_value": self.max_value,
                                  "value_set": list(self.value_set) or None, "regex": self.regex}
        if self.column_list:  # a key with a missing part names no row (not-null reports the part)
            kwargs["ignore_row_if"] = "any_value_is_missing"
        return {k: v for k, v in kwargs.items() if v is not None}

    def to_gx(self) -> Any:
        """The GE expectation: ``expect_column_values_to_be_between`` is ``gxe.ExpectColumnValuesToBeBetween``."""
        import great_expectations.expectations as gxe

        return getattr(gxe, "".join(word.capitalize() for word in self.type.split("_")))(**self.kwargs())

    def describe(self) -> str:
        """``expect_column_values_to_be_between(wall_ms, min_value=0)``."""
        bounds = [f"{name}={_short(value)}" for name, value in self.kwargs().items()
                  if name in ("min_value", "max_value", "value_set", "regex")]
        return f"{self.type}({', '.join([', '.join(self.columns), *bounds])})"

    def failing_sql(self) -> str:
        """The SQL predicate true for a row this expectation (one about each row alone) fails.

        As in GE, a NULL fails only the not-null expectation: a comparison with NULL is NULL, which
        a WHERE or FILTER treats as false."""
        column = _identifier(self.column or "")
        if self.type == "expect_column_values_to_not_be_null":
            return f"{column} is null"
        if self.type == "expect_column_values_to_be_between":
            bounds = [f"{column} < {_literal(self.min_value)}" if self.min_value is not None else "",
                      f"{column} > {_literal(self.max_value)}" if self.max_value is not None else ""]
            return " or ".join(b for b in bounds if b)
        if self.type == "expect_column_values_to_be_in_set":
            return f"{column} not in ({', '.join(map(_literal, self.value_set))})"
        if self.type == "expect_column_values_to_match_regex":
            return f"not regexp_matches({column}, {_literal(self.regex)})"
        raise ValueError(f"no SQL form for {self.type}; add one to registry/results/check.py")


def expectations(table: str, now: datetime) -> list[Expectation]:
    """``table``'s suite; ``now`` bounds ``ts`` (plus :data:`CLOCK_SKEW`)."""
    key = KEYS[table]
    suite = [Expectation("expect_column_values_to_not_be_null", column=c) for c in dict.fromkeys((*key, "ts"))]
    suite.append(Expectation("expect_column_values_to_be_unique", column=key[0]) if len(key) == 1
                 else Expectation("expect_compound_columns_to_be_unique", column_list=key))
    suite.append(Expectation("expect_column_values_to_be_between", column="ts", max_value=now + CLOCK_SKEW))
    suite.extend(Expectation("expect_column_values_to_be_between", column=c, min_value=0) for c in _NOT_NEGATIVE[table])
    if table == "calls":
        suite.append(Expectation("expect_column_values_to_be_in_set", column="energy_source", value_set=ENERGY_SOURCES))
    elif table == "runs":
        suite.append(Expectation("expect_column_values_to_match_regex", column="energy_source",
                                 regex=ENERGY_SOURCE_LIST))
    elif table == "feedback":
        suite.extend(Expectation("expect_column_values_to_not_be_null", column=c) for c in ("call_id", "signal", "source"))
        suite.append(Expectation("expect_column_values_to_be_between", column="score", min_value=0, max_value=1))
        suite.append(Expectation("expect_column_values_to_be_in_set", column="signal", value_set=FEEDBACK_SIGNALS))
    suite.append(Expectation("expect_column_values_to_not_be_null", column="schema_version"))
    suite.append(Expectation("expect_column_values_to_be_between", column="schema_version", min_value=1,
                             max_value=SCHEMA_VERSION))
    return suite


def _short(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    if isinstance(value, list):
        return "{" + ", ".join(map(str, value)) + "}"
    return str(value)


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"no SQL literal for {value!r}")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMPTZ '{value.astimezone(UTC).isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


# --------------------------------------------------------------------------- one table


def _check_table(store: ResultsStore, table: str, since: datetime | None, shown: int, now: datetime) -> TableCheck:
    """Scan, then name; once more when a file vanished between listing and reading (a staged file
    committed and deleted, a compacted one vacuumed): the next listing no longer has it."""
    started = time.perf_counter()
    result = TableCheck(table)
    suite = expectations(table, now)
    result.expectations = len(suite)
    for _ in (1, 2):
        try:
            connection = store.connect([table], calls_since=since)
        except StoreError as exc:  # its log cannot be read: no second listing mends that
            result.error = str(exc)
            break
        try:
            result.rows, result.failures = _scan(connection, table, suite, since, shown)
            result.error = None
            break
        except duckdb.Error as exc:  # an IOException is a file gone (or unreadable: then it fails again)
            result.error = _first_line(exc)
            if not isinstance(exc, duckdb.IOException):
                break
        finally:
            connection.close()
    result.seconds = time.perf_counter() - started
    return result


def _scan(connection: duckdb.DuckDBPyConnection, table: str, suite: list[Expectation], since: datetime | None,
          shown: int) -> tuple[int, list[Failure]]:
    """The rows checked, and each failed expectation with its exact count and the rows GE names."""
    source = _identifier(table) + (f" where ts >= {_literal(since)}" if since is not None else "")
    connection.execute(f"create temporary view checked as select * from {source}")
    per_row = [n for n, e in enumerate(suite) if e.key is None]
    # fetchall, not fetchone: DuckDB refuses the next statement while a result is still open
    (counts,) = connection.execute(
        "select count(*)" + "".join(f", count(*) filter (where {suite[n].failing_sql()})" for n in per_row)
        + " from checked").fetchall()
    failing = {n: (int(rows), int(rows)) for n, rows in zip(per_row, counts[1:], strict=True) if rows}
    for n, expectation in enumerate(suite):
        key = expectation.key
        if key is not None and (found := _duplicates(connection, key)):
            failing[n] = found
    if not failing:
        return counts[0], []
    failed = [suite[n] for n in sorted(failing)]
    named = _validate(_failing_rows(connection, table, failed, shown), failed, shown)
    return counts[0], [Failure(table, e.describe(), *failing[n], examples)
                       for n, e, examples in zip(sorted(failing), failed, named, strict=True)]


def _duplicates(connection: duckdb.DuckDBPyConnection, key: tuple[str, ...]) -> tuple[int, int] | None:
    """Rows sharing a key with another row, and the keys they share; None when every key is unique.
    (A table has one key: its suspects stay in ``_suspect`` for :func:`_failing_rows`.)

    Grouped by the key's 64-bit hash first (a month of ``call_id`` text: 32 s and 2.9 GB; its hash:
    15 s and 1.8 GB), then exactly, among the rows whose hash came twice: in 26 M distinct keys two
    hashes meet with a chance of about 1 in 50,000, and then only those rows are grouped again."""
    listed, present = _key_sql(key)
    connection.execute(f"create or replace temp table _suspect as select hash({listed}) as h from checked "
                       f"where {present} group by h having count(*) > 1")
    if not connection.execute("select count(*) from _suspect").fetchall()[0][0]:
        return None
    ((rows, keys),) = connection.execute(
        f"select coalesce(sum(n), 0), count(*) from ({_duplicated(key, 'count(*) as n')})").fetchall()
    return (int(rows), int(keys)) if rows else None


def _duplicated(key: tuple[str, ...], select: str) -> str:
    """The keys (every part present) more than one checked row has, among those :func:`_duplicates`
    left in ``_suspect``."""
    listed, present = _key_sql(key)
    return (f"select {select} from checked where {present} and hash({listed}) in (select h from _suspect) "
            f"group by {listed} having count(*) > 1")


def _key_sql(key: tuple[str, ...]) -> tuple[str, str]:
    columns = list(map(_identifier, key))
    return ", ".join(columns), " and ".join(f"{c} is not null" for c in columns)


def _failing_rows(connection: duckdb.DuckDBPyConnection, table: str, failed: list[Expectation],
                  shown: int) -> pd.DataFrame:
    """Up to ``shown`` rows per failed expectation (every copy of up to ``shown`` duplicated keys),
    each row once, with the columns the suite reads and its name in ``_row``."""
    columns = sorted({c for e in failed for c in e.columns})
    duplicated: list[str] = []
    flags: list[str] = []
    picked: list[str] = []
    for n, expectation in enumerate(failed):
        key = expectation.key
        if key is None:
            flags.append(f"coalesce({expectation.failing_sql()}, false) as _f{n}")
            picked.append(f"(_f{n} and row_number() over (partition by _f{n}) <= {shown})")
            continue  # a duplicated key's rows are limited by the keys picked, not here
        listed, _ = _key_sql(key)
        duplicated.append(f"_d{n} as ({_duplicated(key, listed)} order by {listed} limit {shown})")
        flags.append(f"coalesce(({listed}) in (select {listed} from _d{n}), false) as _f{n}")
        picked.append(f"_f{n}")
    windowed = any(e.key is None for e in failed)  # QUALIFY needs a window to refer to
    sql = (("with " + ", ".join(duplicated) if duplicated else "")
           + f" select * from (select {_LABELS[table]} as _row, {', '.join(map(_identifier, columns))}, "
           f"{', '.join(flags)} from checked) where {' or '.join(f'_f{n}' for n in range(len(failed)))}"
           + (f" qualify {' or '.join(picked)}" if windowed else ""))
    return connection.sql(sql).to_arrow_table().select(["_row", *columns]).to_pandas()


def _validate(frame: pd.DataFrame, failed: list[Expectation], shown: int) -> list[tuple[str, ...]]:
    """GE's verdict on the picked rows: for each expectation, the names of the rows it fails."""
    import great_expectations as gx

    with _GX_LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        suite = gx.ExpectationSuite(name="results-check", expectations=[e.to_gx() for e in failed])
        result = batch.validate(suite, result_format="COMPLETE")
    named: dict[tuple[str, str], tuple[str, ...]] = {}
    for outcome in result.results:
        config = outcome.expectation_config
        where = (config.type, str(config.kwargs.get("column") or list(config.kwargs.get("column_list") or [])))
        if outcome.exception_info.get("raised_exception"):
            raise StoreError(f"{config.type}({where[1]}) could not run: {outcome.exception_info['exception_message']}")
        positions = outcome.result.get("unexpected_index_list") or []
        named[where] = tuple(dict.fromkeys(str(frame.at[p, "_row"]) for p in positions))[:shown]
    return [named[(e.type, str(e.column or list(e.column_list)))] for e in failed]


@functools.cache
def _batch_definition() -> Any:
    """One ephemeral GE context and dataframe asset per process: importing GE takes seconds, a run milliseconds."""
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a notebook without ipywidgets
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("results-check").add_dataframe_asset("failing-rows")
    return asset.add_batch_definition_whole_dataframe("failing-rows")


# --------------------------------------------------------------------------- files no reader reads


def _quarantined(results_dir: Path, table: str) -> list[str]:
    folder = results_dir / QUARANTINE / table
    return sorted(str(p) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def _untracked(results_dir: Path, table: str) -> list[str]:
    """Files in the table's folder its Delta log does not know: what a full vacuum would delete, less
    what a lite one would (files the log removed: compacted away, awaiting deletion) and the legacy
    files readers still read. Files younger than the table's retention (an hour) are not counted: a
    compaction running now writes files the log lists only when it commits."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    folder = results_dir / table
    if not (folder / "_delta_log").is_dir():
        return []
    try:
        delta = DeltaTable(folder)
        unknown = set(delta.vacuum(dry_run=True, full=True)) - set(delta.vacuum(dry_run=True))
    except TableNotFoundError:
        return []
    except (DeltaError, OSError) as exc:
        raise StoreError(f"{folder}: the table's log cannot be read: {_first_line(exc)}") from exc
    legacy = {p.name for p in staging.legacy_files(results_dir, table)}
    return sorted(str(folder / name) for name in unknown if name not in legacy)


def _pending(store: ResultsStore, table: str) -> int:
    """Staged files their table does not hold yet: read by every query, committed by the next maintenance pass."""
    snapshot = store.delta(table).snapshot()
    return sum(1 for f in staging.staged(store.results_dir, table)
               if snapshot is None or f.seq > snapshot.committed(f.writer))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
