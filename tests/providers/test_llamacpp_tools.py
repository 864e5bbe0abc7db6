"""Tool calling on the real shipped models (SmolLM2-135M Q4_1, Gemma 3 270M): every required call is a
valid call to a declared function, auto decides, a result turn gets a text answer, streamed equals whole,
the calls row counts the calls, and a bad schema is the caller's 400 that leaves the breaker closed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import pytest

from registry.catalog.versions import Catalog
from registry.errors import UserError
from registry.providers import Generation, GenerationRequest, Provider, Tool
from registry.results.recorder import Recorder
from registry.results.store import ResultsStore
from registry.serving.breaker import BreakerState
from registry.serving.calls import measured_call
from registry.serving.dispatcher import Dispatcher
from registry.serving.pool import WarmPool
from registry.serving.router import Resolution
from registry.settings import Settings
from registry.spec import Hardware, ModelSpec, VersionRecord

pytestmark = pytest.mark.integration


def schema(properties: dict, required: list[str]) -> str:
    return json.dumps({"type": "object", "properties": properties, "required": required}, sort_keys=True)


WEATHER = Tool("get_weather", "Get the current weather in a city", schema(
    {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}, ["city"]))
ADD = Tool("add", "Add two numbers", schema({"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"]))
EMAIL = Tool("send_email", "Send an email", schema(
    {"to": {"type": "string"}, "subject": {"type": "string"}, "urgent": {"type": "boolean"}}, ["to", "subject"]))
TOOLS = (WEATHER, ADD, EMAIL)


def ask(question: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": question},)


ANSWERED = (
    *ask("What is the weather in Paris?"),
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees Celsius and sunny"},
)


def assert_valid_calls(generation: Generation, declared: tuple[Tool, ...], *, our_ids: bool = True) -> None:
    """Each call names a declared function and its arguments validate against that function's schema
    (``our_ids``: made by us, OpenAI's shape; a remote server's own ids are kept as they are)."""
    assert generation.tool_calls and generation.finish_reason == "tool_calls" and generation.text == ""
    schemas = {tool.name: json.loads(tool.parameters) for tool in declared}
    for call in generation.tool_calls:
        assert call.name in schemas
        jsonschema.validate(json.loads(call.arguments), schemas[call.name])
        assert call.id.startswith("call_") and (len(call.id) == 29 or not our_ids)


@pytest.fixture
def smollm2(catalog: Catalog, shipped) -> VersionRecord:
    return catalog.register(shipped[0].path, name=shipped[0].name, capabilities=list(shipped[0].capabilities))[0]


@pytest.fixture
def provider(smollm2: VersionRecord, session_pool: WarmPool) -> Provider:
    return session_pool.get(smollm2)


def drain(stream) -> tuple[list[str], Generation]:
    fragments: list[str] = []
    while True:
        try:
            fragments.append(next(stream))
        except StopIteration as done:
            return fragments, done.value


@pytest.mark.parametrize("question", [
    "Email bob@example.com that the meeting moved.",  # strings and a boolean (weather, add: the tests below)
    "Tell me a joke about cats.",  # no function fits: required still makes a valid call
])
def test_required_is_always_a_valid_call_to_a_declared_function(provider: Provider, question: str) -> None:
    assert_valid_calls(provider.generate(GenerationRequest(
        messages=ask(question), tools=TOOLS, tool_choice="required", max_tokens=64)), TOOLS)


def test_a_named_choice_calls_that_function_once_whatever_was_asked(provider: Provider) -> None:
    generation = provider.generate(GenerationRequest(
        messages=ask("What is the weather in Paris?"), tools=TOOLS, tool_choice="add", max_tokens=64))
    assert_valid_calls(generation, TOOLS)
    assert [call.name for call in generation.tool_calls] == ["add"]


def test_auto_calls_when_a_function_fits_and_answers_in_text_when_none_does(provider: Provider) -> None:
    fits = provider.generate(GenerationRequest(messages=ask("What is the weather in Paris?"), tools=TOOLS,
                                               max_tokens=64))
    assert_valid_calls(fits, TOOLS)
    assert [(c.name, json.loads(c.arguments)["city"]) for c in fits.tool_calls] == [("get_weather", "Paris")]
    joke = provider.generate(GenerationRequest(messages=ask("Tell me a joke about cats."), tools=TOOLS,
                                               max_tokens=24))
    assert joke.text.strip() and not joke.tool_calls and joke.finish_reason in ("stop", "length")


def test_none_is_plain_chat_without_the_tools_in_the_prompt(provider: Provider) -> None:
    question = ask("What is the weather in Paris?")
    none = provider.generate(GenerationRequest(messages=question, tools=TOOLS, tool_choice="none", max_tokens=16))
    plain = provider.generate(GenerationRequest(messages=question, max_tokens=16))
    assert none.text == plain.text and not none.tool_calls and none.prompt_tokens == plain.prompt_tokens


def test_a_tool_result_gets_a_text_answer_that_uses_it(provider: Provider) -> None:
    answer = provider.generate(GenerationRequest(messages=ANSWERED, tools=TOOLS, max_tokens=40))
    assert not answer.tool_calls and "18" in answer.text, answer.text


@pytest.mark.parametrize(("messages", "choice"), [(ask("Add 2 and 3."), "required"),
                                                  (ANSWERED, "auto")])  # a call; a held repeat, then streamed text
def test_streamed_equals_whole_and_a_call_is_never_streamed(provider: Provider, messages, choice: str) -> None:
    request = GenerationRequest(messages=messages, tools=TOOLS, tool_choice=choice, max_tokens=24)
    whole = provider.generate(request)
    fragments, streamed = drain(provider.stream(request))
    assert "".join(fragments) == streamed.text == whole.text
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [(c.name, c.arguments) for c in whole.tool_calls]
    assert streamed.finish_reason == whole.finish_reason
    if whole.tool_calls:
        assert fragments == [] and 0 < streamed.time_to_first_token_ms < streamed.generation_ms
    assert not any("<tool" in f for f in fragments)


def test_a_call_cut_by_max_tokens_leaks_nothing_and_auto_answers_in_text(provider: Provider) -> None:
    cut = provider.generate(GenerationRequest(messages=ask("Add 17 and 25."), tools=TOOLS, tool_choice="required",
                                              max_tokens=6))
    assert (cut.text, cut.tool_calls, cut.finish_reason) == ("", (), "length")
    auto = provider.generate(GenerationRequest(messages=ask("Add 17 and 25."), tools=TOOLS, max_tokens=6))
    assert auto.text and not auto.tool_calls and "<" not in auto.text  # auto: then a text answer


def test_gemma_renders_a_tool_turn_through_its_own_format(catalog: Catalog, shipped, session_pool: WarmPool) -> None:
    gemma = shipped[2]
    record = catalog.register(gemma.path, name=gemma.name, capabilities=list(gemma.capabilities),
                              chat_format=gemma.chat_format)[0]
    provider = session_pool.get(record)
    assert_valid_calls(provider.generate(GenerationRequest(messages=ask("What is the weather in Paris?"),
                                                           tools=TOOLS, tool_choice="required", max_tokens=64)), TOOLS)
    # Gemma's format drops system turns and any role but user/model: the result must still reach the prompt
    without = provider.generate(GenerationRequest(messages=ANSWERED[:1], tools=TOOLS, tool_choice="none",
                                                  max_tokens=4))
    answered = provider.generate(GenerationRequest(messages=ANSWERED, tools=TOOLS, tool_choice="none", max_tokens=4))
    assert answered.prompt_tokens > without.prompt_tokens + 10
    told = provider.generate(GenerationRequest(messages=ANSWERED[:1], tools=TOOLS, tool_choice="required",
                                               max_tokens=1))
    assert told.prompt_tokens > without.prompt_tokens + 150  # the tools' block opened the user turn


def test_a_calls_row_counts_the_calls(provider: Provider, smollm2: VersionRecord) -> None:
    called = measured_call(provider, smollm2, GenerationRequest(messages=ask("Add 2 and 3."), tools=TOOLS,
                                                                tool_choice="required", max_tokens=48), source="test")
    text = measured_call(provider, smollm2, GenerationRequest(messages=ask("Hi"), max_tokens=4), source="test")
    assert called.row["tool_calls"] == len(called.generation.tool_calls) >= 1
    assert text.row["tool_calls"] == 0


@pytest.fixture
def dispatcher(settings: Settings, session_pool: WarmPool) -> Iterator[tuple[Dispatcher, ResultsStore]]:
    store = ResultsStore(settings.results_dir)
    recorder = Recorder(store, flush_s=0.1)
    recorder.start()
    yield Dispatcher(session_pool, recorder), store
    recorder.close()


def test_bad_tools_are_the_callers_error_and_trip_no_breaker(
    dispatcher: tuple[Dispatcher, ResultsStore], smollm2: VersionRecord, session_pool: WarmPool
) -> None:
    served, store = dispatcher
    resolution = Resolution("qa", smollm2, route="qa")
    unexpressible = Tool("lookup", parameters='{"type": "object", "properties": {"id": {"type": "uuid7"}}}')
    bad = [GenerationRequest(messages=ask("Find item 7."), tools=(WEATHER, unexpressible)),
           GenerationRequest(messages=ask("Weather?"), tools=TOOLS, json_schema='{"type": "object"}')] * 2
    for request in bad:  # four in a row: three consecutive failures would open the breaker
        with pytest.raises(UserError, match=r"tool 'lookup': its parameters cannot|cannot be used together"):
            served.generate(resolution, request, api="openai")
    assert {i.breaker.state for i in session_pool.instances_of(smollm2)} == {BreakerState.CLOSED}
    answer = served.generate(resolution, GenerationRequest(messages=ask("Add 2 and 3."), tools=TOOLS,
                                                           tool_choice="required", max_tokens=48), api="openai")
    assert answer.generation.tool_calls
    served._recorder.flush()
    rows = store.query("select tool_calls, ok from calls")
    assert rows == [{"tool_calls": len(answer.generation.tool_calls), "ok": True}]  # the bad ones stored nothing


def test_every_gguf_chat_version_can_call_tools_tagged_or_not(catalog: Catalog, shipped) -> None:
    """Versions are immutable: one registered before the capability existed lacks the tag, yet our grammar
    needs nothing from the file, so it can call tools; a served model can only when registered with it."""
    untagged = catalog.register(shipped[0].path, name="older", capabilities=["chat", "text-generation"])[0]
    tagged = catalog.register(shipped[0].path, name="newer")[0]
    embedder = catalog.register(shipped[0].path, name="vectors", capabilities=["embedding"])[0]
    served = ModelSpec(name="served", kind="openai", source="m", base_url="http://127.0.0.1:8000/v1",
                       context_window=2048, capabilities=("chat", "text-generation"), hardware=Hardware(min_memory_mb=0))
    assert "tools" in tagged.spec.capabilities and "tools" not in untagged.spec.capabilities
    assert untagged.spec.can_call_tools and tagged.spec.can_call_tools
    assert not embedder.spec.can_call_tools and not served.can_call_tools
    assert [r.name for r in catalog.list_versions(capability="tools")] == ["newer", "older"]
