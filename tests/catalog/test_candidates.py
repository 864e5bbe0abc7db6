"""Every version benchmarked on a route's task is a candidate in the route's registered model, with its
figures on this hardware as tags, in its description and as metrics of its own run (the MLflow UI's
version list and Compare), on a real MLflow store; one real benchmark proves the hook."""

from __future__ import annotations

from datetime import timedelta

import pytest

from registry.catalog.candidates import Candidates
from registry.catalog.route_model import TAG_CANDIDATE_RUN, RouteModel, route_model_name
from registry.catalog.routes import Routes
from registry.catalog.tracking import CANDIDATE_EXPERIMENT, candidate_run
from registry.catalog.versions import Catalog
from registry.evaluation.benchmark import benchmark_and_record
from registry.evaluation.tasks import TaskCatalog
from registry.machine.hardware import fingerprint
from registry.results.store import new_id, now_utc
from registry.serving.pool import WarmPool

pytestmark = pytest.mark.integration


def benchmark_row(catalog: Catalog, model: str, version: int, quality: float, *, task: str = "qa",
                  hardware_id: str | None = None, age_s: float = 60, **figures) -> dict:
    """A ``runs`` row as ``benchmark_and_record`` writes one (the real one is tested below)."""
    row = {"run_id": new_id(), "mlflow_run_id": new_id(), "ts": now_utc() - timedelta(seconds=age_s), "task": task,
           "task_version": 1, "model": model, "version": version, "n": 20, "n_ok": 20, "quality": quality,
           "quality_source": "reference", "p50_ms": 120.0, "p95_ms": 300.0, "tokens_per_s": 42.5,
           "energy_mwh_per_1k_tokens": 0.75, **fingerprint().as_row()}
    row.update(figures)
    if hardware_id is not None:
        row["hardware_id"] = hardware_id
    catalog.store.append("runs", [row])
    return row


def route_versions(catalog: Catalog, route: str = "qa") -> dict[str, object]:
    """The route model's versions by the catalog version they copy."""
    versions = catalog.client.search_model_versions(f"name = '{route_model_name(route)}'")
    return {mv.source.removeprefix("models:/"): mv for mv in versions}


def test_versions_benchmarked_before_the_route_appear_when_it_is_made(catalog: Catalog, registered) -> None:
    mine = benchmark_row(catalog, "smollm2-135m", 1, 0.6)
    other = benchmark_row(catalog, "gemma3-270m", 1, 0.7, p50_ms=80.0, energy_mwh_per_1k_tokens=None)
    benchmark_row(catalog, "smollm2-135m", 2, 0.9, hardware_id="another-machine")  # says nothing of this one
    benchmark_row(catalog, "gemma3-270m", 2, 0.9, task="extract")  # another task

    Routes(catalog).promote("qa", "smollm2-135m", 1)

    versions = route_versions(catalog)
    assert sorted(versions) == ["gemma3-270m/1", "smollm2-135m/1"]
    gemma = versions["gemma3-270m/1"]
    expected = {"arbiter.quality": "0.700", "arbiter.quality_source": "reference", "arbiter.p50_ms": "80.0",
                "arbiter.p95_ms": "300.0", "arbiter.tokens_per_s": "42.5", "arbiter.hardware_id": fingerprint().hardware_id,
                "arbiter.task_version": "1", "arbiter.benchmark_run": other["mlflow_run_id"],
                "arbiter.catalog_model": "gemma3-270m", "arbiter.catalog_version": "1"}
    assert {key: gemma.tags.get(key) for key in expected} == expected
    assert "arbiter.energy_mwh_per_1k_tokens" not in gemma.tags  # the run had no energy figure
    assert gemma.tags["arbiter.benchmarked_at"].startswith(other["ts"].date().isoformat())
    assert "quality 0.700 (reference), p50 80.0 ms" in gemma.description
    assert versions["smollm2-135m/1"].tags["arbiter.benchmark_run"] == mine["mlflow_run_id"]
    # Each copy links to a run of its own whose metrics are its figures: what the UI's Compare shows.
    for mv in versions.values():
        assert mv.run_id == mv.tags[TAG_CANDIDATE_RUN]
    run = catalog.client.get_run(gemma.run_id)
    assert run.data.metrics == {"quality": 0.7, "p50_ms": 80.0, "p95_ms": 300.0, "tokens_per_s": 42.5}
    assert run.data.tags["arbiter.benchmark_run"] == other["mlflow_run_id"]
    assert catalog.client.get_experiment(run.info.experiment_id).name == CANDIDATE_EXPERIMENT
    # The champion is the copy it was before publishing: version 1, and the only alias.
    assert catalog.client.get_registered_model(route_model_name("qa")).aliases == {"champion": 1}


