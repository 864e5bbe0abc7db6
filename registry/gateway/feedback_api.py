"""``POST /arbiter/feedback``: an application's (or a person's) score for one answer.

Body: ``{"call_id", "score": 0–1 | "thumbs": "up"|"down", "source": "your-app" (default "user"),
"comment"?}``; ``call_id`` is the answer's ``x-arbiter-call-id`` header (or its OpenAI ``id``).
Answer: the stored row's ``feedback_id``, the call's route and version, the score. Idempotent per
(call, source): posting again replaces, never adds. An unknown call is 404, bad input 400 with the
field and the fix, a flood past ``ARBITER_FEEDBACK_PER_S`` (burst ``ARBITER_FEEDBACK_BURST``) 429
with ``Retry-After``: the rows are written off the request path, so the bound keeps a runaway client
from filling the disk, not the gateway from answering.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from registry.errors import CapacityError
from registry.gateway.http import gateway_of, parse_body
from registry.results.feedback import MAX_COMMENT_CHARS

router = APIRouter()


class FeedbackBody(BaseModel):
    """Shapes only; the values (range, thumbs, source's form) are checked by ``FeedbackBook`` so the
    CLI, the Python API and this endpoint refuse the same things with the same words."""

    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(max_length=100)
    score: float | None = None
    thumbs: str | None = Field(default=None, max_length=10)
    source: str = Field(default="user", max_length=200)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


@router.post("/arbiter/feedback")
async def feedback(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    wait_s = gateway.feedback_bucket.take()
    if wait_s > 0:
        raise CapacityError(f"too much feedback: more than {gateway.settings.feedback_per_s:g} a second; "
                            f"retry in {wait_s:.1f} s or send less often", retry_after_s=max(1, math.ceil(wait_s)))
    body = await parse_body(request, FeedbackBody)
    # A call not answered lately is looked up in the calls table: a query, so off the event loop.
    row = await anyio.to_thread.run_sync(lambda: gateway.feedback.record(
        body.call_id, score=body.score, thumbs=body.thumbs, source=body.source, comment=body.comment))
    return {key: row[key] for key in ("feedback_id", "call_id", "route", "model", "version", "source", "score")}
