"""Routes on a real MLflow store: promotion rules, rollback, UI alias edits, interrupted changes."""

from __future__ import annotations

import json
import uuid

import pytest

from registry.catalog.route_model import TAG_PENDING, route_model_name
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.errors import NotFoundError, PromotionError, UserError
from registry.machine.hardware import fingerprint
from registry.results.store import now_utc

pytestmark = pytest.mark.integration


def _benchmark_row(catalog: Catalog, task: str, model: str, version: int, quality: float,
                   task_version: int | None = None) -> None:
    """A `runs` row as the benchmark flow writes it (the flow itself is tested in test_benchmark_flow)."""
    catalog.store.append(
        "runs",
        [{"run_id": uuid.uuid4().hex, "ts": now_utc(), "task": task, "task_version": task_version, "model": model,
          "version": version, "quality": quality, "p50_ms": 100.0, "n": 20, "n_ok": 20, **fingerprint().as_row()}],
    )


@pytest.fixture
def routes(catalog: Catalog, registered) -> Routes:
    return Routes(catalog)


def test_promote_needs_a_benchmark_on_the_route_task(routes: Routes, catalog: Catalog) -> None:
    with pytest.raises(PromotionError, match="no benchmark on task 'qa'.*arbiter benchmark"):
        routes.promote("qa", "smollm2-135m", 1)
    _benchmark_row(catalog, "extract", "smollm2-135m", 1, 0.9)  # another task does not count
    with pytest.raises(PromotionError, match="no benchmark"):
        routes.promote("qa", "smollm2-135m", 1)
    assert routes.list() == []  # nothing was created by the refused promotion


def test_promote_sets_champion_and_previous_and_records_events(routes: Routes, catalog: Catalog) -> None:
    _benchmark_row(catalog, "qa", "smollm2-135m", 1, 0.6)
    _benchmark_row(catalog, "qa", "gemma3-270m", 2, 0.58)
    first = routes.promote("qa", "smollm2-135m", 1)
    assert first.champion.model == "smollm2-135m" and first.previous is None
    second = routes.promote("qa", "gemma3-270m", 2)
    assert (second.champion.model, second.champion.version) == ("gemma3-270m", 2)
    assert (second.previous.model, second.previous.version) == ("smollm2-135m", 1)
    payload = second.as_json()
    assert set(payload) >= {"route", "champion", "previous"} and payload["route"] == "qa"
    # the route's versions are copies with lineage, visible in MLflow
    versions = catalog.client.search_model_versions(f"name = '{route_model_name('qa')}'")
    assert sorted(mv.source for mv in versions) == ["models:/gemma3-270m/2", "models:/smollm2-135m/1"]
    kinds = catalog.store.query("select kind, model, version from events where route = 'qa' order by ts")
    assert [(e["kind"], e["model"]) for e in kinds] == [("promote", "smollm2-135m"), ("promote", "gemma3-270m")]


def test_promoting_the_champion_again_changes_nothing(routes: Routes, catalog: Catalog) -> None:
    _benchmark_row(catalog, "qa", "smollm2-135m", 1, 0.6)
    routes.promote("qa", "smollm2-135m", 1)
    again = routes.promote("qa", "smollm2-135m", 1)
    assert again.previous is None
    assert len(catalog.client.search_model_versions(f"name = '{route_model_name('qa')}'")) == 1
    assert catalog.store.query("select count(*) as n from events where kind = 'promote'") == [{"n": 1}]


def test_quality_under_ninety_percent_of_the_champion_is_refused_unless_forced(routes: Routes, catalog: Catalog) -> None:
    _benchmark_row(catalog, "qa", "smollm2-135m", 1, 0.8)
    _benchmark_row(catalog, "qa", "gemma3-270m", 1, 0.5)
    routes.promote("qa", "smollm2-135m", 1)
    with pytest.raises(PromotionError, match=r"under 0.9 × the champion"):
        routes.promote("qa", "gemma3-270m", 1)
    assert routes.show("qa").champion.model == "smollm2-135m"
    forced = routes.promote("qa", "gemma3-270m", 1, force=True)
    assert forced.champion.model == "gemma3-270m"
    detail = json.loads(catalog.store.query("select detail from events where kind='promote' order by ts desc limit 1")[0]["detail"])
    assert detail == {"from": "smollm2-135m/1", "to": "gemma3-270m/1", "forced": True}


def test_quality_is_compared_on_the_same_version_of_the_task(routes: Routes, catalog: Catalog) -> None:
    _benchmark_row(catalog, "qa", "smollm2-135m", 1, 0.9, task_version=1)
    routes.promote("qa", "smollm2-135m", 1)
    # The candidate measured only on qa/2: the champion has no figure on qa/2, so nothing to compare.
    _benchmark_row(catalog, "qa", "gemma3-270m", 1, 0.5, task_version=2)
    assert routes.promote("qa", "gemma3-270m", 1).champion.model == "gemma3-270m"
    # The old champion measured on qa/2 as well, and much better there: a candidate under 0.9 × is refused.
    _benchmark_row(catalog, "qa", "smollm2-135m", 1, 0.95, task_version=2)
    routes.promote("qa", "smollm2-135m", 1)
    _benchmark_row(catalog, "qa", "gemma3-270m", 1, 0.99, task_version=1)  # a better figure, on the old version
    with pytest.raises(PromotionError, match=r"scores 0.500 on 'qa', under 0.9 × the champion smollm2-135m/1's 0.950"):
        routes.promote("qa", "gemma3-270m", 1)


