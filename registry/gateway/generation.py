"""What the Ollama and OpenAI endpoints share: token bounds, running a request off the event loop,
streaming from a provider thread, and the overhead figure.

``x-arbiter-overhead-ms`` is the time from the request's arrival to its response being ready,
minus the time in the model and the wait for it (``Answer.model_ms``): what the gateway itself
costs. A streamed response sends its headers before the model starts, so there the header
carries the overhead until then (parsing, resolution); the whole stream's overhead is in the
``calls`` row and in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from registry.errors import ArbiterError, UnavailableError, UserError
from registry.gateway.http import api_of, count_request, describe_validation, endpoint_of
from registry.gateway.runtime import Gateway
from registry.providers import GenerationRequest
from registry.serving.dispatcher import Answer
from registry.serving.router import Resolution
from registry.spec import VersionRecord

_log = logging.getLogger(__name__)
BodyT = TypeVar("BodyT", bound=BaseModel)
DEFAULT_MAX_TOKENS = 256  # Ollama's default is "until the context is full"; a bound keeps a 135M model from rambling
OVERHEAD_HEADER = "x-arbiter-overhead-ms"
_DISCONNECT_POLL_S = 0.25


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
    return request.scope["state"]["arrived"]


def context_limit(gateway: Gateway, record: VersionRecord) -> int:
    """Tokens this version can take: llama.cpp runs with the smaller of the setting and the model's."""
    window = record.spec.context_window
    return min(window, gateway.settings.n_ctx) if record.spec.kind == "gguf" else window


def bounded_max_tokens(
    gateway: Gateway, record: VersionRecord, requested: int | None, *, field: str, default: int = DEFAULT_MAX_TOKENS,
    until_full: bool = False,
) -> int:
    """``requested`` checked against the context window. With ``until_full`` (Ollama's
    ``num_predict``), -1 and -2 mean "until the context is full": the limit."""
    limit = context_limit(gateway, record)
    if requested is None:
        return min(default, limit)
    if until_full and requested in (-1, -2):
        return limit
    if requested < 1 or requested > limit:
        raise UserError(f"{field} must be between 1 and {limit} (the context window of {record.ref}); got {requested}")
    return requested


def check_num_ctx(gateway: Gateway, record: VersionRecord, num_ctx: int | None) -> None:
    if num_ctx is None:
        return
    window = record.spec.context_window
    if num_ctx < 1 or num_ctx > window:
        raise UserError(f"options.num_ctx must be between 1 and {window} (the context window of {record.ref}); got {num_ctx}")


def require_capability(record: VersionRecord, capability: str, requested: str) -> None:
    if capability not in record.spec.capabilities:
        raise UserError(
            f"{requested} ({record.ref}) cannot do {capability!r}; its capabilities: {', '.join(record.spec.capabilities)}"
        )


async def answer_whole(
    request: Request, resolution: Resolution, generation_request: GenerationRequest, *, api: str
) -> Answer:
    """A whole answer, generated in its own producer thread (never a worker of the loop's bounded
    thread pool, which requests waiting in queues would exhaust), stopped when the client hangs up."""
    bridge = bridge_for(request, resolution, generation_request, api=api)
    async with _closed_on_disconnect(request, bridge):
        while await bridge.next() is not None:
            pass
    assert bridge.answer is not None
    return bridge.answer


def bridge_for(
    request: Request, resolution: Resolution, generation_request: GenerationRequest, *, api: str
) -> StreamBridge:
    dispatcher = gateway_of(request).dispatcher
    return StreamBridge(
        lambda cancelled: dispatcher.stream(resolution, generation_request, api=api, cancelled=cancelled)
    )


async def first_fragment(request: Request, bridge: StreamBridge) -> str | None:
    """A stream's first fragment (or its first error, in time for a proper status code); a client
    that hangs up while its request is still queued gives its place back."""
    async with _closed_on_disconnect(request, bridge):
        return await bridge.next()