def test_a_newer_run_replaces_the_figures_and_publishing_again_writes_nothing(catalog: Catalog, registered) -> None:
    benchmark_row(catalog, "smollm2-135m", 1, 0.6, age_s=120)
    Routes(catalog).promote("qa", "smollm2-135m", 1)
    candidates = Candidates(catalog, "qa")
    record = catalog.get("smollm2-135m", 1)
    newer = benchmark_row(catalog, "smollm2-135m", 1, 0.65, age_s=10, energy_mwh_per_1k_tokens=None)

    assert candidates.publish(record) == 1
    mv = route_versions(catalog)["smollm2-135m/1"]
    assert (mv.tags["arbiter.quality"], mv.tags["arbiter.benchmark_run"]) == ("0.650", newer["mlflow_run_id"])
    assert "arbiter.energy_mwh_per_1k_tokens" not in mv.tags  # removed, not left from the older run
    assert [m.value for m in catalog.client.get_metric_history(mv.run_id, "quality")] == [0.6, 0.65]

    candidates.publish(record)
    candidates.publish_all()
    again = route_versions(catalog)["smollm2-135m/1"]
    assert again.last_updated_timestamp == mv.last_updated_timestamp and again.tags == mv.tags
    assert len(catalog.client.get_metric_history(mv.run_id, "quality")) == 2


def test_nothing_is_published_without_a_route_or_without_figures_here(catalog: Catalog, registered) -> None:
    candidates = Candidates(catalog, "qa")
    benchmark_row(catalog, "smollm2-135m", 1, 0.6)
    assert candidates.publish(catalog.get("smollm2-135m", 1)) is None
    assert candidates.publish_all() == []
    assert RouteModel(catalog, "qa").read() is None  # no route made by publishing

    Routes(catalog).promote("qa", "smollm2-135m", 1)
    benchmark_row(catalog, "gemma3-270m", 1, 0.9, hardware_id="another-machine")
    assert candidates.publish(catalog.get("gemma3-270m", 1)) is None
    assert sorted(route_versions(catalog)) == ["smollm2-135m/1"]


def test_a_copy_killed_after_its_run_was_made_reuses_that_run(catalog: Catalog, registered) -> None:
    route = RouteModel(catalog, "qa")
    route.create()
    record = catalog.get("smollm2-135m", 1)
    orphan = candidate_run(catalog, route="qa", model_version=record.ref, registration_run=None)  # then SIGKILL

    route_version = route.copy_of(record)

    assert route.version(route_version).run_id == orphan
    experiment = catalog.client.get_experiment_by_name(CANDIDATE_EXPERIMENT)
    assert len(catalog.client.search_runs([experiment.experiment_id])) == 1
    mv = route.version(route_version)
    original = catalog.client.get_model_version("smollm2-135m", "1")
    assert mv.source == "models:/smollm2-135m/1" and mv.description == original.description
    assert {k: v for k, v in original.tags.items()}.items() <= mv.tags.items()  # the catalog's tags, as a copy has


def test_a_real_benchmark_offers_the_version_in_its_route(catalog: Catalog, smollm2, session_pool: WarmPool) -> None:
    record = catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))[0]
    Routes(catalog).promote("extract", record.name, record.version, force=True)
    assert route_versions(catalog, "extract")["smollm2-135m/1"].tags.get("arbiter.quality") is None

    row = benchmark_and_record(catalog, session_pool, record, TaskCatalog(catalog.settings).get("extract"), limit=2)

    mv = route_versions(catalog, "extract")["smollm2-135m/1"]
    assert mv.tags["arbiter.benchmark_run"] == row["mlflow_run_id"]
    assert mv.tags["arbiter.quality"] == f"{row['quality']:.3f}"
    assert mv.tags["arbiter.p50_ms"] == f"{row['p50_ms']:.1f}"
    assert catalog.client.get_run(mv.run_id).data.metrics["quality"] == pytest.approx(row["quality"])
