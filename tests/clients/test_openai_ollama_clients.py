"""Tool calling as applications write it with the ``openai`` and ``ollama`` packages: declare a function,
let the model call it, run it, send the result back, get an answer — against the real gateway on the
shipped SmolLM2. (tests/gateway/test_tools_gateway.py holds the wire's details, streamed calls in both
clients' stream helpers and bad input; here, the loop an application writes.)

The first answer is forced to be a call where the API allows it (OpenAI's ``tool_choice="required"``):
a 135M model is not trusted to decide, but under the gateway's grammar a forced call is always a
valid one. Ollama's API has no ``tool_choice``; there the model decides, and (seen here) calls the
tool for an obvious weather question — and also for a joke, since it calls one whenever it has tools.
"""

from __future__ import annotations

import json

import jsonschema
import ollama
import openai
import pytest

from registry.gateway import Gateway

pytestmark = pytest.mark.e2e
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.",
                                           "parameters": CITY}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
ran: list[str] = []


def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
      city: The name of the city
    """
    ran.append(city)
    return f"It is 21 degrees and sunny in {city}."


def tool_rows(gateway: Gateway) -> list[int]:
    gateway.recorder.flush()
    return [row["tool_calls"] for row in gateway.store.query(
        "select tool_calls from calls where source = 'gateway' and ok order by ts")]


def test_openai_client_tool_loop(url: str, gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    ran.clear()
    first = client.chat.completions.create(model="qa", messages=ASK, tools=TOOLS, tool_choice="required",
                                           max_tokens=64, temperature=0)
    [call] = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, CITY)

    messages = [*ASK, first.choices[0].message,  # the client's own message object, sent back as it is
                {"role": "tool", "tool_call_id": call.id, "content": get_weather(**arguments)}]
    final = client.chat.completions.create(model="qa", messages=messages, tools=TOOLS, tool_choice="none",
                                           max_tokens=32, temperature=0)
    assert ran == [arguments["city"]]
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    bare = client.chat.completions.create(model="qa", messages=ASK, max_tokens=1)
    assert final.usage.prompt_tokens > bare.usage.prompt_tokens + 10  # the call and its result are in the prompt
    assert tool_rows(gateway)[-3:] == [1, 0, 0]  # each answer's calls counted in its calls row


def test_ollama_client_takes_a_python_function_as_a_tool(url: str) -> None:
    client = ollama.Client(host=url)
    ran.clear()
    options = {"num_predict": 64, "temperature": 0}
    first = client.chat(model="qa", messages=ASK, tools=[get_weather], options=options)
    [call] = first.message.tool_calls
    assert call.function.name == "get_weather" and first.done_reason == "stop"
    jsonschema.validate(dict(call.function.arguments), CITY)

    messages = [*ASK, first.message,
                {"role": "tool", "tool_name": call.function.name, "content": get_weather(**call.function.arguments)}]
    final = client.chat(model="qa", messages=messages, options={**options, "num_predict": 32})
    assert ran == [call.function.arguments["city"]]
    assert final.message.content and not final.message.tool_calls
    bare = client.chat(model="qa", messages=ASK, options={"num_predict": 1})
    assert final.prompt_eval_count > bare.prompt_eval_count + 10  # the call and its result are in the prompt
