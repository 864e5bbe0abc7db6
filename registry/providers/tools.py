"""Tool calling for a GGUF model: the tools told in the system prompt, the conversation rendered for a
chat template that knows nothing of tools, the answer decoded under a grammar, and parsed back into calls.

The call format is the one SmolLM2-Instruct was trained on (its model card; Ollama's SmolLM2 template
says the same): the functions listed as JSON in ``<tools></tools>`` in the system prompt, and an
answer of ``<tool_call>[{"name": …, "arguments": {…}}, …]</tool_call>``. A result goes back as a user
turn wrapped in ``<tool_response></tool_response>``; that is also the one form every template accepts
(Gemma's allows only alternating user/model turns), so each result is still rendered by the model's own
template.

The grammar does the rest: built by llama.cpp's JSON-Schema converter from a schema whose items are
``{"name": <const>, "arguments": <the tool's parameters>}``, it makes a required call always a call to
a declared function with arguments that fit its schema. Under ``auto`` the answer is a call or free
text, and free text may not begin with the call's ``<`` (nor with white space), so the first character
decides which it is: text is streamed from there, a call is held back and parsed whole.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable
from typing import Any

from registry.errors import UserError
from registry.providers.base import GenerationRequest, Tool, ToolCall

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"


def new_call_id() -> str:
    """OpenAI's shape: ``call_`` and 24 hex characters."""
    return "call_" + uuid.uuid4().hex[:24]


# --------------------------------------------------------------------------- the prompt


