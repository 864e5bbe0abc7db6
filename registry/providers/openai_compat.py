"""A model served by any OpenAI-compatible server (vLLM, llama.cpp's servers, LM Studio, Ollama's
``/v1``, OpenAI itself), spoken to with plain httpx.

httpx rather than the openai package: the provider needs the raw stream — to time the first
token on our side, to read the usage chunk, to close the response the moment the caller hangs
up — and one mapping of every transport failure into ``ProviderError``. ``spec.base_url`` is the
API root (``http://127.0.0.1:8000/v1``, see ``registry.spec.normalize_base_url``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import httpx

from registry.errors import ProviderError
from registry.providers.base import (
    TOOL_CHOICES,
    Generation,
    GenerationRequest,
    Health,
    StreamTimer,
    ToolCall,
    new_call_id,
    run_to_end,
)
from registry.providers.remote import GENERATION_TIMEOUT, PROBE_TIMEOUT, RemoteModel, transport_errors
from registry.spec import ModelSpec


class OpenAICompatProvider:
    """Serve one registered ``openai`` version from its server.

    Example::

        provider = OpenAICompatProvider(spec)      # spec.base_url = "http://127.0.0.1:8000/v1"
        provider.load()                            # GET /v1/models lists spec.source
        provider.generate(GenerationRequest(prompt="The capital of France is", max_tokens=8))
    """

    def __init__(self, spec: ModelSpec, *, seed: int = 0) -> None:
        self.spec = spec
        self.load_ms: float | None = None
        self._seed = seed
        self._where = f"{spec.name} ({spec.source!r} at {spec.base_url})"
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    def load(self) -> None:
        with self._lock:
            if self._client is not None:
                return
            started = time.perf_counter()
            client = httpx.Client(base_url=str(self.spec.base_url), timeout=GENERATION_TIMEOUT)
            try:
                _require_listed(client, self.spec.source, self._where)
            except ProviderError:
                client.close()
                raise
            self._client = client
            self.load_ms = (time.perf_counter() - started) * 1000

    def generate(self, request: GenerationRequest) -> Generation:
        return run_to_end(self.stream(request))

    def stream(self, request: GenerationRequest) -> Generator[str, None, Generation]:
        client = self._require_loaded()
        chat = bool(request.messages)
        path, body = _request_body(self.spec.source, request, self._seed if request.seed is None else request.seed)
        timer = StreamTimer()
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None
        calls = _CallDeltas()
        # Leaving this block, normally or because the caller closed the generator, closes the response.
        with transport_errors(self._where), client.stream("POST", path, json=body) as response:
            if response.is_error:
                response.read()
                response.raise_for_status()
            for event in _events(response, self._where):
                usage = event.get("usage") or usage
                for choice in event.get("choices") or ():
                    delta = choice.get("delta") or {}
                    text = delta.get("content") if chat else choice.get("text")
                    finish_reason = choice.get("finish_reason") or finish_reason
                    if delta.get("tool_calls"):
                        timer.mark_first()
                        calls.add(delta["tool_calls"], self._where)
                    if text:
                        timer.add(text)
                        yield text
        prompt_tokens, completion_tokens = _token_counts(usage, timer.fragments, finish_reason, request.max_tokens)
        made = calls.finished()
        return timer.generation(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                finish_reason="tool_calls" if made else finish_reason, tool_calls=made)

    def health(self) -> Health:
        """The server answers ``GET /models`` within a few seconds and still lists the model."""
        client = self._client
        if client is None:
            return Health(ok=False, detail="not loaded")
        try:
            _require_listed(client, self.spec.source, self._where)
        except ProviderError as exc:
            return Health(ok=False, detail=str(exc))
        return Health(ok=True, detail="serving", extra={"base_url": str(self.spec.base_url)})

    def unload(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _require_loaded(self) -> httpx.Client:
        if self._client is None:
            raise ProviderError(f"{self._where}: generate called before load()")
        return self._client


def describe(source: str, base_url: str | None) -> RemoteModel:
    """Check at registration that the server at ``base_url`` serves ``source``. The OpenAI API
    has no field for the context window, so the caller must give it."""
    if base_url is None:
        raise ProviderError(f"{source!r}: an openai model needs the server's URL (base_url)")
    with httpx.Client(base_url=base_url, timeout=PROBE_TIMEOUT) as client:
        _require_listed(client, source, f"{source!r} at {base_url}")
    return RemoteModel()


def _require_listed(client: httpx.Client, source: str, where: str) -> None:
    """``GET /models`` answers and lists ``source``: the one check every compatible server offers."""
    with transport_errors(where):
        response = client.get("models", timeout=PROBE_TIMEOUT)
        if response.status_code == 404:
            raise ProviderError(
                f"{where}: GET {response.url} answered 404; the base URL must be the API root, "
                "e.g. http://127.0.0.1:8000/v1"
            )
        response.raise_for_status()
    try:
        served = [str(model["id"]) for model in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise ProviderError(
            f"{where}: GET {response.url} did not answer an OpenAI model list; is this an OpenAI-compatible API root?"
        ) from None
    if source not in served:
        raise ProviderError(
            f"{where}: the server does not serve {source!r} (it lists: {', '.join(served) or 'nothing'}); "
            "check the model name"
        )


def _request_body(source: str, request: GenerationRequest, seed: int) -> tuple[str, dict[str, Any]]:
    """The path and JSON body: chat for ``messages``, plain completion for ``prompt``."""
    body: dict[str, Any] = {
        "model": source,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.stop:
        body["stop"] = list(request.stop)
    if request.json_schema is not None:  # structured outputs, where the server has them
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": json.loads(request.json_schema), "strict": True}}
    if request.tools:  # passed through as the OpenAI API has them; the server decodes the calls
        body["tools"] = [{"type": "function", "function": {
            "name": tool.name, "description": tool.description, "parameters": json.loads(tool.parameters)}}
            for tool in request.tools]
        body["tool_choice"] = request.tool_choice if request.tool_choice in TOOL_CHOICES else {
            "type": "function", "function": {"name": request.tool_choice}}
        if not request.parallel_tool_calls:  # only when off: OpenAI's default is on, and not every server knows it
            body["parallel_tool_calls"] = False
    if request.messages:
        return "chat/completions", {**body, "messages": list(request.messages)}
    return "completions", {**body, "prompt": request.prompt}


class _CallDeltas:
    """Tool calls as a stream sends them: each ``delta.tool_calls`` item names its call by ``index``;
    the first carries its id and name, the ``arguments`` text comes in pieces (some servers send a
    whole call in one piece)."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, pieces: list[dict[str, Any]], where: str) -> None:
        for position, piece in enumerate(pieces):
            function = piece.get("function") or {}
            try:
                call = self._calls.setdefault(int(piece.get("index", position)), {"id": "", "name": "", "arguments": ""})
            except (TypeError, ValueError):
                raise ProviderError(f"{where}: a tool call delta with index {piece.get('index')!r}") from None
            call["id"] = piece.get("id") or call["id"]
            call["name"] = function.get("name") or call["name"]
            call["arguments"] += function.get("arguments") or ""

    def finished(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(id=call["id"] or new_call_id(), name=call["name"], arguments=call["arguments"] or "{}")
                     for _, call in sorted(self._calls.items()))


