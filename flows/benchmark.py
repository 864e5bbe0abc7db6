"""The benchmark flow: chosen versions × tasks, one Prefect task per (version, task) batch.

One task per batch, not per generation: a task costs ~50 ms on 2 cores (shared/STACK.md), which
per generation would add ~19 % to the run; per batch it is noise. Each version is loaded once,
runs every task, and is unloaded before the next so memory holds one model at a time.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from registry.catalog.versions import Catalog
from registry.evaluation.benchmark import benchmark_and_record
from registry.evaluation.datasets import ValidationSet, load_validation_set
from registry.serving.pool import WarmPool
from registry.settings import Settings, get_settings
from registry.spec import VersionRecord


@task(name="validate-datasets", cache_policy=NO_CACHE)
def validate_datasets(tasks: list[str], settings: Settings) -> list[ValidationSet]:
    """Great Expectations suites run before any model does: a bad set stops the flow here."""
    return [load_validation_set(name, settings.datasets_dir) for name in tasks]


@task(name="benchmark-version-on-task", cache_policy=NO_CACHE)
def benchmark_on_task(
    catalog: Catalog, pool: WarmPool, record: VersionRecord, validation_set: ValidationSet, limit: int | None
) -> dict[str, Any]:
    """A judged task is judged on the same warm pool (``benchmark_and_record``)."""
    return benchmark_and_record(catalog, pool, record, validation_set, limit=limit)


@flow(name="benchmark", validate_parameters=True)
def benchmark_flow(
    models: list[str], tasks: list[str], limit: int | None = None, home: str | None = None
) -> list[dict[str, Any]]:
    """Benchmark ``models`` (``NAME/VERSION`` refs) on ``tasks``; returns the ``runs`` rows written."""
    settings = get_settings(home=home) if home else get_settings()
    catalog = Catalog(settings)
    validation_sets = validate_datasets(tasks, settings)
    records = [catalog.get_ref(ref) for ref in models]
    runs = []
    for record in records:
        with WarmPool(settings) as pool:
            for validation_set in validation_sets:
                runs.append(benchmark_on_task(catalog, pool, record, validation_set, limit))
    return runs


if __name__ == "__main__":
    benchmark_flow(models=["smollm2-135m/1"], tasks=["qa"], limit=5)
