"""The Ollama API's endpoints (``/api/*``), close enough that the ``ollama`` client and tools built on it
work unchanged.

Semantics follow Ollama's: ``stream`` defaults to true, ``/api/generate`` applies the model's chat
template unless ``raw`` (so an instruct model answers the prompt), ``options.num_predict`` -1
means "until the context is full", temperature defaults to 0.8. A fixed seed (``ARBITER_SEED``)
is used when the request gives none, so answers are reproducible. ``/api/chat`` takes ``tools``
(a version that can call tools answers with ``message.tool_calls``), and ``/api/show`` lists the
``tools`` capability for such versions, as clients check it first. A text classifier answers a generate or a
chat of one user text with its label (``/api/show``: ``completion`` only, its labels in ``model_info``). Each handler reads its body,
resolves the name, checks the request against the version and hands it to the dispatcher through
the shared response skeleton (``responses.py``); the wire types are in ``wire.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from registry.errors import ArbiterError, UserError
from registry.gateway.http import arrived, gateway_of, parse_body
from registry.gateway.limits import bounded_max_tokens, check_num_ctx, require_capability, require_tools
from registry.gateway.ollama_api.wire import (
    API,
    ChatBody,
    EmbedBody,
    GenerateBody,
    ModelBody,
    OllamaWire,
    Options,
    final,
    iso,
    model_facts,
)
from registry.gateway.responses import observe_served, respond
from registry.gateway.runtime import Gateway
from registry.gateway.structured import schema_from_ollama_format
from registry.providers import GenerationRequest
from registry.serving.router import Resolution
from registry.spec import VersionRecord

router = APIRouter()
_DEFAULT_TEMPERATURE = 0.8


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
        await _warm(gateway, resolution)
        return JSONResponse(final(body.model, "load", None) | {"response": ""})
    json_schema = schema_from_ollama_format(body.format)
    if body.raw or "chat" not in record.spec.capabilities:
        generation_request = _request(gateway, record, body.options, prompt=body.prompt, json_schema=json_schema)
    else:
        messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
            {"role": "user", "content": body.prompt}
        ]
        generation_request = _request(gateway, record, body.options, messages=messages, json_schema=json_schema)
    return await respond(request, gateway, resolution, generation_request, stream=body.stream,
                         wire=OllamaWire(body.model, "generate"))


@router.post("/api/chat")
async def chat(request: Request) -> Response:
    body = await parse_body(request, ChatBody)
    gateway = gateway_of(request)
    resolution = gateway.router.resolve(body.model, turn=bool(body.messages))
    if not body.messages:  # Ollama's "load the model" call
        await _warm(gateway, resolution)
        return JSONResponse(final(body.model, "load", None) | {"message": {"role": "assistant", "content": ""}})
    if body.involves_tools:  # first: "cannot call tools" says more than "cannot chat" when both are true
        require_tools(resolution.record, body.model)
    require_capability(resolution.record, "chat", body.model)
    generation_request = _request(gateway, resolution.record, body.options, messages=body.turns,
                                  json_schema=schema_from_ollama_format(body.format), tools=body.declared_tools)
    return await respond(request, gateway, resolution, generation_request, stream=body.stream,
                         wire=OllamaWire(body.model, "chat"))


@router.post("/api/embed")
async def embed(request: Request) -> dict[str, Any]:
    body = await parse_body(request, EmbedBody)
    gateway = gateway_of(request)
    resolution = gateway.router.resolve(body.model)
    require_capability(resolution.record, "embedding", body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or any(not t for t in texts):
        raise UserError("'input' must be a non-empty string or a list of non-empty strings")
    embedding = await anyio.to_thread.run_sync(
        lambda: gateway.dispatcher.embed(resolution, texts, api=API, arrived=arrived(request), truncate=body.truncate))
    observe_served(request, gateway, embedding.outcome)
    outcome = embedding.outcome
    return {"model": body.model, "embeddings": embedding.vectors,
            "total_duration": int((outcome.queue_ms + outcome.cost.wall_ms) * 1e6),  # as a generation's
            "load_duration": 0, "prompt_eval_count": embedding.prompt_tokens}


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    models = []
    for name in gateway.router.names():
        try:
            record = gateway.router.resolve(name).record
        except ArbiterError:
            continue
        models.append({"name": name, "model": name, **model_facts(record)})
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
            "name": record.ref, "model": record.ref, **model_facts(record),
            "size_vram": 0, "expires_at": iso(expires),
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
    # "completion" also for a text classifier: it answers a generate or a one-text chat (with its label), and
    # Ollama clients send neither to a model without it; "tools" only where calls can come (clients check first).
    capabilities = (["completion"] + (["tools"] if spec.can_call_tools else [])
                    + (["embedding"] if "embedding" in spec.capabilities else []))
    classifier = {"arbiter.labels": ",".join(spec.labels)} if spec.is_classifier else {}
    return {
        "modelfile": f"# arbiter {record.ref}\nFROM {spec.source}\n",
        "parameters": "",
        "template": "",
        "details": model_facts(record)["details"],
        "model_info": {
            "general.architecture": architecture,
            f"{architecture}.context_length": spec.context_window,
            "arbiter.version": record.ref,
            "arbiter.kind": spec.kind,
            "arbiter.capabilities": ",".join(spec.capabilities),
            **classifier,
        },
        "capabilities": capabilities,
        "modified_at": iso(record.created_at),
    }


def _request(gateway: Gateway, record: VersionRecord, options: Options, **content: Any) -> GenerationRequest:
    check_num_ctx(record, options.num_ctx)
    return GenerationRequest(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in content.items()},
        max_tokens=bounded_max_tokens(gateway.settings, record, options.num_predict, field="options.num_predict",
                                      until_full=True),
        temperature=_DEFAULT_TEMPERATURE if options.temperature is None else options.temperature,
        seed=options.seed,
        stop=tuple(options.stop or ()),
    )


async def _warm(gateway: Gateway, resolution: Resolution) -> None:
    await anyio.to_thread.run_sync(gateway.pool.warm, resolution.record)