@contextlib.asynccontextmanager
async def _closed_on_disconnect(request: Request, bridge: StreamBridge) -> AsyncIterator[None]:
    """While the block runs, a client that hangs up stops the bridge (checked every 0.25 s)."""

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(_DISCONNECT_POLL_S)
        bridge.close()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


def answer_headers(answer: Answer, overhead_ms: float) -> dict[str, str]:
    """The headers of a whole answer: the gateway's overhead, the version that answered, the wait."""
    return {OVERHEAD_HEADER: f"{overhead_ms:.3f}", "x-arbiter-model": answer.record.ref,
            "x-arbiter-queue-ms": f"{answer.queue_ms:.3f}"}


def finish(request: Request, answer: Answer) -> float:
    """Record the answer (row + metrics); returns the overhead in ms."""
    gateway = gateway_of(request)
    total_ms = (time.perf_counter() - arrived(request)) * 1000
    overhead_ms = max(0.0, total_ms - answer.model_ms)
    gateway.dispatcher.record(answer, overhead_ms=overhead_ms)
    metrics = gateway.metrics
    route = answer.resolution.route or ""
    generation = answer.generation
    count_request(request, 200)
    metrics.latency.labels(api=api_of(request), endpoint=endpoint_of(request)).observe(total_ms / 1000)
    metrics.overhead.observe(overhead_ms / 1000)
    metrics.tokens.labels(route=route, model=answer.record.ref, kind="prompt").inc(generation.prompt_tokens)
    metrics.tokens.labels(route=route, model=answer.record.ref, kind="completion").inc(generation.completion_tokens)
    if generation.time_to_first_token_ms is not None:
        metrics.ttft.labels(route=route, model=answer.record.ref).observe(generation.time_to_first_token_ms / 1000)
    if answer.failed_over:
        metrics.failovers.labels(route=route).inc()
    if answer.resumed_after_chars:
        metrics.resumed_streams.labels(route=route).inc()
    return overhead_ms


def stream_failed(request: Request, exc: Exception) -> str:
    """The message for a stream's last line once its status has been sent; counted and, when it
    is not one of ours (a bug), logged with its trace."""
    if not isinstance(exc, ArbiterError):
        _log.error("stream failed on %s", request.url.path, exc_info=exc)
    count_request(request, "stream_error")
    return str(exc) or type(exc).__name__


def overhead_so_far(request: Request) -> str:
    return f"{(time.perf_counter() - arrived(request)) * 1000:.3f}"


class StreamBridge:
    """Run a provider stream in one producer thread and hand its fragments to the event loop.

    One thread for the whole stream, not one hop per fragment: the model keeps generating while
    the loop sends (a hop per fragment cost ~5 % of the decode rate), and every ``next()`` and the
    final ``close()`` happen in the same thread. ``answer`` is set when the stream ends; an error
    is raised from :meth:`next` (the first call is still in time for a proper status code) or
    from :meth:`rest`.
    """

    def __init__(self, open_stream: Callable[[threading.Event], Generator[str, None, Answer]]) -> None:
        self._cancelled = threading.Event()  # the stream is told too: a request still queued withdraws
        self._stream = open_stream(self._cancelled)
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self.answer: Answer | None = None
        threading.Thread(target=self._produce, name="arbiter-stream", daemon=True).start()

    async def next(self) -> str | None:
        """The next fragment; None at the end. The first call's error still gets a proper status."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def rest(self) -> AsyncIterator[str]:
        while (fragment := await self.next()) is not None:
            yield fragment

    def close(self) -> None:
        """Stop generating (a client that hung up): the producer closes the stream after the
        fragment in progress, which frees its instance."""
        self._cancelled.set()

    def _produce(self) -> None:
        try:
            while not self._cancelled.is_set():
                try:
                    fragment = next(self._stream)
                except StopIteration as done:
                    self.answer = done.value
                    self._put(None)
                    return
                self._put(fragment)
            self._put(UnavailableError("the client disconnected; generation stopped"))
        except BaseException as exc:  # noqa: BLE001 — handed to the response, which reports it
            self._put(exc)
        finally:
            self._stream.close()

    def _put(self, item: str | BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is shutting down
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
