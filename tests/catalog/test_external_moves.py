"""A person moves ``champion`` by hand (the MLflow UI's alias call): the old champion becomes
``previous`` on the first read, recorded once as an ``alias.external`` event with both versions'
figures, so ``routes rollback`` goes back; a kill between the steps converges, and a running gradual
rollout keeps ``previous`` for itself. Real MLflow store; ``tests/catalog/test_mlflow_ui.py`` moves
the alias through the UI's own endpoint."""

from __future__ import annotations

import json

import pytest

from registry.catalog.route_model import TAG_PENDING, RouteModel, route_model_name
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.machine.hardware import fingerprint
from registry.results.events import event_row
from registry.results.store import new_id, now_utc

pytestmark = pytest.mark.integration

ROUTE = route_model_name("qa")


def benchmark_row(catalog: Catalog, model: str, version: int, quality: float, **figures) -> None:
    """A ``runs`` row on qa as the benchmark writes one (tests/catalog/test_candidates.py runs a real one)."""
    catalog.store.append("runs", [{
        "run_id": new_id(), "mlflow_run_id": new_id(), "ts": now_utc(), "task": "qa", "task_version": 1,
        "model": model, "version": version, "n": 20, "n_ok": 20, "quality": quality, "quality_source": "reference",
        "p95_ms": 300.0, "tokens_per_s": 40.0, "energy_mwh_per_1k_tokens": 0.75, **figures, **fingerprint().as_row(),
    }])


@pytest.fixture
def routes(catalog: Catalog, registered) -> Routes:
    """qa served by smollm2-135m/2 after smollm2-135m/1; gemma3-270m/1 benchmarked, never promoted."""
    benchmark_row(catalog, "smollm2-135m", 1, 0.6, p50_ms=110.0)
    benchmark_row(catalog, "smollm2-135m", 2, 0.62, p50_ms=90.0)
    benchmark_row(catalog, "gemma3-270m", 1, 0.7, p50_ms=200.0, tokens_per_s=20.0)
    routes = Routes(catalog)
    routes.promote("qa", "smollm2-135m", 1)
    routes.promote("qa", "smollm2-135m", 2)
    return routes


def by_hand(catalog: Catalog, model: str, version: int) -> int:
    """What the MLflow UI does: point ``champion`` at the route's copy of a candidate."""
    [mv] = [mv for mv in catalog.client.search_model_versions(f"name = '{ROUTE}'")
            if mv.source == f"models:/{model}/{version}"]
    catalog.client.set_registered_model_alias(ROUTE, "champion", mv.version)
    return int(mv.version)


def externals(catalog: Catalog) -> list[dict]:
    rows = catalog.store.query("select distinct event_id, model, version, detail from events "
                               "where kind = 'alias.external' order by model, version")
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]


def test_a_champion_moved_by_hand_makes_the_old_one_previous_and_rollback_goes_back(routes: Routes, catalog) -> None:
    moved_to = by_hand(catalog, "gemma3-270m", 1)

    state = routes.show("qa")

    assert (state.champion.model, state.champion.route_version) == ("gemma3-270m", moved_to)
    assert (state.previous.model, state.previous.version) == ("smollm2-135m", 2)
    assert routes.show("qa") == state  # a second read changes nothing
    [event] = externals(catalog)
    assert (event["model"], event["version"]) == ("gemma3-270m", 1)
    detail = event["detail"]
    assert (detail["from"], detail["to"], detail["previous"]) == ("smollm2-135m/2", "gemma3-270m/1", "smollm2-135m/2")
    assert detail["figures"]["from"]["quality"] == 0.62 and detail["figures"]["from"]["p50_ms"] == 90.0
    assert detail["figures"]["to"]["quality"] == 0.7 and detail["figures"]["to"]["tokens_per_s"] == 20.0
    assert set(detail["figures"]["to"]) >= {"quality", "p50_ms", "p95_ms", "tokens_per_s", "energy_mwh_per_1k_tokens",
                                            "quality_source", "task_version", "benchmark_run"}

    back = routes.rollback("qa")
    assert (back.champion.model, back.champion.version, back.previous.model) == ("smollm2-135m", 2, "gemma3-270m")
    assert len(externals(catalog)) == 1


def test_a_move_back_to_previous_by_hand_swaps_them(routes: Routes, catalog) -> None:
    by_hand(catalog, "smollm2-135m", 1)
    state = routes.show("qa")
    assert (state.champion.version, state.previous.version) == (1, 2)
    by_hand(catalog, "smollm2-135m", 2)  # and forward again: a second move, a second event
    state = routes.show("qa")
    assert (state.champion.version, state.previous.version) == (2, 1)
    assert [(e["version"], e["detail"]["from"]) for e in externals(catalog)] == [(1, "smollm2-135m/2"), (2, "smollm2-135m/1")]


def _killed_take_up(catalog: Catalog, *, event_written: bool) -> None:
    """What a SIGKILL leaves while a read takes up a move: the intent (the route's pending tag) set,
    ``previous`` maybe not moved yet, and maybe the event written but the tag not cleared."""
    route = RouteModel(catalog, "qa")
    detail = {"from": "smollm2-135m/2", "to": "gemma3-270m/1"}
    intent = {"kind": "alias.external", "aliases": {"previous": route.copy_of(catalog.get("smollm2-135m", 2))},
              "event": {"event_id": "killed-move", "kind": "alias.external", "route": "qa", "model": "gemma3-270m",
                        "version": 1, "detail": json.dumps(detail)}}
    route.set_pending(intent)
    if event_written:
        catalog.store.append("events", [event_row("alias.external", route="qa", model="gemma3-270m", version=1,
                                                  detail=detail, event_id="killed-move")])


@pytest.mark.parametrize("event_written", [False, True])
def test_a_take_up_killed_midway_converges_on_the_next_read(routes: Routes, catalog, event_written: bool) -> None:
    by_hand(catalog, "gemma3-270m", 1)
    _killed_take_up(catalog, event_written=event_written)

    state = routes.show("qa")

    assert (state.champion.model, state.previous.model, state.previous.version) == ("gemma3-270m", "smollm2-135m", 2)
    assert TAG_PENDING not in catalog.client.get_registered_model(ROUTE).tags
    assert [e["event_id"] for e in externals(catalog)] == ["killed-move"]  # the one move, not a second
    assert routes.show("qa") == state


def test_during_a_gradual_rollout_previous_is_left_to_the_rollout(routes: Routes, catalog) -> None:
    rollout = {"id": "r1", "candidate": "gemma3-270m/1", "phase": "ramp", "step": 1}
    RouteModel(catalog, "qa").save_rollout(json.dumps(rollout))
    by_hand(catalog, "gemma3-270m", 1)

    state = routes.show("qa")

    assert state.champion.model == "gemma3-270m"
    assert (state.previous.model, state.previous.version) == ("smollm2-135m", 1)  # as the last promotion left it
    [event] = externals(catalog)
    assert event["detail"]["previous"] == "not set: rollout r1 of gemma3-270m/1 is running"
    assert routes.show("qa") == state and len(externals(catalog)) == 1
