"""The results store: Parquet written whole or not at all, DuckDB views, the leaderboard query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from registry.errors import StoreError, UserError
from registry.results.store import SCHEMA_VERSION, ResultsStore, now_utc

pytestmark = pytest.mark.unit


def _run(task: str, model: str, version: int, quality: float, p50: float, age_s: int = 0, hw: str = "hw1") -> dict:
    return {
        "run_id": f"{model}-{version}-{task}-{age_s}", "ts": datetime.now(UTC) - timedelta(seconds=age_s),
        "task": task, "model": model, "version": version, "quality": quality, "p50_ms": p50,
        "p95_ms": p50 * 2, "tokens_per_s": 100.0, "n": 20, "n_ok": 20, "hardware_id": hw,
    }


def test_append_writes_one_whole_parquet_file_with_schema_version(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    written = store.append("events", [{"kind": "register", "model": "m", "version": 1}])
    assert written is not None and written.exists()
    assert [p.name for p in (tmp_path / "_staging" / "events").iterdir()] == [written.name]  # no temp file left
    table = pq.read_table(written)
    assert table.column("schema_version").to_pylist() == [SCHEMA_VERSION]
    assert store.query("select kind, model, version from events") == [{"kind": "register", "model": "m", "version": 1}]


def test_empty_tables_are_queryable(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    assert store.query("select count(*) as n from calls") == [{"n": 0}]
    assert store.leaderboard() == []


def test_unknown_column_and_table_are_refused_before_writing(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    with pytest.raises(StoreError, match="unknown columns"):
        store.append("events", [{"kind": "x", "colour": "red"}])
    with pytest.raises(StoreError, match="unknown results table"):
        store.append("nope", [{"a": 1}])
    assert not (tmp_path / "events").exists() or not any((tmp_path / "events").iterdir())


def test_wrong_type_is_a_store_error_and_writes_nothing(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    with pytest.raises(StoreError, match="schema"):
        store.append("runs", [{"version": "not a number"}])
    assert store.query("select count(*) as n from runs") == [{"n": 0}]


def test_leaderboard_keeps_latest_run_per_version_and_orders_by_quality(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append("runs", [_run("qa", "a", 1, 0.9, 100, age_s=100), _run("qa", "a", 1, 0.5, 90, age_s=1)])
    store.append("runs", [_run("qa", "b", 1, 0.7, 50), _run("extract", "a", 1, 0.3, 70)])
    board = store.leaderboard("qa")
    assert [(r["model"], r["quality"]) for r in board] == [("b", 0.7), ("a", 0.5)]
    assert {r["task"] for r in store.leaderboard()} == {"qa", "extract"}


def test_latest_run_prefers_this_hardware(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append("runs", [_run("qa", "a", 1, 0.4, 10, age_s=50, hw="mine"), _run("qa", "a", 1, 0.8, 10, hw="other")])
    assert store.latest_run("qa", "a", 1, "mine")["quality"] == 0.4
    assert store.latest_run("qa", "a", 1, None)["quality"] == 0.8
    assert store.latest_run("qa", "a", 2, "mine") is None


def test_bad_sql_is_a_user_error_naming_the_tables(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="tables are: calls, runs, events"):
        ResultsStore(tmp_path).query("select * from nowhere")


def test_a_column_newer_than_every_file_reads_as_null(tmp_path: Path) -> None:
    """Results written before a column existed stay queryable by code that uses the column."""
    folder = tmp_path / "runs"
    folder.mkdir()
    old = pa.table({"run_id": ["r1"], "task": ["qa"], "model": ["m"], "version": pa.array([1], pa.int32()),
                    "quality": [0.5], "hardware_id": ["h"], "ts": pa.array([now_utc()], pa.timestamp("us", tz="UTC"))})
    pq.write_table(old, folder / "part-old.parquet")
    rows = ResultsStore(tmp_path).leaderboard()
    assert rows[0]["quality_source"] == "reference" and rows[0]["quality"] == 0.5


def _call(call_id: str, ts: datetime) -> dict:
    return {"call_id": call_id, "ts": ts, "route": "qa", "model": "m", "version": 1, "ok": True, "wall_ms": 10.0}


def test_rows_read_the_same_staged_committed_and_compacted(tmp_path: Path) -> None:
    """Each row counted once wherever it is: staged, committed (its staged file still there, inside
    the grace period), compacted."""
    from registry.results.maintenance import Maintenance

    store = ResultsStore(tmp_path)
    for i in range(3):
        store.append("calls", [_call(f"c{i}a", now_utc()), _call(f"c{i}b", now_utc())], may_commit=False)
    count = "select count(*) as n, count(distinct call_id) as ids from calls"
    assert store.query(count) == [{"n": 6, "ids": 6}]
    Maintenance(store).run()  # committed; the staged files stay a minute for readers that listed them
    assert len(list((tmp_path / "_staging" / "calls").glob("*.parquet"))) == 3
    assert store.query(count) == [{"n": 6, "ids": 6}]
    Maintenance(store, staged_grace_s=0).run(compact=True)
    assert not list((tmp_path / "_staging" / "calls").glob("*.parquet"))
    assert len(store.files("calls")) == 1 and store.query(count) == [{"n": 6, "ids": 6}]


def test_calls_since_reads_only_the_days_the_window_touches(tmp_path: Path) -> None:
    from registry.results.maintenance import Maintenance

    store = ResultsStore(tmp_path)
    now = now_utc()
    store.append("calls", [_call("old", now - timedelta(days=3)), _call("new", now)])
    Maintenance(store).run()
    assert len(store.files("calls")) == 2  # one file per day partition
    assert len(store.files("calls", since=now - timedelta(minutes=15))) == 1
    recent = store.query("select call_id from calls", calls_since=now - timedelta(minutes=15))
    assert recent == [{"call_id": "new"}]
    assert {r["call_id"] for r in store.query("select call_id from calls")} == {"old", "new"}


def test_reads_refuse_a_mistyped_staged_file_naming_it(tmp_path: Path) -> None:
    """A Parquet file under a staged name whose columns are not the table's would add rows nobody wrote."""
    store = ResultsStore(tmp_path)
    store.append("calls", [_call("good", now_utc())], may_commit=False)
    stray = tmp_path / "_staging" / "calls" / "wtypes-000000000001.parquet"
    pq.write_table(pa.table({"call_id": [1, 2, 3], "ts": pa.array([now_utc()] * 3, pa.timestamp("us", tz="UTC"))}),
                   stray)
    with pytest.raises(StoreError, match=rf"^{stray} is not a calls file .*results/_quarantine$"):
        store.query("select count(*) as n from calls")


def test_a_table_written_before_a_column_existed_takes_rows_that_have_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Schema 7 added calls.tool_calls: a Delta table committed under schema 6 takes the new rows (the
    commit merges the schema), and its old rows read the column as NULL."""
    from registry.results.maintenance import Maintenance
    from registry.results.schemas import SCHEMAS

    older = SCHEMAS["calls"].remove(SCHEMAS["calls"].get_field_index("tool_calls"))
    with monkeypatch.context() as before:
        before.setitem(SCHEMAS, "calls", older)
        ResultsStore(tmp_path).append("calls", [_call("v6", now_utc())])
        Maintenance(ResultsStore(tmp_path)).run()
    from deltalake import DeltaTable

    assert "tool_calls" not in DeltaTable(str(tmp_path / "calls")).schema().to_arrow().names
    store = ResultsStore(tmp_path)
    store.append("calls", [{**_call("v7", now_utc()), "tool_calls": 2}])
    Maintenance(store, staged_grace_s=0).run(compact=True)
    rows = store.query("select call_id, tool_calls from calls order by call_id")
    assert rows == [{"call_id": "v6", "tool_calls": None}, {"call_id": "v7", "tool_calls": 2}]
