"""The OpenAI API (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``) for the ``openai``
client, LangChain, DSPy and anything else that speaks it.

Streaming is server-sent events: ``data: {chunk}`` lines and a final ``data: [DONE]``; with
``stream_options.include_usage`` a last chunk carries the token usage. ``n`` must be 1 (one
local model answers once). Temperature defaults to 1.0 as OpenAI's does, with a fixed seed when
none is given.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.errors import UserError
from registry.gateway.generation import (
    DEFAULT_MAX_TOKENS,
    OVERHEAD_HEADER,
    answer_headers,
    answer_whole,
    bounded_max_tokens,
    bridge_for,
    finish,
    first_fragment,
    gateway_of,
    overhead_so_far,
    parse_body,
    require_capability,
    stream_failed,
)
from registry.gateway.structured import schema_from_response_format
from registry.providers import GenerationRequest
from registry.results.store import new_id
from registry.serving.dispatcher import Answer
from registry.serving.router import Resolution

router = APIRouter()
_API = "openai"
_DEFAULT_TEMPERATURE = 1.0
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's documented default for /v1/completions
_MAX_TEXT = 1_000_000


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"] = Field(description="only text parts: this gateway serves text models")
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None  # parts (LangChain, agent SDKs) or none (an assistant tool call)

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")  # top_p, presence_penalty…: accepted, not applied

    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="one local model answers once")


class ChatBody(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatBody:
        """Saying no beats answering free text to a client that asked for a tool call."""
        schema_from_response_format(self.response_format)  # a bad response_format is a 400 before any model runs
        if self.tools:
            raise ValueError("tools (function calling) are not supported by this gateway yet; send no tools")
        if sum(len(m.text) for m in self.messages) > _MAX_TEXT:
            raise ValueError(f"messages hold more than {_MAX_TEXT} characters of text")
        return self


class CompletionBody(_Common):
    prompt: str | list[str]


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
    require_capability(resolution.record, "chat", body.model)
    messages = tuple({"role": "system" if m.role == "developer" else m.role, "content": m.text}
                     for m in body.messages)
    wanted = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    generation_request = _request(gateway, resolution, body, wanted, field, messages=messages,
                                  json_schema=schema_from_response_format(body.response_format))
    return await _respond(request, body, resolution, generation_request, "chat.completions")


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
    return await _respond(request, body, resolution, generation_request, "completions")


def _request(gateway, resolution: Resolution, body: _Common, wanted: int | None, field: str, *,
             default_max_tokens: int = DEFAULT_MAX_TOKENS, **content: Any) -> GenerationRequest:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return GenerationRequest(
        **content,
        max_tokens=bounded_max_tokens(gateway, resolution.record, wanted, field=field, default=default_max_tokens),
        temperature=_DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        seed=body.seed,
        stop=stop,
    )


async def _respond(
    request: Request, body: _Common, resolution: Resolution, generation_request: GenerationRequest, endpoint: str
) -> Response:
    call_id = ("chatcmpl-" if endpoint == "chat.completions" else "cmpl-") + new_id()[:24]
    created = int(time.time())
    if not body.stream:
        answer = await answer_whole(request, resolution, generation_request, api=_API)
        payload = _whole(call_id, created, body.model, endpoint, answer)
        content = json.dumps(payload, separators=(",", ":")).encode()
        overhead = finish(request, answer)
        return Response(content, media_type="application/json", headers=answer_headers(answer, overhead))
    bridge = bridge_for(request, resolution, generation_request, api=_API)
    header_overhead = overhead_so_far(request)
    first = await first_fragment(request, bridge)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {"id": call_id, "object": _object(endpoint, chunk=True), "created": created, "model": body.model,
                 "choices": choices, **extra}
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    async def events():
        try:
            if endpoint == "chat.completions":
                yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            if first is not None:
                yield event([_delta(endpoint, first)])
                async for fragment in bridge.rest():
                    yield event([_delta(endpoint, fragment)])
        except Exception as exc:  # noqa: BLE001 — the status is sent: the error is the stream's last event
            error = {"error": {"message": stream_failed(request, exc), "type": "server_error", "code": 503}}
            yield b"data: " + json.dumps(error).encode() + b"\n\n"
            return
        finally:
            bridge.close()
        answer = bridge.answer
        assert answer is not None
        finish(request, answer)
        yield event([_delta(endpoint, "", answer.generation.finish_reason or "stop")])
        if include_usage:
            yield event([], usage=_usage(answer))
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={OVERHEAD_HEADER: header_overhead})


def _object(endpoint: str, *, chunk: bool) -> str:
    if endpoint == "chat.completions":
        return "chat.completion.chunk" if chunk else "chat.completion"
    return "text_completion"


def _delta(endpoint: str, text: str, finish_reason: str | None = None) -> dict[str, Any]:
    if endpoint == "chat.completions":
        delta = {"content": text} if text else {}
        return {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


def _usage(answer: Answer) -> dict[str, int]:
    generation = answer.generation
    return {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens}


def _whole(call_id: str, created: int, model: str, endpoint: str, answer: Answer) -> dict[str, Any]:
    generation = answer.generation
    reason = generation.finish_reason or "stop"
    if endpoint == "chat.completions":
        choice = {"index": 0, "message": {"role": "assistant", "content": generation.text}, "finish_reason": reason,
                  "logprobs": None}
    else:
        choice = {"index": 0, "text": generation.text, "finish_reason": reason, "logprobs": None}
    return {"id": call_id, "object": _object(endpoint, chunk=False), "created": created, "model": model,
            "choices": [choice], "usage": _usage(answer), "system_fingerprint": answer.record.ref}
