"""Tool calling for a GGUF model: the tools told in the system prompt, the conversation rendered for a
chat template that knows nothing of tools, the answer decoded under a grammar, and parsed back into calls.

The call format is the one SmolLM2-Instruct was trained on (its model card; Ollama's SmolLM2 template
says the same): the functions listed as JSON in ``<tools></tools>`` in the system prompt, and an
answer of ``<tool_call>[{"name": …, "arguments": {…}}, …]</tool_call>`` — an empty list when no
function is needed. A result goes back as a user turn wrapped in ``<tool_response></tool_response>``;
that is also the one form every template accepts (Gemma's allows only alternating user/model turns),
so each result is still rendered by the model's own template.

The grammar does the rest: built by llama.cpp's JSON-Schema converter from a schema whose items are
``{"name": <const>, "arguments": <the tool's parameters>}``, it makes a call always a call to a
declared function with arguments that fit its schema. Under ``auto`` the model answers in that format
too and may answer ``[]``; the provider then asks again without tools for a text answer. Letting the
grammar choose between a call and free text instead was tried: told "answer in plain text when no
function fits", SmolLM2-135M answered in text 10 times out of 10, calling nothing even for "What is the
weather in Paris?"; in its trained format it called the right function 5 times out of 5 (and answered
``[]`` for 2 of 5 questions no function fits).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

from registry.errors import UserError
from registry.providers.base import GenerationRequest, Tool, ToolCall, new_call_id

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"


# --------------------------------------------------------------------------- the prompt


def tools_prompt(tools: tuple[Tool, ...], choice: str) -> str:
    """The system-prompt block that tells the model its functions and how to call them, in the
    words SmolLM2 was trained on (what to do when no function fits depends on ``choice``)."""
    listed = json.dumps([{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": json.loads(t.parameters)}}
                         for t in tools], ensure_ascii=False)
    if choice == "auto":
        rule = "If no function call is needed, please make the tool calls an empty list '[]'."
    elif choice == "required":
        rule = "You must call at least one of the functions."
    else:
        rule = f"You must call the function {choice}."
    return (
        "You are an expert in composing functions. You are given a question and a set of possible functions.\n"
        "Based on the question, you will need to make one or more function/tool calls to achieve the purpose.\n"
        "If the given question lacks the parameters required by the function, also point it out.\n\n"
        f"You have access to the following tools:\n<tools>{listed}</tools>\n\n"
        "The output MUST strictly adhere to the following format, and NO other text MUST be included.\n"
        f"The example format is as follows. Please make sure the parameter type is correct. {rule}\n"
        f'{CALL_OPEN}[\n{{"name": "func_name1", "arguments": {{"argument1": "value1", "argument2": "value2"}}}},\n'
        f"(more tool calls as required)\n]{CALL_CLOSE}"
    )


def chat_messages(request: GenerationRequest, *, system_role: bool = True) -> list[dict[str, str]]:
    """``request.messages`` as plain ``{"role", "content"}`` turns any chat template renders (see
    :func:`render_history`), the tools' block merged into the system message when the model is to
    call (one system message: some templates allow no second).

    ``system_role`` False: the chat format drops system messages (llama-cpp-python's ``gemma``
    does, silently), so the system text, the tools' block with it, opens the first user turn, as
    Gemma's own template places it."""
    turns = render_history(request.messages, as_calls=request.uses_tools)
    system = [turns.pop(0)["content"]] if turns and turns[0]["role"] == "system" else []
    if request.uses_tools:
        system.append(tools_prompt(request.tools, request.tool_choice))
    if not system:
        return turns
    text = "\n\n".join(system)
    if system_role:
        return [{"role": "system", "content": text}, *turns]
    first_user = next((i for i, turn in enumerate(turns) if turn["role"] == "user"), None)
    if first_user is None:
        return [{"role": "user", "content": text}, *turns]
    turns[first_user] = {"role": "user", "content": f"{text}\n\n{turns[first_user]['content']}"}
    return turns


