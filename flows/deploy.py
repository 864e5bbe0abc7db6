"""Benchmarks where the hardware is: one Prefect work pool per hardware class, one deployment each.

``arbiter deploy --class cpu,cuda`` makes (idempotently) the process work pools ``arbiter-cpu``
and ``arbiter-cuda`` and a deployment of ``flows/scheduled.py`` on each, on a cron schedule
(nightly by default). A worker on each machine (``make workers`` here; one per machine elsewhere,
docs/deploy.md) polls its class's pool, so a ``cuda`` benchmark runs only on an NVIDIA machine,
and every row it writes carries that machine's fingerprint.

Why these choices:

- The entrypoint is a **module path** (``flows.scheduled.scheduled_benchmark_flow``), with no
  pull steps: any machine with arbiter installed imports the flow; no code is copied and no
  checkout path is baked into the deployment.
- A deployment names *what to measure*, resolved when it runs: a route's champion and challenger
  (``--route``: the nightly figures follow promotions without redeploying), fixed versions
  (``--models``), or every version not deprecated.
- Deployments need a **real server** (``PREFECT_API_URL``): on Prefect's temporary server they
  would vanish with the process that made them (shared/STACK.md), so that is refused with how to
  start one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from flows.deployed_run import FLOW_NAME, BenchmarkTarget
from registry.errors import ArbiterError, ConfigError, UserError, one_line

ENTRYPOINT = "flows.scheduled.scheduled_benchmark_flow"
DEFAULT_CRON = "0 2 * * *"
POOL_PREFIX = "arbiter-"
START_SERVER = (
    "start one with `make workers` (or `prefect server start --host 127.0.0.1`) and set "
    "PREFECT_API_URL=http://127.0.0.1:4200/api"
)


def pool_name(hardware_class: str) -> str:
    """The work pool of a hardware class: prefixed, so arbiter's pools stand apart on a shared server."""
    return POOL_PREFIX + hardware_class


def validate_cron(cron: str, timezone: str) -> Any:
    """The Prefect schedule for ``cron``, or a one-line error with an example."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        return CronSchedule(cron=cron, timezone=timezone)
    except (ValidationError, ValueError) as exc:
        reason = one_line(exc.errors()) if isinstance(exc, ValidationError) else str(exc).removeprefix("Value error, ")
        raise UserError(f"invalid schedule {cron!r} ({timezone}): {reason}; use five cron fields such as "
                        f"{DEFAULT_CRON!r} and an IANA time zone such as 'UTC'") from None


def require_server() -> str:
    """The configured Prefect API URL, checked to answer; else a :class:`ConfigError` with the fix."""
    import httpx
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise ConfigError(f"no Prefect server configured (PREFECT_API_URL is unset): deployments on a temporary "
                          f"server vanish with it; {START_SERVER}")
    try:
        httpx.get(url.rstrip("/") + "/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise ConfigError(f"no Prefect server answers at PREFECT_API_URL={url} ({type(exc).__name__}); "
                          f"{START_SERVER}") from None
    return str(url)


def deploy(classes: Sequence[str], target: BenchmarkTarget, *, cron: str = DEFAULT_CRON, timezone: str = "UTC",
           name: str = "nightly", client: Any = None) -> list[dict[str, Any]]:
    """Create or update one pool and one deployment per class; returns one row per class.

    Idempotent: the server upserts a deployment by (flow, name), replacing its schedule and
    parameters, and an existing pool is reused as it is. Everything that can be checked is
    checked before the first write (the schedule, the server, every class's pool), so a refusal
    leaves the server as it was; a write that fails midway says which classes were written.
    ``client``: a synchronous Prefect client (default: one for ``PREFECT_API_URL``).
    """
    schedule = validate_cron(cron, timezone)
    url = require_server()
    with contextlib.ExitStack() as stack:
        if client is None:
            from prefect.client.orchestration import get_client

            client = stack.enter_context(get_client(sync_client=True))
        missing = [c for c in classes if not _pool_exists(client, pool_name(c))]  # raises for a foreign pool
        written: list[str] = []
        rows = []
        for hardware_class in classes:
            try:
                rows.append(_deploy_class(client, hardware_class, hardware_class in missing, target, schedule,
                                          cron=cron, timezone=timezone, name=name, url=url))
            except Exception as exc:  # the server's errors, mapped here: say what is half done
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
                done = (f"already written: {', '.join(f'{pool_name(c)} and {FLOW_NAME}/{name}-{c}' for c in written)}"
                        if written else "nothing was written")
                raise ArbiterError(f"deploying the {hardware_class} class failed ({type(exc).__name__}: {reason}); "
                                   f"{done}; run the same command again once the server answers "
                                   f"(it updates what exists)") from None
            written.append(hardware_class)
    return rows


def _deploy_class(client: Any, hardware_class: str, create_pool: bool, target: BenchmarkTarget, schedule: Any, *,
                  cron: str, timezone: str, name: str, url: str) -> dict[str, Any]:
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    from flows.scheduled import (
        scheduled_benchmark_flow,  # deferred with Prefect: every `arbiter` command imports this module
    )

    pool = pool_name(hardware_class)
    if create_pool:
        _create_process_pool(client, pool, hardware_class)
    deployment_id = client.create_deployment(
        flow_id=client.create_flow_from_name(FLOW_NAME),
        name=f"{name}-{hardware_class}",
        work_pool_name=pool,
        entrypoint=ENTRYPOINT,
        pull_steps=[],
        parameters=target.parameters(),
        parameter_openapi_schema=scheduled_benchmark_flow.parameters.model_dump(exclude_unset=True),
        schedules=[DeploymentScheduleCreate(schedule=schedule)],
        tags=["arbiter", f"hardware:{hardware_class}"],
        description=f"arbiter benchmark on the {hardware_class} hardware class (made by `arbiter deploy`)",
    )
    online = [w.name for w in client.read_workers_for_work_pool(pool) if str(w.status).endswith("ONLINE")]
    return {
        "hardware_class": hardware_class,
        "work_pool": pool,
        "deployment": f"{FLOW_NAME}/{name}-{hardware_class}",
        "deployment_id": str(deployment_id),
        "cron": cron,
        "timezone": timezone,
        "parameters": target.parameters(),
        "workers_online": online,
        "api_url": url,
    }


def _pool_exists(client: Any, pool: str) -> bool:
    """Whether ``pool`` exists (as a process pool); one of another type is refused with the fix."""
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        existing = client.read_work_pool(pool)
    except ObjectNotFound:
        return False
    if existing.type != ProcessWorker.type:
        raise UserError(f"work pool {pool!r} exists with type {existing.type!r}, but arbiter's pools are process pools; "
                        f"delete it with `prefect work-pool delete {pool}` and deploy again (nothing was written)")
    return True


def _create_process_pool(client: Any, pool: str, hardware_class: str) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    client.create_work_pool(WorkPoolCreate(
        name=pool, type=ProcessWorker.type,
        base_job_template=ProcessWorker.get_default_base_job_template(),
        description=f"arbiter benchmarks on {hardware_class} machines: one worker per machine of this class",
    ))
