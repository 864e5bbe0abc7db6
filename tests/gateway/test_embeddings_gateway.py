"""Embeddings on both APIs and Ollama's model-management calls, as clients make them: the real ``openai``
and ``ollama`` packages against one real gateway, backed by real llama.cpp embeddings of SmolLM2.

The gateway runs with ``breaker_failures=1``: a single failure counted against a backend would open
its breaker, so "each bad input trips no breaker" is a sharp check, not a count under a threshold.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import pytest
from support import free_port

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway import Gateway
from registry.gateway.background import gateway_in_background
from registry.serving.breaker import BreakerState
from registry.settings import get_settings

pytestmark = pytest.mark.e2e
TEXTS = ["a cat sat on the mat", "the stock market fell sharply"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path, shipped) -> Iterator[tuple[str, Gateway]]:
    home = tmp_path_factory.mktemp("embeddings-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, port=free_port(), breaker_failures=1, alias_poll_s=0.2, keep_alive_s=600)
    catalog = Catalog(settings)
    q4_1, q4_0 = shipped[0], shipped[1]
    catalog.register(q4_1.path, name="smollm2-embed", capabilities=["embedding"])
    catalog.register(q4_1.path, name="smollm2-135m", capabilities=list(q4_1.capabilities))  # a chat version
    tampered = home / "tampered.gguf"  # changed after registration: its pull must fail the sha256 check
    shutil.copy(q4_0.path, tampered)
    catalog.register(tampered, name="tampered", capabilities=list(q4_0.capabilities))
    with tampered.open("ab") as file:
        file.write(b"\0")
    Routes(catalog).promote("vectors", "smollm2-embed", 1, force=True)
    with gateway_in_background(settings) as running:
        yield running


def unit(vectors: list[list[float]]) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float64)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def calls_of(gateway: Gateway, api: str) -> list[dict]:
    gateway.recorder.flush()
    return gateway.store.query(f"select ok, error, requested, model from calls where api = '{api}' and route = 'vectors'")


def test_openai_client_embeds_a_string_and_a_list_as_api_embed_does(url: str, client: openai.OpenAI) -> None:
    """The client's default asks for base64 and decodes it; float gives the very same numbers, and
    they are ``/api/embed``'s vectors scaled to length 1 (OpenAI's vectors are unit length)."""
    ollama_answer = httpx.post(f"{url}/api/embed", json={"model": "vectors", "input": TEXTS}, timeout=60).json()
    raw = ollama_answer["embeddings"]
    default = client.embeddings.create(model="vectors", input=TEXTS)
    floats = client.embeddings.create(model="vectors", input=TEXTS, encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert [d.index for d in floats.data] == [0, 1] and floats.model == "vectors" and floats.object == "list"
    assert np.allclose(np.asarray([d.embedding for d in floats.data]), unit(raw), rtol=0, atol=1e-6)
    assert np.allclose(np.linalg.norm([d.embedding for d in floats.data], axis=1), 1.0, atol=1e-5)
    # the tokens read, as both APIs report them (11 words in all: at least that many tokens)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == ollama_answer["prompt_eval_count"] >= 11
    assert ollama_answer["total_duration"] > 0

    one = client.embeddings.create(model="vectors", input=TEXTS[0], encoding_format="float").data
    assert len(one) == 1 and len(one[0].embedding) == 576
    assert np.allclose(one[0].embedding, floats.data[0].embedding, atol=1e-6)  # alone, or batched beside another
    encoded = client.embeddings.create(model="vectors", input=TEXTS[0], encoding_format="base64").data[0].embedding
    assert isinstance(encoded, str)  # asked for explicitly: handed over as sent
    assert np.frombuffer(base64.b64decode(encoded), dtype="<f4").tolist() == one[0].embedding

    answer = client.embeddings.with_raw_response.create(model="vectors", input="a cat", user="someone")
    assert answer.headers["x-arbiter-model"] == "smollm2-embed/1" and len(answer.headers["x-arbiter-call-id"]) == 32


def test_each_embedding_is_a_calls_row_and_counted(url: str, client: openai.OpenAI, gateway: Gateway) -> None:
    before = len(calls_of(gateway, "openai"))
    client.embeddings.create(model="vectors", input=["one", "two", "three"])
    rows = calls_of(gateway, "openai")
    assert len(rows) == before + 1 and rows[-1]["ok"] and rows[-1]["model"] == "smollm2-embed"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'arbiter_requests_total{api="openai",endpoint="/v1/embeddings",status="200"}' in metrics


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": []}, "'input' is an empty list"),
        ({"input": ""}, "'input' holds an empty string"),
        ({"input": ["a cat", ""]}, "'input' holds an empty string"),
        ({"input": [1917, 374]}, "token arrays is not supported"),
        ({"input": [[1917, 374]]}, "token arrays is not supported"),
        ({"input": ["a"] * 2049}, "'input' holds 2049 strings; at most 2048"),
        ({"input": "a cat", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a cat", "dimensions": 64}, "'dimensions' is not supported by vectors (smollm2-embed/1)"),
        ({"model": "smollm2-135m/1", "input": "a cat"}, "cannot do 'embedding'"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape_that_trips_no_breaker_and_writes_no_row(
    url: str, gateway: Gateway, body: dict, message: str
) -> None:
    before = calls_of(gateway, "openai")
    answer = httpx.post(f"{url}/v1/embeddings", json={"model": "vectors", **body}, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error" and set(error) >= {"param", "code"}
    assert "Traceback" not in answer.text and "\n" not in error["message"]
    assert calls_of(gateway, "openai") == before
    assert _breakers(gateway) == {BreakerState.CLOSED}


def test_dimensions_is_refused_through_the_openai_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="'dimensions' is not supported"):
        client.embeddings.create(model="vectors", input="a cat", dimensions=64)


def test_a_text_longer_than_the_model_embeds_is_a_400_not_a_backend_failure(url: str, gateway: Gateway) -> None:
    """llama.cpp refuses it (the provider's ``ContextOverflowError``): the caller's mistake, so no breaker
    moves and no failed row is written. Ollama's legacy endpoint says the same in its own shape, and so
    does ``/api/embed`` told not to ``truncate`` (its default cuts the text, as Ollama's does: not run
    here, embedding 512 tokens takes ~20 s on this machine)."""
    too_long = "word " * 700  # over the 512 tokens one input may hold
    before = calls_of(gateway, "openai"), calls_of(gateway, "ollama")
    answer = httpx.post(f"{url}/v1/embeddings", json={"model": "vectors", "input": ["a cat", too_long]}, timeout=120)
    assert answer.status_code == 400 and "exceed batch size of 512" in answer.json()["error"]["message"], answer.text
    legacy = httpx.post(f"{url}/api/embeddings", json={"model": "vectors", "prompt": too_long}, timeout=120)
    assert legacy.status_code == 400 and "shorten the input" in legacy.json()["error"], legacy.text
    kept = httpx.post(f"{url}/api/embed", json={"model": "vectors", "input": too_long, "truncate": False}, timeout=120)
    assert kept.status_code == 400 and "shorten the input" in kept.json()["error"], kept.text
    assert (calls_of(gateway, "openai"), calls_of(gateway, "ollama")) == before
    assert _breakers(gateway) == {BreakerState.CLOSED}


def test_ollama_legacy_embeddings_answers_the_raw_vector(url: str) -> None:
    client = ollama.Client(host=url)
    legacy = client.embeddings(model="vectors", prompt=TEXTS[0]).embedding
    assert legacy == client.embed(model="vectors", input=TEXTS[0]).embeddings[0]  # Ollama's legacy: not normalized
    assert abs(float(np.linalg.norm(legacy)) - 1.0) > 0.1
    assert client.embeddings(model="vectors", prompt="").embedding == []  # Ollama's "load the model" call
    with pytest.raises(ollama.ResponseError, match="cannot do 'embedding'") as refused:
        client.embeddings(model="smollm2-135m/1", prompt="a cat")
    assert refused.value.status_code == 400


def test_ollama_client_pulls_a_name_that_resolves_whole_and_streamed(url: str, gateway: Gateway) -> None:
    client = ollama.Client(host=url)
    spec = gateway.router.resolve("vectors").record.spec
    assert client.pull("vectors").status == "success"
    lines = list(client.pull("vectors", stream=True))
    assert [line.status for line in lines] == [
        "pulling manifest", f"pulling {spec.sha256[:12]}", "verifying sha256 digest", "success"]
    layer = lines[1]
    assert (layer.digest, layer.total, layer.completed) == (f"sha256:{spec.sha256}", spec.size_bytes, spec.size_bytes)
    for name in ("vectors:latest", "vectors@champion", "smollm2-135m/1"):  # any name the gateway resolves
        assert client.pull(name).status == "success"
    assert httpx.post(f"{url}/api/pull", json={"name": "vectors", "stream": False}).json() == {"status": "success"}


def test_pulling_an_unknown_name_is_ollamas_error_with_the_names_that_exist(url: str) -> None:
    client = ollama.Client(host=url)
    with pytest.raises(ollama.ResponseError) as whole:
        client.pull("llama3.2")
    with pytest.raises(ollama.ResponseError) as streamed:
        list(client.pull("llama3.2", stream=True))
    for refused in (whole.value, streamed.value):
        assert refused.status_code == 404
        assert refused.error.startswith("pull model manifest: file does not exist")
        assert "vectors@champion" in refused.error and "arbiter models register" in refused.error


def test_pulling_a_version_whose_file_changed_fails_the_digest_check(url: str) -> None:
    with pytest.raises(ollama.ResponseError, match="verifying sha256 digest: .*changed since it was registered") as bad:
        ollama.Client(host=url).pull("tampered/1")
    assert bad.value.status_code == 500


def test_calls_that_would_change_the_registry_are_refused_and_change_nothing(url: str) -> None:
    client = ollama.Client(host=url)
    refusals = {
        "delete": lambda: client.delete("vectors"),
        "copy": lambda: client.copy("vectors", "vectors2"),
        "create": lambda: client.create(model="vectors2", from_="vectors"),
        "push": lambda: client.push("vectors"),
    }
    for verb, call in refusals.items():
        with pytest.raises(ollama.ResponseError, match=f"this gateway does not {verb} models: .*arbiter") as refused:
            call()
        assert refused.value.status_code == 403
    blob = httpx.post(f"{url}/api/blobs/sha256:{'0' * 64}", content=b"weights")
    assert blob.status_code == 403 and "arbiter models register" in blob.json()["error"]
    assert client.pull("vectors").status == "success" and "vectors2" not in {m.model for m in client.list().models}


def _breakers(gateway: Gateway) -> set[BreakerState]:
    record = gateway.router.resolve("vectors").record
    return {instance.breaker.state for instance in gateway.pool.instances_of(record)}
