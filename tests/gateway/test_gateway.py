"""The gateway as clients use it: the real ``ollama`` and ``openai`` packages against a real server
on loopback, backed by real llama.cpp inference on SmolLM2.

One gateway serves the whole module (loading models is the slow part); tests that move aliases
put them back, so test order does not matter.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from support import free_port

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway import Gateway
from registry.gateway.background import gateway_in_background
from registry.settings import get_settings

pytestmark = pytest.mark.e2e
TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path, shipped) -> Iterator[tuple[str, Gateway]]:
    home = tmp_path_factory.mktemp("gateway-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, port=free_port(), admin_token=TOKEN, queue_depth=1, alias_poll_s=0.2,
                            keep_alive_s=600)
    catalog = Catalog(settings)
    q4_1, q4_0 = shipped[0], shipped[1]
    catalog.register(q4_1.path, name="smollm2-135m", capabilities=list(q4_1.capabilities))
    catalog.register(q4_0.path, name="smollm2-135m", capabilities=list(q4_0.capabilities))
    catalog.register(q4_1.path, name="smollm2-embed", capabilities=["embedding"])
    catalog.client.set_registered_model_alias("smollm2-135m", "stable", "1")
    doomed = home / "doomed.gguf"  # a file test_a_champion_whose_file_is_gone_fails_over deletes
    shutil.copy(q4_0.path, doomed)
    catalog.register(doomed, name="doomed", capabilities=list(q4_0.capabilities))
    doomed_embed = home / "doomed-embed.gguf"  # deleted by test_an_embed_is_dispatched_with_failover_rows_and_metrics
    shutil.copy(q4_1.path, doomed_embed)
    catalog.register(doomed_embed, name="doomed-embed", capabilities=["embedding"])
    routes = Routes(catalog)
    routes.promote("qa", "smollm2-135m", 2, force=True)
    routes.promote("qa", "smollm2-135m", 1, force=True)  # champion 1, previous 2
    routes.promote("fragile", "smollm2-135m", 1, force=True)
    routes.promote("fragile", "doomed", 1, force=True)  # champion doomed/1, previous smollm2-135m/1
    routes.promote("vectors", "smollm2-embed", 1, force=True)
    routes.promote("vectors", "doomed-embed", 1, force=True)  # champion doomed-embed/1, previous smollm2-embed/1
    with gateway_in_background(settings) as running:
        yield running


def test_ollama_client_chat_and_generate_whole_and_streamed_agree(url: str) -> None:
    client = ollama.Client(host=url)
    options = {"num_predict": 12, "temperature": 0}
    whole = client.chat(model="qa", messages=QUESTION, options=options)
    streamed = list(client.chat(model="qa", messages=QUESTION, options=options, stream=True))
    assert whole.message.content and whole.done and whole.eval_count == 12 and whole.prompt_eval_count > 5
    assert "".join(c.message.content for c in streamed) == whole.message.content
    assert [c.done for c in streamed][-1] is True and streamed[-1].eval_count == whole.eval_count

    generated = client.generate(model="qa", prompt="What is the capital of France?", options=options)
    pieces = list(client.generate(model="qa", prompt="What is the capital of France?", options=options, stream=True))
    assert generated.response == "".join(p.response for p in pieces) == whole.message.content  # template applied
    raw = client.generate(model="smollm2-135m/1", prompt="The capital of France is", raw=True, options=options)
    assert raw.response and raw.response != generated.response


def test_ollama_client_list_show_ps_embed_and_version(url: str) -> None:
    client = ollama.Client(host=url)
    names = [m.model for m in client.list().models]
    assert {"qa", "qa@champion", "qa@previous", "smollm2-135m@stable", "smollm2-135m/1", "smollm2-135m/2"} <= set(names)
    shown = client.show("qa")
    assert shown.modelinfo["llama.context_length"] == 8192 and shown.modelinfo["arbiter.version"] == "smollm2-135m/1"
    assert shown.details.quantization_level == "Q4_1"
    loaded = [m.model for m in client.ps().models]
    assert "smollm2-135m/1" in loaded
    vectors = client.embed(model="smollm2-embed/1", input=["a cat", "a dog"]).embeddings
    assert len(vectors) == 2 and len(vectors[0]) == 576 and vectors[0] != vectors[1]
    with pytest.raises(ollama.ResponseError, match="cannot do 'embedding'") as refused:
        client.embed(model="qa", input="a cat")
    assert refused.value.status_code == 400
    assert httpx.get(f"{url}/api/version").json()["version"]


def test_openai_client_chat_completions_and_models(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    whole = client.chat.completions.create(model="qa", messages=QUESTION, max_tokens=12, temperature=0)
    text = whole.choices[0].message.content
    assert text and whole.usage.completion_tokens == 12 and whole.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(model="qa", messages=QUESTION, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == 12
    completion = client.completions.create(model="smollm2-135m@stable", prompt="The capital of France is",
                                           max_tokens=6, temperature=0)
    streamed = client.completions.create(model="smollm2-135m@stable", prompt="The capital of France is",
                                         max_tokens=6, temperature=0, stream=True)
    assert completion.choices[0].text == "".join(c.choices[0].text for c in streamed)
    assert {"qa", "smollm2-135m/2"} <= {m.id for m in client.models.list().data}


def test_unknown_names_are_404_with_the_names_that_exist_never_a_default(url: str) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        ollama.Client(host=url).chat(model="gpt-4", messages=QUESTION)
    assert missing.value.status_code == 404 and "qa@champion" in missing.value.error
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    for name in ("smollm2-135m/9", "smollm2-135m@nope", "qa@challenger"):
        with pytest.raises(openai.NotFoundError, match="not found.*available: .*qa@champion"):
            client.chat.completions.create(model=name, messages=QUESTION, max_tokens=4)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/chat", b"{not json", 400, "not valid JSON"),
        ("/api/chat", b"", 400, "body is empty"),
        ("/api/chat", b'{"model": 5, "messages": []}', 400, "model: Input should be a valid string"),
        ("/api/chat", b'{"model": "qa", "messages": [{"role": "user", "content": 3}]}', 400, "content"),
        ("/api/generate", b'{"model": "qa", "prompt": "hi", "options": {"num_predict": -5}}', 400, "between 1 and 2048"),
        ("/api/generate", b'{"model": "qa", "prompt": "hi", "options": {"num_predict": 99999}}', 400, "between 1 and 2048"),
        ("/api/generate", b'{"model": "qa", "prompt": "hi", "options": {"num_ctx": 100000}}', 400, "num_ctx"),
        ("/api/generate", b'{"model": "qa", "prompt": "hi", "options": {"temperature": "hot"}}', 400, "temperature"),
        ("/v1/chat/completions", b'{"model": "qa", "messages": []}', 400, "messages"),
        ("/v1/chat/completions", b'{"model": "qa", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
         400, "max_tokens must be between 1 and 2048"),
        ("/v1/chat/completions", b'{"model": "qa", "messages": [{"role": "user", "content": "x"}], "n": 2}', 400, "n:"),
        ("/v1/completions", b'{"model": "qa", "prompt": ["a", "b"]}', 400, "one string"),
        ("/v1/chat/completions", b'{"model": "qa", "messages": [{"role": "user", "content": "x"}], '
         b'"response_format": {"type": "xml"}}', 400, "response_format.type must be"),
        ("/v1/chat/completions", b'{"model": "qa", "messages": [{"role": "user", "content": "x"}], '
         b'"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}}', 400, "json_schema.schema"),
        ("/v1/chat/completions", b'{"model": "qa", "messages": [{"role": "user", "content": "x"}], '
         b'"tools": [{"type": "web_search"}]}', 400, "tools[0].type is 'web_search'"),  # more: test_tools_gateway.py
        ("/v1/chat/completions", b'{"model": "qa", "messages": [{"role": "user", "content": '
         b'[{"type": "image_url", "image_url": {"url": "x"}}]}]}', 400, "messages"),
        ("/api/chat", b'{"model": "qa", "messages": [{"role": "user", "content": "x"}], "format": "yaml"}', 400,
         "'format' must be"),
        ("/api/chat", b'{"model": "qa", "messages": [{"role": "user", "content": "x"}], "format": {"type": "nope"}}',
         400, "cannot be turned into a grammar"),
    ],
)
def test_bad_requests_get_clear_4xx_and_the_server_stays_up(url: str, path: str, body: bytes, status: int,
                                                            message: str) -> None:
    answer = httpx.post(url + path, content=body, timeout=30)
    assert answer.status_code == status
    error = answer.json()["error"]
    text = error["message"] if path.startswith("/v1/") else error
    assert message in text
    assert httpx.get(f"{url}/health").status_code == 200
    assert f'status="{status}"' in httpx.get(f"{url}/metrics").text  # errors are counted too


CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}}, "required": ["city"]}


def test_structured_output_through_both_apis_is_json_that_fits_the_schema(url: str, gateway: Gateway) -> None:
    """Ollama's ``format`` and OpenAI's ``response_format`` reach llama.cpp as a grammar: the answer parses."""
    client = ollama.Client(host=url)
    by_schema = client.chat(model="qa", messages=QUESTION, format=CITY, options={"num_predict": 48, "temperature": 0})
    assert isinstance(json.loads(by_schema.message.content)["city"], str)
    any_json = client.generate(model="qa", prompt="Describe Paris as JSON.", format="json",
                               options={"num_predict": 48, "temperature": 0})
    assert isinstance(json.loads(any_json.response), dict)
    streamed = "".join(part.message.content for part in client.chat(
        model="qa", messages=QUESTION, format=CITY, stream=True, options={"num_predict": 48, "temperature": 0}))
    assert streamed == by_schema.message.content
    openai_client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    answer = openai_client.chat.completions.create(
        model="qa", messages=QUESTION, max_tokens=48, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}})
    assert isinstance(json.loads(answer.choices[0].message.content)["city"], str)
    object_mode = openai_client.chat.completions.create(model="qa", messages=QUESTION, max_tokens=48, temperature=0,
                                                        response_format={"type": "json_object"})
    assert isinstance(json.loads(object_mode.choices[0].message.content), dict)
    assert {i["breaker"] for i in gateway.pool.snapshot()} == {"closed"}


def test_openai_text_parts_and_a_content_less_tool_turn_are_accepted(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    parts = client.chat.completions.create(
        model="qa", max_tokens=8, temperature=0,
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is the capital"},
                                                {"type": "text", "text": " of France?"}]}])
    plain = client.chat.completions.create(model="qa", messages=QUESTION, max_tokens=8, temperature=0)
    assert parts.choices[0].message.content == plain.choices[0].message.content
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}, *QUESTION]
    assert client.chat.completions.create(model="qa", messages=history, max_tokens=4).choices[0].message.content


def test_oversize_bodies_and_overlong_prompts_are_refused_without_tripping_a_breaker(url: str, gateway: Gateway) -> None:
    huge = b'{"model": "qa", "prompt": "' + b"a" * 1_100_000 + b'"}'
    assert httpx.post(f"{url}/api/generate", content=huge).status_code == 413

    def chunked():
        yield b'{"model": "qa", "prompt": "'
        for _ in range(12):
            yield b"a" * 100_000
        yield b'"}'

    assert httpx.post(f"{url}/api/generate", content=chunked()).status_code == 413
    long_prompt = {"model": "qa", "prompt": "word " * 3000, "stream": False, "options": {"num_predict": 4}}
    for _ in range(4):  # more than breaker_failures: a caller's mistake must not open it
        answer = httpx.post(f"{url}/api/generate", json=long_prompt, timeout=60)
        assert answer.status_code == 400 and "shorten the prompt" in answer.json()["error"]
    assert {i["breaker"] for i in gateway.pool.snapshot()} == {"closed"}


def test_admin_endpoints_need_the_token(url: str, gateway: Gateway) -> None:
    assert httpx.get(f"{url}/admin/pool").status_code == 401
    assert httpx.get(f"{url}/admin/pool", headers={"Authorization": "Bearer wrong"}).status_code == 401
    pool = httpx.get(f"{url}/admin/pool", headers=ADMIN).json()
    assert any(i["model"] == "smollm2-135m" and i["state"] == "ready" and i["pinned"] for i in pool["instances"])
    routes = {r["route"]: r for r in httpx.get(f"{url}/admin/routes", headers=ADMIN).json()["routes"]}
    assert routes["qa"]["aliases"] == {"champion": "smollm2-135m/1", "previous": "smollm2-135m/2"}
    assert httpx.post(f"{url}/admin/pool/unload", headers=ADMIN, json={"model": "smollm2-135m"}).status_code == 400
    assert httpx.get(f"{url}/health").status_code == 200  # open: load balancers probe it


def test_overhead_header_calls_rows_and_metrics(url: str, gateway: Gateway) -> None:
    answer = httpx.post(f"{url}/api/chat", json={"model": "qa", "messages": QUESTION, "stream": False,
                                                 "options": {"num_predict": 4}}, timeout=60)
    assert answer.status_code == 200
    overhead = float(answer.headers["x-arbiter-overhead-ms"])
    assert 0 <= overhead < float(answer.json()["total_duration"]) / 1e6
    assert answer.headers["x-arbiter-model"] == "smollm2-135m/1"
    gateway.recorder.flush()
    rows = gateway.store.query(
        "select api, requested, route, model, version, ok, overhead_ms, prompt_tokens, completion_tokens, ttft_ms, "
        "cpu_ms, peak_rss_mb, hardware_id from calls where source = 'gateway' and api = 'ollama' order by ts desc limit 1"
    )
    row = rows[0]
    assert (row["requested"], row["route"], row["model"], row["version"], row["ok"]) == ("qa", "qa", "smollm2-135m", 1, True)
    assert row["completion_tokens"] == 4 and row["ttft_ms"] > 0 and row["cpu_ms"] > 0 and row["peak_rss_mb"] > 50
    assert row["overhead_ms"] == pytest.approx(overhead, abs=0.01)
    metrics = httpx.get(f"{url}/metrics").text
    assert 'arbiter_requests_total{api="ollama",endpoint="/api/chat",status="200"}' in metrics
    assert 'arbiter_breaker_state{instance="smollm2-135m/1#0"} 0.0' in metrics
    assert "arbiter_time_to_first_token_seconds_bucket" in metrics


def test_a_full_queue_answers_429_with_retry_after_and_a_hung_up_client_frees_its_slot(url: str, gateway: Gateway) -> None:
    # counting never reaches an end-of-sequence token: each request runs its full num_predict
    long = {"model": "qa", "prompt": "1, 2, 3, 4, 5, 6,", "raw": True, "options": {"num_predict": 600}}
    with httpx.Client(timeout=120) as first, httpx.Client(timeout=120) as second:
        with first.stream("POST", f"{url}/api/generate", json=long) as running:
            lines = running.iter_lines()  # kept: dropping the iterator would close the connection
            next(lines)  # generating now
            waiting = threading.Thread(target=lambda: second.post(f"{url}/api/generate", json=long | {"stream": False}))
            waiting.start()
            deadline = time.monotonic() + 10
            while not any(i["waiting"] for i in gateway.pool.snapshot()):
                assert time.monotonic() < deadline, "the second request never queued"
                time.sleep(0.02)
            refused = httpx.post(f"{url}/api/generate", json=long | {"stream": False}, timeout=30)
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1 and "retry later" in refused.json()["error"]
        # the stream was closed after one line: its instance goes on to the waiting request at once
        waiting.join(timeout=120)
        assert not waiting.is_alive()
    assert all(i["in_flight"] == 0 and i["waiting"] == 0 for i in gateway.pool.snapshot())
    gateway.recorder.flush()
    cut = gateway.store.query("select count(*) as n from calls where error = 'client disconnected'")
    assert cut[0]["n"] >= 1  # the hung-up stream is a row too


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_while_queued_gives_its_place_back(url: str, gateway: Gateway, stream: bool) -> None:
    long = {"model": "qa", "prompt": "1, 2, 3, 4, 5, 6,", "raw": True, "options": {"num_predict": 600}}

    def impatient() -> None:  # gives up after 1 s without an answer: the connection closes
        with contextlib.suppress(httpx.TimeoutException):
            httpx.post(f"{url}/api/generate", json=long | {"stream": stream}, timeout=httpx.Timeout(60, read=1.0))

    with httpx.Client(timeout=120) as first, first.stream("POST", f"{url}/api/generate", json=long) as running:
        lines = running.iter_lines()  # kept: dropping the iterator would close the connection
        next(lines)  # generating now
        quitter = threading.Thread(target=impatient)
        quitter.start()
        deadline = time.monotonic() + 10
        while not any(i["waiting"] for i in gateway.pool.snapshot()):
            assert time.monotonic() < deadline, "the second request never queued"
            time.sleep(0.02)
        quitter.join(timeout=10)
        # its client left: the place is free within a moment, long before the first request ends
        deadline = time.monotonic() + 3
        while any(i["waiting"] for i in gateway.pool.snapshot()):
            assert time.monotonic() < deadline, "the queued request kept its place after its client left"
            time.sleep(0.05)
        assert next(lines)  # the first stream is still going


def test_a_promotion_is_warmed_then_followed_and_a_rollback_is_instant(url: str, gateway: Gateway) -> None:
    def served_by() -> str:
        answer = httpx.post(f"{url}/api/generate", json={"model": "qa", "prompt": "Hi", "stream": False,
                                                         "options": {"num_predict": 2}}, timeout=60)
        return answer.headers["x-arbiter-model"]

    routes = Routes(gateway.catalog)
    assert served_by() == "smollm2-135m/1"
    routes.promote("qa", "smollm2-135m", 2, force=True)  # what `arbiter routes promote` does, from another client
    moved_at = time.monotonic()
    while served_by() != "smollm2-135m/2":
        assert time.monotonic() - moved_at < 10, "the gateway did not follow the promotion"
    followed_s = time.monotonic() - moved_at
    assert followed_s < 5
    rollback = httpx.post(f"{url}/admin/routes/qa/rollback", headers=ADMIN, timeout=60)
    assert rollback.status_code == 200 and rollback.json()["champion"]["version"] == 1
    rolled_at = time.monotonic()
    while served_by() != "smollm2-135m/1":
        assert time.monotonic() - rolled_at < 5
    gateway.recorder.flush()
    kinds = [e["kind"] for e in gateway.store.query("select kind from events where route = 'qa' order by ts")]
    assert "swap.done" in kinds and json.dumps(kinds).count("swap.failed") == 0


def test_a_routes_replicas_tag_adds_instances_that_serve_in_parallel(url: str, gateway: Gateway) -> None:
    client = gateway.catalog.client
    client.set_registered_model_tag("route.qa", "arbiter.replicas", "2")
    try:
        deadline = time.monotonic() + 10
        while gateway.router.entries()["qa"].replicas != 2:
            assert time.monotonic() < deadline, "the replicas tag was not picked up"
            time.sleep(0.05)
        body = {"model": "qa", "prompt": "1, 2, 3,", "raw": True, "stream": False, "options": {"num_predict": 24}}
        threads = [threading.Thread(target=lambda: httpx.post(f"{url}/api/generate", json=body, timeout=120))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        champion = [i for i in gateway.pool.snapshot() if i["model"] == "smollm2-135m" and i["version"] == 1]
        assert len(champion) == 2 and all(i["state"] == "ready" and i["served"] >= 1 for i in champion)
    finally:
        client.delete_registered_model_tag("route.qa", "arbiter.replicas")
    deadline = time.monotonic() + 15  # back to one replica: the surplus one unloads once idle
    while [i["state"] for i in gateway.pool.snapshot() if i["model"] == "smollm2-135m" and i["version"] == 1] \
            != ["ready", "cold"]:
        assert time.monotonic() < deadline, "the surplus replica was not unloaded"
        time.sleep(0.1)


def test_a_champion_whose_file_is_gone_fails_over_to_previous_not_a_400(url: str, gateway: Gateway) -> None:
    body = {"model": "fragile", "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}
    assert httpx.post(f"{url}/api/generate", json=body, timeout=60).headers["x-arbiter-model"] == "doomed/1"
    unloaded = httpx.post(f"{url}/admin/pool/unload", headers=ADMIN, json={"model": "doomed/1"})
    assert unloaded.status_code == 200
    (gateway.settings.home / "doomed.gguf").unlink()
    answer = httpx.post(f"{url}/api/generate", json=body, timeout=60)
    assert answer.status_code == 200 and answer.headers["x-arbiter-model"] == "smollm2-135m/1"
    gateway.recorder.flush()
    failed = gateway.store.query("select detail from events where kind = 'pool.load_failed' and model = 'doomed'")
    assert failed and "is gone" in failed[0]["detail"]
    # one row per attempt, both written by the dispatcher: the champion that could not load, the answer
    rows = gateway.store.query("select model, ok, error, api, requested, route, task, overhead_ms, completion_tokens "
                               "from calls where route = 'fragile' order by ts")
    failed_attempt, answered = rows[-2:]
    assert (failed_attempt["model"], failed_attempt["ok"]) == ("doomed", False) and "is gone" in failed_attempt["error"]
    assert (answered["model"], answered["ok"], answered["error"], answered["completion_tokens"]) == (
        "smollm2-135m", True, None, 2)
    for row in (failed_attempt, answered):
        assert (row["api"], row["requested"], row["route"], row["task"]) == ("ollama", "fragile", "fragile", "fragile")
    assert answered["overhead_ms"] == pytest.approx(float(answer.headers["x-arbiter-overhead-ms"]), abs=0.001)


def test_an_embed_is_dispatched_with_failover_rows_and_metrics(url: str, gateway: Gateway) -> None:
    """``/api/embed`` goes through the dispatcher like a generation: a champion that cannot load fails
    over to the route's previous version, and both attempts are ``calls`` rows."""
    body = {"model": "vectors", "input": ["a cat", "a dog"]}
    first = httpx.post(f"{url}/api/embed", json=body, timeout=60)
    assert first.status_code == 200 and len(first.json()["embeddings"]) == 2
    assert httpx.post(f"{url}/admin/pool/unload", headers=ADMIN, json={"model": "doomed-embed/1"}).status_code == 200
    (gateway.settings.home / "doomed-embed.gguf").unlink()
    answer = httpx.post(f"{url}/api/embed", json=body, timeout=60)
    assert answer.status_code == 200 and answer.json()["embeddings"] == first.json()["embeddings"]  # same weights
    gateway.recorder.flush()
    rows = gateway.store.query("select model, version, ok, error, api, requested, route, wall_ms, cpu_ms, "
                               "completion_tokens, overhead_ms from calls where route = 'vectors' order by ts")
    assert [(r["model"], r["ok"]) for r in rows] == [
        ("doomed-embed", True), ("doomed-embed", False), ("smollm2-embed", True)]
    assert "is gone" in rows[1]["error"]
    for row in (rows[0], rows[2]):
        assert (row["api"], row["requested"], row["error"], row["completion_tokens"]) == ("ollama", "vectors", None, None)
        assert row["wall_ms"] > 0 and row["cpu_ms"] > 0 and row["overhead_ms"] >= 0
    metrics = httpx.get(f"{url}/metrics").text
    assert 'arbiter_requests_total{api="ollama",endpoint="/api/embed",status="200"}' in metrics
    assert 'arbiter_failovers_total{route="vectors"} 1.0' in metrics
