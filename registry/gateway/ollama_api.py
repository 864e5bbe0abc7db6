"""The Ollama API (``/api/*``), close enough that the ``ollama`` client and tools built on it work unchanged.

Semantics follow Ollama's: ``stream`` defaults to true, ``/api/generate`` applies the model's chat
template unless ``raw`` (so an instruct model answers the prompt), ``options.num_predict`` -1
means "until the context is full", temperature defaults to 0.8. A fixed seed (``ARBITER_SEED``)
is used when the request gives none, so answers are reproducible. Durations are nanoseconds.
Streaming is strict NDJSON: ``done: false`` fragments, then one ``done: true`` object with the
figures, or an ``{"error": ...}`` line if the backend failed after the stream began.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.errors import ArbiterError, UserError
from registry.gateway.generation import (
    OVERHEAD_HEADER,
    answer_headers,
    answer_whole,
    bounded_max_tokens,
    bridge_for,
    check_num_ctx,
    finish,
    first_fragment,
    gateway_of,
    overhead_so_far,
    parse_body,
    require_capability,
    stream_failed,
)
from registry.gateway.http import json_line
from registry.gateway.structured import schema_from_ollama_format
from registry.providers import Generation, GenerationRequest
from registry.providers.base import Embedder
from registry.serving.dispatcher import Answer
from registry.serving.router import Resolution
from registry.spec import VersionRecord

router = APIRouter()
_API = "ollama"
_DEFAULT_TEMPERATURE = 0.8


class Options(BaseModel):
    model_config = ConfigDict(extra="allow")  # top_k, repeat_penalty…: accepted, not applied

    num_predict: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None
    stop: list[str] | None = None
    num_ctx: int | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(default="", max_length=1_000_000)  # an assistant tool-call turn has none


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    stream: bool = True
    options: Options = Field(default_factory=Options)
    keep_alive: str | int | float | None = None
    format: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _supported(self) -> GenerateBody:
        schema_from_ollama_format(self.format)  # a bad format is a 400 before any model runs
        return self


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(default_factory=list)
    stream: bool = True
    options: Options = Field(default_factory=Options)
    keep_alive: str | int | float | None = None
    format: str | dict[str, Any] | None = None
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatBody:
        """Saying no beats answering free text to a client that asked for a tool call."""
        if self.tools:
            raise ValueError("'tools' (tool calling) is not supported by this gateway yet; send the request without tools")
        schema_from_ollama_format(self.format)  # a bad format is a 400 before any model runs
        return self


class ModelBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(default=None, min_length=1, max_length=200)
    name: str | None = Field(default=None, min_length=1, max_length=200)  # older clients send "name"


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str]
    truncate: bool = True


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": metadata.version("arbiter-registry")}


@router.get("/")
async def root() -> Response:
    return Response("Ollama is running (arbiter gateway)", media_type="text/plain")


@router.post("/api/generate")
async def generate(request: Request) -> Response:
    body = await parse_body(request, GenerateBody)
    gateway = gateway_of(request)
    loading = not body.prompt and body.system is None  # Ollama's "load the model" call
    resolution = gateway.router.resolve(body.model, turn=not loading)
    record = resolution.record
    if loading:
        await _warm(request, resolution)
        return JSONResponse(_final(body.model, "load", None) | {"response": ""})
    if body.raw or "chat" not in record.spec.capabilities:
        generation_request = _request(gateway, record, body.options, prompt=body.prompt,
                                      json_schema=schema_from_ollama_format(body.format))
    else:
        messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
            {"role": "user", "content": body.prompt}
        ]
        generation_request = _request(gateway, record, body.options, messages=messages,
                                      json_schema=schema_from_ollama_format(body.format))
    return await _respond(request, body.model, resolution, generation_request, body.stream, "generate")


@router.post("/api/chat")
async def chat(request: Request) -> Response:
    body = await parse_body(request, ChatBody)
    gateway = gateway_of(request)
    resolution = gateway.router.resolve(body.model, turn=bool(body.messages))
    if not body.messages:  # Ollama's "load the model" call
        await _warm(request, resolution)
        return JSONResponse(_final(body.model, "load", None) | {"message": {"role": "assistant", "content": ""}})
    require_capability(resolution.record, "chat", body.model)
    messages = [{"role": m.role, "content": m.content} for m in body.messages]
    generation_request = _request(gateway, resolution.record, body.options, messages=messages,
                                  json_schema=schema_from_ollama_format(body.format))
    return await _respond(request, body.model, resolution, generation_request, body.stream, "chat")


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    models = []
    for name in gateway.router.names():
        try:
            record = gateway.router.resolve(name).record
        except ArbiterError:
            continue
        models.append({"name": name, "model": name, **_model_facts(record)})
    return {"models": models}


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    models = []
    now = datetime.now(UTC)
    for instance in gateway.pool.loaded():
        record = instance.record
        expires_in = gateway.pool.expires_in_s(instance)  # pinned (a champion): never
        expires = datetime.max.replace(tzinfo=UTC) if expires_in is None else now + timedelta(seconds=expires_in)
        models.append({
            "name": record.ref, "model": record.ref, **_model_facts(record),
            "size_vram": 0, "expires_at": _iso(expires),
            "context_length": min(record.spec.context_window, gateway.settings.n_ctx),
        })
    return {"models": models}


@router.post("/api/show")
async def show(request: Request) -> dict[str, Any]:
    body = await parse_body(request, ModelBody)
    name = body.model or body.name
    if not name:
        raise UserError("missing 'model': name the route, alias or version to show")
    record = gateway_of(request).router.resolve(name).record
    spec = record.spec
    architecture = spec.architecture or "unknown"
    capabilities = ["completion"] + (["embedding"] if "embedding" in spec.capabilities else [])
    return {
        "modelfile": f"# arbiter {record.ref}\nFROM {spec.source}\n",
        "parameters": "",
        "template": "",
        "details": _model_facts(record)["details"],
        "model_info": {
            "general.architecture": architecture,
            f"{architecture}.context_length": spec.context_window,
            "arbiter.version": record.ref,
            "arbiter.kind": spec.kind,
            "arbiter.capabilities": ",".join(spec.capabilities),
        },
        "capabilities": capabilities,
        "modified_at": _iso(record.created_at),
    }


@router.post("/api/embed")
async def embed(request: Request) -> dict[str, Any]:
    body = await parse_body(request, EmbedBody)
    gateway = gateway_of(request)
    resolution = gateway.router.resolve(body.model)
    require_capability(resolution.record, "embedding", body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or any(not t for t in texts):
        raise UserError("'input' must be a non-empty string or a list of non-empty strings")

    def run() -> list[list[float]]:
        with gateway.pool.lease(resolution.record) as instance:
            if not isinstance(instance.provider, Embedder):
                raise UserError(f"{body.model}: the {resolution.record.spec.kind} provider cannot embed")
            return instance.provider.embed(texts)

    vectors = await anyio.to_thread.run_sync(run)
    return {"model": body.model, "embeddings": vectors}


# --- helpers ---------------------------------------------------------------------------------


def _request(gateway, record: VersionRecord, options: Options, **content: Any) -> GenerationRequest:
    check_num_ctx(gateway, record, options.num_ctx)
    return GenerationRequest(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in content.items()},
        max_tokens=bounded_max_tokens(gateway, record, options.num_predict, field="options.num_predict",
                                      until_full=True),
        temperature=_DEFAULT_TEMPERATURE if options.temperature is None else options.temperature,
        seed=options.seed,
        stop=tuple(options.stop or ()),
    )


async def _warm(request: Request, resolution: Resolution) -> None:
    await anyio.to_thread.run_sync(gateway_of(request).pool.warm, resolution.record)


async def _respond(
    request: Request, name: str, resolution: Resolution, generation_request: GenerationRequest, stream: bool,
    endpoint: str,
) -> Response:
    if not stream:
        answer = await answer_whole(request, resolution, generation_request, api=_API)
        payload = _final(name, answer.generation.finish_reason, answer) | _content(
            endpoint, answer.generation.text
        )
        content = json_line(payload)
        overhead = finish(request, answer)
        return Response(content, media_type="application/json", headers=answer_headers(answer, overhead))
    bridge = bridge_for(request, resolution, generation_request, api=_API)
    header_overhead = overhead_so_far(request)
    first = await first_fragment(request, bridge)  # a failure before any text still gets a proper status code

    async def lines():
        try:
            if first is not None:
                yield json_line(_fragment(name, endpoint, first))
                async for fragment in bridge.rest():
                    yield json_line(_fragment(name, endpoint, fragment))
        except Exception as exc:  # noqa: BLE001 — the status is sent: the error is the stream's last line
            yield json_line({"error": stream_failed(request, exc)})
            return
        finally:
            bridge.close()  # a client that hung up frees its instance at once
        answer = bridge.answer
        assert answer is not None
        finish(request, answer)
        yield json_line(_final(name, answer.generation.finish_reason, answer) | _content(endpoint, ""))

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={OVERHEAD_HEADER: header_overhead})


def _content(endpoint: str, text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if endpoint == "chat" else {"response": text}


def _fragment(name: str, endpoint: str, text: str) -> dict[str, Any]:
    return {"model": name, "created_at": _iso(datetime.now(UTC)), **_content(endpoint, text), "done": False}


def _final(name: str, reason: str | None, answer: Answer | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": name, "created_at": _iso(datetime.now(UTC)), "done": True,
                               "done_reason": reason or "stop"}
    if answer is not None:
        generation = answer.generation
        ttft_ms = generation.time_to_first_token_ms or 0.0
        payload |= {
            "total_duration": int((answer.queue_ms + generation.generation_ms) * 1e6),
            "load_duration": 0,
            "prompt_eval_count": generation.prompt_tokens,
            "prompt_eval_duration": int(ttft_ms * 1e6),
            "eval_count": generation.completion_tokens,
            "eval_duration": int(_eval_ms(generation) * 1e6),
        }
    return payload


def _eval_ms(generation: Generation) -> float:
    """Time for ``eval_count`` tokens at the measured decode rate, so ``eval_count / eval_duration``
    — how every Ollama client computes tokens/s — is that rate. The raw decode time covers one step
    fewer than the tokens counted (the first token comes from prompt processing), which would make
    a 32-token answer read ~3 % fast."""
    rate = generation.tokens_per_s
    return generation.completion_tokens / rate * 1000 if rate else 0.0


def _model_facts(record: VersionRecord) -> dict[str, Any]:
    spec = record.spec
    return {
        "modified_at": _iso(record.created_at),
        "size": spec.size_bytes or 0,
        "digest": spec.sha256 or "",
        "details": {
            "parent_model": "",
            "format": spec.kind,
            "family": spec.architecture or spec.family or "",
            "families": [spec.architecture] if spec.architecture else None,
            "parameter_size": "",
            "quantization_level": spec.quantization or "",
        },
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
