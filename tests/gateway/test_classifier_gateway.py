"""A route whose champion is a trained text classifier, as unchanged clients use it: the real
``openai`` and ``ollama`` packages against one real gateway on loopback, the classifier a real ONNX
file (scikit-learn + skl2onnx) run by onnxruntime.

A chat of one user text (a system turn allowed) or a generate answers the label, whole and streamed,
in both APIs, with a ``calls`` row carrying its costs. What a classifier cannot answer (tools, a
format, earlier turns, embeddings) is a 400 in the API's shape naming what it can do, that trips no
breaker and writes no failed row.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from onnx_models import text_classifier
from support import free_port

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway import Gateway
from registry.gateway.background import gateway_in_background
from registry.settings import get_settings

pytestmark = pytest.mark.e2e
ROUTE = "ticket-topic"
DOES = "a text classifier (labels account, billing, shipping, technical): it answers one text with its label"
TICKET = [{"role": "system", "content": "Sort the ticket."}, {"role": "user", "content": "my card was charged twice"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path) -> Iterator[tuple[str, Gateway]]:
    home = tmp_path_factory.mktemp("classifier-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, port=free_port(), keep_alive_s=600)
    catalog = Catalog(settings)
    catalog.register_onnx(text_classifier(home / "ticket-clf.onnx"), name="ticket-clf")
    Routes(catalog).promote(ROUTE, "ticket-clf", 1, force=True)
    with gateway_in_background(settings) as running:
        yield running


def test_both_clients_get_the_label_whole_and_streamed(url: str, client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=ROUTE, messages=TICKET)
    assert whole.choices[0].message.content == "billing" and whole.choices[0].finish_reason == "stop"
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (5, 1)
    chunks = client.chat.completions.create(model=ROUTE, messages=TICKET, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "billing"
    assert client.completions.create(model=ROUTE, prompt="where is my parcel").choices[0].text == "shipping"
    assert client.responses.create(model=ROUTE, instructions="Sort the ticket.", input="the app crashes on start",
                                   ).output_text == "technical"

    local = ollama.Client(host=url)
    assert local.chat(model=ROUTE, messages=TICKET).message.content == "billing"
    assert "".join(p.message.content for p in local.chat(model=ROUTE, messages=TICKET, stream=True)) == "billing"
    assert local.generate(model=ROUTE, prompt="reset my password").response == "account"
    assert "".join(p.response for p in local.generate(model=ROUTE, prompt="reset my password", stream=True)) == "account"


def test_each_answer_is_a_calls_row_with_its_costs(client: openai.OpenAI, gateway: Gateway) -> None:
    answer = client.chat.completions.with_raw_response.create(model=ROUTE, messages=TICKET)
    call_id = answer.headers["x-arbiter-call-id"]
    gateway.recorder.flush()
    (row,) = gateway.store.query(
        "select model, version, route, ok, prompt_tokens, completion_tokens, tokens_per_s, wall_ms, ttft_ms, cpu_ms, "
        f"peak_rss_mb, energy_mwh, energy_source, n_threads from calls where call_id = '{call_id}'")
    assert (row["model"], row["version"], row["route"], row["ok"]) == ("ticket-clf", 1, ROUTE, True)
    assert (row["prompt_tokens"], row["completion_tokens"], row["tokens_per_s"]) == (5, 1, None)
    assert 0 < row["ttft_ms"] <= row["wall_ms"] and row["cpu_ms"] >= 0 and row["peak_rss_mb"] > 0
    assert row["energy_mwh"] > 0 and row["energy_source"] and row["n_threads"] == gateway.settings.n_threads


def test_show_claims_completion_only_and_lists_the_labels(url: str) -> None:
    shown = ollama.Client(host=url).show(ROUTE)
    assert shown.capabilities == ["completion"]
    assert shown.modelinfo["arbiter.labels"] == "account,billing,shipping,technical"
    assert shown.modelinfo["arbiter.kind"] == "onnx"


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/v1/chat/completions", {"tools": [WEATHER]},
     f"{ROUTE} is served by ticket-clf/1, {DOES}; it cannot take tools"),
    ("/api/chat", {"tools": [WEATHER]}, f"{ROUTE} is served by ticket-clf/1, {DOES}; it cannot take tools"),
    ("/v1/chat/completions", {"response_format": {"type": "json_object"}},
     f"ticket-clf is {DOES}; it cannot take a response format"),
    ("/api/chat", {"format": "json"}, f"ticket-clf is {DOES}; it cannot take a response format"),
    ("/v1/chat/completions", {"messages": [*TICKET, {"role": "assistant", "content": "billing"},
                                           {"role": "user", "content": "are you sure?"}]},
     f"ticket-clf is {DOES}; it cannot take 'assistant' turns"),
    ("/api/chat", {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
     f"ticket-clf is {DOES}; it cannot take 2 user turns"),
], ids=["openai-tools", "ollama-tools", "openai-format", "ollama-format", "openai-history", "ollama-two-users"])
def test_what_a_classifier_cannot_answer_is_a_400_naming_what_it_can_do(
    url: str, gateway: Gateway, path: str, body: dict[str, Any], message: str
) -> None:
    for stream in (False, True):
        answer = httpx.post(url + path, json={"model": ROUTE, "messages": TICKET, "stream": stream, **body}, timeout=30)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        if path.startswith("/v1/"):
            assert error["type"] == "invalid_request_error"
            error = error["message"]
        assert error.startswith(message) and "\n" not in error
    assert {i["breaker"] for i in gateway.pool.snapshot()} == {"closed"}
    gateway.recorder.flush()
    assert gateway.store.query("select count(*) as n from calls where not ok")[0]["n"] == 0


def test_an_embedding_asked_of_a_classifier_names_what_it_can_do(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=ROUTE, input="my card was charged twice")
    assert f"{ROUTE} is served by ticket-clf/1, {DOES}; it cannot do 'embedding'" in str(caught.value)
