"""The FastAPI application: the four API routers over a ``Gateway``, its error handlers and middleware.

The top of the gateway wing: it imports every API module, and none of them imports it back.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from registry.errors import ArbiterError
from registry.gateway import admin_api, feedback_api, judge_api, ollama_api, openai_api
from registry.gateway.ollama_api import models_api
from registry.gateway.openai_api import embeddings, responses_api
from registry.gateway.http import GatewayMiddleware, count_request, describe_validation, error_response, status_of
from registry.gateway.runtime import Gateway

_log = logging.getLogger(__name__)


def build_app(gateway: Gateway) -> FastAPI:
    """The HTTP surface over a started (or starting) ``Gateway``."""
    app = FastAPI(title="arbiter gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway
    app.include_router(ollama_api.router)
    app.include_router(openai_api.router)
    app.include_router(embeddings.router)
    app.include_router(responses_api.router)
    app.include_router(models_api.router)
    app.include_router(admin_api.router)
    app.include_router(judge_api.router)
    app.include_router(feedback_api.router)
    _install_error_handlers(app)
    app.add_middleware(
        GatewayMiddleware,
        max_body_bytes=gateway.settings.max_body_bytes,
        token=gateway.settings.admin_token,
        token_everywhere=gateway.requires_token_everywhere,
    )
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer_error(request, 400, describe_validation(exc.errors()))

    @app.exception_handler(ArbiterError)
    async def _arbiter(request: Request, exc: ArbiterError) -> JSONResponse:
        status, headers = status_of(exc)
        return _answer_error(request, status, str(exc), headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.error("unexpected error on %s", request.url.path, exc_info=exc)  # a bug: the trace goes to the log
        return _answer_error(request, 500, f"internal error ({type(exc).__name__}); the server log has the details")


def _answer_error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    count_request(request, status)
    return error_response(request.url.path, status, message, headers)