def _events(response: httpx.Response, where: str) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, up to ``data: [DONE]``.

    A stream that ends without ``[DONE]`` was cut short: that is a failure, not a short answer.
    """
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, ": keep-alive" comments, "event:" names
        payload = line.removeprefix("data:").strip()
        if payload == "[DONE]":
            return
        try:
            event = json.loads(payload)
        except json.JSONDecodeError:
            raise ProviderError(f"{where}: the stream sent a line that is not JSON: {payload[:200]!r}") from None
        if event.get("error"):
            error = event["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ProviderError(f"{where}: the server failed mid-stream: {message}")
        yield event
    raise ProviderError(f"{where}: the stream ended without `data: [DONE]`; the server closed it early")


def _token_counts(
    usage: dict[str, Any] | None, fragments: int, finish_reason: str | None, max_tokens: int
) -> tuple[int, int]:
    """Prompt and completion tokens from the server's own counters (the usage chunk that
    ``stream_options.include_usage`` asks for).

    A server that sends none (llama-cpp-python's own server ignores the option) leaves the prompt
    count unknown, reported as 0, and the completion counted as one token per text fragment —
    exact when generation stopped at ``max_tokens``, an undercount when a multi-byte character
    arrives as one fragment.
    """
    if usage:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return 0, max_tokens if finish_reason == "length" else fragments