def render_history(messages: Iterable[dict[str, Any]], *, as_calls: bool) -> list[dict[str, str]]:
    """Past calls and their results as assistant and user turns.

    ``as_calls`` (the model is to call, the tools' block in its prompt): in the trained format,
    ``<tool_call>[…]</tool_call>`` and ``<tool_response>…</tool_response>``. Otherwise (a text
    answer) in words: ``Calling get_weather({"city": "Paris"}).`` and ``get_weather returned: …``.
    Shown the tags without the block that explains them, SmolLM2 answered by repeating the
    ``<tool_response>``; in words it used the result ("a high of 18 degrees Celsius and sunny").
    Consecutive results, and a user turn right after them, join one user turn: a template that
    insists on alternating roles, as Gemma's does, would refuse two user turns in a row."""
    turns: list[dict[str, str]] = []
    names: dict[str, str] = {}  # call id → function, to say whose result a tool turn is
    merge_next = False  # the last turn is a rendered tool result: a user turn may join it
    for message in messages:
        role = str(message.get("role", ""))
        content = _text(message.get("content"))
        if role == "assistant" and message.get("tool_calls"):
            made = _calls_made(message["tool_calls"])
            names.update((call_id, name) for call_id, name, _ in made if call_id)
            calls = call_text(made) if as_calls else " ".join(f"Calling {name}({json.dumps(arguments)})."
                                                              for _, name, arguments in made)
            turns.append({"role": "assistant", "content": f"{content}\n{calls}" if content else calls})
            merge_next = False
        elif role == "tool":
            name = message.get("name") or names.get(str(message.get("tool_call_id")), "the function")
            result = f"<tool_response>\n{content}\n</tool_response>" if as_calls else f"{name} returned: {content}"
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


def call_text(made: Iterable[tuple[str | None, str, Any]]) -> str:
    """Calls as the model writes them."""
    listed = [{"name": name, "arguments": arguments} for _, name, arguments in made]
    return f"{CALL_OPEN}{json.dumps(listed, ensure_ascii=False)}{CALL_CLOSE}"


def _calls_made(tool_calls: Iterable[Any]) -> list[tuple[str | None, str, Any]]:
    """``(id, name, arguments)`` of an assistant turn's calls; ``arguments`` may come as JSON text
    (OpenAI) or an object (Ollama), and are returned as the object where the text parses."""
    made = []
    for call in tool_calls:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                pass  # shown as the text it is: the model made it, the history keeps it
        made.append((call.get("id") if isinstance(call, dict) else None, str(function.get("name", "")), arguments))
    return made


def repeats_history(calls: tuple[ToolCall, ...], messages: Iterable[dict[str, Any]]) -> bool:
    """Whether every call was already made, with the same arguments, earlier in the conversation.

    Under ``auto`` such an answer is taken as "no function is needed": its result is already there,
    and a model that calls again after seeing it (SmolLM2 did, every time) would keep an agent
    loop calling forever instead of answering."""
    before = {(name, json.dumps(arguments, sort_keys=True))
              for message in messages if message.get("role") == "assistant" and message.get("tool_calls")
              for _, name, arguments in _calls_made(message["tool_calls"])}
    return bool(calls) and all((c.name, json.dumps(json.loads(c.arguments), sort_keys=True)) in before
                               for c in calls)


def _text(content: Any) -> str:
    """A turn's content as text: None (an assistant turn that only called) is empty."""
    return "" if content is None else str(content)


# --------------------------------------------------------------------------- the grammar

# Calls in one answer, at most. A small model decoding greedily can repeat a call until max_tokens;
# agents rarely ask for more than a few at once.
MAX_CALLS = 4
# What the grammar allows where a tool's schema sets no bound: a string's characters, an array's items.
# Decoding greedily, SmolLM2 ran away inside 11 of 140 required or named calls (an email body repeating
# one sentence, a URL counting years, an array of one date) until max_tokens cut the call, so no call
# came. A shorter string or array still fits the schema; a schema's own maxLength / maxItems wins.
MAX_STRING_CHARS = 256
MAX_ARRAY_ITEMS = 8


@functools.lru_cache(maxsize=64)
def grammar_text(tools: tuple[Tool, ...], choice: str, parallel: bool) -> str:
    """The GBNF grammar the answer is decoded under (built once per tools and choice: the converter
    costs milliseconds). ``auto`` allows the empty list; ``required`` one call or more; a named
    function exactly one call to it; ``parallel`` False at most one. ``UserError`` naming the tool
    when its schema cannot be a grammar, so the request fails as the caller's mistake before any
    decoding, and no breaker hears of it."""
    from llama_cpp.llama_grammar import SchemaConverter  # lazy: importing llama_cpp loads the native library

    chosen = tools if choice in ("auto", "required") else tuple(t for t in tools if t.name == choice)
    converter = SchemaConverter(prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False,
                                raw_pattern=False)
    items = []
    for index, tool in enumerate(chosen):
        try:
            # Each tool's "#/…" references resolve within its own schema (under its own URL).
            parameters = converter.resolve_refs(_object_schema(tool, index), f"tool{index}")
        except (ValueError, KeyError, TypeError, AssertionError, RecursionError) as exc:
            raise _unexpressible(tool, exc) from None
        items.append({"type": "object", "properties": {"name": {"const": tool.name}, "arguments": parameters},
                      "required": ["name", "arguments"]})
    one_call = choice not in ("auto", "required") or not parallel
    calls = {"type": "array", "items": {"anyOf": items}, "minItems": 1, "maxItems": 1 if one_call else MAX_CALLS}
    try:
        converter.visit(calls, "tool-calls")
    except (ValueError, KeyError, TypeError, AssertionError, RecursionError) as exc:
        raise _unexpressible(_culprit(chosen), exc) from None
    listed = '(tool-calls | "[" space "]" space)' if choice == "auto" else "tool-calls"
    return f'root ::= "{CALL_OPEN}" "\\n"? {listed} "\\n"? "{CALL_CLOSE}"\n{converter.format_grammar()}'


