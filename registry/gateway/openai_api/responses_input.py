"""What a ``POST /v1/responses`` request asks for, read into the chat turns, tools and output format
a ``GenerationRequest`` takes.

The Responses API says a conversation as a list of items rather than messages: ``message`` items
(``input_text`` / ``output_text`` parts), the model's ``function_call`` items and the caller's
``function_call_output`` items. They become OpenAI-shaped chat turns — consecutive calls one
assistant turn with ``tool_calls``, each output a ``role: tool`` turn naming its call — so a
provider sees the same history whichever API the client spoke.

A local text model cannot honour everything the API offers. What it cannot do is refused before any
model runs, with a 400 that names the item and what to send instead — images, files, audio,
reasoning and hosted-tool items, built-in tools, ``previous_response_id`` and ``conversation``
(nothing is stored: send the whole conversation), ``background`` — never silently dropped.
Fields that change nothing here (``store``, ``metadata``, ``user``, ``truncation``, ``top_p``,
``reasoning``…) are accepted, as the chat endpoint accepts its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from registry.errors import UserError
from registry.gateway.structured import ANY_JSON_OBJECT, schema_text
from registry.gateway.tooling import call_arguments, parse_tool_choice, parse_tools
from registry.providers import Tool

_MAX_TEXT = 1_000_000  # characters of text over the whole input, as the chat endpoint allows
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = ("input_text", "output_text")
# Nothing to include from a model without reasoning items; any other `include` asks for data we do not have.
_HARMLESS_INCLUDES = ("reasoning.encrypted_content",)


class ResponsesBody(BaseModel):
    """The body's fields as OpenAI names them; the items of ``input`` are read by :func:`read_request`."""

    model_config = ConfigDict(extra="allow")  # service_tier, prompt_cache_key…: accepted, change nothing here

    model: str = Field(min_length=1, max_length=200)
    input: str | list[Any]  # each item is read, and a bad one named, by _Conversation
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False
    store: bool | None = None  # accepted either way: nothing is stored, and the answer says "store": false
    text: dict[str, Any] | None = None
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None
    prompt: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    top_logprobs: int | None = None


@dataclass(frozen=True)
class ReadRequest:
    """The request as providers take it: the turns, the tools and how they may be used, the output format."""

    messages: tuple[dict[str, Any], ...]
    tools: tuple[Tool, ...]
    tool_choice: str
    json_schema: str | None  # JSON Schema text, from ``text.format``


def read_request(body: ResponsesBody) -> ReadRequest:
    """The body checked and translated; a ``UserError`` (400) names what cannot be served and the fix."""
    _refuse_unsupported(body)
    try:
        tools = parse_tools(body.tools, nested=False)
        choice = parse_tool_choice(body.tool_choice, tools)
        json_schema = _format_schema(body.text)
        messages = _Conversation(body.instructions).read(body.input)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if json_schema is not None and tools and choice != "none":
        raise UserError("text.format asks for JSON output and tools may be called: one answer cannot be both here; "
                        "send tool_choice 'none', or drop text.format until the model has called its tools")
    return ReadRequest(messages, tools, choice, json_schema)


def _refuse_unsupported(body: ResponsesBody) -> None:
    if body.previous_response_id is not None or body.conversation is not None:
        field = "previous_response_id" if body.previous_response_id is not None else "conversation"
        raise UserError(f"{field} is not supported: this gateway keeps no responses (every answer says \"store\": "
                        "false); send the whole conversation in 'input', earlier output items included")
    if body.background:
        raise UserError("background responses are not supported: this gateway keeps no responses to poll; "
                        "send background false (or stream: true to see the answer as it is made)")
    if body.prompt is not None:
        raise UserError("prompt (a stored prompt template) is not supported: this gateway stores no prompts; "
                        "send the text in 'instructions' and 'input'")
    if body.top_logprobs:
        raise UserError("top_logprobs is not supported by /v1/responses on this gateway; send 0 or leave it out")
    wanted = [item for item in body.include or () if item not in _HARMLESS_INCLUDES]
    if wanted:
        raise UserError(f"include {wanted} is not supported: this gateway returns no logprobs, search results or "
                        "images; leave include out")


