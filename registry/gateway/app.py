"""The FastAPI application: the API routers over a ``Gateway``, its error handlers and middleware.

Middleware, outermost first: ``BrowserGuard`` (Host and Origin, then CORS for an allowed origin;
browser.py), then ``GatewayMiddleware`` (arrival stamp, token, body size). CORS sits outside the
token check so that a preflight, which never carries a token, is answered, and a 401 or 413 still
carries the CORS headers a browser app needs to read it.

The top of the gateway wing: it imports every API module, and none of them imports it back.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry.errors import ArbiterError
from registry.gateway import admin_api, feedback_api, judge_api, ollama_api, openai_api
from registry.gateway.browser import BrowserGuard, BrowserPolicy
from registry.gateway.http import GatewayMiddleware, count_request, describe_validation, error_response, status_of
from registry.gateway.ollama_api import models_api
from registry.gateway.openai_api import embeddings, responses_api
from registry.gateway.runtime import Gateway

_log = logging.getLogger(__name__)


def build_app(gateway: Gateway) -> FastAPI:
    """The HTTP surface over a started (or starting) ``Gateway``."""
    app = FastAPI(title="arbiter gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway
    routers = (ollama_api.router, openai_api.router, embeddings.router, responses_api.router, models_api.router,
               admin_api.router, judge_api.router, feedback_api.router)
    for router in routers:
        app.include_router(router)
    app.state.endpoints = sorted({route.path for router in routers for route in router.routes})  # named in a 404
    _install_error_handlers(app)
    settings = gateway.settings
    app.add_middleware(  # each add wraps the ones before: the last added runs first
        GatewayMiddleware,
        max_body_bytes=settings.max_body_bytes,
        token=settings.admin_token,
        token_everywhere=gateway.requires_token_everywhere,
    )
    policy = BrowserPolicy.of(hosts=settings.allowed_hosts, origins=settings.origins,
                              any_host=gateway.requires_token_everywhere)
    app.add_middleware(BrowserGuard, policy=policy)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer_error(request, 400, describe_validation(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own 404 and 405, in the API's shape: a client library then raises its own error
        with our message, not a JSON decoding error over ``{"detail": "Not Found"}``."""
        return _answer_error(request, exc.status_code, _unrouted(request, exc), exc.headers)

    @app.exception_handler(ArbiterError)
    async def _arbiter(request: Request, exc: ArbiterError) -> JSONResponse:
        status, headers = status_of(exc)
        return _answer_error(request, status, str(exc), headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.error("unexpected error on %s", request.url.path, exc_info=exc)  # a bug: the trace goes to the log
        return _answer_error(request, 500, f"internal error ({type(exc).__name__}); the server log has the details")


def _unrouted(request: Request, exc: StarletteHTTPException) -> str:
    """The one line for a request no endpoint takes: for a wrong path, the endpoints of the API it
    aimed at (read from the routers, so it never goes stale); for a wrong method, the methods allowed."""
    method, path = request.method, request.url.path
    if exc.status_code == 405:
        return f"{method} is not allowed on {path}; use {(exc.headers or {}).get('Allow', 'another method')}"
    if exc.status_code != 404 or request.scope.get("route") is not None:  # raised by an endpoint: its own words
        return str(exc.detail)
    prefix = "/v1/" if path.startswith("/v1/") else "/api/" if path.startswith("/api/") else None
    if prefix is None:
        return f"no endpoint {method} {path}: the Ollama API is under /api/, the OpenAI API under /v1/"
    served = [endpoint for endpoint in request.app.state.endpoints if endpoint.startswith(prefix)]
    return f"no endpoint {method} {path}; this gateway serves {', '.join(served)}"


def _answer_error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    count_request(request, status)
    return error_response(request.url.path, status, message, headers)

