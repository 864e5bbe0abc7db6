"""``POST /v1/responses``: OpenAI's Responses API for text in and out, with function tools — enough
for the ``openai`` client's ``responses.create`` / ``responses.stream`` and the OpenAI Agents SDK's
default model (``OpenAIResponsesModel``) to run against a route.

The request is read into chat turns (``responses_input.py``) and served through the same skeleton
as ``/v1/chat/completions`` (``responses.py``): the same dispatcher, failover, ``calls`` row
(``api = "openai"``) and ``x-arbiter-call-id``; only the writing differs (``responses_wire.py``).
Temperature defaults to 1.0 as OpenAI's does, with a fixed seed. Nothing is stored, so
``GET /v1/responses/{id}`` answers 404 saying so instead of a bare "not found".
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from registry.errors import NotFoundError
from registry.gateway.http import gateway_of, parse_body
from registry.gateway.limits import bounded_max_tokens, require_capability, require_tools
from registry.gateway.openai_api.responses_input import ReadRequest, ResponsesBody, read_request
from registry.gateway.openai_api.responses_wire import ResponsesWire
from registry.gateway.responses import respond
from registry.providers import GenerationRequest
from registry.results.store import new_id

router = APIRouter()
_DEFAULT_TEMPERATURE = 1.0
_DEFAULT_TOP_P = 1.0


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    body = await parse_body(request, ResponsesBody)
    read = read_request(body)  # every 400 about the body comes before the name is resolved
    gateway = gateway_of(request)
    resolution = gateway.router.resolve(body.model, turn=True)
    if read.tools and read.tool_choice != "none":
        require_tools(resolution.record, body.model)  # first: what the route must change to serve an agent
    require_capability(resolution.record, "chat", body.model)
    temperature = _DEFAULT_TEMPERATURE if body.temperature is None else body.temperature
    generation_request = GenerationRequest(
        messages=read.messages, tools=read.tools, tool_choice=read.tool_choice, json_schema=read.json_schema,
        parallel_tool_calls=body.parallel_tool_calls,
        max_tokens=bounded_max_tokens(gateway.settings, resolution.record, body.max_output_tokens,
                                      field="max_output_tokens"),
        temperature=temperature,
    )
    wire = ResponsesWire(new_id(), int(time.time()), body.model, _echo(body, read, temperature))
    return await respond(request, gateway, resolution, generation_request, stream=body.stream, wire=wire)


@router.get("/v1/responses/{response_id}")
async def stored_response(response_id: str) -> Response:
    raise NotFoundError(f"response {response_id!r} is not stored: this gateway keeps no responses (every answer "
                        "says \"store\": false); keep the output you need, and send it back in 'input'")


def _echo(body: ResponsesBody, read: ReadRequest, temperature: float) -> dict[str, Any]:
    """The request's settings the Response repeats (the ``openai`` client's ``Response`` requires
    ``tools``, ``tool_choice`` and ``parallel_tool_calls``)."""
    tool_choice: str | dict[str, str] = read.tool_choice
    if tool_choice not in ("auto", "none", "required"):
        tool_choice = {"type": "function", "name": read.tool_choice}
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "parallel_tool_calls": body.parallel_tool_calls,
        "temperature": temperature,
        "text": {"format": (body.text or {}).get("format") or {"type": "text"}},
        "tool_choice": tool_choice,
        "tools": [{**raw, "type": "function", "parameters": json.loads(tool.parameters)}
                  for raw, tool in zip(body.tools or (), read.tools, strict=True)],
        "top_p": _DEFAULT_TOP_P if body.top_p is None else body.top_p,
        "truncation": body.truncation or "disabled",
        "user": body.user,
    }
