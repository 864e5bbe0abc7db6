"""The HTTP plumbing under every API: middleware (arrival stamp, token, body size), reading a body, one
error shape per API, and the request counter.

Errors answer in the shape the client library expects — ``{"error": "..."}`` for the Ollama API,
``{"error": {"message", "type", "code"}}`` for the OpenAI API — so the ``ollama`` and ``openai``
packages raise their own exception with our message in it. Nothing a client sends makes the
server print a stack trace or stop.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.errors import (
    ArbiterError,
    CapacityError,
    JudgeError,
    NotFoundError,
    ProviderError,
    UnavailableError,
    UserError,
    one_line,
)
from registry.gateway.runtime import WEBHOOK_PATH, Gateway

_OPEN_PATHS = ("/health", WEBHOOK_PATH)  # the webhook proves itself with its HMAC signature
BodyT = TypeVar("BodyT", bound=BaseModel)


async def parse_body(request: Request, model: type[BodyT]) -> BodyT:
    """The JSON body whatever its Content-Type: Ollama's own docs send it with ``curl -d``
    (form-encoded), and Ollama accepts that, so we must too."""
    raw = await request.body()
    if not raw.strip():
        raise UserError("request body is empty; send a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise UserError(describe_validation(exc.errors())) from None


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


def arrived(request: Request) -> float:
    """The ``time.perf_counter()`` stamp the middleware put on the request: where its overhead starts."""
    return request.scope["state"]["arrived"]


def is_openai(path: str) -> bool:
    return path.startswith("/v1/")


def error_response(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(path, status, message), status_code=status, headers=headers)


def error_body(path: str, status: int, message: str) -> dict[str, Any]:
    if is_openai(path):
        kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return {"error": message}


def count_request(request: Request, status: int | str) -> None:
    """``arbiter_requests_total`` by API, endpoint (its route template, so names in paths do not
    multiply the series) and status."""
    request.app.state.gateway.metrics.requests.labels(
        api=api_of(request), endpoint=endpoint_of(request), status=str(status)).inc()


def endpoint_of(request: Request) -> str:
    return getattr(request.scope.get("route"), "path", "unmatched")


def api_of(request: Request) -> str:
    path = request.url.path
    return "openai" if is_openai(path) else "ollama" if path.startswith("/api/") else "other"


def status_of(exc: ArbiterError) -> tuple[int, dict[str, str] | None]:
    if isinstance(exc, BodyTooLargeError):
        return 413, None
    if isinstance(exc, NotFoundError):
        return 404, None
    if isinstance(exc, UserError):
        return 400, None
    if isinstance(exc, CapacityError):
        return 429, {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, UnavailableError | ProviderError):
        return 503, {"Retry-After": "1"}
    if isinstance(exc, JudgeError):  # the judge model answered, but not with a valid judgement
        return 502, None
    return 500, None


def describe_validation(errors: Any) -> str:
    """Pydantic's error list as one line a person can act on."""
    for error in errors:
        if error.get("type") == "json_invalid":
            return "request body is not valid JSON: " + str(error.get("ctx", {}).get("error", error.get("msg")))
    return "invalid request: " + one_line(errors, where=lambda loc: ".".join(str(p) for p in loc if p != "body"),
                                          default_where="body")


class GatewayMiddleware:
    """Pure ASGI (a ``BaseHTTPMiddleware`` would cost a task per request): stamps the arrival time
    for ``x-arbiter-overhead-ms``, checks the token, and refuses bodies over the size limit —
    by ``Content-Length`` at once, and by counting when the body is chunked."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, token: str | None, token_everywhere: bool) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.token = token
        self.token_everywhere = token_everywhere

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["arrived"] = time.perf_counter()
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refuse(path, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, self._limited(receive, path, send), send)

    def _refuse(self, path: str, headers: dict[str, str]) -> JSONResponse | None:
        admin = path.startswith("/admin")
        if (admin or self.token_everywhere) and path not in _OPEN_PATHS:
            if not self.token:
                return error_response(path, 403, "admin endpoints are off: start `arbiter serve` with ARBITER_ADMIN_TOKEN set")
            given = headers.get("authorization", "").removeprefix("Bearer ").strip() or headers.get("x-arbiter-token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return error_response(path, 401, "missing or wrong token: send `Authorization: Bearer $ARBITER_ADMIN_TOKEN`")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return error_response(path, 413, f"request body over {self.max_body_bytes} bytes; send less or raise ARBITER_MAX_BODY_BYTES")
        return None

    def _limited(self, receive: Receive, path: str, send: Send) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit)
            return message

        return receive_limited


class BodyTooLargeError(UserError):
    """A chunked body that grew past the limit (one with ``Content-Length`` is refused before reading)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes; send less or raise ARBITER_MAX_BODY_BYTES")


def json_line(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, separators=(",", ":")) + "\n").encode()
