"""Feedback rows: validated, joined to a live call, idempotent per (call, source); the bounded
memory of recent calls. Real store; the tracker's path too."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.errors import NotFoundError, UserError
from registry.machine.hardware import fingerprint
from registry.results.feedback import CallRef, FeedbackBook, RecentCalls, feedback_id, parse_call_id
from registry.results.store import ResultsStore, new_id, now_utc
from registry.selection.tracker import PerformanceTrackerBridge

pytestmark = pytest.mark.data


def _call(store: ResultsStore, source: str, **changes) -> str:
    call_id = new_id()
    store.append("calls", [{"call_id": call_id, "ts": now_utc(), "source": source, "route": "qa", "task": "qa",
                            "model": "smollm2-135m", "version": 2, "ok": True, **fingerprint().as_row(), **changes}])
    return call_id


def test_a_live_call_takes_feedback_and_a_benchmark_or_shadow_call_does_not(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    book = FeedbackBook(store)
    live = _call(store, "gateway")
    row = book.record(live, score=0.4, source="app", comment="half right")
    assert (row["route"], row["model"], row["version"], row["signal"]) == ("qa", "smollm2-135m", 2, "feedback")
    assert row["feedback_id"] == feedback_id(live, "app") != feedback_id(live, "user")
    for source in ("benchmark", "shadow"):
        with pytest.raises(NotFoundError, match="benchmark and shadow answers take no feedback"):
            book.record(_call(store, source), score=1.0)
    assert store.query("select count(*) as n from feedback") == [{"n": 1}]


def test_posting_again_replaces_the_score_of_that_source(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    book = FeedbackBook(store)
    call_id = _call(store, "gateway")
    book.record(call_id, score=0.2, source="app")
    book.record(call_id, thumbs="up", source="app")
    latest = store.query("select count(distinct feedback_id) as ids, arg_max(score, ts) as score from feedback")
    assert latest == [{"ids": 1, "score": 1.0}]


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"score": None}, "exactly one of score"),
    ({"score": float("nan")}, "score must be a number from 0 to 1"),
    ({"score": True}, "score must be a number from 0 to 1"),
    ({"score": -0.1}, "score must be a number from 0 to 1"),
    ({"score": 1, "source": ""}, "must be 1–64 characters"),
    ({"score": 1, "source": "has space"}, "must be 1–64 characters"),
    ({"score": 1, "source": "arbiter:judge:x/1"}, "arbiter's own signals"),
    ({"score": 1, "comment": "é" * 2001}, "2,001 characters"),
])
def test_bad_values_are_one_line_and_write_nothing(tmp_path: Path, kwargs: dict, says: str) -> None:
    store = ResultsStore(tmp_path)
    with pytest.raises(UserError, match=says):
        FeedbackBook(store).record(_call(store, "gateway"), **kwargs)
    assert store.query("select count(*) as n from feedback") == [{"n": 0}]


def test_call_ids_are_read_from_a_header_or_an_openai_id() -> None:
    bare = new_id()
    assert parse_call_id(bare) == parse_call_id(f"chatcmpl-{bare}") == parse_call_id(f" cmpl-{bare} ") == bare
    assert parse_call_id(f"resp_{bare}") == bare  # a Responses API id
    for bad in ("", "chatcmpl-xyz", bare.upper(), bare + "0", 42, None):
        with pytest.raises(UserError, match="is not a call id"):
            parse_call_id(bad)


def test_recent_calls_stay_bounded_oldest_out_first() -> None:
    recent = RecentCalls(capacity=3)
    refs = [CallRef(new_id(), "qa", "m", 1) for _ in range(5)]
    for ref in refs:
        recent.add(ref)
    assert len(recent) == 3
    assert recent.get(refs[0].call_id) is None and recent.get(refs[4].call_id) == refs[4]


def test_a_recent_call_is_found_before_its_row_is_written(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    recent = RecentCalls()
    unwritten = CallRef(new_id(), "extract", "gemma3-270m", 1)
    recent.add(unwritten)
    row = FeedbackBook(store, recent=recent).record(unwritten.call_id, thumbs="down")
    assert (row["route"], row["model"], row["score"]) == ("extract", "gemma3-270m", 0.0)


def test_the_tracker_takes_feedback_on_its_own_executions(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    tracker = PerformanceTrackerBridge(store)
    execution = tracker.start("qa", model="smollm2-135m/1")
    tracker.complete(execution, success=True)
    row = tracker.feedback(execution, score=0.9, source="batch-check")
    assert (row["call_id"], row["route"], row["score"]) == (execution, "qa", 0.9)