def _format_schema(text: dict[str, Any] | None) -> str | None:
    """``text.format``: ``text`` (free text), ``json_object`` or ``json_schema`` (its ``schema``)."""
    text_format = (text or {}).get("format") or {"type": "text"}
    kind = text_format.get("type") if isinstance(text_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_JSON_OBJECT
    if kind == "json_schema":
        schema = text_format.get("schema")
        if not isinstance(schema, dict):
            raise ValueError('text.format.schema must be a JSON Schema object, e.g. {"type": "json_schema", '
                             '"name": "answer", "schema": {"type": "object"}}')
        return schema_text(schema, "text.format.schema")
    raise ValueError(f"text.format.type must be 'text', 'json_object' or 'json_schema'; got {kind!r}")


class _Conversation:
    """``instructions`` and ``input`` read into chat turns, with the calls seen so far, so that each
    ``function_call_output`` answers a call an earlier item made."""

    def __init__(self, instructions: str | None) -> None:
        self.turns: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
        self.calls: dict[str, str] = {}  # call id -> function name
        self.characters = 0

    def read(self, raw: str | list[Any]) -> tuple[dict[str, Any], ...]:
        items = [{"type": "message", "role": "user", "content": raw}] if isinstance(raw, str) else raw
        if not items:
            raise ValueError("input is empty: send a string or at least one message item")
        for i, item in enumerate(items):
            self._item(item, f"input[{i}]")
        if self.characters > _MAX_TEXT:
            raise ValueError(f"input holds more than {_MAX_TEXT} characters of text")
        if not any(turn["role"] != "system" for turn in self.turns):
            raise ValueError("input holds only system or developer messages: add a user message")
        return tuple(self.turns)

    def _item(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object: a message, function_call or function_call_output item")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            self._message(item, where)
        elif kind == "function_call":
            self._call(item, where)
        elif kind == "function_call_output":
            self._output(item, where)
        else:
            raise ValueError(f"{where}: items of type {kind!r} are not supported by this gateway (a local text model "
                             "with function tools); send message, function_call and function_call_output items")

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise ValueError(f"{where}.role must be 'user', 'assistant', 'system' or 'developer'; got {item.get('role')!r}")
        self._add({"role": role, "content": self._text(item.get("content"), f"{where}.content")})

    def _call(self, item: dict[str, Any], where: str) -> None:
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not call_id:
            raise ValueError(f"{where}.call_id is required: the id the model gave this call")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.name is required: the function the model called")
        call = {"id": call_id, "type": "function",
                "function": {"name": name, "arguments": call_arguments(item.get("arguments"), f"{where}.arguments")}}
        self.calls[call_id] = name
        self.characters += len(call["function"]["arguments"])
        last = self.turns[-1] if self.turns else None
        if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
            last["tool_calls"].append(call)  # calls made in one turn (parallel calls) stay one turn
        else:
            self._add({"role": "assistant", "content": "", "tool_calls": [call]})

    def _output(self, item: dict[str, Any], where: str) -> None:
        call_id = item.get("call_id")
        if call_id not in self.calls:
            declared = ", ".join(self.calls) or "none"
            raise ValueError(f"{where}: function_call_output for an unknown call_id {call_id!r}; the earlier "
                             f"function_call items in input declared: {declared}")
        output = item.get("output")
        text = output if isinstance(output, str) else self._text(output, f"{where}.output")
        self._add({"role": "tool", "tool_call_id": call_id, "name": self.calls[call_id], "content": text})

    def _text(self, content: Any, where: str) -> str:
        """A message's content as text: a string, or text parts (``input_text``, ``output_text``)."""
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise ValueError(f"{where} must be a string or a list of input_text parts")
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
                raise ValueError(f"{where}[{j}]: parts of type {kind!r} are not supported: this gateway serves text "
                                 "models; send input_text parts ({\"type\": \"input_text\", \"text\": …})")
            texts.append(part["text"])
        return "".join(texts)

    def _add(self, turn: dict[str, Any]) -> None:
        self.characters += len(turn["content"])
        self.turns.append(turn)
