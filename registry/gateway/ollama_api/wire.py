"""The Ollama API's wire types: the bodies it accepts and the JSON it answers, as Ollama spells them.

Durations are nanoseconds. A stream is strict NDJSON: ``done: false`` fragments, then one
``done: true`` object with the figures, or an ``{"error": ...}`` line if the backend failed after
the stream began.

Tools: ``/api/chat`` takes ``tools`` as OpenAI's chat does, but a call's ``arguments`` are an
object and calls have no ids, so a ``role: tool`` result is linked to the call it answers by its
``tool_call_id`` when a client sends one (LangChain does), else by ``tool_name``, else by order
(``tooling.link_tool_results``). An answer's calls are ``message.tool_calls``
(``{"id", "function": {"index", "name", "arguments"}}``) with ``done_reason: "stop"``, as Ollama
answers; a stream sends them in one message chunk before the ``done: true`` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from registry.gateway.http import json_line
from registry.gateway.structured import schema_from_ollama_format
from registry.gateway.tooling import ToolingBody, arguments_object, history_call, link_tool_results, parse_tools
from registry.providers import Generation, Tool
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


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")  # index: accepted, the order is the list's

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)  # an object, as Ollama sends it


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, max_length=200)  # newer Ollama and LangChain send one
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = Field(default="", max_length=1_000_000)  # an assistant tool-call turn has none
    tool_calls: list[ToolCall] | None = None  # an assistant turn's calls
    tool_name: str | None = None  # the function a tool result comes from (Ollama's link to its call)
    tool_call_id: str | None = None  # the call a tool result answers, when the client knows it

    def turn(self, where: str) -> dict[str, Any]:
        """This message as providers take it (``GenerationRequest.messages``), OpenAI-shaped."""
        turn: dict[str, Any] = {"role": self.role, "content": self.content or ""}
        if self.tool_calls:
            if self.role != "assistant":
                raise ValueError(f"{where}: only an assistant turn carries tool_calls (this one is {self.role!r})")
            turn["tool_calls"] = [history_call(call.id, call.function.name, call.function.arguments,
                                               f"{where}.tool_calls[{j}]") for j, call in enumerate(self.tool_calls)]
        if self.role == "tool":  # some clients (LiteLLM) name the function "name", as OpenAI's old form did
            turn |= {"tool_call_id": self.tool_call_id, "tool_name": self.tool_name or (self.model_extra or {}).get("name")}
        return turn


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


class ChatBody(ToolingBody, BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(default_factory=list)
    stream: bool = True
    options: Options = Field(default_factory=Options)
    keep_alive: str | int | float | None = None
    format: str | dict[str, Any] | None = None
    tools: list[Any] | None = None
    _tools: tuple[Tool, ...] = PrivateAttr(default=())
    _turns: tuple[dict[str, Any], ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _supported(self) -> ChatBody:
        """Everything is checked here, before any model runs: a bad request is a 400 naming the field."""
        json_schema = schema_from_ollama_format(self.format)
        self._tools = parse_tools(self.tools)
        if json_schema is not None and self._tools:
            raise ValueError("'tools' and 'format' cannot be combined: an answer is decoded under one grammar, "
                             "a call's or the format's; send one of them")
        self._turns = link_tool_results((m.turn(f"messages[{i}]") for i, m in enumerate(self.messages)),
                                        strict_ids=False)
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
        generation = answer.generation
        return json_line(final(self.name, generation.finish_reason, answer)
                         | content(self.endpoint, generation.text, generation))

    def opening(self) -> list[bytes]:
        return []

    def fragment(self, text: str) -> bytes:
        return json_line({"model": self.name, "created_at": iso(datetime.now(UTC)), **content(self.endpoint, text),
                          "done": False})

    def closing(self, answer: Answer) -> list[bytes]:
        generation = answer.generation
        calls = [json_line({"model": self.name, "created_at": iso(datetime.now(UTC)),
                            **content(self.endpoint, "", generation), "done": False})] if generation.tool_calls else []
        return [*calls, json_line(final(self.name, generation.finish_reason, answer) | content(self.endpoint, ""))]

    def error(self, message: str) -> bytes:
        return json_line({"error": message})


def content(endpoint: Endpoint, text: str, generation: Generation | None = None) -> dict[str, Any]:
    """The answer's part of a line: its text, and the calls ``generation`` made, if any."""
    if endpoint != "chat":
        return {"response": text}
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if generation is not None and generation.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "function": {"index": index, "name": call.name, "arguments": arguments_object(call)}}
            for index, call in enumerate(generation.tool_calls)
        ]
    return {"message": message}


def final(name: str, reason: str | None, answer: Answer | None) -> dict[str, Any]:
    """The ``done: true`` object; without an answer (a "load the model" call) it has no figures.
    A tool call ends with ``stop``, as Ollama says it (it has no ``tool_calls`` reason)."""
    payload: dict[str, Any] = {"model": name, "created_at": iso(datetime.now(UTC)), "done": True,
                               "done_reason": "stop" if reason in (None, "tool_calls") else reason}
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
