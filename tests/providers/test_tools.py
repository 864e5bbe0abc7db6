"""Tool calling's pure parts (registry/providers/tools.py and the request's checks): the prompt, the
history rendered for templates that know nothing of tools, the grammar (parsed by llama.cpp itself,
on SmolLM2's vocabulary) and the parse of an answer back into calls."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from registry.catalog.shipped import smollm2_path
from registry.errors import UserError
from registry.providers import GenerationRequest, Tool
from registry.providers import tools as tooling
from registry.providers.base import new_call_id

pytestmark = pytest.mark.unit

ASK = ({"role": "user", "content": "What is the weather in Paris?"},)


def schema(properties: dict, required: list[str] | None = None, **extra) -> str:
    return json.dumps({"type": "object", "properties": properties, "required": required or [], **extra},
                      sort_keys=True)


WEATHER = Tool("get_weather", "The weather in a city", schema(
    {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}, ["city"]))
ADD = Tool("add", "Add two numbers", schema({"a": {"type": "number"}, "b": {"type": "integer"}}, ["a", "b"]))


@pytest.fixture(scope="module")
def vocab() -> Iterator[object]:
    """SmolLM2's vocabulary alone (0.1 s): what llama.cpp parses a grammar against."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(smollm2_path()), vocab_only=True, verbose=False)
    yield llm._model.vocab
    llm.close()


