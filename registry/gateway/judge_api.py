"""``POST /arbiter/judge``: judgements from the gateway's warm pool.

The judge (route ``judgment``'s champion, or a pinned ``judge`` version) runs on the instances the
gateway already holds — a champion is loaded when the gateway starts and stays pinned — so an
application that judges many outputs pays for no model load at all. Body: ``{"task", "output",
"criteria": [...] (default all four), "judge": "NAME/VERSION" (optional)}``; answer: ``{"judgements":
[{criterion, score, reason, judge, figures, attempts, truncated, injection_suspected}, …]}``.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from registry.evaluation.judge import JUDGE_ROUTE, ModelBasedJudge
from registry.evaluation.rubrics import CRITERIA
from registry.gateway.http import gateway_of, parse_body

router = APIRouter()


class JudgeBody(BaseModel):
    task: str = Field(min_length=1, max_length=100_000)
    output: str = Field(min_length=1, max_length=100_000)
    criteria: list[str] = Field(default_factory=lambda: list(CRITERIA), min_length=1, max_length=len(CRITERIA))
    judge: str | None = Field(default=None, max_length=200, description="NAME/VERSION; default: route judgment's champion")


@router.post("/arbiter/judge")
async def judge(request: Request) -> dict[str, Any]:
    body = await parse_body(request, JudgeBody)
    gateway = gateway_of(request)
    name = body.judge or JUDGE_ROUTE  # resolved from the router's memory, not MLflow: ~2 µs, not ~60 ms
    judge = ModelBasedJudge(gateway.catalog, gateway.pool, resolve=lambda: gateway.router.resolve(name).record)
    judgements = await anyio.to_thread.run_sync(lambda: judge.evaluate(body.task, body.output, body.criteria))
    return {"judgements": [j.as_json() for j in judgements]}
