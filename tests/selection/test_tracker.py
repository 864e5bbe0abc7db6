"""The tracker bridge round trip: an application's reports move selection, and come back out as
RL training data with the documented schema."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from registry.catalog.versions import Catalog
from registry.cli.main import cli
from registry.errors import NotFoundError, UserError
from registry.selection.criteria import Criteria
from registry.selection.profiles import ProfileCache
from registry.selection.rl_export import SCHEMA, export_rl, read_schema_metadata
from registry.selection.selector import LocalModelSelector
from registry.selection.tracker import PerformanceTrackerBridge

pytestmark = pytest.mark.integration


@pytest.fixture
def tracked(catalog: Catalog, smollm2) -> PerformanceTrackerBridge:
    for name in ("alpha", "beta"):
        catalog.register(smollm2.path, name=name, capabilities=list(smollm2.capabilities))
    return PerformanceTrackerBridge(catalog.store)


def report(tracker: PerformanceTrackerBridge, model: str, quality: float, n: int = 12) -> None:
    for i in range(n):
        execution = tracker.start("summarize", model=model, features={"chars": 100 + i})
        tracker.complete(execution, success=True, quality=quality, completion_tokens=20, cpu_ms=5.0)


def test_reports_move_selection_and_export_as_rl_data(tracked: PerformanceTrackerBridge, catalog: Catalog,
                                                       tmp_path: Path) -> None:
    selector = LocalModelSelector(catalog.list_versions, ProfileCache(catalog.store, max_age_s=0.0))
    before = selector.select(Criteria(task="summarize"))
    assert all(c.conservative for c in before.candidates)  # nothing measured yet: both at 0.5

    report(tracked, "alpha/1", quality=0.2)
    report(tracked, "beta/1", quality=0.9)
    after = selector.select(Criteria(task="summarize"))

    assert after.primary.ref == "beta/1" and after.fallback.ref == "alpha/1"
    assert after.primary.samples == 12 and not after.primary.conservative
    assert after.primary.parts.quality == pytest.approx(0.9)

    out = tmp_path / "rl.parquet"
    assert export_rl(catalog.store, out) == 24
    table = pq.read_table(out)
    assert table.schema.remove_metadata() == SCHEMA
    rows = table.to_pylist()
    beta = next(r for r in rows if r["model"] == "beta")
    assert beta["task"] == "summarize" and beta["source"] == "tracker" and beta["features"].startswith('{"chars": ')
    assert beta["reward"] == pytest.approx(0.9 - 0.05 * beta["latency_ms"] / 1000 - 0.05 * 5.0 / 1000)
    assert "latency_weight" in read_schema_metadata(out)["arbiter.reward"]


def test_a_failed_execution_has_a_negative_reward(tracked: PerformanceTrackerBridge, catalog: Catalog,
                                                  tmp_path: Path) -> None:
    execution = tracked.start("summarize", model="alpha/1")
    row = tracked.complete(execution, success=False, error="timed out")
    assert row["ok"] is False and row["error"] == "timed out"
    export_rl(catalog.store, tmp_path / "rl.parquet")
    assert pq.read_table(tmp_path / "rl.parquet").to_pylist()[0]["reward"] < -1.0 + 1e-6


def test_bad_reports_are_refused(tracked: PerformanceTrackerBridge, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a task name"):
        tracked.start("Sum Marize", model="alpha/1")
    with pytest.raises(UserError, match="needs its version"):
        tracked.start("summarize", model="alpha")
    with pytest.raises(UserError, match="JSON values"):
        tracked.start("summarize", model="alpha/1", features={"when": object()})
    execution = tracked.start("summarize", model="alpha/1")
    with pytest.raises(UserError, match="between 0 and 1"):
        tracked.complete(execution, success=True, quality=1.5)
    with pytest.raises(NotFoundError, match="no open execution"):
        tracked.complete("nope", success=True)


def test_export_cli_refuses_bad_arguments_and_writes_a_file(tracked: PerformanceTrackerBridge, tmp_path: Path) -> None:
    report(tracked, "alpha/1", quality=0.5, n=2)
    runner = CliRunner()
    bad_date = runner.invoke(cli, ["export", "rl", "--out", str(tmp_path / "x.parquet"), "--since", "yesterday"])
    assert bad_date.exit_code == 2 and "ISO 8601" in bad_date.stderr
    bad_name = runner.invoke(cli, ["export", "rl", "--out", str(tmp_path / "x.csv")])
    assert bad_name.exit_code == 2 and "ending in .parquet" in bad_name.stderr
    good = runner.invoke(cli, ["export", "rl", "--out", str(tmp_path / "rl.parquet"), "--since", "2020-01-01"])
    assert good.exit_code == 0 and "2 executions written" in good.stdout
