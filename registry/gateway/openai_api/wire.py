"""The OpenAI API's wire types: the bodies it accepts and the JSON it answers, as OpenAI spells them.

Streaming is server-sent events: ``data: {chunk}`` lines and a final ``data: [DONE]``; with
``stream_options.include_usage`` a last chunk carries the token usage.

Tools: ``tools``, ``tool_choice`` and a history of ``tool_calls`` and ``role: tool`` results are
checked by ``tooling.py`` before any model runs. A call is never streamed as text: the provider
hands it over with the finished answer, and a stream then sends it as OpenAI does — per call, a
delta with its ``index``, ``id``, ``type`` and ``function.name`` (arguments ``""``), then one with
its whole ``arguments`` — before the ``finish_reason: "tool_calls"`` chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from registry.gateway.structured import schema_from_response_format
from registry.gateway.tooling import (
    ToolingBody,
    history_call,
    link_tool_results,
    openai_tool_calls,
    parse_tool_choice,
    parse_tools,
)
from registry.providers import Generation, Tool
from registry.serving.dispatcher import Answer

API = "openai"
_MAX_TEXT = 1_000_000


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"] = Field(description="only text parts: this gateway serves text models")
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arguments: str | dict[str, Any] = ""  # JSON text, as OpenAI sends it (an object is accepted too)


class HistoryToolCall(BaseModel):
    """A call an earlier assistant turn made, sent back with the history."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None  # parts (LangChain, agent SDKs) or none (an assistant tool call)
    tool_calls: list[HistoryToolCall] | None = None  # an assistant turn's calls
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=200)  # the call a tool result answers

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only an assistant turn carries tool_calls (this one is {self.role!r})")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool result needs 'tool_call_id': the id of the call it answers")
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def turn(self, where: str) -> dict[str, Any]:
        """This message as providers take it (``GenerationRequest.messages``)."""
        turn: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": self.text}
        if self.tool_calls:
            turn["tool_calls"] = [history_call(call.id, call.function.name, call.function.arguments,
                                               f"{where}.tool_calls[{j}]") for j, call in enumerate(self.tool_calls)]
        if self.role == "tool":
            turn["tool_call_id"] = self.tool_call_id
        return turn


class StreamOptions(BaseModel):
    include_usage: bool = False


class CommonBody(BaseModel):
    """What both endpoints accept."""

    model_config = ConfigDict(extra="allow")  # top_p, presence_penalty…: accepted, not applied

    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="one local model answers once")


