"""``POST /v1/responses``: OpenAI's Responses API for text in and out, with tools (issue 17)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
