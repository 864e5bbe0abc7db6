"""Tool calling as every API speaks it, checked and translated once: the declared tools, the
``tool_choice``, the history of calls and their results, and the calls an answer carries.

Each API has its own spelling — OpenAI's chat nests ``{"type": "function", "function": {...}}``
and its Responses API flattens it; Ollama sends a call's arguments as an object and has no call
ids — but a request means the same thing in all of them, so the checks live here and the wire
modules only unwrap their shape. Every check runs before any model does: a malformed tool, a
``tool_choice`` naming an undeclared function, or a tool result answering no call the history
made is the caller's mistake (a 400), never a backend failure that would count against a breaker.

The functions raise ``ValueError`` with the place and the fix in the message, so they fit a
pydantic validator (which turns it into the API's one-line 400) as well as plain code.

Example::

    tools = parse_tools(body["tools"])                             # chat: [{"type": "function", "function": {...}}]
    choice = parse_tool_choice(body.get("tool_choice"), tools)      # "auto" | "none" | "required" | a name
    messages = link_tool_results(messages, strict_ids=True)         # each tool turn names the call it answers
    wire_calls = openai_tool_calls(generation.tool_calls)           # the answer's message.tool_calls
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from registry.gateway.structured import schema_text
from registry.providers import Tool, ToolCall
from registry.providers.base import TOOL_CHOICES, new_call_id

MAX_TOOLS = 128  # OpenAI's own limit: a client that works there works here
_EMPTY_PARAMETERS: dict[str, Any] = {"properties": {}, "type": "object"}


class ToolingBody:
    """What both APIs' chat bodies say about tools once validated: a mixin over the private ``_tools``
    and ``_turns`` each body's validator sets, and its ``messages`` (each with ``tool_calls`` and ``role``)."""

    _tools: tuple[Tool, ...]
    _turns: tuple[dict[str, Any], ...]
    messages: Sequence[Any]

    @property
    def declared_tools(self) -> tuple[Tool, ...]:
        return self._tools

    @property
    def turns(self) -> tuple[dict[str, Any], ...]:
        """The messages as providers take them, each tool result linked to its call."""
        return self._turns

    @property
    def involves_tools(self) -> bool:
        """Whether answering needs a version that can call tools: tools declared, or calls in the history."""
        return bool(self._tools) or any(m.tool_calls or m.role == "tool" for m in self.messages)


def parse_tools(raw: Sequence[Any] | None, *, nested: bool = True, where: str = "tools") -> tuple[Tool, ...]:
    """The declared functions: ``nested`` for chat's ``{"type": "function", "function": {name, …}}``
    (OpenAI and Ollama), flat for the Responses API's ``{"type": "function", name, …}``."""
    if not raw:
        return ()
    if len(raw) > MAX_TOOLS:
        raise ValueError(f"{where}: {len(raw)} tools declared; at most {MAX_TOOLS}")
    tools = []
    for i, entry in enumerate(raw):
        place = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{place} must be an object like {{\"type\": \"function\", \"function\": {{\"name\": …}}}}")
        kind = entry.get("type", "function")
        if kind != "function":
            raise ValueError(f"{place}.type is {kind!r}: only 'function' tools can be called here "
                             "(built-in tools such as web search are not served by a local model)")
        function = entry.get("function") if nested else entry
        if not isinstance(function, dict):
            raise ValueError(f"{place}.function must be an object with at least a 'name'")
        tools.append(parse_function(function, f"{place}.function" if nested else place))
    names = [tool.name for tool in tools]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{where}: each function needs its own name; declared more than once: {', '.join(duplicates)}")
    return tuple(tools)


def parse_function(function: dict[str, Any], where: str) -> Tool:
    """One function: its name, description and parameters (a JSON Schema for an object).
    ``strict`` is accepted and always honoured where the grammar can express the schema: a GGUF
    version's calls are decoded under it, so they fit whether or not the client asked."""
    name = function.get("name")
    if not isinstance(name, str):
        raise ValueError(f"{where}.name is required: a string of 1-64 letters, digits, '_' or '-'")
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise ValueError(f"{where}.description must be a string")
    parameters = function.get("parameters")
    parameters = _EMPTY_PARAMETERS if parameters is None or parameters == {} else parameters
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise ValueError(f"{where}.parameters must be a JSON Schema for an object, "
                         'e.g. {"type": "object", "properties": {"city": {"type": "string"}}}')
    try:
        return Tool(name=name, description=description, parameters=schema_text(parameters, f"{where}.parameters"))
    except ValueError as exc:
        raise ValueError(f"{where}.name: {exc}") from None


def parse_tool_choice(raw: Any, tools: Sequence[Tool], *, where: str = "tool_choice") -> str:
    """``auto`` (text or a call), ``none``, ``required`` or one function's name, from OpenAI's
    spellings: a string, chat's ``{"type": "function", "function": {"name"}}`` or the Responses
    API's ``{"type": "function", "name"}``. Absent means ``auto``; ``auto`` and ``none`` without
    tools are harmless and accepted (clients send them by default)."""
    if raw is None:
        return "auto"
    if isinstance(raw, str):
        if raw not in TOOL_CHOICES:
            raise ValueError(f"{where} must be 'auto', 'none', 'required' or "
                             f'{{"type": "function", "function": {{"name": …}}}}; got {raw!r}')
        choice = raw
    elif isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else raw.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f'{where} names no function: send {{"type": "function", "function": {{"name": …}}}}')
        choice = name
    else:
        raise ValueError(f"{where} must be 'auto', 'none', 'required' or "
                         f'{{"type": "function", "function": {{"name": …}}}}; got {json.dumps(raw)[:200]}')
    declared = [tool.name for tool in tools]
    if choice in ("auto", "none"):
        return choice
    if not tools:
        raise ValueError(f"{where} {choice!r} needs tools, and none were declared: send 'tools' or drop {where}")
    if choice != "required" and choice not in declared:
        raise ValueError(f"{where} names function {choice!r}, which is not declared in tools; "
                         f"declared: {', '.join(declared)}")
    return choice