class ChatBody(ToolingBody, CommonBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None  # False: at most one call per answer; absent or null: several may come
    _tools: tuple[Tool, ...] = PrivateAttr(default=())
    _tool_choice: str = PrivateAttr(default="auto")
    _turns: tuple[dict[str, Any], ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _supported(self) -> ChatBody:
        """Everything is checked here, before any model runs: a bad request is a 400 naming the field."""
        json_schema = schema_from_response_format(self.response_format)
        legacy = sorted({"functions", "function_call"} & set(self.model_extra or {}))
        if legacy:
            raise ValueError(f"{' and '.join(legacy)} is OpenAI's deprecated form of tool calling; "
                             "send 'tools' and 'tool_choice' instead")
        self._tools = parse_tools(self.tools)
        self._tool_choice = parse_tool_choice(self.tool_choice, self._tools)
        if json_schema is not None and self._tools and self._tool_choice != "none":
            raise ValueError("tools and a JSON response_format cannot be combined: an answer is decoded under one "
                             "grammar, a call's or the format's; send one of them (or tool_choice 'none')")
        if sum(len(m.text) for m in self.messages) > _MAX_TEXT:
            raise ValueError(f"messages hold more than {_MAX_TEXT} characters of text")
        self._turns = link_tool_results((m.turn(f"messages[{i}]") for i, m in enumerate(self.messages)),
                                        strict_ids=True)
        return self

    @property
    def choice(self) -> str:
        """``tool_choice`` as providers take it: auto, none, required or one function's name."""
        return self._tool_choice



class CompletionBody(CommonBody):
    prompt: str | list[str]


Endpoint = Literal["chat.completions", "completions"]


@dataclass(frozen=True)
class OpenAIWire:
    """One ``/v1/chat/completions`` or ``/v1/completions`` answer, whole or streamed (a ``responses.Wire``)."""

    call_id: str  # the answer's ``calls`` row; the response ``id`` is ``prefix + call_id``
    prefix: str  # ``chatcmpl-`` or ``cmpl-``, as OpenAI's ids begin
    created: int
    model: str  # as the client asked for it
    endpoint: Endpoint
    include_usage: bool
    tools: bool = False  # the request declared tools: the answer may be a call rather than text
    api: str = API
    stream_media_type: str = "text/event-stream"

    def whole(self, answer: Answer) -> bytes:
        generation = answer.generation
        reason = _finish_reason(generation)
        if self.endpoint == "chat.completions":
            message: dict[str, Any] = {"role": "assistant", "content": generation.text}
            if generation.tool_calls:
                # content: None, as OpenAI sends it, unless a remote server sent text beside its calls
                message = {"role": "assistant", "content": generation.text or None,
                           "tool_calls": openai_tool_calls(generation.tool_calls)}
            choice = {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": generation.text, "finish_reason": reason, "logprobs": None}
        payload = {"id": self.prefix + self.call_id, "object": self._object(chunk=False), "created": self.created,
                   "model": self.model, "choices": [choice], "usage": _usage(answer),
                   "system_fingerprint": answer.outcome.record.ref}
        return json.dumps(payload, separators=(",", ":")).encode()

    def opening(self) -> list[bytes]:
        if self.endpoint != "chat.completions":
            return []
        # With tools the answer may be a call, whose message has no content: accumulators then end
        # with content None, as the whole answer has it, rather than "".
        delta = {"role": "assistant"} if self.tools else {"role": "assistant", "content": ""}
        return [self._event([{"index": 0, "delta": delta, "finish_reason": None}])]

    def fragment(self, text: str) -> bytes:
        return self._event([self._delta(text)])

    def closing(self, answer: Answer) -> list[bytes]:
        calls = [self._event([{"index": 0, "delta": {"tool_calls": [delta]}, "finish_reason": None}])
                 for delta in _tool_call_deltas(answer.generation)]
        lines = [*calls, self._event([self._delta("", _finish_reason(answer.generation))])]
        if self.include_usage:
            lines.append(self._event([], usage=_usage(answer)))
        return [*lines, b"data: [DONE]\n\n"]

    def error(self, message: str) -> bytes:
        error = {"error": {"message": message, "type": "server_error", "code": 503}}
        return b"data: " + json.dumps(error).encode() + b"\n\n"

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {"id": self.prefix + self.call_id, "object": self._object(chunk=True), "created": self.created,
                 "model": self.model, "choices": choices, **extra}
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def _object(self, *, chunk: bool) -> str:
        if self.endpoint == "chat.completions":
            return "chat.completion.chunk" if chunk else "chat.completion"
        return "text_completion"

    def _delta(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        if self.endpoint == "chat.completions":
            delta = {"content": text} if text else {}
            return {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


def _tool_call_deltas(generation: Generation) -> list[dict[str, Any]]:
    """An answer's calls as OpenAI streams them: per call, its name with arguments ``""``, then its
    arguments. The ``openai`` client's stream helpers and LangChain merge deltas by ``index`` and
    concatenate strings, so ``id`` and ``name`` are sent once and the arguments whole."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(generation.tool_calls):
        deltas.append({"index": index, "id": call.id, "type": "function",
                       "function": {"name": call.name, "arguments": ""}})
        deltas.append({"index": index, "function": {"arguments": call.arguments}})
    return deltas


def _finish_reason(generation: Generation) -> str:
    return "tool_calls" if generation.tool_calls else generation.finish_reason or "stop"


def _usage(answer: Answer) -> dict[str, int]:
    generation = answer.generation
    return {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens}