def parses(vocab: object, grammar: str) -> bool:
    """Whether llama.cpp's own parser takes the grammar (its sampler is NULL when it does not)."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


# --- the request's checks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "has space", "dots.not.allowed", "x" * 65, "naïve"])
def test_a_tool_name_must_be_what_openai_allows(name: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        Tool(name)


def test_tool_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique; declared: add, add"):
        GenerationRequest(messages=ASK, tools=(ADD, ADD))


def test_a_named_choice_must_be_a_declared_tool() -> None:
    with pytest.raises(ValueError, match="'search', which is not a declared tool; declared: get_weather, add"):
        GenerationRequest(messages=ASK, tools=(WEATHER, ADD), tool_choice="search")


@pytest.mark.parametrize("choice", ["required", "add"])
def test_a_call_cannot_be_required_without_tools(choice: str) -> None:
    with pytest.raises(ValueError, match="needs tools; none were declared"):
        GenerationRequest(messages=ASK, tool_choice=choice)


def test_tools_need_a_chat() -> None:
    with pytest.raises(ValueError, match="tools need messages="):
        GenerationRequest(prompt="Weather?", tools=(WEATHER,))


def test_a_tool_result_must_answer_a_call_made_before_it() -> None:
    made = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}]}
    result = {"role": "tool", "tool_call_id": "call_1", "content": "3"}
    GenerationRequest(messages=(*ASK, made, result), tools=(ADD,))  # fine
    with pytest.raises(ValueError, match=r"answers call id 'call_9', which no earlier assistant turn made "
                                         r"\(calls made: call_1\)"):
        GenerationRequest(messages=(*ASK, made, {**result, "tool_call_id": "call_9"}), tools=(ADD,))
    with pytest.raises(ValueError, match=r"calls made: none"):
        GenerationRequest(messages=(*ASK, result), tools=(ADD,))
    GenerationRequest(messages=(*ASK, made, {"role": "tool", "content": "3"}))  # Ollama's results carry no id


def test_none_shows_the_model_no_tools() -> None:
    request = GenerationRequest(messages=ASK, tools=(WEATHER,), tool_choice="none")
    assert not request.uses_tools
    assert tooling.chat_messages(request) == list(ASK)


# --- the prompt and the history -------------------------------------------------------------------


def test_the_tools_join_an_existing_system_message_rather_than_add_a_second() -> None:
    system = {"role": "system", "content": "You are terse."}
    turns = tooling.chat_messages(GenerationRequest(messages=(system, *ASK), tools=(WEATHER, ADD)))
    assert [t["role"] for t in turns] == ["system", "user"]
    assert turns[0]["content"].startswith("You are terse.\n\n")
    listed = re.search(r"<tools>(.*)</tools>", turns[0]["content"]).group(1)
    assert [f["function"]["name"] for f in json.loads(listed)] == ["get_weather", "add"]
    assert json.loads(listed)[0]["function"]["parameters"] == json.loads(WEATHER.parameters)
    assert "empty list '[]'" in turns[0]["content"]  # auto: the model may say no function is needed


@pytest.mark.parametrize(("choice", "rule"), [("required", "You must call at least one of the functions."),
                                              ("add", "You must call the function add.")])
def test_the_prompt_says_what_the_choice_demands(choice: str, rule: str) -> None:
    (system, _) = tooling.chat_messages(GenerationRequest(messages=ASK, tools=(WEATHER, ADD), tool_choice=choice))
    assert rule in system["content"] and "'[]'" not in system["content"]


def test_without_a_system_role_the_system_text_opens_the_first_user_turn() -> None:
    system = {"role": "system", "content": "You are terse."}
    turns = tooling.chat_messages(GenerationRequest(messages=(system, *ASK), tools=(WEATHER,)), system_role=False)
    assert [t["role"] for t in turns] == ["user"]
    assert turns[0]["content"].startswith("You are terse.\n\nYou are an expert in composing functions.")
    assert turns[0]["content"].endswith("\n\nWhat is the weather in Paris?")


HISTORY = (
    *ASK,
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]},
    {"role": "tool", "tool_call_id": "call_a", "content": "18 C, sunny"},
    {"role": "tool", "tool_call_id": "call_b", "content": "3"},
    {"role": "user", "content": "Thanks. And tomorrow?"},
)


def test_calls_and_results_render_in_the_trained_format_when_the_model_is_to_call() -> None:
    turns = tooling.render_history(HISTORY, as_calls=True)
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]  # alternating, as Gemma insists
    assert turns[1]["content"] == ('<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
                                   '{"name": "add", "arguments": {"a": 1, "b": 2}}]</tool_call>')
    assert turns[2]["content"] == ("<tool_response>\n18 C, sunny\n</tool_response>\n"
                                   "<tool_response>\n3\n</tool_response>\n\nThanks. And tomorrow?")


def test_calls_and_results_render_in_words_for_a_text_answer() -> None:
    turns = tooling.chat_messages(GenerationRequest(messages=HISTORY, tools=(WEATHER, ADD), tool_choice="none"))
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == 'Calling get_weather({"city": "Paris"}). Calling add({"a": 1, "b": 2}).'
    assert turns[2]["content"] == "get_weather returned: 18 C, sunny\nadd returned: 3\n\nThanks. And tomorrow?"
    ollama = tooling.render_history((HISTORY[1], {"role": "tool", "content": "3", "name": "add"}), as_calls=False)
    assert ollama[1]["content"] == "add returned: 3"  # no id: the turn's own name


def test_a_call_already_made_with_the_same_arguments_repeats_the_history() -> None:
    again = tooling.parse_calls('<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>')[0]
    other = tooling.parse_calls('<tool_call>[{"name": "get_weather", "arguments": {"city": "Rome"}}]</tool_call>')[0]
    assert tooling.repeats_history(again, HISTORY)
    assert not tooling.repeats_history(other, HISTORY) and not tooling.repeats_history(again + other, HISTORY)
    assert not tooling.repeats_history(again, ASK) and not tooling.repeats_history((), HISTORY)


def test_a_call_id_has_openais_shape() -> None:
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids)


# --- the grammar -----------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["auto", "required", "add", "get_weather"])
@pytest.mark.parametrize("parallel", [True, False])
def test_every_grammar_parses_in_llama_cpp(vocab: object, choice: str, parallel: bool) -> None:
    assert parses(vocab, tooling.grammar_text((WEATHER, ADD), choice, parallel))


def test_what_the_schema_leaves_unbounded_the_grammar_bounds() -> None:
    """A free string or array gets a bound (a small model ran away inside them until max_tokens); a
    schema's own bounds, enums, patterns and formats stay as they are."""
    tool = Tool("t", parameters=schema({
        "free": {"type": "string"}, "long": {"type": "string", "minLength": 300}, "capped": {"type": "string",
        "maxLength": 5}, "day": {"type": "string", "format": "date"}, "pick": {"type": "string", "enum": ["a", "b"]},
        "list": {"type": "array", "items": {"type": "string"}}, "few": {"type": "array", "maxItems": 2}}))
    bounded = json.loads(json.dumps(tooling._object_schema(tool, 0)))["properties"]
    assert bounded["free"]["maxLength"] == tooling.MAX_STRING_CHARS and bounded["long"]["maxLength"] == 300
    assert bounded["capped"]["maxLength"] == 5 and "maxLength" not in bounded["day"] | bounded["pick"]
    assert bounded["list"] == {"type": "array", "items": {"type": "string", "maxLength": tooling.MAX_STRING_CHARS},
                               "maxItems": tooling.MAX_ARRAY_ITEMS}
    assert bounded["few"]["maxItems"] == 2


