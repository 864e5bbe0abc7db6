"""Health, metrics, MLflow's webhook and the admin endpoints (token required: see http.py).

Admin: ``GET /admin/routes``, ``GET /admin/pool``, ``POST /admin/routes/{route}/promote``
(``{"model", "version", "force"}``), ``POST /admin/routes/{route}/rollback``,
``POST /admin/pool/unload`` (``{"model": "name/version"}``). Promote and rollback move the
aliases in MLflow (the same code as ``arbiter routes``) and then refresh the routing table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from registry.errors import UserError
from registry.gateway.http import gateway_of, parse_body
from registry.spec import parse_ref

router = APIRouter()
_WEBHOOK_MAX_AGE_S = 300


class PromoteBody(BaseModel):
    model: str = Field(min_length=1, max_length=200)
    version: int = Field(ge=1)
    force: bool = False


class UnloadBody(BaseModel):
    model: str = Field(min_length=1, max_length=200, description="name/version")


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    entries = gateway.router.entries()
    body = {
        "status": "ok" if gateway.ready else "starting",
        "routes": {route: e.champion.ref if e.champion else None for route, e in entries.items()},
        "loaded": len(gateway.pool.loaded()),
        "alias_refreshes": gateway.router.refreshes,
        "last_refresh_error": gateway.router.last_refresh_error,
        "calls_written": gateway.recorder.written,
        "shadow": gateway.shadow.counters(),  # copies offered, dropped, preempted, answered … (docs/rollout.md)
        "live_scoring": gateway.live_scorer.counters(),
    }
    return JSONResponse(body, status_code=200 if gateway.ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(gateway_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.post("/hooks/mlflow")
async def mlflow_webhook(request: Request) -> JSONResponse:
    """MLflow says an alias moved: check its HMAC signature, then re-read the aliases at once."""
    gateway = gateway_of(request)
    payload = (await request.body()).decode("utf-8", errors="replace")
    delivery = request.headers.get("x-mlflow-delivery-id", "")
    stamp = request.headers.get("x-mlflow-timestamp", "")
    signature = request.headers.get("x-mlflow-signature", "")
    expected = "v1," + base64.b64encode(
        hmac.new(gateway.webhook_secret.encode(), f"{delivery}.{stamp}.{payload}".encode(), hashlib.sha256).digest()
    ).decode()
    fresh = stamp.isdigit() and abs(time.time() - int(stamp)) < _WEBHOOK_MAX_AGE_S
    if not (fresh and hmac.compare_digest(signature, expected)):
        return JSONResponse({"error": "bad or stale MLflow webhook signature"}, status_code=401)
    gateway.router.refresh_soon()
    gateway.metrics.events.labels(kind="webhook.received").inc()
    return JSONResponse({"ok": True})


@router.get("/admin/routes")
async def admin_routes(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    swapping = gateway.router.swapping()
    return {
        "routes": [
            {"route": route, "aliases": {a: r.ref for a, r in entry.aliases.items()}, "replicas": entry.replicas,
             "swapping_to": swapping.get(route)}
            for route, entry in sorted(gateway.router.entries().items())
        ]
    }


@router.get("/admin/pool")
async def admin_pool(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    return {"memory_budget_mb": gateway.settings.memory_budget_mb, "instances": gateway.pool.snapshot()}


@router.post("/admin/routes/{route}/promote")
async def admin_promote(route: str, request: Request) -> dict[str, Any]:
    body = await parse_body(request, PromoteBody)
    gateway = gateway_of(request)
    return await anyio.to_thread.run_sync(lambda: gateway.promote(route, body.model, body.version, force=body.force))


@router.post("/admin/routes/{route}/rollback")
async def admin_rollback(route: str, request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    return await anyio.to_thread.run_sync(gateway.rollback, route)


@router.post("/admin/pool/unload")
async def admin_unload(request: Request) -> dict[str, Any]:
    body = await parse_body(request, UnloadBody)
    gateway = gateway_of(request)
    name, version = parse_ref(body.model)
    if version is None:
        raise UserError(f"name one version to unload as NAME/VERSION, e.g. {name}/1")
    unloaded = await anyio.to_thread.run_sync(gateway.pool.unload, body.model)
    return {"model": body.model, "unloaded_instances": unloaded}
