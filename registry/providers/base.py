"""The one Provider protocol every backend implements, and the request/result types it speaks.

Small on purpose: ``load``, ``generate``, ``stream``, ``health``, ``unload``. Costs, retries and
circuit breakers wrap providers from the outside, once, so a new backend only has to speak this.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from registry.spec import ModelSpec

T = TypeVar("T")


def run_to_end(stream: Generator[str, None, T]) -> T:
    """Consume a stream and return its return value: ``generate`` is ``stream`` run to the end, so
    a whole answer and a streamed one are measured by the same code."""
    while True:
        try:
            next(stream)
        except StopIteration as done:
            return done.value


TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for a function name
TOOL_CHOICES = ("auto", "none", "required")  # else the name of one declared tool


@dataclass(frozen=True)
class Tool:
    """A function the model may call: OpenAI's ``tools[].function`` / Ollama's ``tools[].function``.

    ``parameters`` is JSON Schema *text* (``json.dumps(sort_keys=True)``), not a dict, so a tool is
    hashable and the grammar built from a set of tools can be cached by them.
    """

    name: str
    description: str = ""
    parameters: str = '{"properties": {}, "type": "object"}'  # an object schema

    def __post_init__(self) -> None:
        if not TOOL_NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'")


@dataclass(frozen=True)
class ToolCall:
    """One call the model made. ``arguments`` is the JSON text of the arguments object, as OpenAI
    sends it; ``id`` is ``call_`` + 24 hex characters when the provider makes it, or the remote
    server's own id (a later ``role: tool`` turn names it)."""

    id: str
    name: str
    arguments: str


