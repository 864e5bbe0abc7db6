"""The one Provider protocol every backend implements, and the request/result types it speaks.

Small on purpose: ``load``, ``generate``, ``stream``, ``health``, ``unload``. Costs, retries and
circuit breakers wrap providers from the outside, once, so a new backend only has to speak this.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

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


@dataclass(frozen=True)
class GenerationRequest:
    """Either ``messages`` (chat) or ``prompt`` (plain completion), never both."""

    messages: tuple[dict[str, str], ...] = ()
    prompt: str | None = None
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: str | None = None  # JSON Schema text: the answer must be JSON that fits it (constrained decoding)

    def __post_init__(self) -> None:
        if bool(self.messages) == (self.prompt is not None):
            raise ValueError("a GenerationRequest needs exactly one of messages= or prompt=")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")


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

    def generation(self, *, prompt_tokens: int, completion_tokens: int, finish_reason: str | None,
                   n_threads: int | None = None, n_gpu_layers: int | None = None) -> Generation:
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
        )


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """A backend serving one model version."""

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


@runtime_checkable
class Embedder(Protocol):
    """A provider that can also embed (the Ollama API's ``/api/embed``)."""

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text."""
