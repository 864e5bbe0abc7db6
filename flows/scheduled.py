"""The deployed benchmark: what ``arbiter deploy`` schedules on each hardware class's work pool.

A worker runs it on its own machine, so every row carries that machine's fingerprint. It reads
*what* to measure when it runs (a route's champion and challenger follow promotions), runs the
benchmark flow as a subflow, leads each MLflow run back to its Prefect flow run and worker, and
rewrites the measured versions' ``arbiter.compatibility`` tags. The logic is in
``registry/deploy.py`` and ``registry/compat_matrix.py``; this file only orchestrates.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.benchmark import benchmark_flow
from registry.calls import call_row
from registry.catalog import Catalog, VersionRecord
from registry.compat_matrix import tag_versions
from registry.costs import measure
from registry.deploy import default_tasks, resolve_versions, run_origin, tag_runs
from registry.errors import ArbiterError, ConfigError
from registry.pool import WarmPool
from registry.settings import Settings, get_settings


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


@task(name="check-loads-here", cache_policy=NO_CACHE)
def loads_here(catalog: Catalog, record: VersionRecord) -> str | None:
    """Load the version once on this machine; a version that cannot load here is a failed
    ``calls`` row (with the attempt's measured cost and the reason), so the compatibility matrix
    says it does not work on this hardware class instead of leaving it out."""
    with WarmPool(catalog.settings) as pool:
        with measure() as cost:
            try:
                pool.get(record)
                error = None
            except ArbiterError as exc:
                error = str(exc)
    if error is not None:
        catalog.store.append("calls", [call_row(record, None, cost, error=error, source="deployment")])
    return error


@task(name="record-origin-and-compatibility", cache_policy=NO_CACHE)
def record_origin_and_compatibility(
    catalog: Catalog, runs: list[dict[str, Any]], records: list[VersionRecord]
) -> dict[str, str]:
    tag_runs(catalog, [run["mlflow_run_id"] for run in runs], run_origin())
    return tag_versions(catalog, [(r.name, r.version) for r in records])


@flow(name="scheduled-benchmark", validate_parameters=True)
def scheduled_benchmark_flow(
    models: list[str] | None = None, route: str | None = None, tasks: list[str] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Benchmark ``models`` (``NAME/VERSION``), or ``route``'s champion and challenger, or every
    version not deprecated, on ``tasks`` (default: the route's task, else every reference task)."""
    logger = get_run_logger()
    catalog = Catalog(worker_settings())
    records = resolve(catalog, models, route)
    chosen = tasks or default_tasks(route)
    runs: list[dict[str, Any]] = []
    not_loadable: dict[str, str] = {}
    for record in records:
        error = loads_here(catalog, record)
        if error is not None:
            logger.warning("%s cannot run on this machine: %s", record.ref, error)
            not_loadable[record.ref] = error
            continue
        runs += benchmark_flow(models=[record.ref], tasks=chosen, limit=limit, home=str(catalog.settings.home))
    compatibility = record_origin_and_compatibility(catalog, runs, records)
    return {"runs": runs, "not_loadable": not_loadable, "compatibility": compatibility}
