"""Token-id ONNX models behind a real gateway, as unchanged clients use them: an embedder route
answers ``/v1/embeddings`` (the real ``openai`` client) and ``/api/embed`` (the real ``ollama``
client), a token-id classifier route answers a chat with its label. The models are onnx.helper
graphs over a WordLevel tokenizer trained on the ticket-topic training set, run by onnxruntime.

A text past the embedder's tokens is a 400 on ``/v1/embeddings`` (never cut short) and cut to its
first tokens on ``/api/embed`` (Ollama's ``truncate`` default), as for llama.cpp's embedder; a
chat asked of the embedder is a 400 naming its capabilities. None of these trips a breaker.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import pytest
from onnx_models import (
    MAX_TOKENS,
    TICKET_LABELS,
    embed_like_the_model,
    ticket_tokenizer,
    token_classifier,
    token_embedder,
)
from support import free_port

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway import Gateway
from registry.gateway.background import gateway_in_background
from registry.settings import get_settings

pytestmark = pytest.mark.e2e
TEXTS = ["Where is my parcel?", "I was charged twice for my subscription."]
LONG = " ".join(["refund"] * (MAX_TOKENS + 6))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path) -> Iterator[tuple[str, Gateway]]:
    home = tmp_path_factory.mktemp("onnx-tokens-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, port=free_port(), breaker_failures=1, keep_alive_s=600)
    catalog = Catalog(settings)
    tokenizer = ticket_tokenizer(home / "tokenizer.json")
    catalog.register_onnx(token_embedder(home / "embed.onnx", pooled=False), name="ticket-embed", tokenizer=tokenizer)
    catalog.register_onnx(token_classifier(home / "clf.onnx"), name="ticket-tok", labels=list(TICKET_LABELS),
                          tokenizer=tokenizer)
    Routes(catalog).promote("vectors", "ticket-embed", 1, force=True)
    Routes(catalog).promote("ticket-topic", "ticket-tok", 1, force=True)
    with gateway_in_background(settings) as running:
        yield running


def unit(vectors: list[np.ndarray]) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float64)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_both_clients_get_the_embedders_vectors(url: str, client: openai.OpenAI, gateway: Gateway) -> None:
    expected = [embed_like_the_model(text) for text in TEXTS]
    openai_answer = client.embeddings.create(model="vectors", input=TEXTS)
    assert np.allclose([d.embedding for d in openai_answer.data], unit(expected), atol=1e-5)  # unit length, as OpenAI's
    assert openai_answer.usage.prompt_tokens == 5 + 8

    ollama_answer = ollama.Client(host=url).embed(model="vectors", input=TEXTS)
    assert np.allclose(ollama_answer.embeddings, expected, atol=1e-5) and ollama_answer.prompt_eval_count == 13
    gateway.recorder.flush()
    rows = gateway.store.query("select ok, model, api from calls where route = 'vectors' order by api")
    assert [(r["ok"], r["model"], r["api"]) for r in rows] == [(True, "ticket-embed", "ollama"),
                                                               (True, "ticket-embed", "openai")]


def test_a_text_past_its_tokens_is_refused_or_cut_as_the_api_says(url: str, client: openai.OpenAI,
                                                                    gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError, match=f"the text is {MAX_TOKENS + 6} tokens; it takes at most {MAX_TOKENS}"):
        client.embeddings.create(model="vectors", input=LONG)
    refused = httpx.post(f"{url}/api/embed", json={"model": "vectors", "input": LONG, "truncate": False}, timeout=30)
    assert refused.status_code == 400 and "it takes at most" in refused.json()["error"]
    cut = httpx.post(f"{url}/api/embed", json={"model": "vectors", "input": LONG}, timeout=30).json()
    assert cut["prompt_eval_count"] == MAX_TOKENS
    assert np.allclose(cut["embeddings"][0], embed_like_the_model("refund"), atol=1e-5)
    assert {i["breaker"] for i in gateway.pool.snapshot()} == {"closed"}


def test_a_chat_asked_of_the_embedder_names_what_it_can_do(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="vectors \\(ticket-embed/1\\) cannot do 'chat'; its capabilities: "
                                                     "embedding"):
        client.chat.completions.create(model="vectors", messages=[{"role": "user", "content": "hi"}])


def test_the_token_id_classifier_route_answers_the_label(url: str, client: openai.OpenAI) -> None:
    ticket = [{"role": "user", "content": "My parcel has not arrived and tracking shows nothing."}]
    answer = client.chat.completions.create(model="ticket-topic", messages=ticket)
    assert answer.choices[0].message.content == "shipping" and answer.usage.prompt_tokens == 10
    assert ollama.Client(host=url).generate(model="ticket-topic", prompt=TEXTS[1]).response == "billing"
