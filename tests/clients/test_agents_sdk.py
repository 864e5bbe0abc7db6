"""The OpenAI Agents SDK against the gateway: its default model, ``OpenAIResponsesModel``, speaks the
Responses API (``POST /v1/responses``), here to a route served by the shipped SmolLM2 through
llama.cpp. An agent with one function tool runs its loop: the model calls the tool, the SDK runs
it and sends its output back as a ``function_call_output`` item, and the model answers in text.

Tracing is off (``set_tracing_disabled``): the SDK would otherwise upload traces to OpenAI, and the
machine has no internet. The first turn's ``tool_choice`` is ``required`` (a 135M model asked
"weather?" does not reliably decide to call a tool by itself; the grammar makes the call valid);
the SDK resets it to ``auto`` once the tool ran (``reset_tool_choice``), and the loop ends because
under ``auto`` a call the history already made with the same arguments counts as no call (the
provider's rule: SmolLM2 would otherwise call again after every result). The assertions are on the
loop's structure — one valid call to the declared tool, the tool run, a text answer — not on the
model's wisdom.
"""

from __future__ import annotations

import asyncio

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from registry.gateway import Gateway

pytestmark = pytest.mark.e2e
ROUTE = "qa"  # conftest.py's chat route


def _agent(url: str, ran: list[str]) -> Agent:
    set_tracing_disabled(True)  # conftest.py's OPENAI_AGENTS_DISABLE_TRACING says it too, before the import

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        ran.append(city)
        return f"It is 21 degrees and sunny in {city}."

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    model = OpenAIResponsesModel(model=ROUTE, openai_client=client)
    return Agent(name="weather", instructions="You answer questions about the weather in one sentence, from what the tools say.",
                 tools=[get_weather], model=model,
                 model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=48))


def test_an_agent_calls_its_tool_and_answers_with_the_result(url: str, gateway: Gateway) -> None:
    ran: list[str] = []
    result = Runner.run_sync(_agent(url, ran), "What is the weather in Paris?", max_turns=4)
    assert len(ran) == 1 and isinstance(ran[0], str) and ran[0]  # the SDK ran the tool the model called
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert isinstance(result.final_output, str) and result.final_output.strip()
    assert len(result.raw_responses) == 2  # the call, then the answer that read its output
    gateway.recorder.flush()
    rows = gateway.store.query("select ok from calls where api = 'openai' and source = 'gateway'")
    assert len(rows) == len(result.raw_responses) and all(row["ok"] for row in rows)


def test_a_streamed_agent_run_ends_with_the_same_shape(url: str) -> None:
    ran: list[str] = []

    async def run() -> list[str]:
        streamed = Runner.run_streamed(_agent(url, ran), "What is the weather in Rome?", max_turns=4)
        kinds = [event.type async for event in streamed.stream_events()]
        assert isinstance(streamed.final_output, str) and streamed.final_output.strip()
        return kinds

    kinds = asyncio.run(run())
    assert len(ran) == 1 and "raw_response_event" in kinds and "run_item_stream_event" in kinds
