"""The one ``events`` row builder: its rows are exactly the table's columns and read back as written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry.results.events import event_row
from registry.results.store import SCHEMAS, ResultsStore, iso_utc

pytestmark = pytest.mark.unit


def test_a_row_has_exactly_the_events_columns(tmp_path: Path) -> None:
    row = event_row("promote", route="qa", model="smollm2-135m", version=2, detail={"from": None, "to": "smollm2-135m/2"})
    assert set(row) | {"schema_version"} == set(SCHEMAS["events"].names)
    store = ResultsStore(tmp_path)
    store.append("events", [row])
    [back] = store.query("select * from events")
    assert (back["kind"], back["route"], back["model"], back["version"]) == ("promote", "qa", "smollm2-135m", 2)
    assert json.loads(back["detail"]) == {"from": None, "to": "smollm2-135m/2"}
    assert back["event_id"] == row["event_id"] and len(row["event_id"]) == 32
    assert back["ts"] == row["ts"] and row["ts"].tzinfo is not None


def test_a_given_id_and_time_are_kept_and_absent_fields_are_null() -> None:
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    row = event_row("webhook.unavailable", event_id="rollout1:ramp:0", ts=at)
    assert row == {"event_id": "rollout1:ramp:0", "ts": at, "kind": "webhook.unavailable", "route": None,
                   "model": None, "version": None, "detail": None}
    assert event_row("x")["event_id"] != event_row("x")["event_id"]  # a new id each time


def test_iso_utc_takes_epoch_seconds_or_a_datetime() -> None:
    assert iso_utc(0.0) == "1970-01-01T00:00:00+00:00"
    assert iso_utc(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2025-01-02T03:04:05+00:00"
    assert iso_utc(None) is None
