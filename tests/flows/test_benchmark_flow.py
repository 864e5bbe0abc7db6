"""The benchmark flow as Prefect runs it: real flow run, real model, real Parquet and MLflow runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from registry.catalog.versions import Catalog
from registry.machine.hardware import fingerprint
from registry.results.store import SCHEMA_VERSION

pytestmark = pytest.mark.integration

BUNDLED = Path(__file__).resolve().parents[2] / "datasets"


def test_flow_writes_calls_and_runs_with_hardware_and_logs_mlflow(prefect_harness, catalog: Catalog, smollm2) -> None:
    from flows.benchmark import benchmark_flow

    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    runs = benchmark_flow(models=[record.ref], tasks=["qa", "classify"], limit=3, home=str(catalog.settings.home))

    assert [(r["task"], r["n"]) for r in runs] == [("qa", 3), ("classify", 3)]
    for run in runs:
        assert 0.0 <= run["quality"] <= 1.0
        assert run["p50_ms"] > 0 and run["p95_ms"] >= run["p50_ms"] and run["tokens_per_s"] > 0
        assert run["cpu_ms_per_token"] > 0 and run["peak_rss_mb"] > 0
    calls = catalog.store.query("select * from calls")
    assert len(calls) == 6
    hardware = fingerprint()
    assert {c["hardware_id"] for c in calls} == {hardware.hardware_id}
    assert all(c["cpu_model"] and c["cpu_cores"] >= 1 and c["ram_mb"] > 0 and c["os"] for c in calls)
    assert {c["gpu"] for c in calls} == {hardware.gpu}
    if hardware.gpu == "none":  # figures are explicitly null without a GPU, numbers with one
        assert all(c["gpu_memory_mb"] is None and c["gpu_utilization_pct"] is None for c in calls)
    else:
        assert all(c["gpu_memory_mb"] is not None for c in calls)
    assert {c["llama_cpp_version"] for c in calls} == {"0.3.36"}
    assert all(c["ok"] and c["completion_tokens"] > 0 and c["quality"] is not None for c in calls)
    assert {c["schema_version"] for c in calls} == {SCHEMA_VERSION}
    # Each run names the task version it measured; each call keeps its answer and per-scorer scores.
    from registry.evaluation.tasks import TaskCatalog

    qa = TaskCatalog(catalog.settings).get("qa")
    assert (runs[0]["task_version"], runs[0]["task_sha256"], runs[0]["dataset_sha256"]) == (1, qa.sha256, qa.data_sha256)
    assert all(c["answer"] and set(json.loads(c["scores"])) in ({"contains", "token_f1"}, {"label"}) for c in calls)
    qa_calls = [c for c in calls if c["task"] == "qa"]
    assert all(c["quality"] == max(json.loads(c["scores"]).values()) for c in qa_calls)  # combine: max

    board = catalog.store.leaderboard()
    assert {(r["task"], r["model"], r["version"], r["n"]) for r in board} == {("qa", "smollm2-135m", 1, 3), ("classify", "smollm2-135m", 1, 3)}

    mlflow_run = catalog.client.get_run(runs[0]["mlflow_run_id"])
    assert mlflow_run.data.tags["arbiter.model_version"] == "smollm2-135m/1"
    assert mlflow_run.data.tags["arbiter.task"] == "qa"
    assert set(mlflow_run.data.metrics) >= {"quality", "p50_ms", "p95_ms", "tokens_per_s", "cpu_ms_per_token", "peak_rss_mb"}


def test_flow_refuses_a_bad_dataset_before_running_any_model(prefect_harness, catalog: Catalog, smollm2) -> None:
    from flows.benchmark import benchmark_flow
    from registry.errors import DatasetError

    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    folder = catalog.settings.home / "datasets"
    folder.mkdir()
    shutil.copy(BUNDLED / "qa.yaml", folder / "qa.yaml")
    (folder / "qa.jsonl").write_text('{"id": "qa-1", "question": 7}\n')
    with pytest.raises(DatasetError):
        benchmark_flow(models=[record.ref], tasks=["qa"], limit=1, home=str(catalog.settings.home))
    assert catalog.store.query("select count(*) as n from calls") == [{"n": 0}]
    assert catalog.store.query("select count(*) as n from runs") == [{"n": 0}]
