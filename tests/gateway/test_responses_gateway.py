"""``POST /v1/responses`` as the real ``openai`` client speaks it, against one real gateway serving the
shipped SmolLM2 through llama.cpp: whole and streamed answers, instructions, function tools and a
second turn with their results, structured output, and every request it cannot serve refused with a
400 in OpenAI's shape that stores nothing and trips no breaker.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support import free_port

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway import Gateway
from registry.gateway.background import gateway_in_background
from registry.gateway.openai_api.responses_wire import ResponsesWire
from registry.settings import get_settings

pytestmark = pytest.mark.e2e
QUESTION = "What is the capital of France?"
WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                           "unit": {"type": "string", "enum": ["C", "F"]}},
                          "required": ["city"], "additionalProperties": False}}

UNGRAMMATICAL = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "nope"}}}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path, shipped) -> Iterator[tuple[str, Gateway]]:
    home = tmp_path_factory.mktemp("responses-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, port=free_port(), queue_depth=4, keep_alive_s=600)
    catalog = Catalog(settings)
    smollm2 = shipped[0]
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-embed", capabilities=["embedding"])
    catalog.register(smollm2.path, name="smollm2-text", capabilities=["text-generation"])  # no chat, no tools
    routes = Routes(catalog)
    routes.promote("qa", "smollm2-135m", 1, force=True)
    routes.promote("vectors", "smollm2-embed", 1, force=True)  # a champion that cannot chat
    routes.promote("plain", "smollm2-text", 1, force=True)  # nor call tools
    with gateway_in_background(settings) as running:
        yield running


@pytest.fixture(scope="module")
def url(served) -> str:
    return served[0]


@pytest.fixture(scope="module")
def gateway(served) -> Gateway:
    return served[1]


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_a_string_input_answers_a_response_the_client_reads(url: str, client: openai.OpenAI, gateway: Gateway) -> None:
    raw = client.responses.with_raw_response.create(model="qa", input=QUESTION, max_output_tokens=24, temperature=0)
    response = raw.parse()
    assert response.object == "response" and response.model == "qa"
    assert response.status in ("completed", "incomplete") and response.output_text.strip()
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant" and message.content[0].type == "output_text"
    assert response.usage.input_tokens > 5 and 0 < response.usage.output_tokens <= 24
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    call_id = raw.headers["x-arbiter-call-id"]
    assert response.id == f"resp_{call_id}" and raw.headers["x-arbiter-model"] == "smollm2-135m/1"
    gateway.recorder.flush()
    row = gateway.store.query(f"select api, route, ok, completion_tokens from calls where call_id = '{call_id}'")
    assert row == [{"api": "openai", "route": "qa", "ok": True, "completion_tokens": response.usage.output_tokens}]
    feedback = httpx.post(f"{url}/arbiter/feedback", json={"call_id": response.id, "thumbs": "up", "source": "app"})
    assert feedback.status_code == 200 and feedback.json()["call_id"] == call_id  # the response id names the call


def test_instructions_and_message_items_reach_the_prompt(client: openai.OpenAI) -> None:
    instructed = client.responses.create(model="qa", input=QUESTION, instructions="Answer in one word.",
                                         max_output_tokens=4, temperature=0)
    longer = client.responses.create(model="qa", input=QUESTION, max_output_tokens=4, temperature=0,
                                     instructions="Answer in one word, and never more than one word.")
    assert instructed.instructions == "Answer in one word."
    assert longer.usage.input_tokens == instructed.usage.input_tokens + 7  # the instructions are in the prompt
    parts = client.responses.create(
        model="qa", max_output_tokens=4, temperature=0,
        input=[{"role": "developer", "content": "Answer in one word."},
               {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is the capital"},
                                                               {"type": "input_text", "text": " of France?"}]}])
    assert parts.output_text == instructed.output_text  # the same turns, spelled as items and parts
    assert parts.usage.input_tokens == instructed.usage.input_tokens


def test_a_stream_assembles_to_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="qa", input=QUESTION, max_output_tokens=32, temperature=0)
    with client.responses.stream(model="qa", input=QUESTION, max_output_tokens=32, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response() if whole.status == "completed" else None
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] == ("response.completed" if whole.status == "completed" else "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == whole.output_text
    assert events[-1].response.output_text == whole.output_text
    if final is not None:
        assert final.output_text == whole.output_text and final.id == events[0].response.id


def test_max_output_tokens_makes_the_response_incomplete_whole_and_streamed(client: openai.OpenAI) -> None:
    cut = client.responses.create(model="qa", input="Write a long story about a dragon.", max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 3 and cut.output[0].status == "incomplete"
    events = list(client.responses.create(model="qa", input="Write a long story about a dragon.",
                                          max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_structured_output_through_text_format(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    response = client.responses.create(
        model="qa", input=QUESTION, max_output_tokens=48, temperature=0,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}})
    assert isinstance(json.loads(response.output_text)["city"], str)
    assert response.text.format.type == "json_schema"


def test_a_required_tool_is_called_with_valid_arguments(client: openai.OpenAI) -> None:
    response = client.responses.create(model="qa", input="What is the weather in Paris?", tools=[WEATHER],
                                       tool_choice="required", max_output_tokens=64, temperature=0)
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and all(call.name == "get_weather" for call in calls)
    _assert_weather_arguments(json.loads(calls[0].arguments))
    assert calls[0].call_id.startswith("call_") and calls[0].id.startswith("fc_") and calls[0].status == "completed"
    assert response.output_text == "" and response.tools[0].name == "get_weather"
    assert response.tool_choice == "required"


def test_a_streamed_tool_call_assembles_as_the_client_reads_it(client: openai.OpenAI) -> None:
    with client.responses.stream(model="qa", input="What is the weather in Rome?", tools=[WEATHER],
                                 tool_choice={"type": "function", "name": "get_weather"},
                                 max_output_tokens=64, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    done = next(event for event in events if event.type == "response.function_call_arguments.done")
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "get_weather" and call.arguments == done.arguments
    _assert_weather_arguments(json.loads(call.arguments))
    assert final.tool_choice.name == "get_weather"


def test_a_function_call_output_turn_gets_a_text_answer(client: openai.OpenAI) -> None:
    first = client.responses.create(model="qa", input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice="required", max_output_tokens=64, temperature=0)
    call = next(item for item in first.output if item.type == "function_call")
    history: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"},
                          *[item.model_dump(exclude_none=True) for item in first.output],
                          {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature_c": 21}'}]
    second = client.responses.create(model="qa", input=history, tools=[WEATHER], tool_choice="none",
                                     max_output_tokens=32, temperature=0)
    assert second.output[0].type == "message" and second.output_text.strip()
    bare = client.responses.create(model="qa", input=history[:1], tools=[WEATHER], tool_choice="none",
                                   max_output_tokens=1, temperature=0)
    assert second.usage.input_tokens > bare.usage.input_tokens + 10  # the call and its result were in the prompt


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
     "input[0].content[0]: parts of type 'input_image' are not supported"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}, {"role": "user", "content": "Hi"}]},
     "input[0]: items of type 'reasoning' are not supported"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "items of type 'item_reference' are not supported"),
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type is 'web_search'"),
    ({"input": "Hi", "previous_response_id": "resp_1"}, "previous_response_id is not supported"),
    ({"input": "Hi", "conversation": "conv_1"}, "conversation is not supported"),
    ({"input": "Hi", "background": True}, "background responses are not supported"),
    ({"input": "Hi", "include": ["message.output_text.logprobs"]}, "include ['message.output_text.logprobs']"),
    ({"input": []}, "input is empty"),
    ({"input": [{"role": "system", "content": "Be brief."}]}, "add a user message"),
    ({"input": [{"role": "user", "content": "Hi"},
                {"type": "function_call_output", "call_id": "call_nobody", "output": "21"}]},
     "input[1]: function_call_output for an unknown call_id 'call_nobody'"),
    ({"input": [{"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{not json"}]},
     "input[0].arguments is not JSON text"),
    ({"input": "Hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}},
     "names function 'get_time', which is not declared"),
    ({"input": "Hi", "tool_choice": "required"}, "needs tools, and none were declared"),
    ({"input": "Hi", "tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice must be"),
    ({"input": "Hi", "tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]},
     "declared more than once: f"),
    ({"input": "Hi", "tools": [UNGRAMMATICAL], "tool_choice": "required"},
     "tool 'f': its parameters cannot be turned into a grammar"),  # the provider's refusal, after resolution
    ({"input": "Hi", "tools": [WEATHER], "text": {"format": {"type": "json_object"}}}, "one answer cannot be both"),
    ({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema must be"),
    ({"input": "Hi", "max_output_tokens": 10**6}, "max_output_tokens must be between 1 and"),
    ({"input": "Hi", "temperature": 3}, "temperature"),
    ({"input": 42}, "input"),
    ({"input": ["Hi"]}, "input[0] must be an object: a message, function_call or function_call_output item"),
    ({"model": "vectors", "input": "Hi"}, "cannot do 'chat'"),
    ({"model": "plain", "input": "Hi", "tools": [WEATHER]}, "plain is served by smollm2-text/1, which cannot call tools"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_REQUESTS, ids=[m[:40] for _, m in BAD_REQUESTS])
def test_a_request_it_cannot_serve_is_a_400_in_openais_shape(url: str, body: dict[str, Any], expected: str) -> None:
    answer = httpx.post(f"{url}/v1/responses", json={"model": "qa", **body}, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert expected in error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]
    assert (error["type"], error["code"]) == ("invalid_request_error", 400) and "param" in error


def test_refusals_store_nothing_and_trip_no_breaker(url: str, client: openai.OpenAI, gateway: Gateway) -> None:
    gateway.recorder.flush()
    before = gateway.store.query("select count(*) as n from calls")[0]["n"]
    for _ in range(4):  # more than breaker_failures: a caller's mistake must not open it
        with pytest.raises(openai.BadRequestError, match="unknown call_id"):
            client.responses.create(model="qa", input=[{"role": "user", "content": "Hi"}, {
                "type": "function_call_output", "call_id": "call_x", "output": "1"}])
        with pytest.raises(openai.BadRequestError, match="cannot be turned into a grammar"):  # refused in the provider
            client.responses.create(model="qa", input="Hi", tools=[UNGRAMMATICAL], tool_choice="required", stream=True)
    missing = httpx.get(f"{url}/v1/responses/resp_0123")
    assert missing.status_code == 404 and "keeps no responses" in missing.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-route", input="Hi")
    gateway.recorder.flush()
    assert gateway.store.query("select count(*) as n from calls")[0]["n"] == before
    assert {i["breaker"] for i in gateway.pool.snapshot()} == {"closed"}


def _assert_weather_arguments(arguments: dict[str, Any]) -> None:
    """What the grammar guarantees: the declared keys, the required one present, each of its type."""
    assert set(arguments) <= {"city", "unit"} and isinstance(arguments["city"], str)
    assert arguments.get("unit", "C") in ("C", "F")


def test_a_stream_that_fails_after_its_status_ends_with_response_failed() -> None:
    """A fault mid-stream (after the 200 went out) cannot be caused on one healthy gateway, so the
    transport here is a fake that replays exactly the bytes ``ResponsesWire`` writes for a stream
    that fails after its first fragment; the real ``openai`` client reads them."""
    wire = ResponsesWire("0" * 32, 1_700_000_000, "qa", {"tools": [], "tool_choice": "auto",
                                                        "parallel_tool_calls": True})
    body = b"".join([*wire.opening(), wire.fragment("Par"), wire.error("qa's instance failed mid-stream")])

    def replay(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    fake = openai.OpenAI(base_url="http://fake/v1", api_key="unused", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(replay)))
    events = list(fake.responses.create(model="qa", input="Hi", stream=True))
    assert [event.type for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.message == "qa's instance failed mid-stream"
    assert failed.error.code == "server_error" and failed.id == events[0].response.id
