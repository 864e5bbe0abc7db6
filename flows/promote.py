"""The promotion flow: benchmark a candidate, check it against the champion, ramp it up on live
traffic, promote it or roll it back — a thin Prefect wrapper over ``registry.rollout.promotion``.

The state machine, its idempotent steps and its lock live in the package; the flow adds Prefect's
record of each run and runs the benchmarks as Prefect tasks, so they show in the Prefect UI.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from registry.catalog.versions import Catalog
from registry.rollout.policy import RolloutPolicy
from registry.rollout.promotion import Rollout, benchmark_alone
from registry.settings import get_settings
from registry.spec import VersionRecord


@task(name="benchmark-candidate", cache_policy=NO_CACHE)
def benchmark_for_promotion(catalog: Catalog, record: VersionRecord, route: str, limit: int | None) -> dict[str, Any]:
    """Warm up and benchmark one version on the route's validation set (its own pool: the flow's
    process is not the gateway's, and the model is unloaded when the benchmark ends)."""
    return benchmark_alone(catalog, record, route, limit)


@flow(name="promote", validate_parameters=True)
def promote_flow(
    route: str, candidate: str, policy: dict[str, Any] | None = None, home: str | None = None, lock_held: bool = False
) -> dict[str, Any]:
    """Promote ``candidate`` (``NAME/VERSION``) on ``route`` gradually; returns the route's status.
    ``lock_held``: the caller (``arbiter routes promote``) holds the route's lock already."""
    settings = get_settings(home=home) if home else get_settings()
    catalog = Catalog(settings)
    rollout = Rollout(
        catalog,
        benchmark=lambda record, task_name, limit: benchmark_for_promotion(catalog, record, task_name, limit),
    )
    rollout.promote(route, candidate, RolloutPolicy(**(policy or {})), lock_held=lock_held)
    return rollout.status(route)


if __name__ == "__main__":
    promote_flow(route="qa", candidate="smollm2-135m/2", policy={"ramp": [50, 100], "step_seconds": 60})
