"""The one cache with expiry: age by an injected clock, one load for many readers, refresh and
invalidate, stale-while-revalidate in a background thread, and what a load that raises leaves."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from support import Clock

from registry.errors import StoreError
from registry.results.cache import ExpiringCache

pytestmark = pytest.mark.unit

WAIT_S = 10  # a guard against a hung test, never a measurement


class Source:
    """What the cache loads: counts its loads; ``gate`` (when set) holds each load until opened."""

    def __init__(self, values: Iterator[str] | None = None, gate: threading.Event | None = None) -> None:
        self.values = values
        self.loads = 0
        self.gate = gate
        self.entered = threading.Event()
        self.fail: Exception | None = None

    def __call__(self) -> str:
        self.loads += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT_S), "the test never opened the gate"
        if self.fail is not None:
            raise self.fail
        return next(self.values) if self.values is not None else f"v{self.loads}"


def background_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def join_background(name: str) -> None:
    for thread in background_threads(name):
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the background load never finished"


def test_the_value_is_kept_until_it_is_max_age_old() -> None:
    clock, source = Clock(), Source()
    cache = ExpiringCache(source, max_age_s=5.0, clock=clock)
    assert cache.get() == "v1"
    clock.advance(4.9)
    assert cache.get() == "v1" and source.loads == 1
    clock.advance(0.1)  # exactly max_age_s old: stale
    assert cache.get() == "v2" and source.loads == 2
    assert cache.get() == "v2" and source.loads == 2


def test_max_age_zero_loads_on_every_read() -> None:
    source = Source()
    cache = ExpiringCache(source, max_age_s=0.0, clock=Clock())
    assert [cache.get(), cache.get(), cache.get()] == ["v1", "v2", "v3"]


def test_concurrent_readers_of_a_stale_value_wait_for_one_load() -> None:
    readers, now, checked = 8, [0.0], set()
    arrived = threading.Condition()

    def clock() -> float:
        with arrived:
            checked.add(threading.get_ident())
            arrived.notify_all()
        return now[0]

    def held_load() -> str:
        # Once stale, hold the load until every reader has read the clock, which each does to find
        # the value stale with the old value in hand: all of them are then on their way to the lock,
        # and only the re-check under it keeps the other seven from loading in turn.
        if source.loads:
            with arrived:
                assert arrived.wait_for(lambda: len(checked) >= readers, WAIT_S), "the readers never arrived"
        return source()

    source = Source()
    cache = ExpiringCache(held_load, max_age_s=5.0, clock=clock)
    assert cache.get() == "v1"
    now[0] = 10.0
    checked.clear()
    start = threading.Barrier(readers)
    seen: list[str] = []

    def read() -> None:
        start.wait(WAIT_S)
        seen.append(cache.get())

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert source.loads == 2  # the first load, then one for all eight readers
    assert seen == ["v2"] * readers


def test_refresh_loads_now_and_invalidate_makes_the_next_read_load() -> None:
    source = Source()
    cache = ExpiringCache(source, max_age_s=3600.0, clock=Clock())
    assert cache.get() == "v1"
    assert cache.refresh() == "v2" and cache.get() == "v2"
    cache.invalidate()
    assert source.loads == 2  # invalidate itself loads nothing
    assert cache.get() == "v3" and cache.get() == "v3"


def test_background_serves_the_stale_value_then_the_new_one() -> None:
    clock, gate = Clock(), threading.Event()
    gate.set()
    source = Source(gate=gate)
    cache = ExpiringCache(source, max_age_s=5.0, clock=clock, background=True, name="test-swr")
    assert cache.get() == "v1"  # nothing to serve yet: the first load is waited for
    gate.clear()
    clock.advance(5.0)
    source.entered.clear()
    assert cache.get() == "v1"  # stale: answered at once with what it has
    assert source.entered.wait(WAIT_S)
    assert cache.get() == "v1" and cache.get() == "v1"  # while the load is held, still the old value
    (thread,) = background_threads("test-swr")  # one load in flight, however many stale reads
    assert not thread.daemon  # interpreter exit joins it rather than tearing it down mid-load
    gate.set()
    join_background("test-swr")
    assert cache.get() == "v2" and source.loads == 2


def test_a_failed_load_raises_and_keeps_the_old_value() -> None:
    clock, source = Clock(), Source()
    cache = ExpiringCache(source, max_age_s=5.0, clock=clock)
    assert cache.get() == "v1"
    source.fail = StoreError("results store unreadable")
    with pytest.raises(StoreError, match="unreadable"):
        cache.refresh()
    assert cache.get() == "v1"  # the old value, still within its age, is not lost
    assert cache.last_error is source.fail
    clock.advance(5.0)
    with pytest.raises(StoreError, match="unreadable"):  # stale and the load fails: the reader hears of it
        cache.get()
    with pytest.raises(StoreError):  # each later reader tries again, and hears of it again
        cache.get()
    source.fail = None
    assert cache.get() == "v5" and cache.last_error is None


def test_a_failed_background_load_keeps_serving_the_old_value_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    clock, source = Clock(), Source()
    cache = ExpiringCache(source, max_age_s=5.0, clock=clock, background=True, name="test-swr-fail")
    assert cache.get() == "v1"
    source.fail = StoreError("database is locked")
    clock.advance(5.0)
    with caplog.at_level(logging.WARNING, logger="registry.results.cache"):
        assert cache.get() == "v1"
        join_background("test-swr-fail")
    assert cache.last_error is source.fail
    assert "test-swr-fail: background load failed, still serving the previous value: database is locked" in caplog.text
    assert cache.get() == "v1"  # still stale: served, and another load started
    join_background("test-swr-fail")
    assert source.loads == 3
    source.fail = None
    cache.get()
    join_background("test-swr-fail")
    assert cache.get() == "v4" and cache.last_error is None


def test_invalidate_during_a_load_is_not_undone_by_that_load() -> None:
    # A background load reads the value from before a write; the writer invalidates while that load
    # is in flight. The read that follows must load again, not be served the pre-write value.
    clock, gate = Clock(), threading.Event()
    gate.set()
    source = Source(iter(["before", "read-before-the-write", "after"]), gate=gate)
    cache = ExpiringCache(source, max_age_s=5.0, clock=clock, background=True, name="test-swr-invalidate")
    assert cache.get() == "before"
    gate.clear()
    clock.advance(5.0)
    source.entered.clear()
    cache.get()
    assert source.entered.wait(WAIT_S)
    writer = threading.Thread(target=cache.invalidate)
    writer.start()
    gate.set()
    writer.join(WAIT_S)
    join_background("test-swr-invalidate")
    assert cache.get() == "after"


@pytest.fixture(autouse=True)
def no_background_load_left() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name.startswith("test-swr")]
