"""Tool calling on the wire, as clients use it: the real ``openai`` and ``ollama`` packages against
one real gateway on loopback, backed by real llama.cpp decoding SmolLM2 under the tools' grammar.

The route ``qa`` is served by SmolLM2 (a GGUF chat version: it can call tools); ``plain`` by the
same file registered for text generation only, which cannot. Every bad request is checked to be a
400 in its API's shape that leaves the breakers closed and writes no failed ``calls`` row.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import ollama
import openai
import pytest
from support import free_port

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway import Gateway
from registry.gateway.background import gateway_in_background
from registry.gateway.tooling import history_call, link_tool_results
from registry.settings import get_settings

pytestmark = pytest.mark.e2e
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 24}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_PARAMETERS = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 32}},
                   "required": ["timezone"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
                                            "parameters": WEATHER_PARAMETERS}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Get the current time in a timezone",
                                         "parameters": TIME_PARAMETERS}}
TOOLS = [WEATHER, TIME]
SCHEMAS = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME_PARAMETERS}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
SETTINGS = {"max_tokens": 64, "temperature": 0}  # a call here is under 40 tokens
TEXT = {"max_tokens": 16, "temperature": 0}  # a text answer: whether it is text, not how long


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path, shipped) -> Iterator[tuple[str, Gateway]]:
    home = tmp_path_factory.mktemp("tools-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, port=free_port(), keep_alive_s=600)
    catalog = Catalog(settings)
    q4_1 = shipped[0]
    catalog.register(q4_1.path, name="smollm2-135m", capabilities=list(q4_1.capabilities))
    catalog.register(q4_1.path, name="smollm2-text", capabilities=["text-generation"])  # no chat, no tools
    routes = Routes(catalog)
    routes.promote("qa", "smollm2-135m", 1, force=True)
    routes.promote("plain", "smollm2-text", 1, force=True)
    with gateway_in_background(settings) as running:
        yield running


def _valid(name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    """The call names a declared function and its arguments fit that function's schema."""
    assert name in SCHEMAS
    parsed = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
    jsonschema.validate(parsed, SCHEMAS[name])
    return parsed


def test_required_is_always_a_valid_call_to_a_declared_function(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="qa", messages=ASK, tools=TOOLS, tool_choice="required",
                                            parallel_tool_calls=False, **SETTINGS)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) == 29
    _valid(call.function.name, call.function.arguments)
    assert answer.usage.completion_tokens > 0


def test_a_named_choice_calls_that_function(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="qa", messages=ASK, tools=TOOLS, **SETTINGS,
                                            tool_choice={"type": "function", "function": {"name": "get_time"}})
    (call,) = answer.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    _valid("get_time", call.function.arguments)


def test_auto_lets_the_model_choose_a_call_or_text_and_none_answers_text(client: openai.OpenAI) -> None:
    """At temperature 0 on the shipped weights SmolLM2 calls the weather tool for the weather. Where no
    tool fits, a 135M model may still call one (it does here; the measured rates over many prompts are
    benchmarks/tool_calls.py's): either way the answer is text or a valid call, never the call format."""
    called = client.chat.completions.create(model="qa", messages=ASK, tools=TOOLS, **SETTINGS).choices[0]
    assert called.finish_reason == "tool_calls" and called.message.content is None
    assert [call.function.name for call in called.message.tool_calls] == ["get_weather"]
    _valid("get_weather", called.message.tool_calls[0].function.arguments)
    sea = [{"role": "user", "content": "Write one sentence about the sea."}]
    told = client.chat.completions.create(model="qa", messages=sea, tools=TOOLS, **SETTINGS).choices[0]
    if told.message.tool_calls:
        assert told.finish_reason == "tool_calls" and told.message.content is None
        for call in told.message.tool_calls:
            _valid(call.function.name, call.function.arguments)
    else:
        assert told.message.content and "<tool_call>" not in told.message.content
    text = client.chat.completions.create(model="qa", messages=ASK, tools=TOOLS, tool_choice="none", **TEXT)
    assert text.choices[0].message.content and not text.choices[0].message.tool_calls
    assert text.choices[0].finish_reason in ("stop", "length") and "<tool_call>" not in text.choices[0].message.content


