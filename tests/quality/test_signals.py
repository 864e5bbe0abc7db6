"""A route's live evidence per version, read from a real results store: which calls count, how
feedback rows become one score per call and signal, and how shadow copies name their user call."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from registry.quality.signals import evidence
from registry.results.feedback import feedback_id
from registry.results.store import ResultsStore, new_id, now_utc

pytestmark = pytest.mark.data

NOW = now_utc()
SINCE = (NOW - timedelta(seconds=600)).timestamp()


def ago(seconds: float):
    return NOW - timedelta(seconds=seconds)


class Route:
    """Rows of one route, written the way the gateway, the facade and the scorers write them."""

    def __init__(self, store: ResultsStore) -> None:
        self.store = store
        self.calls: list[dict] = []
        self.scores: list[dict] = []

    def call(self, seconds_ago: float, version: int, *, source: str = "gateway", ok: bool = True,
             tokens_per_s: float | None = 40.0, route: str = "extract", **extra) -> str:
        call_id = new_id()
        self.calls.append({"call_id": call_id, "ts": ago(seconds_ago), "source": source, "route": route, "task": route,
                           "model": "smollm2-135m", "version": version, "ok": ok, "tokens_per_s": tokens_per_s, **extra})
        return call_id

    def score(self, call_id: str, seconds_ago: float, signal: str, source: str, score: float | None) -> None:
        call = next(row for row in self.calls if row["call_id"] == call_id)
        self.scores.append({"feedback_id": feedback_id(call_id, source), "ts": ago(seconds_ago), "call_id": call_id,
                            "route": call["route"], "model": call["model"], "version": call["version"], "signal": signal,
                            "source": source, "score": score,
                            "detail": json.dumps({"error": "scorer raised"}) if score is None else None})

    def write(self) -> ResultsStore:
        self.store.append("calls", self.calls)
        self.store.append("feedback", self.scores)
        return self.store


def test_each_version_gets_its_calls_speeds_and_one_score_per_call_and_signal(tmp_path: Path) -> None:
    rows = Route(ResultsStore(tmp_path))
    first = rows.call(500, 1, tokens_per_s=40.0)
    unmeasured = rows.call(400, 1, tokens_per_s=None)
    failed = rows.call(300, 1, ok=False, tokens_per_s=10.0, error="timeout")
    facade = rows.call(250, 1, source="manager", tokens_per_s=42.0)
    copy = rows.call(490, 2, source="shadow", tokens_per_s=31.0, shadow_of=first)
    share = rows.call(350, 2, tokens_per_s=30.0)
    rows.call(200, 1, source="benchmark")  # a benchmark's call is no live evidence
    rows.call(150, 2, ok=False, error="client disconnected")  # the client hung up: not the model's failure
    rows.call(100, 1, route="classify")  # another route
    before = rows.call(1200, 1)  # before the window, its late feedback inside it
    rows.score(first, 480, "feedback", "app", 0.2)
    rows.score(first, 470, "feedback", "app", 0.6)  # the same source again: the latest wins
    rows.score(first, 460, "feedback", "user", 1.0)  # a second source: averaged with it
    rows.score(first, 455, "scorer", "arbiter:scorer", 0.9)
    rows.score(unmeasured, 390, "scorer", "arbiter:scorer", None)  # the scorer failed: counted, never a score
    rows.score(copy, 480, "scorer", "arbiter:scorer", 0.5)
    rows.score(share, 340, "judge", "arbiter:judge:qwen/1", 0.7)
    rows.score(before, 100, "feedback", "app", 1.0)
    found = evidence(rows.write(), "extract", since=SINCE)

    assert set(found) == {"smollm2-135m/1", "smollm2-135m/2"}
    champion, challenger = found["smollm2-135m/1"], found["smollm2-135m/2"]
    assert champion.success == [1.0, 1.0, 0.0, 1.0] and champion.n == 4  # first, unmeasured, failed, facade: by time
    assert champion.speed == [40.0, 42.0]  # answered calls with a speed only
    assert champion.quality == {"feedback": {first: pytest.approx(0.8)}, "scorer": {first: 0.9}}
    assert champion.failed == {"scorer": 1}
    assert (champion.mirrors, champion.shadow_calls) == ({}, 0)
    assert challenger.success == [1.0, 1.0] and challenger.speed == [31.0, 30.0]
    assert challenger.quality == {"scorer": {copy: 0.5}, "judge": {share: 0.7}} and challenger.failed == {}
    assert (challenger.mirrors, challenger.shadow_calls) == ({copy: first}, 1)
    assert facade not in champion.quality.get("feedback", {}) and failed not in champion.quality.get("scorer", {})


def test_a_later_window_leaves_out_the_calls_and_scores_before_it(tmp_path: Path) -> None:
    rows = Route(ResultsStore(tmp_path))
    early, late = rows.call(500, 1), rows.call(100, 1)
    rows.score(early, 490, "scorer", "arbiter:scorer", 0.1)
    rows.score(late, 90, "scorer", "arbiter:scorer", 0.9)
    store = rows.write()
    assert evidence(store, "extract", since=SINCE)["smollm2-135m/1"].quality == {"scorer": {early: 0.1, late: 0.9}}
    later = evidence(store, "extract", since=(NOW - timedelta(seconds=200)).timestamp())["smollm2-135m/1"]
    assert later.success == [1.0] and later.quality == {"scorer": {late: 0.9}}
    assert evidence(store, "extract", since=NOW.timestamp()) == {}
    assert evidence(store, "qa", since=SINCE) == {}


def test_a_shadow_copy_without_its_user_call_counts_but_pairs_with_nothing(tmp_path: Path) -> None:
    rows = Route(ResultsStore(tmp_path))
    rows.call(100, 2, source="shadow")
    found = evidence(rows.write(), "extract", since=SINCE)["smollm2-135m/2"]
    assert (found.n, found.shadow_calls, found.mirrors) == (1, 1, {})


def test_a_later_failed_scoring_of_the_same_call_and_source_replaces_its_score(tmp_path: Path) -> None:
    rows = Route(ResultsStore(tmp_path))
    call = rows.call(500, 1)
    rows.score(call, 490, "judge", "arbiter:judge:qwen/1", 0.9)
    rows.score(call, 480, "judge", "arbiter:judge:qwen/1", None)  # judged again: it failed this time
    found = evidence(rows.write(), "extract", since=SINCE)["smollm2-135m/1"]
    assert (found.quality, found.failed) == ({}, {"judge": 1})