def _object_schema(tool: Tool, index: int) -> dict[str, Any]:
    """The tool's parameters as the grammar is built from them: bounded (:func:`_bounded`), and its
    definitions renamed ``tool<index>-<name>``: the converter names a referenced rule by the last
    part of its path alone, so two tools' ``#/$defs/v`` would both decode as whichever came first."""
    schema = json.loads(tool.parameters)
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise ValueError("parameters must be a JSON Schema of type object")
    text = json.dumps(_bounded(schema))
    for section in ("$defs", "definitions"):
        for name in schema.get(section) or {}:
            text = text.replace(json.dumps(f"#/{section}/{name}"), json.dumps(f"#/{section}/tool{index}-{name}"))
    renamed = json.loads(text)
    for section in ("$defs", "definitions"):
        if isinstance(renamed.get(section), dict):
            renamed[section] = {f"tool{index}-{name}": value for name, value in renamed[section].items()}
    return renamed


def _bounded(schema: Any) -> Any:
    """``schema`` with :data:`MAX_STRING_CHARS` on free strings and :data:`MAX_ARRAY_ITEMS` on arrays
    that set no bound of their own (a string with an enum, a pattern or a format is bounded already)."""
    if isinstance(schema, list):
        return [_bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: value if key in ("enum", "const", "default", "examples") else _bounded(value)
               for key, value in schema.items()}
    free = not any(key in schema for key in ("enum", "const", "pattern", "format", "maxLength"))
    if schema.get("type") == "string" and free:
        bounded["maxLength"] = max(MAX_STRING_CHARS, int(schema.get("minLength", 0)))
    if schema.get("type") == "array" and "maxItems" not in schema and "prefixItems" not in schema:
        bounded["maxItems"] = max(MAX_ARRAY_ITEMS, int(schema.get("minItems", 0)))
    return bounded


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
    return UserError(f"tool {tool.name!r}: its parameters cannot be turned into a grammar "
                     f"({exc or type(exc).__name__}); use a JSON Schema object of objects, arrays, strings, "
                     "numbers, booleans and enums")


# --------------------------------------------------------------------------- the answer


def parse_calls(text: str) -> tuple[tuple[ToolCall, ...], bool]:
    """The calls in an answer decoded under :func:`grammar_text`, and whether the answer was whole.

    An answer cut short by ``max_tokens`` keeps the calls it completed (each fits its schema: the
    grammar saw it through); the one cut mid-way is dropped. ``arguments`` are re-serialized as
    compact JSON text, as OpenAI sends them; the grammar lets raw control characters into strings,
    which the parser takes (``strict=False``) and the re-serialization escapes.
    """
    body = text.strip()
    whole = body.endswith(CALL_CLOSE)
    listed = body.removeprefix(CALL_OPEN).removesuffix(CALL_CLOSE).strip()
    decoder = json.JSONDecoder(strict=False)
    calls: list[ToolCall] = []
    at = 1 if listed.startswith("[") else len(listed)  # past "["; nothing to read when even that is missing
    while at < len(listed):
        while at < len(listed) and listed[at] in " \n,":
            at += 1
        if at >= len(listed) or listed[at] == "]":
            break
        try:
            call, at = decoder.raw_decode(listed, at)
        except json.JSONDecodeError:
            break  # the call cut short
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or "arguments" not in call:
            break  # not a call: text that did not come from the grammar
        arguments = json.dumps(call["arguments"], ensure_ascii=False, separators=(",", ":"))
        calls.append(ToolCall(id=new_call_id(), name=call["name"], arguments=arguments))
    return tuple(calls), whole