def new_call_id() -> str:
    """A tool call's id in OpenAI's shape, ``call_`` and 24 hex characters, for a backend that makes
    none (llama.cpp, Ollama): a later ``role: tool`` turn names its call by it."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class GenerationRequest:
    """Either ``messages`` (chat) or ``prompt`` (plain completion), never both.

    ``messages`` are OpenAI-shaped turns: an assistant turn may carry ``tool_calls`` (``[{"id",
    "type": "function", "function": {"name", "arguments"}}]``, ``arguments`` JSON text) with content
    ``""``, and a tool result is ``{"role": "tool", "tool_call_id", "content", "name"?}``.
    ``tool_choice`` is ``auto`` (text or a call), ``none`` (text; the tools are not shown),
    ``required`` (a call) or the name of one declared tool (exactly one call to it).
    ``parallel_tool_calls`` (OpenAI's flag) lets one answer hold several calls; False: at most one.
    """

    messages: tuple[dict[str, Any], ...] = ()
    prompt: str | None = None
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: str | None = None  # JSON Schema text: the answer must be JSON that fits it (constrained decoding)
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True

    def __post_init__(self) -> None:
        if bool(self.messages) == (self.prompt is not None):
            raise ValueError("a GenerationRequest needs exactly one of messages= or prompt=")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        _check_tool_results(self.messages)
        names = [tool.name for tool in self.tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique; declared: {', '.join(names)}")
        if self.tools and self.prompt is not None:
            raise ValueError("tools need messages= (a chat); a plain completion cannot call them")
        if self.tool_choice in ("auto", "none"):
            return
        if not self.tools:
            raise ValueError(f"tool_choice {self.tool_choice!r} needs tools; none were declared")
        if self.tool_choice != "required" and self.tool_choice not in names:
            raise ValueError(f"tool_choice names {self.tool_choice!r}, which is not a declared tool; "
                             f"declared: {', '.join(names)}")

    @property
    def uses_tools(self) -> bool:
        """Whether the tools take part in this answer (``tool_choice: none`` shows the model none)."""
        return bool(self.tools) and self.tool_choice != "none"


def _check_tool_results(messages: tuple[dict[str, Any], ...]) -> None:
    """A tool result must answer a call an earlier assistant turn made: a result for an unknown id
    is a client's bookkeeping error, and a model shown it would answer about a call it never made.
    (Ollama's tool turns carry no id; they are taken as they are.)"""
    made: set[str] = set()
    for turn in messages:
        for call in turn.get("tool_calls") or ():
            if isinstance(call, dict) and call.get("id"):
                made.add(str(call["id"]))
        if turn.get("role") == "tool" and turn.get("tool_call_id") and turn["tool_call_id"] not in made:
            known = ", ".join(sorted(made)) or "none"
            raise ValueError(f"a tool result answers call id {turn['tool_call_id']!r}, which no earlier assistant "
                             f"turn made (calls made: {known})")


@dataclass(frozen=True)
class Generation:
    """What came back, with the timings only the provider can see."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float | None
    generation_ms: float
    finish_reason: str | None = None
    # How an in-process runtime ran it (None for a served model: that is its server's business).
    # The cost profile needs them: CPU utilisation means little without the threads it had.
    n_threads: int | None = None
    n_gpu_layers: int | None = None
    # The calls the model made; when there are any, finish_reason is "tool_calls" and ``text`` is only
    # what was streamed beside them: "" from a GGUF model, whatever text a remote server sent with them.
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def decode_steps(self) -> int:
        """Tokens decoded after the first: the rest of the answer, plus the end-of-sequence token
        when the model stopped by itself (it costs a decode step but is not part of the text)."""
        if self.completion_tokens == 0:
            return 0
        return self.completion_tokens - 1 + (1 if self.finish_reason == "stop" else 0)

    @property
    def decode_ms(self) -> float | None:
        """Time from the first token to the end: the decode phase, without prompt processing."""
        if self.time_to_first_token_ms is None or self.decode_steps == 0:
            return None
        return self.generation_ms - self.time_to_first_token_ms

    @property
    def tokens_per_s(self) -> float | None:
        """Decode throughput in tokens per second (what Ollama calls the eval rate).

        Prompt processing is left out on purpose: it is already in the time to first token, and
        counting it here would make a 3-token answer after a long prompt look like a slow model.
        """
        decode_ms = self.decode_ms
        if decode_ms is None or decode_ms <= 0:
            return None
        return self.decode_steps / (decode_ms / 1000)


class StreamTimer:
    """What every provider's stream measures the same way: the start, the first text, the text.

    Example::

        timer = StreamTimer()
        for text in server_fragments():
            timer.add(text)
            yield text
        return timer.generation(prompt_tokens=12, completion_tokens=8, finish_reason="stop")
    """

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._first_at: float | None = None
        self._parts: list[str] = []

    @property
    def fragments(self) -> int:
        return len(self._parts)

    def add(self, text: str) -> None:
        if self._first_at is None:
            self._first_at = time.perf_counter()
        self._parts.append(text)

    def mark_first(self, at: float | None = None) -> None:
        """The first token arrived (at ``at``, a ``time.perf_counter()`` reading, else now), though it
        is not streamed as text: a tool call, held back until it is whole."""
        if self._first_at is None:
            self._first_at = time.perf_counter() if at is None else at

    def generation(self, *, prompt_tokens: int, completion_tokens: int, finish_reason: str | None,
                   n_threads: int | None = None, n_gpu_layers: int | None = None,
                   tool_calls: tuple[ToolCall, ...] = ()) -> Generation:
        ended = time.perf_counter()
        return Generation(
            text="".join(self._parts),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            time_to_first_token_ms=None if self._first_at is None else (self._first_at - self._started) * 1000,
            generation_ms=(ended - self._started) * 1000,
            finish_reason=finish_reason,
            n_threads=n_threads,
            n_gpu_layers=n_gpu_layers,
            tool_calls=tool_calls,
        )


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """A backend serving one model version.

    Tools: a provider yields text fragments only for a text answer. A tool call is never streamed
    as text: it arrives in the finished ``Generation.tool_calls`` (with ``finish_reason
    "tool_calls"``), and the wire turns it into ``tool_calls`` deltas (OpenAI) or
    ``message.tool_calls`` (Ollama). So a client never sees half a call or the call format.
    ``Generation.text`` stays exactly what was streamed (a resumed stream is checked against it):
    "" for a GGUF model's calls, the text a remote server sent beside its calls, if any.
    """

    spec: ModelSpec
    load_ms: float | None

    def load(self) -> None:
        """Make the model ready; idempotent. Raises ``IntegrityError`` or ``ProviderError``."""

    def generate(self, request: GenerationRequest) -> Generation:
        """Generate the whole answer."""

    def stream(self, request: GenerationRequest) -> Generator[str, None, Generation]:
        """Yield text fragments as they are generated; the generator's return value is the
        finished ``Generation`` (token counts, timings), so a streamed answer is measured exactly
        like a whole one. Closing the generator early stops generation."""

    def health(self) -> Health:
        """Cheap check that never loads a cold model."""

    def unload(self) -> None:
        """Free the model; idempotent."""


@dataclass(frozen=True)
class Embedded:
    """An embedder's answer: one vector per text, and the tokens it read (OpenAI's ``usage`` and
    Ollama's ``prompt_eval_count`` report them; LiteLLM's Ollama client fails without the latter)."""

    vectors: list[list[float]]
    prompt_tokens: int


@runtime_checkable
class Embedder(Protocol):
    """A provider that can also embed (``/api/embed``, ``/v1/embeddings``)."""

    def embed(self, texts: list[str], *, truncate: bool = False) -> Embedded:
        """One vector per text, and the tokens read. A text over the tokens one input may hold is a ``ContextOverflowError``
        (the caller's to shorten), unless ``truncate`` (Ollama's ``/api/embed`` default): then its
        first tokens are embedded."""
