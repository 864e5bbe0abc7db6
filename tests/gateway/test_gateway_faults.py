"""Real faults: a backend killed (SIGKILL) mid-stream under concurrent load, and its breaker.

Two backend gateways (``arbiter serve`` processes, each running SmolLM2 through llama.cpp) sit
behind a front gateway whose route ``front`` has champion = backend B and previous = backend C,
both registered as ``ollama`` versions. Killing B while clients stream through the front must
cost no request: each stream resumes on C (same weights, temperature 0: the same text).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest
from support import free_port, gateway_process

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway import Gateway
from registry.gateway.background import gateway_in_background
from registry.settings import get_settings

pytestmark = pytest.mark.e2e
PROMPTS = [f"Write one sentence about the number {n}." for n in range(6)]
OPTIONS = {"num_predict": 40, "temperature": 0}


def _home(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path, name: str) -> Path:
    home = tmp_path_factory.mktemp(name)
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    return home


@pytest.fixture(scope="module")
def backend_home(tmp_path_factory, empty_mlflow_db: Path, smollm2) -> Path:
    home = _home(tmp_path_factory, empty_mlflow_db, "backends")
    catalog = Catalog(get_settings(home=home))
    catalog.register(smollm2.path, name="smollm2-135m")
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    return home


@pytest.fixture(scope="module")
def backend_c(backend_home: Path) -> Iterator[str]:
    port = free_port()
    with gateway_process(backend_home, port, env={"ARBITER_N_THREADS": "1"}):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def front(tmp_path_factory, empty_mlflow_db: Path, backend_home: Path, backend_c: str) -> Iterator[tuple]:
    """Backend B (killable, per test), and the front gateway routing to B with C as fallback."""
    port_b = free_port()
    backend_b = gateway_process(backend_home, port_b, env={"ARBITER_N_THREADS": "1"})
    process_b = backend_b.__enter__()
    try:
        home = _home(tmp_path_factory, empty_mlflow_db, "front")
        settings = get_settings(home=home, port=free_port(), breaker_open_s=1.0, health_interval_s=0.5,
                                admin_token="t")
        catalog = Catalog(settings)
        catalog.register_remote(kind="ollama", name="backend-c", source="qa", base_url=backend_c)
        catalog.register_remote(kind="ollama", name="backend-b", source="qa", base_url=f"http://127.0.0.1:{port_b}")
        routes = Routes(catalog)
        routes.promote("front", "backend-c", 1, force=True)
        routes.promote("front", "backend-b", 1, force=True)  # champion B, previous C
        with gateway_in_background(settings) as (url, gateway):
            yield url, gateway, process_b, port_b, backend_home
    finally:
        backend_b.__exit__(None, None, None)


def _stream(url: str, prompt: str, started: threading.Event) -> str:
    client = ollama.Client(host=url, timeout=120)
    chunks = client.chat(model="front", messages=[{"role": "user", "content": prompt}], options=OPTIONS, stream=True)
    parts = []
    for chunk in chunks:
        parts.append(chunk.message.content)
        started.set()
    return "".join(parts)


def test_a_backend_killed_mid_stream_under_load_loses_no_request(front) -> None:
    url, gateway, process_b, _, _ = front
    expected = {p: ollama.Client(host=url).chat(model="front", messages=[{"role": "user", "content": p}],
                                                options=OPTIONS).message.content for p in PROMPTS}
    answers: dict[str, str] = {}
    errors: list[BaseException] = []
    streaming = threading.Event()

    def client(prompt: str) -> None:
        try:
            answers[prompt] = _stream(url, prompt, streaming)
        except BaseException as exc:  # noqa: BLE001 — any failure is what this test counts
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(p,)) for p in PROMPTS]
    for thread in threads:
        thread.start()
    assert streaming.wait(timeout=60), "no stream started"
    time.sleep(0.1)  # mid-stream: text has reached a client
    process_b.send_signal(signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=180)

    assert errors == []
    assert answers == expected  # every stream finished, on C, with the text B had started
    gateway.recorder.flush()
    calls = gateway.store.query("select model, ok from calls where source = 'gateway' and route = 'front'")
    assert any(c["model"] == "backend-b" and not c["ok"] for c in calls)  # the failed attempts are rows too
    assert sum(1 for c in calls if c["ok"]) == 2 * len(PROMPTS)
    resumed = [line for line in httpx.get(f"{url}/metrics").text.splitlines()
               if line.startswith('arbiter_resumed_streams_total{route="front"}')]
    assert resumed and float(resumed[0].split()[-1]) >= 1  # at least one stream was cut after sending text


def test_the_breaker_opens_on_a_dead_backend_and_closes_when_it_is_back(front) -> None:
    url, gateway, process_b, port_b, backend_home = front
    process_b.send_signal(signal.SIGKILL)
    process_b.wait(timeout=30)

    def served_by() -> str:
        answer = httpx.post(f"{url}/api/generate", json={"model": "front", "prompt": "Hi", "stream": False,
                                                         "options": {"num_predict": 2}}, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.headers["x-arbiter-model"]

    for _ in range(4):
        assert served_by() == "backend-c/1"  # answered by the fallback while B is down
    breaker_b = next(i["breaker"] for i in gateway.pool.snapshot() if i["model"] == "backend-b")
    assert breaker_b in ("open", "half_open")

    with gateway_process(backend_home, port_b, env={"ARBITER_N_THREADS": "1"}):
        deadline = time.monotonic() + 30
        while next(i["breaker"] for i in gateway.pool.snapshot() if i["model"] == "backend-b") != "closed":
            assert time.monotonic() < deadline, "the breaker did not close after B came back"
            time.sleep(0.2)
        assert served_by() == "backend-b/1"
    gateway.recorder.flush()
    kinds = [e["kind"] for e in gateway.store.query("select kind from events where model = 'backend-b' order by ts")]
    assert "breaker.open" in kinds and "breaker.closed" in kinds
    metrics = httpx.get(f"{url}/metrics").text
    assert 'arbiter_failovers_total{route="front"}' in metrics


def test_arbiter_serve_refuses_a_public_bind_without_a_token_and_a_busy_port(backend_home: Path, backend_c: str) -> None:
    import subprocess

    from support import ARBITER

    env = {**os.environ, "ARBITER_HOME": str(backend_home)}
    public = subprocess.run([ARBITER, "serve", "--host", "0.0.0.0", "--port", str(free_port())], env=env,
                            capture_output=True, text=True, timeout=120)
    assert public.returncode == 2 and "ARBITER_ADMIN_TOKEN" in public.stderr and "Traceback" not in public.stderr
    busy = subprocess.run([ARBITER, "serve", "--port", backend_c.rsplit(":", 1)[1]], env=env,
                          capture_output=True, text=True, timeout=120)
    assert busy.returncode == 2 and "is in use" in busy.stderr and "Traceback" not in busy.stderr


def test_a_bad_setting_in_the_environment_is_one_line(backend_home: Path) -> None:
    import subprocess

    from support import ARBITER

    env = {**os.environ, "ARBITER_HOME": str(backend_home), "ARBITER_QUEUE_DEPTH": "-1"}
    bad = subprocess.run([ARBITER, "serve", "--port", str(free_port())], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "ARBITER_QUEUE_DEPTH='-1'" in bad.stderr and "greater than or equal to 0" in bad.stderr


def test_gateway_object_needs_no_server_to_refuse_a_public_bind(tmp_path: Path) -> None:
    from registry.errors import ConfigError

    with pytest.raises(ConfigError, match="refusing to bind 0.0.0.0"):
        Gateway(get_settings(home=tmp_path, host="0.0.0.0"))


def test_a_graceful_stop_flushes_every_call_row(backend_home: Path) -> None:
    from registry.results.store import ResultsStore

    store = ResultsStore(backend_home / "results")
    before = store.query("select count(*) as n from calls where source = 'gateway' and api = 'openai'")[0]["n"]
    port = free_port()
    # a flush interval longer than the test: only the shutdown flush can write these rows
    with gateway_process(backend_home, port, env={"ARBITER_CALLS_FLUSH_S": "3600"}) as process:
        for n in range(3):
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/completions",
                                json={"model": "qa", "prompt": f"Number {n}:", "max_tokens": 2}, timeout=60)
            assert answer.status_code == 200
        after_requests = store.query("select count(*) as n from calls where source = 'gateway' and api = 'openai'")
        assert after_requests[0]["n"] == before
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    after = store.query("select count(*) as n from calls where source = 'gateway' and api = 'openai'")[0]["n"]
    assert after == before + 3