def test_named_allows_only_that_function_once_and_auto_allows_the_empty_list() -> None:
    named = tooling.grammar_text((WEATHER, ADD), "add", True)
    assert '"\\"add\\""' in named and "get_weather" not in named
    assert named.startswith('root ::= "<tool_call>" "\\n"? tool-calls "\\n"? "</tool_call>"')
    assert '"]"' in named and '"," space' not in named.split("tool-calls ::=")[1].splitlines()[0]
    auto = tooling.grammar_text((WEATHER, ADD), "auto", True)
    assert auto.startswith('root ::= "<tool_call>" "\\n"? (tool-calls | "[" space "]" space) "\\n"? "</tool_call>"')
    calls_rule = auto.split("tool-calls ::=")[1].splitlines()[0]
    assert calls_rule.count("tool-calls-item") == tooling.MAX_CALLS  # at most MAX_CALLS calls
    single = tooling.grammar_text((WEATHER, ADD), "required", False)
    assert single.split("tool-calls ::=")[1].splitlines()[0].count("tool-calls-item") == 1


def test_each_tools_references_resolve_within_its_own_schema(vocab: object) -> None:
    city = Tool("city", parameters=json.dumps({"type": "object", "$defs": {"v": {"type": "string"}},
                                               "properties": {"x": {"$ref": "#/$defs/v"}}, "required": ["x"]}))
    count = Tool("count", parameters=json.dumps({"type": "object", "$defs": {"v": {"type": "integer"}},
                                                 "properties": {"x": {"$ref": "#/$defs/v"}}, "required": ["x"]}))
    grammar = tooling.grammar_text((city, count), "required", True)
    assert parses(vocab, grammar)
    # each x is its own tool's v (the converter names a rule by the path's last part: "v" twice collided)
    assert "tool-calls-item-0-arguments-x ::= tool0-v\n" in grammar and 'tool0-v ::= "\\"" (char' in grammar
    assert "tool-calls-item-1-arguments-x ::= integer\n" in grammar


@pytest.mark.parametrize(("parameters", "why"), [
    ('{"type": "string"}', "of type object"),
    ('{"type": "object", "properties": {"x": {"type": "decimal"}}}', "Unrecognized schema"),
    ('{"type": "object", "properties": {"x": {"$ref": "https://example.com/s.json"}}}', "Fetching remote schemas"),
    ('{"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}', "Error resolving ref"),
])
def test_a_schema_the_grammar_cannot_express_is_the_callers_error_naming_the_tool(parameters: str, why: str) -> None:
    broken = Tool("broken", parameters=parameters)
    with pytest.raises(UserError, match=rf"tool 'broken': its parameters cannot be turned into a grammar \(.*{why}"):
        tooling.grammar_text((WEATHER, broken), "auto", True)


# --- the answer ------------------------------------------------------------------------------------


def test_a_whole_answer_parses_into_calls_with_compact_arguments() -> None:
    calls, whole = tooling.parse_calls('<tool_call>\n[{"name": "get_weather", "arguments": {"city": "Par\nis"}}, '
                                       '{"name": "add", "arguments": {"a": 1.5, "b": 2}}]\n</tool_call>')
    assert whole
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city":"Par\\nis"}'), ("add", '{"a":1.5,"b":2}')]
    assert len({c.id for c in calls}) == 2


def test_an_answer_cut_short_keeps_the_calls_it_completed() -> None:
    calls, whole = tooling.parse_calls('<tool_call>[{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "ad')
    assert not whole and [(c.name, c.arguments) for c in calls] == [("add", '{"a":1,"b":2}')]
    assert tooling.parse_calls('<tool_call>[{"name": "add", "argum') == ((), False)


def test_the_empty_list_and_plain_text_are_no_calls() -> None:
    assert tooling.parse_calls("<tool_call>\n[]\n</tool_call>") == ((), True)
    assert tooling.parse_calls("Paris is sunny.") == ((), False)
    assert tooling.parse_calls('<tool_call>[{"nom": "x"}]</tool_call>') == ((), True)
