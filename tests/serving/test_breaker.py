"""The circuit breaker, stepped through time with an injected clock (no sleeping)."""

from __future__ import annotations

import threading

import pytest
from support import Clock

from registry.serving.breaker import BreakerState, CircuitBreaker

pytestmark = pytest.mark.unit

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> list[tuple[BreakerState, BreakerState]]:
    return []


def make(clock: Clock, changes: list | None = None, **kwargs) -> CircuitBreaker:
    kwargs = {"failures": 3, "open_s": 5.0, "window": 20, "min_calls": 10} | kwargs
    on_change = None if changes is None else (lambda old, new: changes.append((old, new)))
    return CircuitBreaker(clock=clock, on_change=on_change, **kwargs)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure()


def test_a_new_breaker_is_closed_and_allows(clock: Clock) -> None:
    breaker = make(clock)
    assert breaker.state is CLOSED
    assert breaker.allow() and breaker.allow()  # closed: every caller, not just one
    assert breaker.would_allow()


def test_opens_after_n_consecutive_failures(clock: Clock, changes: list) -> None:
    breaker = make(clock, changes, failures=3)
    fail(breaker, 2)
    assert breaker.state is CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    assert not breaker.allow() and not breaker.would_allow()
    assert changes == [(CLOSED, OPEN)]


def test_a_success_resets_the_consecutive_count(clock: Clock) -> None:
    breaker = make(clock, failures=3, min_calls=1000)  # the rate never counts here
    for _ in range(4):  # 8 failures in all, never 3 in a row
        fail(breaker, 2)
        breaker.record_success()
    assert breaker.state is CLOSED
    fail(breaker, 2)
    assert breaker.state is CLOSED
    breaker.record_failure()  # the third in a row
    assert breaker.state is OPEN


def test_opens_on_failure_rate_over_the_window_without_n_consecutive(clock: Clock) -> None:
    breaker = make(clock, failures=3, window=4, min_calls=4)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is CLOSED  # 2 of 3 failed, but fewer than min_calls were seen
    breaker.record_failure()  # 3 of 4 failed; only 2 in a row
    assert breaker.state is OPEN


def test_a_failure_rate_of_exactly_the_limit_does_not_open(clock: Clock) -> None:
    breaker = make(clock, failures=3, window=4, min_calls=4, max_failure_rate=0.5)
    for _ in range(3):
        breaker.record_success()
        breaker.record_failure()
    assert breaker.state is CLOSED  # always 2 of the last 4: not *over* half


def test_the_rate_counts_only_the_last_window_calls(clock: Clock) -> None:
    breaker = make(clock, failures=100, window=4, min_calls=4)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_success()  # 2 of 4: closed
    breaker.record_success()  # the first failure leaves the window: 1 of 4
    breaker.record_failure()  # 2 of 4
    assert breaker.state is CLOSED
    breaker.record_failure()  # S S F F → 2 of 4 still
    assert breaker.state is CLOSED
    breaker.record_failure()  # S F F F → 3 of 4
    assert breaker.state is OPEN


def test_stays_open_for_open_s_then_lets_exactly_one_probe_through(clock: Clock) -> None:
    breaker = make(clock, open_s=5.0)
    fail(breaker, 3)
    clock.advance(4.99)
    assert breaker.state is OPEN
    assert not breaker.allow() and not breaker.would_allow()
    clock.advance(0.01)
    assert breaker.state is HALF_OPEN
    assert breaker.would_allow() and breaker.would_allow()  # asking does not claim the probe
    assert breaker.allow()  # the probe
    assert breaker.state is HALF_OPEN
    assert not breaker.allow()  # a second caller while the probe is out
    assert not breaker.would_allow()
    clock.advance(60)
    assert not breaker.allow()  # still only one probe, however long it takes


def test_only_one_of_many_concurrent_callers_gets_the_probe(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(5)
    start = threading.Barrier(8)
    answers: list[bool] = []

    def ask() -> None:
        start.wait()
        answers.append(breaker.allow())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(answers) == [False] * 7 + [True]


def test_a_probe_success_closes_and_clears_the_history(clock: Clock, changes: list) -> None:
    breaker = make(clock, changes, failures=100, window=4, min_calls=4)
    fail(breaker, 4)  # opened by the rate, not the consecutive count
    assert breaker.state is OPEN
    clock.advance(5)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED and breaker.allow() and breaker.would_allow()
    # history cleared: with the old failures still in the window, one more would be 3 of 4
    fail(breaker, 3)
    assert breaker.state is CLOSED  # 3 calls < min_calls: no rate yet
    breaker.record_failure()
    assert breaker.state is OPEN  # 4 of 4 after the close
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (CLOSED, OPEN)]


def test_a_probe_failure_reopens_and_restarts_the_open_period(clock: Clock) -> None:
    breaker = make(clock, open_s=5.0)
    fail(breaker, 3)
    clock.advance(5)
    assert breaker.allow()
    clock.advance(2)  # the probe took 2 s to fail
    breaker.record_failure()
    assert breaker.state is OPEN and not breaker.allow()
    clock.advance(4.9)  # 6.9 s after the first opening, 4.9 s after the probe failed
    assert breaker.state is OPEN and not breaker.would_allow()
    clock.advance(0.1)
    assert breaker.state is HALF_OPEN
    assert breaker.allow()  # a new probe, after a full open period


def test_a_single_probe_failure_reopens_even_below_the_consecutive_count(clock: Clock) -> None:
    breaker = make(clock, failures=3)
    fail(breaker, 3)
    clock.advance(5)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    breaker.record_failure()  # one failure after closing: not enough to open again
    assert breaker.state is CLOSED
    fail(breaker, 2)
    assert breaker.state is OPEN
    clock.advance(5)
    assert breaker.allow()
    breaker.record_failure()  # in half-open, one failure is enough
    assert breaker.state is OPEN


def test_on_change_sees_every_transition_in_order(clock: Clock, changes: list) -> None:
    breaker = make(clock, changes)
    fail(breaker, 3)
    clock.advance(5)
    assert breaker.allow()
    breaker.record_failure()
    clock.advance(5)
    assert breaker.allow()
    breaker.record_success()
    breaker.record_success()  # already closed: no transition
    assert changes == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
    assert all(isinstance(old, BreakerState) and isinstance(new, BreakerState) for old, new in changes)


def test_half_open_is_noticed_by_any_reader_not_only_allow(clock: Clock, changes: list) -> None:
    breaker = make(clock, changes)
    fail(breaker, 3)
    clock.advance(5)
    assert breaker.state is HALF_OPEN  # reading the state moves it, once
    assert breaker.state is HALF_OPEN
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_failures_while_open_keep_it_open_from_the_latest_one(clock: Clock) -> None:
    breaker = make(clock, open_s=5.0)
    fail(breaker, 3)
    clock.advance(3)
    breaker.record_failure()  # a request admitted before the breaker opened fails late
    clock.advance(3)  # 6 s after opening, 3 s after the late failure
    assert breaker.state is OPEN
    clock.advance(2)
    assert breaker.state is HALF_OPEN
