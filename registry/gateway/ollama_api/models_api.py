"""Ollama's model-management calls that clients make before chatting (``/api/pull``) and its legacy ``/api/embeddings`` (issue 17)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