def test_rollback_swaps_champion_and_previous(routes: Routes, catalog: Catalog) -> None:
    _benchmark_row(catalog, "qa", "smollm2-135m", 1, 0.6)
    _benchmark_row(catalog, "qa", "smollm2-135m", 2, 0.6)
    routes.promote("qa", "smollm2-135m", 1)
    with pytest.raises(PromotionError, match="no previous version"):
        routes.rollback("qa")
    routes.promote("qa", "smollm2-135m", 2)
    rolled = routes.rollback("qa")
    assert (rolled.champion.version, rolled.previous.version) == (1, 2)
    assert catalog.store.query("select count(*) as n from events where kind = 'rollback'") == [{"n": 1}]


def test_unknown_route_model_and_bad_names(routes: Routes) -> None:
    with pytest.raises(NotFoundError, match="unknown route 'nope'"):
        routes.show("nope")
    with pytest.raises(NotFoundError, match="unknown route"):
        routes.rollback("nope")
    with pytest.raises(NotFoundError, match="unknown model"):
        routes.promote("qa", "no-such-model", 1, force=True)
    with pytest.raises(UserError, match="invalid route name"):
        routes.promote("Q A", "smollm2-135m", 1, force=True)


def test_champion_moved_by_hand_in_mlflow_is_what_show_reports(routes: Routes, catalog: Catalog) -> None:
    routes.promote("qa", "smollm2-135m", 1, force=True)
    routes.promote("qa", "gemma3-270m", 1, force=True)
    # The client call behind the UI's alias endpoint (tests/catalog/test_mlflow_ui.py goes through the UI's own).
    catalog.client.set_registered_model_alias(route_model_name("qa"), "champion", "1")
    assert routes.show("qa").champion.model == "smollm2-135m"
    assert routes.champion("qa").ref == "smollm2-135m/1"


def _interrupted_rollback(catalog: Catalog) -> None:
    """The state a SIGKILL leaves right after a rollback wrote its intent: aliases not moved yet."""
    intent = {"kind": "rollback", "aliases": {"champion": 1, "previous": 2},
              "event": {"event_id": "killed-rollback", "kind": "rollback", "route": "qa", "model": "smollm2-135m",
                        "version": 1, "detail": "{}"}}
    catalog.client.set_registered_model_tag(route_model_name("qa"), TAG_PENDING, json.dumps(intent))


def test_a_change_interrupted_after_its_intent_is_finished_by_the_next_call(routes: Routes, catalog: Catalog) -> None:
    routes.promote("qa", "smollm2-135m", 1, force=True)
    routes.promote("qa", "gemma3-270m", 1, force=True)
    _interrupted_rollback(catalog)
    state = routes.show("qa")
    assert (state.champion.model, state.previous.model) == ("smollm2-135m", "gemma3-270m")
    assert TAG_PENDING not in catalog.client.get_registered_model(route_model_name("qa")).tags
    assert catalog.store.query("select count(*) as n from events where event_id = 'killed-rollback'") == [{"n": 1}]


def test_rerunning_an_interrupted_rollback_does_not_roll_back_twice(routes: Routes, catalog: Catalog) -> None:
    routes.promote("qa", "smollm2-135m", 1, force=True)
    routes.promote("qa", "gemma3-270m", 1, force=True)
    _interrupted_rollback(catalog)
    state = routes.rollback("qa")  # the user runs the killed command again
    assert (state.champion.model, state.previous.model) == ("smollm2-135m", "gemma3-270m")
    assert catalog.store.query("select count(*) as n from events where kind = 'rollback'") == [{"n": 1}]


def test_a_copy_killed_before_its_tags_is_reused(routes: Routes, catalog: Catalog) -> None:
    name = route_model_name("qa")
    catalog.client.create_registered_model(name)
    catalog.client.copy_model_version("models:/smollm2-135m/1", name)  # copied, never tagged
    state = routes.promote("qa", "smollm2-135m", 1, force=True)
    assert state.champion.route_version == 1
    assert len(catalog.client.search_model_versions(f"name = '{name}'")) == 1


def test_an_alias_on_a_version_that_is_not_a_catalog_copy_is_a_clean_error(routes: Routes, catalog: Catalog) -> None:
    routes.promote("qa", "smollm2-135m", 1, force=True)
    name = route_model_name("qa")
    run = catalog.client.create_run(catalog.client.get_experiment_by_name("arbiter-registrations").experiment_id)
    stray = catalog.client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    catalog.client.set_registered_model_alias(name, "champion", stray.version)
    with pytest.raises(NotFoundError, match="not a copy of a catalog version"):
        routes.show("qa")
