"""The one response skeleton both APIs share, whole or streamed, and the HTTP metrics of a request
the dispatcher served.

An API says *what* to write — its :class:`Wire` — and this module says *when*: a whole answer is
generated, rendered, counted and sent; a stream sends its headers, its first fragment (an error
before it still gets a proper status code), the rest, and its closing line, or an error line once
the status is gone. The ``calls`` rows are the dispatcher's; only the metrics are written here.

``x-arbiter-overhead-ms`` is the time from the request's arrival until the dispatcher had its
answer, minus the time in the model and the wait for it (:attr:`Outcome.overhead_ms`, the figure
of the ``calls`` row): what the gateway itself costs. A streamed response sends its headers before
the model starts, so there the header carries the overhead until then (parsing, resolution); the
whole stream's overhead is in the ``calls`` row and in ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Protocol

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from registry.errors import ArbiterError
from registry.gateway.bridge import StreamBridge
from registry.gateway.http import api_of, arrived, count_request, endpoint_of
from registry.gateway.runtime import Gateway
from registry.providers import GenerationRequest
from registry.serving.dispatcher import Answer, Outcome
from registry.serving.router import Resolution

_log = logging.getLogger(__name__)
OVERHEAD_HEADER = "x-arbiter-overhead-ms"
CALL_ID_HEADER = "x-arbiter-call-id"  # what `POST /arbiter/feedback` names the answer by


class Wire(Protocol):
    """How one API writes one request's answer."""

    api: str  # the ``calls`` row's ``api``
    call_id: str  # the answer's ``calls`` row id, known before the stream starts (header and body carry it)
    stream_media_type: str

    def whole(self, answer: Answer) -> bytes: ...

    def opening(self) -> list[bytes]:
        """What a stream sends before any text."""

    def fragment(self, text: str) -> bytes: ...

    def closing(self, answer: Answer) -> list[bytes]:
        """What a stream sends after the last text: the finish reason and the figures."""

    def error(self, message: str) -> bytes:
        """A stream's last line when it failed after its status was sent."""


async def respond(
    request: Request, gateway: Gateway, resolution: Resolution, generation_request: GenerationRequest, *,
    stream: bool, wire: Wire,
) -> Response:
    bridge = StreamBridge(gateway.dispatcher, resolution, generation_request, api=wire.api, arrived=arrived(request),
                          call_id=wire.call_id)
    if not stream:
        answer = await bridge.whole(request)
        content = wire.whole(answer)
        _observe(request, gateway, answer)
        return Response(content, media_type="application/json", headers=answer_headers(answer.outcome))
    header_overhead = f"{(time.perf_counter() - arrived(request)) * 1000:.3f}"
    first = await bridge.first(request)
    return StreamingResponse(_lines(request, gateway, wire, bridge, first), media_type=wire.stream_media_type,
                             headers={OVERHEAD_HEADER: header_overhead, CALL_ID_HEADER: wire.call_id})


async def _lines(
    request: Request, gateway: Gateway, wire: Wire, bridge: StreamBridge, first: str | None
) -> AsyncIterator[bytes]:
    try:
        for line in wire.opening():
            yield line
        if first is not None:
            yield wire.fragment(first)
            async for fragment in bridge.rest():
                yield wire.fragment(fragment)
    except Exception as exc:  # noqa: BLE001 — the status is sent: the error is the stream's last line
        if not isinstance(exc, ArbiterError):  # one of ours is expected; anything else is a bug: its trace
            _log.error("stream failed on %s", request.url.path, exc_info=exc)
        count_request(request, "stream_error")
        yield wire.error(str(exc) or type(exc).__name__)
        return
    finally:
        bridge.close()  # a client that hung up frees its instance at once
    answer = bridge.answer
    assert answer is not None
    _observe(request, gateway, answer)
    for line in wire.closing(answer):
        yield line


def answer_headers(outcome: Outcome) -> dict[str, str]:
    """The headers of a whole answer: the gateway's overhead, the version that answered, the wait."""
    return {OVERHEAD_HEADER: f"{outcome.overhead_ms:.3f}", "x-arbiter-model": outcome.record.ref,
            "x-arbiter-queue-ms": f"{outcome.queue_ms:.3f}", CALL_ID_HEADER: outcome.call_id}


def observe_served(request: Request, gateway: Gateway, outcome: Outcome) -> None:
    """The metrics of any request the dispatcher answered: counted, timed, its overhead, a failover."""
    metrics = gateway.metrics
    count_request(request, 200)
    total_s = time.perf_counter() - arrived(request)
    metrics.latency.labels(api=api_of(request), endpoint=endpoint_of(request)).observe(total_s)
    metrics.overhead.observe(outcome.overhead_ms / 1000)
    if outcome.failed_over:
        metrics.failovers.labels(route=outcome.resolution.route or "").inc()


def _observe(request: Request, gateway: Gateway, answer: Answer) -> None:
    """A generation's metrics: those of any request, and its tokens, first token and resumption."""
    observe_served(request, gateway, answer.outcome)
    metrics = gateway.metrics
    route = answer.outcome.resolution.route or ""
    model = answer.outcome.record.ref
    generation = answer.generation
    metrics.tokens.labels(route=route, model=model, kind="prompt").inc(generation.prompt_tokens)
    metrics.tokens.labels(route=route, model=model, kind="completion").inc(generation.completion_tokens)
    if generation.time_to_first_token_ms is not None:
        metrics.ttft.labels(route=route, model=model).observe(generation.time_to_first_token_ms / 1000)
    if answer.resumed_after_chars:
        metrics.resumed_streams.labels(route=route).inc()
