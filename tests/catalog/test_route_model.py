"""The route model on a real MLflow store: aliases and every ``arbiter.*`` route tag written and read
back in the formats a running gateway reads, one read for the whole alias table, and a write that
meets a real sqlite lock (another connection holding a write transaction) retried until it lands."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time

import pytest

from registry.catalog.route_model import (
    CHALLENGER,
    CHAMPION,
    TAG_ABORT,
    TAG_PENDING,
    TAG_REPLICAS,
    TAG_ROLLOUT,
    TAG_SHARE,
    RouteModel,
    RouteTarget,
    read_alias_table,
)
from registry.catalog.versions import Catalog
from registry.errors import UserError
from registry.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def qa(catalog: Catalog, smollm2) -> RouteModel:
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-twin", capabilities=list(smollm2.capabilities))
    route = RouteModel(catalog, "qa")
    route.create()
    return route


def test_a_route_that_does_not_exist_reads_as_none_and_a_bad_name_is_refused(catalog: Catalog) -> None:
    assert RouteModel(catalog, "qa").read() is None
    with pytest.raises(UserError, match="invalid route name 'Q A'"):
        RouteModel(catalog, "Q A")


def test_aliases_and_copies_round_trip(qa: RouteModel, catalog: Catalog) -> None:
    champion = qa.copy_of(catalog.get("smollm2-135m", 1))
    assert qa.copy_of(catalog.get("smollm2-135m", 1)) == champion  # made once, then reused
    qa.set_alias(CHAMPION, champion)
    challenger = qa.copy_of(catalog.get("smollm2-twin", 1))
    qa.offer_challenger(challenger, share=25)

    view = qa.read()
    assert view.aliases == {CHAMPION: str(champion), CHALLENGER: str(challenger)}
    assert qa.target(view.aliases[CHAMPION]) == RouteTarget("smollm2-135m", 1, champion)
    assert qa.target(None) is None
    raw = catalog.client.get_registered_model("route.qa")  # what MLflow holds: the contract's formats
    assert raw.tags[TAG_SHARE] == "25" and raw.tags["arbiter.role"] == "route" and raw.tags["arbiter.task"] == "qa"
    assert view.share == 25

    qa.withdraw_challenger()
    qa.withdraw_challenger()  # harmless when there is none
    view = qa.read()
    assert CHALLENGER not in view.aliases and view.share == 0
    assert catalog.client.get_registered_model("route.qa").tags[TAG_SHARE] == "0"


def test_every_route_tag_round_trips_in_its_format(qa: RouteModel, catalog: Catalog) -> None:
    intent = {"kind": "promote", "aliases": {"champion": 1}, "event": {"event_id": "e1", "detail": "{}"}}
    qa.set_pending(intent)
    rollout = {"id": "r1", "phase": "ramp", "candidate": "smollm2-twin/1", "step": 0}
    qa.save_rollout(json.dumps(rollout, separators=(",", ":")))
    qa.request_abort("aborted by hand")
    catalog.client.set_registered_model_tag("route.qa", TAG_REPLICAS, "2")  # set by hand, in the MLflow UI

    tags = catalog.client.get_registered_model("route.qa").tags
    assert json.loads(tags[TAG_PENDING]) == intent
    assert tags[TAG_ROLLOUT] == '{"id":"r1","phase":"ramp","candidate":"smollm2-twin/1","step":0}'
    assert tags[TAG_ABORT] == "aborted by hand"
    view = qa.read()
    assert (view.pending, view.rollout, view.abort, view.replicas) == (intent, rollout, "aborted by hand", 2)
    assert view.rollout_running

    qa.save_rollout(json.dumps({**rollout, "phase": "done"}))
    qa.clear_pending()
    qa.clear_abort()
    view = qa.read()
    assert (view.pending, view.abort, view.rollout_running) == (None, None, False)


def test_a_hand_edited_share_or_replicas_that_is_not_a_number_reads_as_unset(qa: RouteModel, catalog: Catalog) -> None:
    catalog.client.set_registered_model_tag("route.qa", TAG_SHARE, "lots")
    catalog.client.set_registered_model_tag("route.qa", TAG_REPLICAS, "-1")
    view = qa.read()
    assert (view.share, view.replicas) == (0, None)


def test_the_alias_table_is_every_route_and_every_catalog_alias(qa: RouteModel, catalog: Catalog) -> None:
    qa.set_alias(CHAMPION, qa.copy_of(catalog.get("smollm2-135m", 1)))
    catalog.client.set_registered_model_alias("smollm2-twin", "stable", "1")
    RouteModel(catalog, "extract").create()

    table = read_alias_table(catalog)
    assert sorted(table.routes) == ["extract", "qa"]
    assert table.routes["qa"].aliases == {CHAMPION: "1"} and table.routes["extract"].aliases == {}
    assert table.models == {"smollm2-twin": {"stable": "1"}}  # catalog models without aliases are left out


def test_a_write_that_meets_a_locked_store_is_retried_until_it_lands(
    qa: RouteModel, catalog: Catalog, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process's write transaction holds the sqlite file; the share is written once it lets go.
    MLflow waits out sqlite's busy timeout (20 s) before it says "database is locked", so this takes that long."""
    twin = qa.copy_of(catalog.get("smollm2-twin", 1))
    caplog.set_level(logging.INFO, logger="registry.catalog.mlflow_client")
    holder = sqlite3.connect(settings.mlruns_dir / "mlflow.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as another process's transaction holds it
    written = threading.Thread(target=qa.offer_challenger, args=(twin, 10))
    written.start()
    try:
        deadline = time.monotonic() + 120
        while not any("is locked" in r.getMessage() for r in caplog.records):
            assert written.is_alive(), "the write ended before it met the lock"
            assert time.monotonic() < deadline, "the write never met the lock"
            time.sleep(0.2)
    finally:
        holder.rollback()
        holder.close()
    written.join(timeout=120)

    assert not written.is_alive()
    view = qa.read()
    assert view.share == 10 and view.aliases[CHALLENGER] == str(twin)
