"""Structured output asked for through either API, turned into the one JSON Schema providers take.

Ollama clients send ``format`` (``"json"`` or a JSON Schema object); OpenAI clients send
``response_format`` (``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema":
{"schema": …}}``). Both become :attr:`GenerationRequest.json_schema`, which llama.cpp decodes under a
grammar and remote providers pass on as their own field — so the gateway never answers free text to
a client that asked for JSON. "Any JSON" is read as "a JSON object", as both APIs document it.
"""

from __future__ import annotations

import json
from typing import Any

ANY_JSON_OBJECT = '{"type": "object"}'
_MAX_SCHEMA_CHARS = 20_000


def schema_from_ollama_format(format_: str | dict[str, Any] | None) -> str | None:
    """``format`` of ``/api/generate`` and ``/api/chat``: ``None``/``""`` (free text), ``"json"`` or a schema."""
    if format_ in (None, ""):
        return None
    if format_ == "json":
        return ANY_JSON_OBJECT
    if isinstance(format_, dict):
        return schema_text(format_, "format")
    raise ValueError(f"'format' must be \"json\" or a JSON Schema object; got {format_!r}")


def schema_from_response_format(response_format: dict[str, Any] | None) -> str | None:
    """``response_format`` of ``/v1/chat/completions``: text, ``json_object`` or ``json_schema``."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_JSON_OBJECT
    if kind == "json_schema":
        wrapper = response_format.get("json_schema") if response_format else None
        schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
        if not isinstance(schema, dict):
            raise ValueError("response_format.json_schema.schema must be a JSON Schema object, "
                             'e.g. {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}')
        return schema_text(schema, "response_format.json_schema.schema")
    raise ValueError(f"response_format.type must be 'text', 'json_object' or 'json_schema'; got {kind!r}")


def schema_text(schema: dict[str, Any], field: str) -> str:
    """A schema as the one text providers take (a tool's parameters too), refused past the size limit."""
    text = json.dumps(schema, sort_keys=True)  # one text per schema: the provider caches its grammar by it
    if len(text) > _MAX_SCHEMA_CHARS:
        raise ValueError(f"{field} is {len(text)} characters of JSON Schema; the limit is {_MAX_SCHEMA_CHARS}")
    return text
