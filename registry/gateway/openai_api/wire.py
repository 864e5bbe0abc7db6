"""The OpenAI API's wire types: the bodies it accepts and the JSON it answers, as OpenAI spells them.

Streaming is server-sent events: ``data: {chunk}`` lines and a final ``data: [DONE]``; with
``stream_options.include_usage`` a last chunk carries the token usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.gateway.structured import schema_from_response_format
from registry.serving.dispatcher import Answer

API = "openai"
_MAX_TEXT = 1_000_000


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"] = Field(description="only text parts: this gateway serves text models")
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None  # parts (LangChain, agent SDKs) or none (an assistant tool call)

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


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


class ChatBody(CommonBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatBody:
        """Saying no beats answering free text to a client that asked for a tool call."""
        schema_from_response_format(self.response_format)  # a bad response_format is a 400 before any model runs
        if self.tools:
            raise ValueError("tools (function calling) are not supported by this gateway yet; send no tools")
        if sum(len(m.text) for m in self.messages) > _MAX_TEXT:
            raise ValueError(f"messages hold more than {_MAX_TEXT} characters of text")
        return self


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
    api: str = API
    stream_media_type: str = "text/event-stream"

    def whole(self, answer: Answer) -> bytes:
        generation = answer.generation
        reason = generation.finish_reason or "stop"
        if self.endpoint == "chat.completions":
            choice = {"index": 0, "message": {"role": "assistant", "content": generation.text},
                      "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": generation.text, "finish_reason": reason, "logprobs": None}
        payload = {"id": self.prefix + self.call_id, "object": self._object(chunk=False), "created": self.created,
                   "model": self.model, "choices": [choice], "usage": _usage(answer),
                   "system_fingerprint": answer.outcome.record.ref}
        return json.dumps(payload, separators=(",", ":")).encode()

    def opening(self) -> list[bytes]:
        if self.endpoint != "chat.completions":
            return []
        return [self._event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]

    def fragment(self, text: str) -> bytes:
        return self._event([self._delta(text)])

    def closing(self, answer: Answer) -> list[bytes]:
        lines = [self._event([self._delta("", answer.generation.finish_reason or "stop")])]
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


def _usage(answer: Answer) -> dict[str, int]:
    generation = answer.generation
    return {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens}
