"""LiteLLM and DSPy against the gateway, on the shipped SmolLM2.

LiteLLM reaches the gateway both ways it knows: ``ollama_chat/<route>`` (Ollama's ``/api/chat``) and
``openai/<route>`` (the OpenAI API at ``api_base=.../v1``). DSPy builds on it: ``dspy.LM`` with
``engine="litellm"`` goes through LiteLLM's Ollama client. (DSPy 3.4's default engine, lm15, sends
``ollama_chat/`` models to ``<api_base>/chat/completions``, the OpenAI API, and then knows nothing of
what the model supports, so its JSON adapter cannot ask for structured output: with a 135M model
that fails where LiteLLM's path works.) DSPy's JSON adapter asks for a JSON object
(``response_format``), which the gateway decodes under a grammar — the reason a 135M model can
answer DSPy's format at all.

The offline settings (``LITELLM_LOCAL_MODEL_COST_MAP``) are in this folder's conftest.py.
"""

from __future__ import annotations

import dspy
import litellm
import numpy as np
import pytest

pytestmark = pytest.mark.e2e
COLOUR = [{"role": "user", "content": "Name a colour."}]
TEXTS = ["a cat sat on the mat", "the stock market fell sharply"]


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


def test_litellm_embedding_through_the_openai_api(url: str) -> None:
    unit = litellm.embedding(model="openai/embed", api_base=f"{url}/v1", api_key="unused", input=TEXTS)
    vectors = np.asarray([item["embedding"] for item in unit.data])
    assert vectors.shape == (2, 576) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


@pytest.mark.xfail(strict=True, raises=litellm.APIConnectionError,
                   reason="/api/embed sends no prompt_eval_count, and LiteLLM 1.110's fallback for a missing count "
                          "raises ('Logging' object has no attribute 'debug'); passes once /api/embed counts tokens")
def test_litellm_embedding_through_the_ollama_api(url: str) -> None:
    raw = litellm.embedding(model="ollama/embed", api_base=url, input=TEXTS)
    assert np.asarray([item["embedding"] for item in raw.data]).shape == (2, 576)


def _lm(url: str, **settings) -> dspy.LM:
    """``cache=False``: a cached answer would pass a test without reaching the gateway."""
    return dspy.LM("ollama_chat/qa", api_base=url, engine="litellm", cache=False, temperature=0, **settings)


def test_dspy_predict_answers_in_the_signatures_fields(url: str, gateway) -> None:
    lm = _lm(url, max_tokens=48)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        prediction = dspy.Predict("question -> answer")(question="What is the capital of France?")
    assert isinstance(prediction.answer, str) and prediction.answer.strip()
    [call] = lm.history
    assert call["kwargs"]["response_format"] == {"type": "json_object"}  # decoded under the gateway's grammar
    gateway.recorder.flush()
    [row] = gateway.store.query("select ok, api from calls where source = 'gateway' and api = 'ollama' "
                                "and completion_tokens > 0 order by ts desc limit 1")
    assert row["ok"]
