"""Feedback on an answer through the gateway: every answer names its call, and ``POST
/arbiter/feedback`` records a score for it — real server, real llama.cpp on SmolLM2, real store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from support import free_port

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway import Gateway
from registry.gateway.background import gateway_in_background
from registry.gateway.rate import TokenBucket
from registry.results.feedback import FeedbackBook, feedback_id
from registry.settings import get_settings

pytestmark = pytest.mark.e2e
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path, shipped) -> Iterator[tuple[str, Gateway]]:
    home = tmp_path_factory.mktemp("feedback-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, port=free_port(), alias_poll_s=0.5)
    catalog = Catalog(settings)
    catalog.register(shipped[0].path, name="smollm2-135m", capabilities=list(shipped[0].capabilities))
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    with gateway_in_background(settings) as running:
        yield running


def _ask(url: str, *, stream: bool = False) -> httpx.Response:
    body = {"model": "qa", "messages": QUESTION, "stream": stream, "options": {"num_predict": 3}}
    return httpx.post(f"{url}/api/chat", json=body, timeout=60)


def test_every_answer_names_its_call_whole_streamed_and_in_the_openai_id(served) -> None:
    url, gateway = served
    whole = _ask(url)
    streamed = _ask(url, stream=True)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    completion = client.chat.completions.with_raw_response.create(model="qa", messages=QUESTION, max_tokens=3)
    chunks = list(client.chat.completions.create(model="qa", messages=QUESTION, max_tokens=3, stream=True))
    ids = [whole.headers["x-arbiter-call-id"], streamed.headers["x-arbiter-call-id"],
           completion.headers["x-arbiter-call-id"]]
    assert completion.parse().id == "chatcmpl-" + ids[2]
    assert {chunk.id for chunk in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    ids.append(chunks[0].id.removeprefix("chatcmpl-"))
    gateway.recorder.flush()
    rows = gateway.store.query("select call_id, api, ok from calls where source = 'gateway'")
    assert {r["call_id"] for r in rows} >= set(ids)  # each id is the answer's own calls row
    assert len(set(ids)) == 4


def test_feedback_is_recorded_against_its_call_once_per_source(served) -> None:
    url, gateway = served
    call_id = _ask(url).headers["x-arbiter-call-id"]
    first = httpx.post(f"{url}/arbiter/feedback", json={"call_id": call_id, "score": 0.25, "source": "app"})
    assert first.status_code == 200, first.text  # before the call's row is flushed: known from memory
    assert first.json() == {"feedback_id": feedback_id(call_id, "app"), "call_id": call_id, "route": "qa",
                            "model": "smollm2-135m", "version": 1, "source": "app", "score": 0.25}
    again = httpx.post(f"{url}/arbiter/feedback", json={"call_id": "chatcmpl-" + call_id, "thumbs": "up",
                                                        "source": "app", "comment": "right after all"})
    person = httpx.post(f"{url}/arbiter/feedback", json={"call_id": call_id, "thumbs": "down"})
    assert again.status_code == person.status_code == 200
    gateway.recorder.flush()
    latest = gateway.store.query(
        "select source, arg_max(score, ts) as score, arg_max(comment, ts) as comment from feedback "
        "where call_id = $1 group by source order by source", [call_id])
    assert latest == [{"source": "app", "score": 1.0, "comment": "right after all"},
                      {"source": "user", "score": 0.0, "comment": None}]
    # A gateway started later knows the call from its row: feedback survives a restart.
    later = FeedbackBook(gateway.store, write=lambda row: None).record(call_id, score=0.5, source="audit")
    assert (later["route"], later["model"], later["version"]) == ("qa", "smollm2-135m", 1)


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"call_id": "0" * 32, "score": 1}, 404, "no live call"),
    ({"call_id": "not-an-id", "score": 1}, 400, "is not a call id"),
    ({"call_id": "CALL", "score": 1.5}, 400, "score must be a number from 0 to 1"),
    ({"call_id": "CALL", "score": 1, "thumbs": "up"}, 400, "exactly one of score"),
    ({"call_id": "CALL", "thumbs": "sideways"}, 400, "thumbs must be 'up' or 'down'"),
    ({"call_id": "CALL", "score": 1, "source": "arbiter:scorer"}, 400, "arbiter's own signals"),
    ({"call_id": "CALL", "score": 1, "comment": "x" * 2001}, 400, "comment"),
    ({"call_id": "CALL", "score": 1, "extra": True}, 400, "extra"),
])
def test_bad_feedback_is_a_clear_4xx_and_stores_nothing(served, body: dict, status: int, says: str) -> None:
    url, gateway = served
    call_id = _ask(url).headers["x-arbiter-call-id"]
    body = {k: (call_id if v == "CALL" else v) for k, v in body.items()}
    answer = httpx.post(f"{url}/arbiter/feedback", content=json.dumps(body))
    assert answer.status_code == status and says in answer.json()["error"], answer.text
    gateway.recorder.flush()
    assert gateway.store.query("select count(*) as n from feedback where call_id = $1", [call_id]) == [{"n": 0}]


def test_a_flood_of_feedback_gets_429_with_retry_after(served) -> None:
    url, gateway = served
    call_id = _ask(url).headers["x-arbiter-call-id"]
    kept, gateway.feedback_bucket = gateway.feedback_bucket, TokenBucket(0.5, 3)  # a tight bound for this test
    try:
        statuses = [httpx.post(f"{url}/arbiter/feedback", json={"call_id": call_id, "score": 1, "source": f"s{n}"})
                    for n in range(8)]
    finally:
        gateway.feedback_bucket = kept
    assert [a.status_code for a in statuses[:3]] == [200, 200, 200]
    refused = [a for a in statuses if a.status_code == 429]
    assert len(refused) >= 4 and int(refused[0].headers["Retry-After"]) >= 1
    assert "too much feedback" in refused[0].json()["error"]
    gateway.recorder.flush()
    stored = gateway.store.query("select count(distinct source) as n from feedback where call_id = $1", [call_id])
    assert stored == [{"n": 8 - len(refused)}]
