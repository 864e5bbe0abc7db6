"""LiteLLM and DSPy against the gateway, on the shipped SmolLM2.

LiteLLM reaches the gateway both ways it knows: ``ollama_chat/<route>`` (Ollama's ``/api/chat``) and
``openai/<route>`` (the OpenAI API at ``api_base=.../v1``). DSPy builds on it: ``dspy.LM`` with
``engine="litellm"`` goes through LiteLLM's Ollama client. (DSPy 3.4's default engine, lm15, sends
``ollama_chat/`` models to ``<api_base>/chat/completions``, the OpenAI API, and then knows nothing of
what the model supports, so its JSON adapter cannot ask for structured output: with a 135M model
that fails where LiteLLM's path works.) DSPy's JSON adapter asks for a JSON object
(``response_format``), which the gateway decodes under a grammar — the reason a 135M model can
answer DSPy's format at all.

DSPy's tool calling: a signature with ``tools: list[dspy.Tool]`` in and ``dspy.ToolCalls`` out is sent as
native tools once LiteLLM is told the model can call functions (``litellm.register_model``; for an
unknown model it says no), with ``ChatAdapter(use_native_function_calling=True)`` — DSPy's JSON adapter
would send a JSON format beside the tools, which the gateway refuses. ``dspy.ReAct`` is another matter:
it asks the model to write its steps in DSPy's own format, and that is beyond a 135M model (below).

The offline settings (``LITELLM_LOCAL_MODEL_COST_MAP``) are in this folder's conftest.py.
"""

from __future__ import annotations

import json
import re

import dspy
import jsonschema
import litellm
import numpy as np
import pytest
from dspy.utils.exceptions import AdapterParseError

from registry.gateway import Gateway

pytestmark = pytest.mark.e2e
COLOUR = [{"role": "user", "content": "Name a colour."}]
TEXTS = ["a cat sat on the mat", "the stock market fell sharply"]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.",
                                           "parameters": CITY}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
ran: list[str] = []


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    ran.append(city)
    return f"It is 21 degrees and sunny in {city}."


