"""The OpenAI API's endpoints (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``) for the
``openai`` client, LangChain, DSPy and anything else that speaks it.

``n`` must be 1 (one local model answers once). Temperature defaults to 1.0 as OpenAI's does,
with a fixed seed when none is given. Tools (``tools``, ``tool_choice``, calls and their results
in the history) need a version that can call tools; a call comes back as ``message.tool_calls``
with ``finish_reason: "tool_calls"``. Each handler reads its body, resolves the name, checks the
request against the version and hands it to the dispatcher through the shared response skeleton
(``responses.py``); the wire types are in ``wire.py``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from registry.errors import UserError
from registry.gateway.http import gateway_of, parse_body
from registry.gateway.limits import DEFAULT_MAX_TOKENS, bounded_max_tokens, require_capability, require_tools
from registry.gateway.openai_api.wire import ChatBody, CommonBody, CompletionBody, Endpoint, OpenAIWire
from registry.gateway.responses import respond
from registry.gateway.runtime import Gateway
from registry.gateway.structured import schema_from_response_format
from registry.providers import GenerationRequest
from registry.results.store import new_id
from registry.serving.router import Resolution

router = APIRouter()
_DEFAULT_TEMPERATURE = 1.0
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's documented default for /v1/completions


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    created = int(gateway.started_at)
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "arbiter"}
                                       for name in gateway.router.names()]}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    body = await parse_body(request, ChatBody)
    gateway = gateway_of(request)
    resolution = gateway.router.resolve(body.model, turn=True)
    if body.involves_tools:  # first: "cannot call tools" says more than "cannot chat" when both are true
        require_tools(resolution.record, body.model)
    require_capability(resolution.record, "chat", body.model)
    wanted = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    generation_request = _request(gateway, resolution, body, wanted, field, messages=body.turns,
                                  json_schema=schema_from_response_format(body.response_format),
                                  tools=body.declared_tools, tool_choice=body.choice,
                                  parallel_tool_calls=body.parallel_tool_calls is not False)
    return await respond(request, gateway, resolution, generation_request, stream=body.stream,
                         wire=_wire(body, "chat.completions", tools=bool(body.declared_tools)))


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    body = await parse_body(request, CompletionBody)
    gateway = gateway_of(request)
    resolution = gateway.router.resolve(body.model, turn=True)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise UserError(f"'prompt' must be one string (got a list of {len(prompts)}); send one request per prompt")
    generation_request = _request(gateway, resolution, body, body.max_tokens, "max_tokens", prompt=prompts[0],
                                  default_max_tokens=_COMPLETIONS_DEFAULT_MAX_TOKENS)
    return await respond(request, gateway, resolution, generation_request, stream=body.stream,
                         wire=_wire(body, "completions"))


def _request(gateway: Gateway, resolution: Resolution, body: CommonBody, wanted: int | None, field: str, *,
             default_max_tokens: int = DEFAULT_MAX_TOKENS, **content: Any) -> GenerationRequest:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return GenerationRequest(
        **content,
        max_tokens=bounded_max_tokens(gateway.settings, resolution.record, wanted, field=field,
                                      default=default_max_tokens),
        temperature=_DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        seed=body.seed,
        stop=stop,
    )


def _wire(body: CommonBody, endpoint: Endpoint, *, tools: bool = False) -> OpenAIWire:
    prefix = "chatcmpl-" if endpoint == "chat.completions" else "cmpl-"
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return OpenAIWire(new_id(), prefix, int(time.time()), body.model, endpoint, include_usage, tools=tools)
