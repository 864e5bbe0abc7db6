"""A champion moved through MLflow's REST API — the path the MLflow UI takes — is followed by a
running gateway: noticed by polling within 2 s, and through MLflow's webhook when polling is slow.

What these tests bound is the *noticing*: the swap then loads and warms the new version, which takes
as long as the machine's load makes it (``benchmarks/swap_under_load.py`` measures the whole swap)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest
from support import free_port, gateway_process, mlflow_server

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway.background import gateway_in_background
from registry.settings import Settings, get_settings

pytestmark = pytest.mark.e2e
SLOW_POLL_S = 120  # the webhook test's poll interval: a follow well inside it came by webhook
WEBHOOK_ENV = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": "wiDQSQqXEfO8dI0LyE-5ECNmbmuzDeDnhDHTMrlDb9s=",  # a Fernet key for tests
}


@pytest.fixture
def two_versions(catalog: Catalog, shipped) -> dict[int, str]:
    """Route qa with copies of smollm2-135m/2 and /1; champion /1. Returns catalog version → route version."""
    for model in shipped[:2]:
        catalog.register(model.path, name=model.name, capabilities=list(model.capabilities))
    routes = Routes(catalog)
    copies = {}
    for version in (2, 1):
        copies[version] = str(routes.promote("qa", "smollm2-135m", version, force=True).champion.route_version)
    return copies


def _served_by(url: str) -> str:
    answer = httpx.post(f"{url}/api/generate", json={"model": "qa", "prompt": "Hi", "stream": False,
                                                     "options": {"num_predict": 1}}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-arbiter-model"]


def _move_and_time(url: str, mlflow_url: str, route_version: str, expected: str) -> tuple[datetime, float]:
    """Moves route qa's champion through MLflow's REST API; returns when the move was answered and the
    seconds until the gateway served ``expected``."""
    moved = httpx.post(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias",
                       json={"name": "route.qa", "alias": "champion", "version": route_version}, timeout=30)
    assert moved.status_code == 200, moved.text
    moved_wall, moved_at = datetime.now(UTC), time.monotonic()
    while _served_by(url) != expected:
        assert time.monotonic() - moved_at < SLOW_POLL_S / 4, "the gateway never followed the alias"
        time.sleep(0.05)
    return moved_wall, time.monotonic() - moved_at


def test_an_alias_moved_through_the_rest_api_is_followed_within_two_seconds(two_versions, settings: Settings) -> None:
    with mlflow_server(settings.tracking_uri) as mlflow_url, \
            gateway_in_background(get_settings(home=settings.home, port=free_port())) as (url, gateway):
        assert _served_by(url) == "smollm2-135m/1"
        moved_wall, _ = _move_and_time(url, mlflow_url, two_versions[2], "smollm2-135m/2")
        gateway.recorder.flush()
        started = gateway.store.query(
            "select ts from events where kind = 'swap.start' and route = 'qa' order by ts desc limit 1")[0]["ts"]
        assert (started - moved_wall).total_seconds() < 2.0  # one poll (1 s) and one MLflow read


def test_mlflows_webhook_makes_the_change_visible_without_waiting_for_a_poll(two_versions, settings: Settings) -> None:
    # MLflow fixes its secret-encryption key when it is imported: the gateway needs the key in its
    # environment from the start, so it runs as `arbiter serve`, as a user would start it.
    port = free_port()
    env = {**WEBHOOK_ENV, "ARBITER_ALIAS_POLL_S": str(SLOW_POLL_S)}
    with gateway_process(settings.home, port, env=env, webhook=True) as process:
        url = f"http://127.0.0.1:{port}"
        with mlflow_server(settings.tracking_uri, env=WEBHOOK_ENV) as mlflow_url:
            assert _served_by(url) == "smollm2-135m/1"
            _, followed_s = _move_and_time(url, mlflow_url, two_versions[2], "smollm2-135m/2")
            assert followed_s < SLOW_POLL_S / 4  # the next poll was two minutes away: the webhook did it
        metrics = httpx.get(f"{url}/metrics").text
        assert 'arbiter_events_total{kind="webhook.received"}' in metrics
    assert "following aliases by MLflow webhook" in process.stdout.read()


def test_a_forged_webhook_call_is_refused(two_versions, settings: Settings) -> None:
    with gateway_in_background(get_settings(home=settings.home, port=free_port())) as (url, _):
        forged = httpx.post(f"{url}/hooks/mlflow", json={"entity": "model_version_alias", "action": "created"},
                            headers={"x-mlflow-signature": "v1,AAAA", "x-mlflow-timestamp": str(int(time.time())),
                                     "x-mlflow-delivery-id": "x"})
        assert forged.status_code == 401 and "signature" in forged.json()["error"]


def test_serve_without_webhook_settings_says_why_and_polls(
    two_versions, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", raising=False)
    with gateway_in_background(get_settings(home=settings.home, port=free_port())) as (url, gateway):
        assert gateway.register_webhook(url) is None
        monkeypatch.setenv("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", WEBHOOK_ENV["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"])
        assert gateway.register_webhook(url) is None  # http to loopback is refused by MLflow's default policy
        gateway.recorder.flush()
        details = [e["detail"] for e in gateway.store.query(
            "select detail from events where kind = 'webhook.unavailable' order by ts")]
        assert "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY" in details[0] and "scheme" in details[1]