def test_litellm_completion_through_both_apis_gives_the_same_answer(url: str) -> None:
    ollama_chat = litellm.completion(model="ollama_chat/qa", api_base=url, messages=COLOUR, max_tokens=12,
                                     temperature=0)
    openai = litellm.completion(model="openai/qa", api_base=f"{url}/v1", api_key="unused", messages=COLOUR,
                                max_tokens=12, temperature=0)
    text = ollama_chat.choices[0].message.content
    assert text and text == openai.choices[0].message.content
    assert ollama_chat.usage.completion_tokens == openai.usage.completion_tokens == 12
    streamed = litellm.completion(model="ollama_chat/qa", api_base=url, messages=COLOUR, max_tokens=12,
                                  temperature=0, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == text


def test_litellm_tool_calls_through_both_apis(url: str) -> None:
    """``ollama_chat/``: Ollama's API has no ``tool_choice``, and the model calls by itself here;
    ``openai/``: forced with ``required``, then the result goes back and the answer is text."""
    by_ollama = litellm.completion(model="ollama_chat/qa", api_base=url, messages=ASK, tools=TOOLS, max_tokens=48,
                                   temperature=0)
    by_openai = litellm.completion(model="openai/qa", api_base=f"{url}/v1", api_key="unused", messages=ASK, tools=TOOLS,
                                   tool_choice="required", max_tokens=48, temperature=0)
    for answer in (by_ollama, by_openai):
        [call] = answer.choices[0].message.tool_calls
        assert answer.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather" and call.id
        jsonschema.validate(json.loads(call.function.arguments), CITY)
    call = by_openai.choices[0].message.tool_calls[0]
    messages = [*ASK, by_openai.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": get_weather(**json.loads(call.function.arguments))}]
    final = litellm.completion(model="openai/qa", api_base=f"{url}/v1", api_key="unused", messages=messages,
                               max_tokens=24, temperature=0)
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


def test_litellm_embedding_through_both_apis(url: str) -> None:
    """Ollama's vectors are raw, OpenAI's unit length: the same direction. (LiteLLM's Ollama embedding
    needs ``prompt_eval_count`` in the answer, as Ollama sends it: without it LiteLLM 1.110 raises.)"""
    raw = litellm.embedding(model="ollama/embed", api_base=url, input=TEXTS)
    unit = litellm.embedding(model="openai/embed", api_base=f"{url}/v1", api_key="unused", input=TEXTS)
    raw_vectors = np.asarray([item["embedding"] for item in raw.data])
    unit_vectors = np.asarray([item["embedding"] for item in unit.data])
    assert raw_vectors.shape == unit_vectors.shape == (2, 576) and not np.allclose(unit_vectors[0], unit_vectors[1])
    assert np.allclose(raw_vectors / np.linalg.norm(raw_vectors, axis=1, keepdims=True), unit_vectors, atol=1e-5)
    assert raw.usage.prompt_tokens == unit.usage.prompt_tokens > 0


def _lm(url: str, **settings) -> dspy.LM:
    """``cache=False``: a cached answer would pass a test without reaching the gateway."""
    return dspy.LM("ollama_chat/qa", api_base=url, engine="litellm", cache=False, temperature=0, **settings)


def answered(gateway: Gateway) -> int:
    gateway.recorder.flush()
    return gateway.store.query("select count(*) as n from calls where source = 'gateway' and ok")[0]["n"]


def test_dspy_predict_answers_in_the_signatures_fields(url: str, gateway: Gateway) -> None:
    lm = _lm(url, max_tokens=48)
    before = answered(gateway)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        prediction = dspy.Predict("question -> answer")(question="What is the capital of France?")
    assert isinstance(prediction.answer, str) and prediction.answer.strip()
    [call] = lm.history
    assert call["kwargs"]["response_format"] == {"type": "json_object"}  # decoded under the gateway's grammar
    assert answered(gateway) == before + 1  # the gateway answered it: no cache, no retry


class Plan(dspy.Signature):
    """Answer the question with the tools."""

    question: str = dspy.InputField()
    tools: list[dspy.Tool] = dspy.InputField()
    outputs: dspy.ToolCalls = dspy.OutputField()


def test_dspy_native_tool_calls_run_the_tool(url: str) -> None:
    litellm.register_model({"ollama_chat/qa": {"litellm_provider": "ollama_chat", "mode": "chat",
                                               "supports_function_calling": True}})
    lm = _lm(url, max_tokens=48)
    ran.clear()
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_native_function_calling=True)):
        planned = dspy.Predict(Plan)(question="What is the weather in Paris?", tools=[dspy.Tool(get_weather)])
    [call] = planned.outputs.tool_calls
    assert call.name == "get_weather" and set(lm.history[-1]["kwargs"]) == {"tools"}  # sent natively, no format
    assert call.execute() == f"It is 21 degrees and sunny in {call.args['city']}." and ran == [call.args["city"]]


def test_dspy_react_is_beyond_the_135m_model(url: str) -> None:
    """What ``dspy.ReAct`` meets on SmolLM2-135M: the gateway decodes the JSON object DSPy's adapter asks
    for, with ReAct's three fields, but the model names a tool that does not exist ("Finish the task":
    neither ``finish`` nor ``get_weather``), and DSPy stops at its first step with a parse error; no tool runs.
    (DSPy cannot ask for a schema here — ``next_tool_args`` is an open mapping — so nothing constrains
    the name.) A larger model on the same route is what makes ReAct work; this test says when that changes."""
    lm = _lm(url, max_tokens=32)
    ran.clear()
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()), pytest.raises(AdapterParseError, match="next_tool_name"):
        dspy.ReAct("question -> answer", tools=[get_weather], max_iters=2)(question="What is the weather in Paris?")
    [step] = lm.history
    written = step["outputs"][0]  # a JSON object, cut at max_tokens: DSPy repairs it to read the fields
    named = re.search(r'^\{\s*"next_thought":\s*"[^"]*",\s*"next_tool_name":\s*"([^"]*)"', written)
    assert step["kwargs"]["response_format"] == {"type": "json_object"} and named, written
    assert named[1] not in ("get_weather", "finish") and ran == []
