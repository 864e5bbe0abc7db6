"""Ollama's model-management calls that clients make before chatting (``/api/pull``), the ones that
would change the registry (refused), and its legacy ``/api/embeddings``.

UIs and agent tools call ``pull`` before their first chat, as they would with Ollama. Here nothing is
downloaded: a name that resolves (route, alias or version) is already served, so ``pull`` answers
Ollama's success — for a GGUF version after checking its file against the sha256 it was registered
with, which is what Ollama's "verifying sha256 digest" step does. An unknown name is Ollama's
"file does not exist" error, as a 404 with the names that exist (see ``pull``).

``delete``, ``copy``, ``create``, ``push`` and blob uploads would change what is served. Versions are
immutable and routes move through ``arbiter`` (where a promotion is checked and recorded), so each
answers 403 in Ollama's shape naming the command to use, rather than pretend to have done it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from registry.errors import IntegrityError, ModelFileError, NotFoundError, UserError
from registry.gateway.http import arrived, count_request, error_response, gateway_of, json_line, parse_body
from registry.gateway.limits import require_capability
from registry.gateway.ollama_api.wire import API, ModelBody
from registry.gateway.responses import answer_headers, observe_served
from registry.providers.gguf_file import verify_file
from registry.spec import VersionRecord

router = APIRouter()
_REFUSED = 403  # understood, and refused for good: the registry changes only through `arbiter`


class PullBody(ModelBody):
    stream: bool = True
    insecure: bool = False  # Ollama's "allow an insecure registry": nothing is fetched here


class LegacyEmbeddingsBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # options, keep_alive: accepted, not applied

    model: str = Field(min_length=1, max_length=200)
    prompt: str = ""


@router.post("/api/pull")
async def pull(request: Request) -> Response:
    """Ollama's progress lines for a model that is already here: the manifest (the name resolved), its
    one layer complete (``completed == total``, the file's size, as Ollama reports a layer it already
    has, so a progress bar shows 100 %), the digest verified, success.

    Ollama answers an unknown name with 500 (whole) or a 200 stream ending in an error line, because
    it learns of it from a remote registry it cannot tell from a network fault. We know at once, before
    any line is sent, so it is a 404 — the gateway's answer for any unknown name — whole or streamed,
    with Ollama's message (tools match on "file does not exist") and the names that exist.
    """
    body = await parse_body(request, PullBody)
    name = body.model or body.name
    if not name:
        raise UserError("missing 'model': name the route, alias or version to pull")
    try:
        record = gateway_of(request).router.resolve(name).record
    except NotFoundError as exc:
        raise NotFoundError(f"pull model manifest: file does not exist: {exc}; arbiter serves registered versions: "
                            "`arbiter models register FILE --name NAME`, then `arbiter routes promote ROUTE`") from None
    try:
        lines = await anyio.to_thread.run_sync(_progress, record)
    except (ModelFileError, IntegrityError) as exc:  # the server's file, not the client's request: Ollama's 500
        count_request(request, 500)
        return error_response(request.url.path, 500, f"verifying sha256 digest: {exc}")
    if not body.stream:
        return JSONResponse(lines[-1])
    return StreamingResponse(_ndjson(lines), media_type="application/x-ndjson")


def _progress(record: VersionRecord) -> list[dict[str, Any]]:
    """The lines, once the file is checked (cheap when its instance loaded: the hash is remembered)."""
    spec = record.spec
    if spec.kind != "gguf" or spec.sha256 is None:  # a served (remote) model: no file here to check
        return [{"status": "pulling manifest"}, {"status": "success"}]
    verify_file(spec)
    digest = f"sha256:{spec.sha256}"
    return [
        {"status": "pulling manifest"},
        {"status": f"pulling {spec.sha256[:12]}", "digest": digest, "total": spec.size_bytes,
         "completed": spec.size_bytes},
        {"status": "verifying sha256 digest"},
        {"status": "success"},
    ]


def _ndjson(lines: list[dict[str, Any]]) -> Iterator[bytes]:
    for line in lines:
        yield json_line(line)


@router.post("/api/embeddings")
async def embeddings(request: Request) -> Response:
    """Ollama's legacy endpoint: one ``prompt``, one raw (not normalized) vector, as Ollama answers it.
    An empty prompt is Ollama's "load the model" call: the model is warmed and the vector is empty.
    It has no ``truncate``: a prompt longer than one input may hold is refused (400), not cut."""
    body = await parse_body(request, LegacyEmbeddingsBody)
    gateway = gateway_of(request)
    resolution = gateway.router.resolve(body.model)
    require_capability(resolution.record, "embedding", body.model)
    if not body.prompt:
        await anyio.to_thread.run_sync(gateway.pool.warm, resolution.record)
        return JSONResponse({"embedding": []})
    embedding = await anyio.to_thread.run_sync(
        lambda: gateway.dispatcher.embed(resolution, [body.prompt], api=API, arrived=arrived(request)))
    observe_served(request, gateway, embedding.outcome)
    return JSONResponse({"embedding": embedding.vectors[0]}, headers=answer_headers(embedding.outcome))


def _refusal(what: str, instead: str) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def refuse(request: Request) -> JSONResponse:
        count_request(request, _REFUSED)
        return error_response(request.url.path, _REFUSED, f"this gateway does not {what} models: {instead}")

    return refuse


router.add_api_route("/api/delete", _refusal(
    "delete", "versions are immutable; retire one with `arbiter models deprecate NAME/VERSION`"), methods=["DELETE"])
router.add_api_route("/api/copy", _refusal(
    "copy", "a route is the name clients use; point one at a version with `arbiter routes promote ROUTE --model "
    "NAME --version N`"), methods=["POST"])
router.add_api_route("/api/create", _refusal(
    "create", "register a GGUF file with `arbiter models register FILE --name NAME`"), methods=["POST"])
router.add_api_route("/api/blobs/{digest}", _refusal(
    "take blobs for new", "register a GGUF file with `arbiter models register FILE --name NAME`"),
    methods=["HEAD", "POST"])
router.add_api_route("/api/push", _refusal(
    "push", "versions live in arbiter's MLflow registry; other machines share it through an MLflow tracking server "
    "(docs/deploy.md, scale-out)"), methods=["POST"])
