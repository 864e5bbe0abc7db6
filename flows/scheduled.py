"""The deployed benchmark: what ``arbiter deploy`` schedules on each hardware class's work pool.

A worker runs it on its own machine, so every row carries that machine's fingerprint. It reads
*what* to measure when it runs (a route's champion and challenger follow promotions), checks each
version's declared hardware needs against this machine, runs the benchmark flow's tasks on the
versions that can run here, leads each MLflow run back to its Prefect flow run and worker, and
rewrites the measured versions' ``arbiter.compatibility`` tags. The logic is in
``flows/deployed_run.py`` and ``registry/evaluation/compat_matrix.py``; this file only orchestrates.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.benchmark import benchmark_on_task, fitting_tasks, resolve_tasks
from flows.deployed_run import (
    FLOW_NAME,
    default_tasks,
    record_not_working,
    record_shortfalls,
    resolve_versions,
    run_origin,
    tag_runs,
)
from registry.catalog.versions import Catalog
from registry.errors import ArbiterError, ConfigError
from registry.evaluation.compat_matrix import tag_versions
from registry.evaluation.tasks import TaskCatalog, TaskVersion
from registry.machine.costs import stopwatch
from registry.machine.hardware import this_machine
from registry.serving.pool import WarmPool
from registry.settings import Settings, get_settings
from registry.spec import VersionRecord


def worker_settings() -> Settings:
    """The worker's settings. A process worker runs each flow in a temporary directory, so the
    default home (the current directory) would vanish with the run: ARBITER_HOME is required."""
    if not os.environ.get("ARBITER_HOME"):
        raise ConfigError("the worker has no ARBITER_HOME, so results would land in a temporary directory; "
                          "start the worker with ARBITER_HOME set to the directory holding mlruns/ and results/ "
                          "(`make workers` sets it to the repository)")
    return get_settings()


@task(name="resolve-versions", cache_policy=NO_CACHE)
def resolve(catalog: Catalog, models: list[str] | None, route: str | None) -> list[VersionRecord]:
    return resolve_versions(catalog, models, route)


@task(name="check-hardware-needs", cache_policy=NO_CACHE)
def needs_met_here(catalog: Catalog, record: VersionRecord) -> str | None:
    """The version's declared needs against this machine, before anything loads it; a shortfall
    is the failed row (``flows.deployed_run.record_shortfalls``)."""
    return record_shortfalls(catalog, record, this_machine())


def benchmark_here(
    catalog: Catalog, record: VersionRecord, task_versions: list[TaskVersion], limit: int | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Benchmark one version on every set, loading it once (the first task loads it, the others
    reuse the warm instance). Returns the runs, and the reason when it could not load here: then
    the failed row is written (with the attempt's measured cost) and nothing else runs. Any other
    failure propagates."""
    load_failures: list[str] = []

    def on_event(kind: str, loaded: VersionRecord, detail: dict[str, Any]) -> None:
        if kind == "pool.load_failed" and loaded.ref == record.ref:  # not a judge that failed to load
            load_failures.append(str(detail.get("error")))

    runs: list[dict[str, Any]] = []
    with WarmPool(catalog.settings, on_event=on_event) as pool:
        for task_version in task_versions:
            with stopwatch() as cost:  # not measure(): its window would flag every call inside as overlapped
                try:
                    run = benchmark_on_task(catalog, pool, record, task_version, limit)
                except ArbiterError:
                    if not load_failures:
                        raise
                    run = None
            if run is None:
                return runs, record_not_working(catalog, record, load_failures[0], cost)
            runs.append(run)
    return runs, None


@task(name="record-origin-and-compatibility", cache_policy=NO_CACHE)
def record_origin_and_compatibility(
    catalog: Catalog, runs: list[dict[str, Any]], records: list[VersionRecord]
) -> dict[str, str]:
    tag_runs(catalog, [run["mlflow_run_id"] for run in runs], run_origin())
    return tag_versions(catalog, [(r.name, r.version) for r in records])


@flow(name=FLOW_NAME, validate_parameters=True)
def scheduled_benchmark_flow(
    models: list[str] | None = None, route: str | None = None, tasks: list[str] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Benchmark ``models`` (``NAME/VERSION``), or ``route``'s champion and challenger, or every
    version not deprecated, on ``tasks`` (default: the route's task, else every reference task)."""
    logger = get_run_logger()
    catalog = Catalog(worker_settings())
    records = resolve(catalog, models, route)
    task_versions = resolve_tasks(tasks or default_tasks(TaskCatalog(catalog.settings), route), catalog.settings)
    runs: list[dict[str, Any]] = []
    not_working: dict[str, str] = {}
    for record in records:
        error = needs_met_here(catalog, record)
        if error is None:
            fitting = fitting_tasks(record, task_versions)
            measured, error = benchmark_here(catalog, record, fitting, limit)
            runs += measured
        if error is not None:
            logger.warning("%s cannot run on this machine: %s", record.ref, error)
            not_working[record.ref] = error
    compatibility = record_origin_and_compatibility(catalog, runs, records)
    return {"runs": runs, "not_loadable": not_working, "compatibility": compatibility}
