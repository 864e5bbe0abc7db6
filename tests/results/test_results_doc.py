"""docs/results.md's Python examples run as written, and say true things about the tables they read.

The page tells a data scientist how to read the results (the store's API, DataFrames, DuckDB, the
``deltalake`` package from outside arbiter) and what a raw glob of the files gets wrong. Its code
blocks are run here, in order, from ``ARBITER_HOME`` — over a home whose tables hold committed,
compacted and still-staged rows, the three states a reader meets under ``serve`` — so the page
cannot drift from the API, and its claims about what each way of reading sees are checked.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from registry.results.maintenance import Maintenance
from registry.results.store import ResultsStore

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "results.md"
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _calls(n: int, ts: datetime, **fields: Any) -> list[dict[str, Any]]:
    return [{"call_id": uuid.uuid4().hex, "ts": ts, "source": "gateway", "route": "qa", "model": "smollm2-135m",
             "version": 1, "wall_ms": 100.0 + i, "ok": True, **fields} for i in range(n)]


def _home_in_three_states(results: Path) -> tuple[ResultsStore, int]:
    """Two days of calls committed (today's compacted from two commits), a benchmark run with its
    answers, and one flush still staged. Returns the store and the rows still staged."""
    store = ResultsStore(results)
    now = datetime.now(UTC)
    # Today's rows a few seconds apart and never before today's UTC midnight, so they share one day.
    today = max(now - timedelta(minutes=5), now.replace(hour=0, minute=0, second=0, microsecond=0))
    maintenance = Maintenance(store, staged_grace_s=3600)  # committed staged files stay, as in their first minute
    store.append("calls", _calls(10, now - timedelta(days=1)), may_commit=False)
    store.append("calls", _calls(10, today), may_commit=False)
    maintenance.commit()
    store.append("calls", _calls(10, today + timedelta(seconds=1)), may_commit=False)
    store.append("runs", [{"run_id": "r1", "ts": now, "task": "qa", "task_version": 1, "model": "smollm2-135m",
                           "version": 1, "quality": 0.5, "p50_ms": 100.0, "n": 2, "n_ok": 2}], may_commit=False)
    store.append("calls", _calls(2, today + timedelta(seconds=2), source="benchmark", run_id="r1", quality=0.5,
                                 scores='{"exact": 0.5}'), may_commit=False)
    report = maintenance.run(compact=True)
    assert report.compacted["calls"] == {"files_removed": 2, "files_added": 1}  # today's two commits, as one file
    store.append("calls", _calls(3, today + timedelta(seconds=3)), may_commit=False)
    return store, 3


def test_the_python_examples_run_and_what_they_read_is_what_the_page_says(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, staged_rows = _home_in_three_states(home / "results")
    monkeypatch.chdir(home)  # the page's outside-arbiter example reads from ARBITER_HOME
    blocks = _PYTHON_BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 4

    names: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), names)  # noqa: S102 — the page's own code, as a reader runs it

    total = store.query("select count(*) as n from calls")[0]["n"]
    assert total == 10 + 10 + 10 + 2 + 3
    assert sum(row["n"] for row in names["by_source"]) == total  # the API sees staged rows too
    assert sum(row["n"] for row in names["last_15_min"]) == total - 10  # yesterday's day is not read
    assert list(names["board"]["ref"]) == ["smollm2-135m/1"]
    assert len(names["answers"]) == 2 and "score_exact" in names["answers"]
    assert sum(n for _, n in names["hourly"]) == total
    # From outside arbiter: what is committed, without what is still staged.
    assert sum(n for _, n in names["per_model"]) == total - staged_rows
    assert list(names["frame"]["model"]) == ["smollm2-135m"]


def test_a_raw_glob_counts_compacted_rows_twice_and_misses_staged_ones(home: Path) -> None:
    store, staged_rows = _home_in_three_states(home / "results")
    committed = store.query("select count(*) as n from calls")[0]["n"] - staged_rows
    connection = duckdb.connect(":memory:")
    try:
        globbed, = connection.execute(f"select count(*) from '{home}/results/calls/**/*.parquet'").fetchall()[0]
        columns = [row[0] for row in connection.execute(
            f"describe select * from '{home}/results/calls/**/*.parquet'").fetchall()]
    finally:
        connection.close()
    compacted_today = 10 + 10 + 2
    assert globbed == committed + compacted_today  # the compacted-away files are still on disk, beside their copy
    assert "day" in columns and "day" not in [row["column_name"] for row in store.query("describe calls")]
