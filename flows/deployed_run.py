"""What a deployed benchmark run needs when it runs: its target, the versions that target names
today, what it records of versions that cannot run here, and where it ran.

Shared by the deployer (``flows/deploy.py``, which checks a target before scheduling it) and the
deployed flow (``flows/scheduled.py``, which resolves it every night), so neither imports the other's
internals.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from registry.catalog.routes import Routes
from registry.catalog.tracking import tag_run
from registry.catalog.versions import Catalog
from registry.errors import NotFoundError, UserError
from registry.evaluation.tasks import TaskCatalog
from registry.machine.costs import Cost
from registry.machine.hardware import Machine, shortfalls
from registry.serving.calls import call_row
from registry.spec import Status, VersionRecord

FLOW_NAME = "scheduled-benchmark"


@dataclass(frozen=True)
class BenchmarkTarget:
    """What a deployed benchmark measures; ``models`` and ``route`` are exclusive, neither = all."""

    models: tuple[str, ...] = ()
    route: str | None = None
    tasks: tuple[str, ...] = ()
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.models and self.route:
            raise UserError("pass either --models or --route, not both: a route's versions are its champion and challenger")

    def parameters(self) -> dict[str, Any]:
        """The deployment's flow parameters (``flows.scheduled.scheduled_benchmark_flow``)."""
        return {"models": list(self.models) or None, "route": self.route, "tasks": list(self.tasks) or None,
                "limit": self.limit}

    def check(self, catalog: Catalog) -> None:
        """Refuse at deploy time what would fail every night: unknown versions, route or tasks."""
        for ref in self.models:
            catalog.get_ref(ref)
        if self.route:
            Routes(catalog).show(self.route)
        tasks = TaskCatalog(catalog.settings)
        for ref in self.tasks:
            tasks.get(ref)


def resolve_versions(catalog: Catalog, models: Sequence[str] | None, route: str | None) -> list[VersionRecord]:
    """The versions a deployed run measures, read when it runs (so they follow the registry)."""
    if models:
        return [catalog.get_ref(ref) for ref in models]
    if route:
        state = Routes(catalog).show(route)
        targets = dict.fromkeys((t.model, t.version) for t in (state.champion, state.challenger) if t)
        if not targets:
            raise NotFoundError(f"route {route!r} has no champion or challenger to benchmark; "
                                f"promote one with `arbiter routes promote {route} --model NAME --version N`")
        return [catalog.get(name, version) for name, version in targets]
    records = [r for r in catalog.list_versions() if r.status != Status.DEPRECATED.value]
    if not records:
        raise NotFoundError("no model versions to benchmark; register one with `arbiter models register PATH --name NAME`")
    return records


def default_tasks(tasks: TaskCatalog, route: str | None) -> list[str]:
    """A route's own task when it is one (route ``qa`` → task ``qa``), else every task that needs no judge."""
    return [route] if route is not None and tasks.find(route) is not None else tasks.default_names()


def record_not_working(catalog: Catalog, record: VersionRecord, error: str, cost: Any = None) -> str:
    """A version that cannot run on this machine as a failed ``calls`` row (``source =
    'deployment'``, the reason in ``error``, the attempt's measured cost if there was one), so the
    compatibility matrix says it does not work on this hardware class instead of leaving it out."""
    catalog.store.append("calls", [call_row(record, None, cost or Cost(), error=error, source="deployment")])
    return error


def record_shortfalls(catalog: Catalog, record: VersionRecord, machine: Machine) -> str | None:
    """Why ``machine`` cannot run ``record`` by its declared hardware needs (an accelerator, a CPU
    flag, GPU memory or RAM it lacks: :func:`registry.machine.hardware.shortfalls`), recorded as the failed
    row *without loading it* — a build for a CPU flag this one lacks would die of an illegal
    instruction and leave no row at all. ``None`` when the needs are met."""
    reasons = shortfalls(record.spec.hardware, machine)
    return record_not_working(catalog, record, "; ".join(reasons)) if reasons else None


def run_origin() -> dict[str, str]:
    """Where a deployed run ran, as MLflow run tags: the Prefect flow run and deployment, the
    work pool it was taken from, and the worker's host (rows carry the hardware fingerprint)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import deployment, flow_run

    tags = {"arbiter.worker_host": socket.gethostname()}
    run_id = flow_run.get_id()
    if run_id:
        tags["arbiter.prefect_flow_run_id"] = str(run_id)
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
        if run.work_pool_name:
            tags["arbiter.prefect_work_pool"] = run.work_pool_name
    if deployment.get_name():
        tags["arbiter.prefect_deployment"] = f"{FLOW_NAME}/{deployment.get_name()}"
    return tags


def tag_runs(catalog: Catalog, mlflow_run_ids: Sequence[str], tags: dict[str, str]) -> None:
    """Add ``tags`` to each benchmark run in MLflow, so a figure leads back to its flow run and worker."""
    for run_id in mlflow_run_ids:
        tag_run(catalog, run_id, tags)