def call_arguments(arguments: Any, where: str) -> str:
    """A call's arguments as the compact JSON text of an object: OpenAI sends text, Ollama an object."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(f"{where} is not JSON text: send the arguments object as JSON, e.g. '{{\"city\": \"Paris\"}}'") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"{where} must be a JSON object of the function's arguments")
    return json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


def history_call(call_id: str | None, name: Any, arguments: Any, where: str) -> dict[str, Any]:
    """One call of an earlier assistant turn, in the shape providers take (``GenerationRequest.messages``).
    A call without an id (Ollama's) gets one minted, so its result can be linked to it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.function.name is required: the function the assistant called")
    return {"id": call_id or new_call_id(), "type": "function",
            "function": {"name": name, "arguments": call_arguments(arguments, f"{where}.function.arguments")}}


def link_tool_results(messages: Iterable[dict[str, Any]], *, strict_ids: bool) -> tuple[dict[str, Any], ...]:
    """The turns, each tool result linked to the earlier call it answers (``tool_call_id``, plus the
    function's ``name``, which templates that render results by name need).

    With ``strict_ids`` (OpenAI) a result must name a call id an earlier assistant turn declared.
    Without (Ollama, which has no ids), a result is matched by its id when it has a known one, else
    by ``tool_name`` to the first unanswered call of that function, else to the first unanswered
    call; a result with nothing left to answer is refused either way."""
    known: dict[str, str] = {}  # call id -> function name
    unanswered: list[str] = []  # call ids in the order they were made
    linked = []
    for i, message in enumerate(messages):
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or ():
                known[call["id"]] = call["function"]["name"]
                unanswered.append(call["id"])
        elif message.get("role") == "tool":
            call_id = _answered_call(message, i, known, unanswered, strict_ids=strict_ids)
            if call_id in unanswered:
                unanswered.remove(call_id)
            message = {**message, "tool_call_id": call_id, "name": known[call_id]}
            message.pop("tool_name", None)
        linked.append(message)
    return tuple(linked)


def _answered_call(message: dict[str, Any], i: int, known: dict[str, str], unanswered: list[str], *,
                   strict_ids: bool) -> str:
    call_id = message.get("tool_call_id")
    if call_id in known:
        return call_id
    if strict_ids:
        declared = ", ".join(known) or "none"
        raise ValueError(f"messages[{i}]: tool result for an unknown call id {call_id!r}; "
                         f"the earlier assistant turns' tool_calls declared: {declared}")
    name = message.get("tool_name") or message.get("name")
    by_name = [c for c in unanswered if known[c] == name]
    if by_name or unanswered:
        return (by_name or unanswered)[0]
    raise ValueError(f"messages[{i}]: a tool result with no earlier tool call left to answer; "
                     "put the assistant turn with its tool_calls before the tool results")


def openai_tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """An answer's calls as OpenAI's ``message.tool_calls`` (arguments as JSON text)."""
    return [{"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in calls]


def arguments_object(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as an object, as Ollama sends them."""
    return json.loads(call.arguments) if call.arguments.strip() else {}
