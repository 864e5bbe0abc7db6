"""``POST /v1/embeddings``: OpenAI's embeddings endpoint over the dispatcher's embed (filled by the embeddings work of issue 17)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
