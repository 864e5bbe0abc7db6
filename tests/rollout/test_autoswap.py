"""Auto-swap on a champion that degrades for real: route ``qa``'s champion is a remote model served
by a second gateway process, which is SIGKILLed under load. Clients keep being answered (failover
to ``previous``); the failed attempts are rows; auto-swap first holds (the champion has not served
its minimum dwell), then rolls back by itself — once, without flapping.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port, gateway_process, steady_load

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway.background import gateway_in_background
from registry.settings import get_settings

pytestmark = pytest.mark.e2e
DWELL_S = 30.0


@pytest.fixture
def backend(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path, smollm2) -> Iterator:
    home = tmp_path_factory.mktemp("autoswap-backend")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    catalog = Catalog(get_settings(home=home))
    catalog.register(smollm2.path, name="smollm2-135m")
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    port = free_port()
    with gateway_process(home, port, env={"ARBITER_N_THREADS": "1"}) as process:
        yield process, f"http://127.0.0.1:{port}"


def events(catalog: Catalog, prefix: str = "autoswap.") -> list[dict]:
    return catalog.store.query("select kind, detail, ts from events where kind like $1 order by ts", [prefix + "%"])


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_failing_champion_is_held_for_its_dwell_then_rolled_back_once(backend, smollm2) -> None:
    process, backend_url = backend
    settings = get_settings(port=free_port(), alias_poll_s=0.2, calls_flush_s=0.2, breaker_open_s=1.0,
                            auto_swap=True, auto_swap_check_s=0.5, auto_swap_min_samples=4,
                            auto_swap_min_dwell_s=DWELL_S, auto_swap_cooldown_s=600)
    catalog = Catalog(settings)
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register_remote(kind="ollama", name="backend-b", source="qa", base_url=backend_url,
                            capabilities=list(smollm2.capabilities))
    routes = Routes(catalog)
    routes.promote("qa", "smollm2-135m", 1, force=True)
    routes.promote("qa", "backend-b", 1, force=True)  # champion: the remote one; previous: local
    promoted_at = time.time()

    def calls(model: str, ok: bool) -> int:
        return catalog.store.query("select count(*) as n from calls where model = $1 and ok = $2", [model, ok])[0]["n"]

    with gateway_in_background(settings) as (url, _gateway), steady_load(url, "qa"):
        wait_until(lambda: calls("backend-b", True) >= 2, 120, "the remote champion to answer")
        process.send_signal(signal.SIGKILL)  # the champion's server dies: its calls fail from now on
        wait_until(lambda: any(e["kind"] == "autoswap.rollback" for e in events(catalog)), DWELL_S + 60,
                   "the auto-swap rollback")
        time.sleep(3.0)  # several more checks: the new champion is healthy, nothing else may happen

    decisions = events(catalog)
    assert [e["kind"] for e in decisions] == ["autoswap.held", "autoswap.rollback"], decisions
    held, rolled = (json.loads(e["detail"]) for e in decisions)
    assert held["reasons"][0].startswith("dwell") and any("success rate" in r for r in held["reasons"])
    assert rolled["to"] == "smollm2-135m/1" and rolled["champion"]["n"] >= 4 and rolled["champion"]["ok"] < rolled["champion"]["n"]
    assert decisions[1]["ts"].timestamp() - promoted_at >= DWELL_S
    state = routes.show("qa")
    assert (state.champion.model, state.previous.model) == ("smollm2-135m", "backend-b")
    assert calls("smollm2-135m", True) > 0  # clients were answered by the fallback meanwhile


def test_a_failing_champion_with_no_previous_is_swapped_to_the_selectors_pick(backend, smollm2) -> None:
    process, backend_url = backend
    settings = get_settings(port=free_port(), alias_poll_s=0.2, calls_flush_s=0.2, breaker_open_s=1.0,
                            auto_swap=True, auto_swap_check_s=0.5, auto_swap_min_samples=4,
                            auto_swap_min_dwell_s=0, auto_swap_cooldown_s=600)
    catalog = Catalog(settings)
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-plain", capabilities=["text-generation"])  # lacks chat: not eligible
    catalog.register_remote(kind="ollama", name="backend-b", source="qa", base_url=backend_url,
                            capabilities=list(smollm2.capabilities))
    Routes(catalog).promote("qa", "backend-b", 1, force=True)  # the only version on the route

    with gateway_in_background(settings) as (url, _gateway), steady_load(url, "qa"):
        time.sleep(1.0)
        process.send_signal(signal.SIGKILL)
        wait_until(lambda: any(e["kind"] == "autoswap.swap" for e in events(catalog)), 60, "the auto-swap")

    decision = json.loads(events(catalog)[-1]["detail"])
    assert decision["to"] == "smollm2-135m/1" and any("success rate" in r for r in decision["reasons"])
    state = Routes(catalog).show("qa")
    assert (state.champion.model, state.previous.model) == ("smollm2-135m", "backend-b")
