"""A model served by an Ollama server (or anything speaking its API, our own gateway included),
through the ``ollama`` client.

``spec.source`` is the model's name on the server (``llama3.2:1b``, or a gateway route such as
``qa``); ``spec.base_url`` the server, else ``OLLAMA_HOST``, else Ollama's default — resolved when
the provider is made, so a version registered without a URL follows the environment it runs in.
The client raises ``ollama.ResponseError`` for HTTP errors and ``error`` lines, the builtin
``ConnectionError`` for a refused request, and raw ``httpx`` errors mid-stream; all of them
become ``ProviderError`` here.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Generator
from typing import Any

import ollama

from registry.errors import ProviderError, UserError
from registry.providers.base import (
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

DEFAULT_HOST = "http://127.0.0.1:11434"
# What the ollama client raises besides httpx errors: HTTP ≥ 400 and ``error`` lines, a refused
# connection, and a line that is not JSON or not the expected shape (both ValueErrors).
_CLIENT_ERRORS = (ollama.ResponseError, ConnectionError, ValueError)


def ollama_host(base_url: str | None) -> str:
    """The server to talk to: the spec's URL, else ``OLLAMA_HOST``, else Ollama's default."""
    return base_url or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST


class OllamaProvider:
    """Serve one registered ``ollama`` version from its server.

    Example::

        provider = OllamaProvider(spec)            # spec.source = "llama3.2:1b"
        provider.load()                            # POST /api/show: the server knows the model
        provider.generate(GenerationRequest(messages=({"role": "user", "content": "Hi"},)))
    """

    def __init__(self, spec: ModelSpec, *, seed: int = 0) -> None:
        self.spec = spec
        self.load_ms: float | None = None
        self._seed = seed
        self._host = ollama_host(spec.base_url)
        self._where = f"{spec.name} ({spec.source!r} at {self._host})"
        self._lock = threading.Lock()
        # Two clients: generation may wait minutes for a cold model, a health check must not.
        self._client: ollama.Client | None = None
        self._probe: ollama.Client | None = None

    def load(self) -> None:
        with self._lock:
            if self._client is not None:
                return
            started = time.perf_counter()
            probe = ollama.Client(host=self._host, timeout=PROBE_TIMEOUT)
            try:
                _show(probe, self.spec.source, self._where)
            except ProviderError:
                probe.close()
                raise
            self._probe = probe
            self._client = ollama.Client(host=self._host, timeout=GENERATION_TIMEOUT)
            self.load_ms = (time.perf_counter() - started) * 1000

    def generate(self, request: GenerationRequest) -> Generation:
        return run_to_end(self.stream(request))

    def stream(self, request: GenerationRequest) -> Generator[str, None, Generation]:
        client = self._require_loaded()
        options: dict[str, Any] = {
            "num_predict": request.max_tokens,
            "temperature": request.temperature,
            "seed": self._seed if request.seed is None else request.seed,
        }
        if request.stop:
            options["stop"] = list(request.stop)
        timer = StreamTimer()
        final: Any = None
        calls: list[ToolCall] = []
        messages = ollama_messages(request.messages)  # before the wire: a bad turn is the caller's, not the server's
        with transport_errors(self._where, *_CLIENT_ERRORS):
            source = self.spec.source
            schema = json.loads(request.json_schema) if request.json_schema is not None else None  # Ollama's format
            if request.messages:
                chunks = client.chat(model=source, messages=messages, stream=True, options=options, format=schema,
                                     tools=ollama_tools(request))
            else:  # raw: a plain completion, as llama.cpp's create_completion — no chat template
                chunks = client.generate(model=source, prompt=request.prompt, raw=True, stream=True, options=options,
                                         format=schema)
            # closing() ends the client's own generator, and so its HTTP response, when the caller hangs up
            with contextlib.closing(chunks):
                for chunk in chunks:
                    text = chunk.message.content if request.messages else chunk.response
                    if request.messages and chunk.message.tool_calls:
                        timer.mark_first()
                        calls.extend(ToolCall(id=new_call_id(), name=call.function.name,  # Ollama gives no ids
                                              arguments=json.dumps(dict(call.function.arguments), ensure_ascii=False,
                                                                   separators=(",", ":")))
                                     for call in chunk.message.tool_calls)
                    if text:
                        timer.add(text)
                        yield text
                    if chunk.done:
                        final = chunk
        if final is None:
            raise ProviderError(
                f"{self._where}: the stream ended without its final `done` line; the server closed it early"
            )
        return timer.generation(prompt_tokens=final.prompt_eval_count or 0, completion_tokens=final.eval_count or 0,
                                finish_reason="tool_calls" if calls else final.done_reason, tool_calls=tuple(calls))

    def health(self) -> Health:
        """The server answers ``GET /api/tags`` within a few seconds and still lists the model
        (a listing never loads a model on the server)."""
        probe = self._probe
        if probe is None:
            return Health(ok=False, detail="not loaded")
        try:
            with transport_errors(self._where, *_CLIENT_ERRORS):
                listed = [model.model or "" for model in probe.list().models]
        except ProviderError as exc:
            return Health(ok=False, detail=str(exc))
        if not any(_same_model(self.spec.source, name) for name in listed):
            return Health(ok=False, detail=f"{self._where}: the server no longer lists the model")
        return Health(ok=True, detail="serving", extra={"host": self._host})

    def unload(self) -> None:
        with self._lock:
            for client in (self._client, self._probe):
                if client is not None:
                    client.close()
            self._client = self._probe = None

    def _require_loaded(self) -> ollama.Client:
        if self._client is None:
            raise ProviderError(f"{self._where}: generate called before load()")
        return self._client


def ollama_tools(request: GenerationRequest) -> list[dict[str, Any]] | None:
    """The tools in Ollama's shape. Ollama has no ``tool_choice``: ``none`` sends no tools, a named
    function only that one (the closest Ollama comes to forcing it), ``required`` all of them —
    whether a call then comes is the server's model's choice."""
    if not request.uses_tools:
        return None
    chosen = [t for t in request.tools if request.tool_choice in ("auto", "required") or t.name == request.tool_choice]
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": json.loads(t.parameters)}} for t in chosen]


def ollama_messages(messages: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """OpenAI-shaped turns as Ollama reads them: a call's ``arguments`` an object, not JSON text; a
    result names its function (``tool_name``), found by its ``tool_call_id`` (Ollama has no ids)."""
    names: dict[str, str] = {}
    turns: list[dict[str, Any]] = []
    for message in messages:
        turn = {k: v for k, v in message.items() if k not in ("tool_calls", "tool_call_id", "name")}
        if message.get("tool_calls"):
            turn["tool_calls"] = []
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                arguments = function.get("arguments") or {}
                if call.get("id"):
                    names[call["id"]] = function.get("name", "")
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments)
                    except json.JSONDecodeError:
                        raise UserError(f"the arguments of an earlier call to {function.get('name')!r} are not "
                                        f"JSON: {arguments[:100]!r}") from None
                turn["tool_calls"].append({"function": {"name": function.get("name", ""), "arguments": arguments}})
        if message.get("role") == "tool":
            name = message.get("name") or names.get(str(message.get("tool_call_id")))
            if name:
                turn["tool_name"] = name
        turns.append(turn)
    return turns


def describe(source: str, base_url: str | None) -> RemoteModel:
    """What the server says about ``source`` (``/api/show``): its context length, architecture
    and quantization. Raises ``ProviderError`` when the server is down or does not know it."""
    host = ollama_host(base_url)
    with ollama.Client(host=host, timeout=PROBE_TIMEOUT) as client:
        shown = _show(client, source, f"{source!r} at {host}")
    info = shown.modelinfo or {}
    architecture = info.get("general.architecture")
    window = info.get(f"{architecture}.context_length") or next(
        (value for key, value in info.items() if key.endswith(".context_length")), None
    )
    details = shown.details
    return RemoteModel(
        context_window=int(window) if window else None,
        architecture=architecture or (details.family if details else None),
        quantization=details.quantization_level if details else None,
    )


def _show(client: ollama.Client, source: str, where: str) -> ollama.ShowResponse:
    """``POST /api/show``: reads the model's metadata without loading it on the server."""
    try:
        with transport_errors(where, ConnectionError, ValueError):
            return client.show(source)
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise ProviderError(
                f"{where}: the server does not know this model ({exc.error}); check the model name "
                "(`ollama list` shows what an Ollama server has) and that the URL is an Ollama server"
            ) from exc
        raise ProviderError(f"{where}: /api/show failed: {exc}") from exc


def _same_model(wanted: str, listed: str) -> bool:
    """Ollama names without a tag mean ``:latest`` (``qa`` is ``qa:latest``)."""
    return _with_tag(wanted) == _with_tag(listed)


def _with_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