def tools_prompt(tools: tuple[Tool, ...], choice: str) -> str:
    """The system-prompt block that tells the model its functions and how to call them."""
    listed = json.dumps([{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": json.loads(t.parameters)}}
                         for t in tools], ensure_ascii=False)
    if choice == "auto":
        rule = "If none of the functions fits the question, answer it in plain text instead, without any tags."
    elif choice == "required":
        rule = "You must call at least one of the functions."
    else:
        rule = f"You must call the function {choice}."
    return (
        "You are an expert in composing functions. You are given a question and a set of possible functions.\n"
        "Based on the question, make the function calls that achieve its purpose.\n"
        f"You have access to the following tools:\n<tools>{listed}</tools>\n"
        "To call functions, answer with only this format and no other text:\n"
        f'{CALL_OPEN}[{{"name": "func_name1", "arguments": {{"argument1": "value1"}}}}]{CALL_CLOSE}\n'
        f"{rule}"
    )


def chat_messages(request: GenerationRequest) -> list[dict[str, str]]:
    """``request.messages`` as plain ``{"role", "content"}`` turns any chat template renders: the
    tools' block merged into the system message (one system message; some templates allow no
    second), past calls as their call text, results as ``<tool_response>`` user turns."""
    turns = render_history(request.messages)
    if not request.uses_tools:
        return turns
    block = tools_prompt(request.tools, request.tool_choice)
    if turns and turns[0]["role"] == "system":
        return [{"role": "system", "content": f"{turns[0]['content']}\n\n{block}"}, *turns[1:]]
    return [{"role": "system", "content": block}, *turns]


def render_history(messages: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Assistant calls become ``<tool_call>[…]</tool_call>`` text and tool results user turns
    (consecutive results, and a user turn right after them, merged into one: a template that
    insists on alternating roles, as Gemma's does, would refuse two user turns in a row)."""
    turns: list[dict[str, str]] = []
    merge_next = False  # the last turn is a rendered tool result: a user turn may join it
    for message in messages:
        role = str(message.get("role", ""))
        content = _text(message.get("content"))
        if role == "assistant" and message.get("tool_calls"):
            calls = call_text(message["tool_calls"])
            turns.append({"role": "assistant", "content": f"{content}\n{calls}" if content else calls})
            merge_next = False
        elif role == "tool":
            result = f"<tool_response>\n{content}\n</tool_response>"
            if merge_next:
                turns[-1]["content"] += "\n" + result
            else:
                turns.append({"role": "user", "content": result})
            merge_next = True
        elif role == "user" and merge_next:
            turns[-1]["content"] += "\n\n" + content
            merge_next = False
        else:
            turns.append({"role": role, "content": content})
            merge_next = False
    return turns


def call_text(tool_calls: Iterable[Any]) -> str:
    """Calls as the model writes them; ``arguments`` may be JSON text (OpenAI) or an object (Ollama)."""
    calls = []
    for call in tool_calls:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                pass  # shown as the text it is: the model made it, the history keeps it
        calls.append({"name": function.get("name", ""), "arguments": arguments})
    return f"{CALL_OPEN}{json.dumps(calls, ensure_ascii=False)}{CALL_CLOSE}"


def _text(content: Any) -> str:
    """A turn's content as text: None (an assistant turn that only called) is empty."""
    return "" if content is None else str(content)


# --------------------------------------------------------------------------- the grammar


@functools.lru_cache(maxsize=64)
def grammar_text(tools: tuple[Tool, ...], choice: str, parallel: bool) -> str:
    """The GBNF grammar the answer is decoded under (built once per tools and choice: the converter
    costs milliseconds). ``UserError`` naming the tool when its schema cannot be a grammar, so the
    request fails as the caller's mistake before any decoding and no breaker hears of it."""
    from llama_cpp.llama_grammar import SchemaConverter  # lazy: importing llama_cpp loads the native library

    chosen = tools if choice in ("auto", "required") else tuple(t for t in tools if t.name == choice)
    converter = SchemaConverter(prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False,
                                raw_pattern=False)
    items = []
    for index, tool in enumerate(chosen):
        try:
            # Each tool's "#/…" references resolve within its own schema (under its own URL).
            parameters = converter.resolve_refs(_object_schema(tool), f"tool{index}")
        except (ValueError, KeyError, TypeError, AssertionError, RecursionError) as exc:
            raise _unexpressible(tool, exc) from None
        items.append({"type": "object", "properties": {"name": {"const": tool.name}, "arguments": parameters},
                      "required": ["name", "arguments"]})
    one_call = choice not in ("auto", "required") or not parallel
    calls = {"type": "array", "items": {"anyOf": items}, "minItems": 1, **({"maxItems": 1} if one_call else {})}
    try:
        converter.visit(calls, "tool-calls")
    except (ValueError, KeyError, TypeError, AssertionError, RecursionError) as exc:
        raise _unexpressible(_culprit(chosen), exc) from None
    call = f'"{CALL_OPEN}" tool-calls "{CALL_CLOSE}"'
    if choice == "auto":
        # Text may not start with "<" (the call's opener) nor with white space (a call after a
        # newline would then be text); after its first character anything goes.
        root = f"root ::= {call} | [^<\\x00-\\x20] [^\\x00]*"
    else:
        root = f"root ::= {call}"
    return f"{root}\n{converter.format_grammar()}"


def _object_schema(tool: Tool) -> dict[str, Any]:
    schema = json.loads(tool.parameters)
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise ValueError("parameters must be a JSON Schema of type object")
    return schema


def _culprit(tools: tuple[Tool, ...]) -> Tool:
    """The first tool whose schema alone fails the converter (the union's error does not say which)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    for tool in tools:
        try:
            json_schema_to_gbnf(tool.parameters)
        except Exception:  # noqa: BLE001 — any failure names this tool
            return tool
    return tools[0]


def _unexpressible(tool: Tool, exc: BaseException) -> UserError:
    return UserError(f"tool {tool.name!r}: its parameters cannot be turned into a grammar ({exc or type(exc).__name__}); "
                     "use a JSON Schema object of objects, arrays, strings, numbers, booleans and enums")


# --------------------------------------------------------------------------- the answer


def parse_calls(text: str) -> tuple[ToolCall, ...]:
    """The calls in a finished answer (``()`` when it is not a whole call: text, or a call cut short
    by ``max_tokens``). ``arguments`` re-serialized as compact JSON text, as OpenAI sends it."""
    body = text.strip()
    if not (body.startswith(CALL_OPEN) and body.endswith(CALL_CLOSE)):
        return ()
    try:
        calls = json.loads(body[len(CALL_OPEN):-len(CALL_CLOSE)])
    except json.JSONDecodeError:
        return ()
    if not isinstance(calls, list):
        return ()
    parsed = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return ()
        arguments = json.dumps(call.get("arguments", {}), ensure_ascii=False, separators=(",", ":"))
        parsed.append(ToolCall(id=new_call_id(), name=call["name"], arguments=arguments))
    return tuple(parsed)


class CallSorter:
    """Sorts an answer decoded under :func:`grammar_text` as its fragments arrive: text passes on once
    its first character shows it is not a call; a call is held back until it is whole.

    Example::

        sorter = CallSorter()
        for fragment in fragments:
            yield sorter.feed(fragment)        # "" while a call is being held
        calls, rest = sorter.finish()          # the calls, or held text that is no call (cut short)
    """

    def __init__(self) -> None:
        self._held: list[str] = []
        self.is_call: bool | None = None  # None until the first character

    def feed(self, fragment: str) -> str:
        """What may be streamed now."""
        if self.is_call is None and fragment:
            self.is_call = fragment.lstrip().startswith("<")
        if self.is_call is False:
            return fragment
        self._held.append(fragment)
        return ""

    def finish(self) -> tuple[tuple[ToolCall, ...], str]:
        """The calls; and the held text when it was no whole call (a call cut by ``max_tokens``)."""
        held = "".join(self._held)
        calls = parse_calls(held) if self.is_call else ()
        return calls, "" if calls else held
