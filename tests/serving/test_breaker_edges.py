"""The circuit breaker's defaults and its one half-open probe across several open/close cycles (the gaps
`make mutation` found in tests/serving/test_breaker.py)."""

from __future__ import annotations

import pytest
from support import Clock

from registry.serving.breaker import BreakerState, CircuitBreaker

pytestmark = pytest.mark.unit


def open_then_wait(breaker: CircuitBreaker, clock: Clock, failures: int = 3, open_s: float = 5.0) -> None:
    for _ in range(failures):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(open_s)


def test_by_default_three_failures_in_a_row_open_it_for_five_seconds() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.admit() == "closed"
    breaker.record_failure()
    clock.advance(4.9)
    assert breaker.admit() is None
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN and breaker.admit() == "probe" and breaker.admit() is None


def test_by_default_a_failure_rate_over_half_of_ten_calls_opens_it() -> None:
    breaker = CircuitBreaker(clock=Clock())
    for outcome in "FFSFFSFFS":  # never three failures in a row; 6 of 9 failed, under the 10 calls needed
        breaker.record_failure() if outcome == "F" else breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()  # 7 of 10
    assert breaker.state is BreakerState.OPEN


def test_a_released_probe_lets_the_next_request_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    open_then_wait(breaker, clock)
    assert breaker.admit() == "probe"
    breaker.release_probe()
    assert breaker.admit() == "probe"


@pytest.mark.parametrize("probe_ends", ["success", "failure"])
def test_a_probe_that_ended_leaves_the_next_half_open_period_a_probe_of_its_own(probe_ends: str) -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    open_then_wait(breaker, clock)
    assert breaker.admit() == "probe"
    if probe_ends == "success":
        breaker.record_success()
        open_then_wait(breaker, clock)
    else:
        breaker.record_failure()  # a failed probe opens it again at once
        clock.advance(5.0)
    assert breaker.admit() == "probe"
