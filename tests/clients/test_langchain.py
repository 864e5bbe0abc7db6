"""LangChain against the gateway: ``ChatOllama`` (the Ollama API) and ``ChatOpenAI`` (the OpenAI API) as
a LangChain app uses them — invoke, stream, tools in an agent loop — and both embeddings classes a RAG
chain retrieves with, on the shipped SmolLM2.

Answers are compared with each other, not with the truth: at temperature 0 and the gateway's fixed
seed, the same request gives the same text, so a stream must assemble to the whole answer.
"""

from __future__ import annotations

import functools
import operator

import numpy as np
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

pytestmark = pytest.mark.e2e
QUESTION = "What is the capital of France?"
ran: list[str] = []


def chat_models(url: str, tokens: int = 12) -> list[ChatOllama | ChatOpenAI]:
    return [
        ChatOllama(model="qa", base_url=url, temperature=0, num_predict=tokens),
        ChatOpenAI(model="qa", base_url=f"{url}/v1", api_key="unused", temperature=0, max_tokens=tokens,
                   max_retries=0),
    ]


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    ran.append(city)
    return f"It is 21 degrees and sunny in {city}."


@pytest.mark.parametrize("which", [0, 1], ids=["ChatOllama", "ChatOpenAI"])
def test_invoke_and_stream_give_the_same_answer(url: str, which: int) -> None:
    model = chat_models(url)[which]
    whole = model.invoke(QUESTION)
    pieces = list(model.stream(QUESTION))
    assert isinstance(whole.content, str) and whole.content.strip()
    assert "".join(piece.content for piece in pieces) == whole.content
    assert whole.usage_metadata["output_tokens"] == 12 and whole.usage_metadata["input_tokens"] > 5


def test_both_embeddings_classes_get_the_same_direction(url: str) -> None:
    """What a LangChain RAG chain embeds with. ``OpenAIEmbeddings`` must be told
    ``check_embedding_ctx_length=False``: by default it tokenizes with tiktoken (whose vocabulary is
    downloaded on first use, impossible offline) and sends token arrays, which the gateway refuses —
    its models have their own tokenizers. Ollama's vectors are raw, OpenAI's unit length."""
    texts = ["a cat sat on the mat", "the stock market fell sharply"]
    raw = OllamaEmbeddings(model="embed", base_url=url).embed_documents(texts)
    unit = OpenAIEmbeddings(model="embed", base_url=f"{url}/v1", api_key="unused", check_embedding_ctx_length=False,
                            max_retries=0).embed_documents(texts)
    raw, unit = np.asarray(raw), np.asarray(unit)
    assert raw.shape == unit.shape == (2, 576)
    assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-5)
    assert not np.allclose(unit[0], unit[1])


@pytest.mark.parametrize("which", [0, 1], ids=["ChatOllama", "ChatOpenAI"])
def test_bind_tools_and_an_agent_loop_that_uses_the_result(url: str, which: int) -> None:
    """The first answer is a call (``tool_choice="required"``: ChatOpenAI sends it; ChatOllama drops it, as
    Ollama has none, and the model calls by itself); the tool runs; its result goes back as a
    ``ToolMessage``; the model, without tools now, answers in text. (LangChain's ``create_agent`` runs the
    same loop with the tools offered on every turn: docs/clients.md's snippet, run by test_docs_clients.py.)"""
    bound = chat_models(url, tokens=48)[which].bind_tools([get_weather], tool_choice="required")
    messages = [HumanMessage("What is the weather in Paris?")]
    ran.clear()
    first = bound.invoke(messages)
    [call] = first.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["id"]
    streamed = functools.reduce(operator.add, bound.stream(messages))
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [(call["name"], call["args"])]

    messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = chat_models(url, tokens=24)[which].invoke(messages)
    assert ran == [call["args"]["city"]]
    assert isinstance(final.content, str) and final.content.strip() and not final.tool_calls
    bare = chat_models(url, tokens=1)[which].invoke(messages[:1])
    assert final.usage_metadata["input_tokens"] > bare.usage_metadata["input_tokens"] + 10  # call and result sent
