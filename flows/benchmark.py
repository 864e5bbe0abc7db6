"""The benchmark flow: chosen versions × tasks, one Prefect task per (version, task) batch.

One task per batch, not per generation: a task costs ~50 ms on 2 cores (shared/STACK.md), which
per generation would add ~19 % to the run; per batch it is noise. Each version is loaded once,
runs every task, and is unloaded before the next so memory holds one model at a time.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from registry.catalog.versions import Catalog
from registry.evaluation.benchmark import benchmark_and_record
from registry.evaluation.tasks import TaskCatalog, TaskVersion
from registry.serving.pool import WarmPool
from registry.settings import Settings, get_settings
from registry.spec import VersionRecord


@task(name="resolve-tasks", cache_policy=NO_CACHE)
def resolve_tasks(tasks: list[str], settings: Settings) -> list[TaskVersion]:
    """Each ``NAME`` or ``NAME/VERSION`` as its recorded version, before any model runs: a task file
    in the datasets folder that changed is validated (Great Expectations) and recorded here."""
    catalog = TaskCatalog(settings)
    return [catalog.get(ref) for ref in tasks]


@task(name="benchmark-version-on-task", cache_policy=NO_CACHE)
def benchmark_on_task(
    catalog: Catalog, pool: WarmPool, record: VersionRecord, task_version: TaskVersion, limit: int | None
) -> dict[str, Any]:
    """A judged task is judged on the same warm pool (``benchmark_and_record``)."""
    return benchmark_and_record(catalog, pool, record, task_version, limit=limit)


def fitting_tasks(record: VersionRecord, task_versions: list[TaskVersion]) -> list[TaskVersion]:
    """The tasks ``record`` can serve; each one it cannot is skipped with the reason in the flow's
    log (a classifier on a chat task, a text model without a capability the task needs)."""
    fitting = []
    for task_version in task_versions:
        reason = task_version.cannot_serve(record)
        if reason is None:
            fitting.append(task_version)
        else:
            get_run_logger().info("skipped %s on %s: %s", record.ref, task_version.ref, reason)
    return fitting


@flow(name="benchmark", validate_parameters=True)
def benchmark_flow(
    models: list[str], tasks: list[str], limit: int | None = None, home: str | None = None
) -> list[dict[str, Any]]:
    """Benchmark ``models`` (``NAME/VERSION`` refs) on ``tasks`` (``NAME`` or ``NAME/VERSION``); returns
    the ``runs`` rows written. A version that cannot serve a task is skipped on it, with the reason logged."""
    settings = get_settings(home=home) if home else get_settings()
    catalog = Catalog(settings)
    task_versions = resolve_tasks(tasks, settings)
    records = [catalog.get_ref(ref) for ref in models]
    runs = []
    for record in records:
        fitting = fitting_tasks(record, task_versions)
        if not fitting:
            continue
        with WarmPool(settings) as pool:
            for task_version in fitting:
                runs.append(benchmark_on_task(catalog, pool, record, task_version, limit))
    return runs


if __name__ == "__main__":
    benchmark_flow(models=["smollm2-135m/1"], tasks=["qa"], limit=5)
