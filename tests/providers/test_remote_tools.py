"""Tools passed through the HTTP providers to real servers, and their calls parsed back: our own gateway
over both its APIs (the same version must call the same function with the same arguments as in-process),
and llama-cpp-python's OpenAI server with its ``chatml-function-calling`` format, a third party's wire."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from registry.catalog.shipped import smollm2_path
from registry.catalog.versions import Catalog
from registry.providers import GenerationRequest, Provider, provider_for
from tests.providers.test_llamacpp_tools import ANSWERED, TOOLS, ask, assert_valid_calls
from tests.providers.test_remote_providers import (
    LLAMA_CPP_SERVER,
    SERVED_NAME,
    SERVER_CONTEXT,
    Server,
    _free_port,
    drain,
    gateway,  # noqa: F401 — the module's own gateway (fixture)
    gateway_home,  # noqa: F401 — its registry (fixture)
    serving,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def calling_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """llama-cpp-python's server with its tool-calling chat format (ChatML, as SmolLM2's own)."""
    port = _free_port()
    command = [*LLAMA_CPP_SERVER, "--model", str(smollm2_path()), "--model_alias", SERVED_NAME,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(SERVER_CONTEXT), "--n_threads", "1",
               "--n_threads_batch", "1", "--interrupt_requests", "False", "--chat_format", "chatml-function-calling"]
    log = tmp_path_factory.mktemp("calling-server") / "server.log"
    with serving(command, port=port, ready_path="/v1/models", log=log, timeout_s=60) as server:
        yield server


def remote(catalog: Catalog, kind: str, url: str, source: str) -> Iterator[Provider]:
    record, _ = catalog.register_remote(kind=kind, name=f"tools-{kind}", source=source, base_url=url,
                                        context_window=SERVER_CONTEXT if kind == "openai" else None,
                                        capabilities=["chat", "text-generation", "tools"])
    assert record.spec.can_call_tools
    provider = provider_for(record.spec, n_threads=1, n_ctx=512)
    provider.load()
    yield provider
    provider.unload()


@pytest.fixture(params=["ollama", "openai"])
def through_gateway(request: pytest.FixtureRequest, catalog: Catalog, gateway: Server) -> Iterator[Provider]:  # noqa: F811
    yield from remote(catalog, request.param, gateway.url, "qa")


@pytest.mark.parametrize(("messages", "choice"), [(ask("Add 17 and 25."), "add"), (ANSWERED, "auto")])
def test_through_the_gateway_the_calls_are_the_models_own(
    through_gateway: Provider, catalog: Catalog, session_pool, messages, choice: str
) -> None:
    """Either API of the gateway carries the tools there and the calls back: the same function, the same
    arguments, the same text as the version in-process; a streamed answer holds the same."""
    local = session_pool.get(catalog.register(smollm2_path(), name="smollm2-135m")[0])
    request = GenerationRequest(messages=messages, tools=TOOLS, tool_choice=choice, max_tokens=40)
    served, direct = through_gateway.generate(request), local.generate(request)
    assert [(c.name, json.loads(c.arguments)) for c in served.tool_calls] == [
        (c.name, json.loads(c.arguments)) for c in direct.tool_calls]
    assert (served.text, served.finish_reason) == (direct.text, direct.finish_reason)
    assert all(c.id.startswith("call_") for c in served.tool_calls)
    fragments, streamed = drain(through_gateway.stream(request))
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [(c.name, c.arguments) for c in served.tool_calls]
    assert "".join(fragments) == streamed.text == served.text


def test_a_third_party_servers_streamed_calls_are_assembled(catalog: Catalog, calling_server: Server) -> None:
    """llama-cpp-python's server streams a named call as OpenAI does: id and name first, arguments in
    pieces. (Its chat format knows no ``required`` tool_choice: it asserts, answering 500.)"""
    for provider in remote(catalog, "openai", f"{calling_server.url}/v1", SERVED_NAME):
        request = GenerationRequest(messages=ask("What is the weather in Paris?"), tools=TOOLS,
                                    tool_choice="get_weather", max_tokens=48)
        fragments, generation = drain(provider.stream(request))
        assert_valid_calls(generation, TOOLS, our_ids=False)
        assert [c.name for c in generation.tool_calls] == ["get_weather"] and fragments == []
        answered = provider.generate(GenerationRequest(messages=ANSWERED, tools=TOOLS, tool_choice="none",
                                                       max_tokens=24))
        assert answered.text and not answered.tool_calls  # a result turn in OpenAI's shape, taken by the server


def test_ollama_history_turns_take_ollamas_shape() -> None:
    from registry.providers.ollama import ollama_messages, ollama_tools

    turns = ollama_messages(ANSWERED)
    assert turns[1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert turns[2] == {"role": "tool", "content": "18 degrees Celsius and sunny", "tool_name": "get_weather"}
    named = ollama_tools(GenerationRequest(messages=ask("Hi"), tools=TOOLS, tool_choice="add"))
    assert [t["function"]["name"] for t in named] == ["add"]  # Ollama has no tool_choice: only that tool is sent
    assert ollama_tools(GenerationRequest(messages=ask("Hi"), tools=TOOLS, tool_choice="none")) is None


def test_calls_in_history_must_be_json_before_anything_is_sent() -> None:
    from registry.errors import UserError
    from registry.providers.ollama import ollama_messages

    broken = ({**ANSWERED[1], "tool_calls": [{"id": "call_1", "type": "function",
                                               "function": {"name": "get_weather", "arguments": "{city"}}]},)
    with pytest.raises(UserError, match="arguments of an earlier call to 'get_weather' are not JSON"):
        ollama_messages(broken)
