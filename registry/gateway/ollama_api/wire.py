"""The Ollama API's wire types: the bodies it accepts and the JSON it answers, as Ollama spells them.

Durations are nanoseconds. A stream is strict NDJSON: ``done: false`` fragments, then one
``done: true`` object with the figures, or an ``{"error": ...}`` line if the backend failed after
the stream began.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.gateway.http import json_line
from registry.gateway.structured import schema_from_ollama_format
from registry.providers import Generation
from registry.results.store import iso_utc, new_id
from registry.serving.dispatcher import Answer
from registry.spec import VersionRecord

API = "ollama"


class Options(BaseModel):
    model_config = ConfigDict(extra="allow")  # top_k, repeat_penalty…: accepted, not applied

    num_predict: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None
    stop: list[str] | None = None
    num_ctx: int | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(default="", max_length=1_000_000)  # an assistant tool-call turn has none


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    stream: bool = True
    options: Options = Field(default_factory=Options)
    keep_alive: str | int | float | None = None
    format: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _supported(self) -> GenerateBody:
        schema_from_ollama_format(self.format)  # a bad format is a 400 before any model runs
        return self


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(default_factory=list)
    stream: bool = True
    options: Options = Field(default_factory=Options)
    keep_alive: str | int | float | None = None
    format: str | dict[str, Any] | None = None
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatBody:
        """Saying no beats answering free text to a client that asked for a tool call."""
        if self.tools:
            raise ValueError("'tools' (tool calling) is not supported by this gateway yet; send the request without tools")
        schema_from_ollama_format(self.format)  # a bad format is a 400 before any model runs
        return self


class ModelBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(default=None, min_length=1, max_length=200)
    name: str | None = Field(default=None, min_length=1, max_length=200)  # older clients send "name"


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str]
    truncate: bool = True


Endpoint = Literal["chat", "generate"]


@dataclass(frozen=True)
class OllamaWire:
    """One ``/api/chat`` or ``/api/generate`` answer, whole or streamed (a ``responses.Wire``)."""

    name: str  # the model as the client asked for it: Ollama echoes it back
    endpoint: Endpoint
    call_id: str = field(default_factory=new_id)  # sent as the x-arbiter-call-id header (Ollama's body has no id)
    api: str = API
    stream_media_type: str = "application/x-ndjson"

    def whole(self, answer: Answer) -> bytes:
        return json_line(final(self.name, answer.generation.finish_reason, answer)
                         | content(self.endpoint, answer.generation.text))

    def opening(self) -> list[bytes]:
        return []

    def fragment(self, text: str) -> bytes:
        return json_line({"model": self.name, "created_at": iso(datetime.now(UTC)), **content(self.endpoint, text),
                          "done": False})

    def closing(self, answer: Answer) -> list[bytes]:
        return [json_line(final(self.name, answer.generation.finish_reason, answer) | content(self.endpoint, ""))]

    def error(self, message: str) -> bytes:
        return json_line({"error": message})


def content(endpoint: Endpoint, text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if endpoint == "chat" else {"response": text}


def final(name: str, reason: str | None, answer: Answer | None) -> dict[str, Any]:
    """The ``done: true`` object; without an answer (a "load the model" call) it has no figures."""
    payload: dict[str, Any] = {"model": name, "created_at": iso(datetime.now(UTC)), "done": True,
                               "done_reason": reason or "stop"}
    if answer is not None:
        generation = answer.generation
        ttft_ms = generation.time_to_first_token_ms or 0.0
        payload |= {
            "total_duration": int((answer.outcome.queue_ms + generation.generation_ms) * 1e6),
            "load_duration": 0,
            "prompt_eval_count": generation.prompt_tokens,
            "prompt_eval_duration": int(ttft_ms * 1e6),
            "eval_count": generation.completion_tokens,
            "eval_duration": int(_eval_ms(generation) * 1e6),
        }
    return payload


def _eval_ms(generation: Generation) -> float:
    """Time for ``eval_count`` tokens at the measured decode rate, so ``eval_count / eval_duration``
    — how every Ollama client computes tokens/s — is that rate. The raw decode time covers one step
    fewer than the tokens counted (the first token comes from prompt processing), which would make
    a 32-token answer read ~3 % fast."""
    rate = generation.tokens_per_s
    return generation.completion_tokens / rate * 1000 if rate else 0.0


def model_facts(record: VersionRecord) -> dict[str, Any]:
    spec = record.spec
    return {
        "modified_at": iso(record.created_at),
        "size": spec.size_bytes or 0,
        "digest": spec.sha256 or "",
        "details": {
            "parent_model": "",
            "format": spec.kind,
            "family": spec.architecture or spec.family or "",
            "families": [spec.architecture] if spec.architecture else None,
            "parameter_size": "",
            "quantization_level": spec.quantization or "",
        },
    }


def iso(moment: datetime) -> str:
    """A time in Ollama's wire form: UTC with a ``Z`` suffix, as Ollama itself writes it."""
    return str(iso_utc(moment)).replace("+00:00", "Z")