def test_a_streamed_call_assembles_in_the_clients_stream_helpers_to_the_whole_answer(client: openai.OpenAI) -> None:
    strict = [{"type": "function", "function": {**tool["function"], "strict": True}} for tool in TOOLS]
    whole = client.chat.completions.create(model="qa", messages=ASK, tools=strict, tool_choice="required", **SETTINGS)
    with client.chat.completions.stream(model="qa", messages=ASK, tools=strict, tool_choice="required",
                                        stream_options={"include_usage": True}, **SETTINGS) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events and "content.delta" not in events
    (expected,), (streamed,) = whole.choices[0].message.tool_calls, final.choices[0].message.tool_calls
    assert (streamed.function.name, streamed.function.arguments) == (expected.function.name, expected.function.arguments)
    assert streamed.function.parsed_arguments == json.loads(expected.function.arguments)  # strict: the client parsed it
    assert final.choices[0].finish_reason == "tool_calls" and final.choices[0].message.content is None
    assert final.usage.completion_tokens == whole.usage.completion_tokens

    chunks = list(client.chat.completions.create(model="qa", messages=ASK, tools=TOOLS, tool_choice="required",
                                                 stream=True, **SETTINGS))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant" and deltas[0].content is None
    first, rest = deltas[1].tool_calls[0], deltas[2].tool_calls[0]
    assert (first.index, first.id, first.type, first.function.name, first.function.arguments) == (
        0, first.id, "function", expected.function.name, "")
    assert rest.index == 0 and rest.id is None and rest.function.arguments == expected.function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_a_second_turn_with_the_tool_result_gets_a_text_answer(client: openai.OpenAI, gateway: Gateway) -> None:
    first = client.chat.completions.create(model="qa", messages=ASK, tools=TOOLS, tool_choice="required", **SETTINGS)
    message = first.choices[0].message
    history = [*ASK, message.model_dump(exclude_none=True),
               *({"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'}
                 for call in message.tool_calls)]
    answer = client.chat.completions.with_raw_response.create(model="qa", messages=history, tools=TOOLS,
                                                              tool_choice="none", **TEXT)
    text = answer.parse().choices[0].message
    assert text.content and not text.tool_calls
    streamed = client.chat.completions.create(model="qa", messages=history, tools=TOOLS, tool_choice="none",
                                              stream=True, **TEXT)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text.content
    gateway.recorder.flush()
    (row,) = gateway.store.query(f"select ok, tool_calls from calls where call_id = '{first.id.removeprefix('chatcmpl-')}'")
    assert row == {"ok": True, "tool_calls": len(message.tool_calls)}  # a call is counted in its row
    (row,) = gateway.store.query(f"select tool_calls from calls where call_id = '{answer.headers['x-arbiter-call-id']}'")
    assert row["tool_calls"] == 0


def test_a_tool_call_is_not_offered_to_live_scoring_and_a_text_answer_is(client: openai.OpenAI,
                                                                          gateway: Gateway) -> None:
    """A call is no text for the task's scorers: scored, it would read as a wrong answer."""
    before = gateway.live_scorer.counters()["offered"]
    client.chat.completions.create(model="qa", messages=ASK, tools=TOOLS, tool_choice="required", **SETTINGS)
    assert gateway.live_scorer.counters()["offered"] == before
    client.chat.completions.create(model="qa", messages=ASK, tools=TOOLS, tool_choice="none", **TEXT)
    assert gateway.live_scorer.counters()["offered"] == before + 1


def test_the_ollama_client_calls_tools_whole_and_streamed_then_reads_the_result(url: str) -> None:
    client = ollama.Client(host=url)
    assert "tools" in client.show("qa").capabilities and "tools" not in client.show("plain").capabilities
    options = {"num_predict": SETTINGS["max_tokens"], "temperature": 0}
    whole = client.chat(model="qa", messages=ASK, tools=TOOLS, options=options)
    assert whole.done and whole.done_reason == "stop"
    (call,) = whole.message.tool_calls  # auto: at temperature 0 SmolLM2 calls the weather tool for this question
    assert call.function.name == "get_weather" and whole.message.content == ""
    arguments = _valid(call.function.name, call.function.arguments)  # an object, as Ollama sends it
    chunks = list(client.chat(model="qa", messages=ASK, tools=TOOLS, options=options, stream=True))
    streamed = [c.message.tool_calls for c in chunks if c.message.tool_calls]
    assert len(streamed) == 1 and [(c.function.name, dict(c.function.arguments)) for c in streamed[0]] == [
        ("get_weather", arguments)]
    assert chunks[-1].done and chunks[-1].eval_count == whole.eval_count and not chunks[-1].message.tool_calls

    history = [*ASK, whole.message, {"role": "tool", "tool_name": "get_weather", "content": "18 degrees, clear sky"}]
    answer = client.chat(model="qa", messages=history, tools=TOOLS, options=options)  # room for a whole call
    assert answer.message.content and not answer.message.tool_calls  # the result was read: no second call


def test_ollama_results_are_linked_by_id_then_name_then_order_and_openai_only_by_id() -> None:
    """Ollama's calls have no ids (the gateway mints them): a result names its call by the id a client
    kept (LangChain), by ``tool_name``, or by its place; OpenAI's must name a declared id."""
    weather, clock = history_call(None, "get_weather", {"city": "Oslo"}, "m"), history_call(None, "get_time", "{}", "m")
    assert weather["id"].startswith("call_") and weather["function"]["arguments"] == '{"city":"Oslo"}'
    called = {"role": "assistant", "content": "", "tool_calls": [weather, clock]}

    def linked(*results: dict[str, Any], strict_ids: bool = False) -> list[tuple[str, str]]:
        turns = link_tool_results([{"role": "user", "content": "q"}, called, *results], strict_ids=strict_ids)
        return [(t["tool_call_id"], t["name"]) for t in turns if t["role"] == "tool"]

    by_name = linked({"role": "tool", "tool_name": "get_time", "content": "9:00"}, {"role": "tool", "content": "rain"})
    assert by_name == [(clock["id"], "get_time"), (weather["id"], "get_weather")]  # the second: the one left
    assert linked({"role": "tool", "content": "rain"}, {"role": "tool", "content": "9:00"}) == [
        (weather["id"], "get_weather"), (clock["id"], "get_time")]  # by order
    assert linked({"role": "tool", "tool_call_id": clock["id"], "content": "9:00"}, strict_ids=True) == [
        (clock["id"], "get_time")]
    with pytest.raises(ValueError, match="no earlier tool call left to answer"):
        linked(*({"role": "tool", "content": "x"},) * 3)
    with pytest.raises(ValueError, match="tool result for an unknown call id 'call_x'"):
        linked({"role": "tool", "tool_call_id": "call_x", "content": "9:00"}, strict_ids=True)


GOOD = {"role": "user", "content": "x"}
CALLED = {"role": "assistant", "content": None,
          "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/chat/completions", {"tools": [{"type": "code_interpreter"}]}, "only 'function' tools"),
        ("/v1/chat/completions", {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
         "tools[0].function.name"),
        ("/v1/chat/completions", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
         "parameters must be a JSON Schema for an object"),
        ("/v1/chat/completions", {"tools": [WEATHER, WEATHER]}, "declared more than once: get_weather"),
        ("/v1/chat/completions", {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "book"}}},
         "names function 'book', which is not declared in tools; declared: get_weather, get_time"),
        ("/v1/chat/completions", {"tool_choice": "required"}, "needs tools"),
        ("/v1/chat/completions", {"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice must be"),
        ("/v1/chat/completions", {"messages": [GOOD, CALLED, {"role": "tool", "tool_call_id": "call_9", "content": "1"}]},
         "tool result for an unknown call id 'call_9'"),
        ("/v1/chat/completions", {"messages": [GOOD, {"role": "tool", "content": "1"}]}, "needs 'tool_call_id'"),
        ("/v1/chat/completions", {"messages": [GOOD, {**CALLED, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{city"}}]}]}, "not JSON text"),
        ("/v1/chat/completions", {"tools": TOOLS, "response_format": {"type": "json_object"}}, "cannot be combined"),
        ("/v1/chat/completions", {"functions": [{"name": "f"}]}, "deprecated form of tool calling"),
        ("/v1/chat/completions", {"model": "plain", "tools": TOOLS},
         "plain is served by smollm2-text/1, which cannot call tools; promote a version that can"),
        ("/v1/chat/completions", {"tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "nope"}}}}}], "tool_choice": "required"},
         "tool 'f': its parameters cannot be turned into a grammar"),  # the provider's refusal: no breaker hears it
        ("/api/chat", {"tools": [{"type": "retrieval"}]}, "only 'function' tools"),
        ("/api/chat", {"tools": TOOLS, "format": "json"}, "'tools' and 'format' cannot be combined"),
        ("/api/chat", {"messages": [GOOD, {"role": "tool", "content": "18 degrees"}]}, "no earlier tool call left to answer"),
        ("/api/chat", {"model": "plain", "tools": TOOLS}, "which cannot call tools"),
        ("/api/chat", {"tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "nope"}}}}}]},
         "tool 'f': its parameters cannot be turned into a grammar"),
    ],
)
def test_bad_tool_requests_are_400s_in_the_apis_shape_that_trip_nothing(
    url: str, gateway: Gateway, path: str, body: dict[str, Any], message: str
) -> None:
    for stream in (False, True):
        request = {"model": "qa", "messages": [GOOD], "stream": stream, **body}
        answer = httpx.post(url + path, json=request, timeout=60)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        if path.startswith("/v1/"):
            assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
            error = error["message"]
        assert message in error and "\n" not in error
    assert {i["breaker"] for i in gateway.pool.snapshot()} == {"closed"}
    gateway.recorder.flush()
    assert gateway.store.query("select count(*) as n from calls where not ok")[0]["n"] == 0
