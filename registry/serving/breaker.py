"""A circuit breaker per model instance: stop sending requests to a backend that keeps failing.

Without it, a dead backend (a remote server that went away, a model that errors on every call)
costs every request a full timeout before failover. The breaker opens after ``failures``
consecutive failures, or when more than half of the last ``window`` calls failed (once at least
``min_calls`` were seen); after ``open_s`` it lets exactly one probe through (half-open): a success
closes it, a failure opens it again. The clock is injected so tests step through time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Example::

        breaker = CircuitBreaker(failures=3, open_s=5.0)
        if breaker.allow():
            try:
                call()
                breaker.record_success()
            except ProviderError:
                breaker.record_failure()
    """

    def __init__(
        self,
        *,
        failures: int = 3,
        open_s: float = 5.0,
        window: int = 20,
        min_calls: int = 10,
        max_failure_rate: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self._failures_to_open = failures
        self._open_s = open_s
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._min_calls = min_calls
        self._max_failure_rate = max_failure_rate
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current_state()

    def allow(self) -> bool:
        """May a request go to this instance now? In half-open, only the first caller gets the probe."""
        return self.admit() is not None

    def admit(self) -> str | None:
        """Like :meth:`allow`, saying how: ``"closed"``, ``"probe"`` (this caller holds the one
        half-open probe, and must end it with a record or :meth:`release_probe`), or None."""
        with self._lock:
            state = self._current_state()
            if state is BreakerState.CLOSED:
                return "closed"
            if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return "probe"
            return None

    def would_allow(self) -> bool:
        """Like :meth:`allow`, without claiming the half-open probe (for choosing among replicas)."""
        with self._lock:
            state = self._current_state()
            return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self._probe_in_flight)

    def release_probe(self) -> None:
        """The half-open probe ended with no verdict (the caller's own error, a client that hung
        up): let the next request probe instead of leaving the breaker waiting forever."""
        with self._lock:
            self._probe_in_flight = False

    def record_success(self) -> None:
        with self._lock:
            self._outcomes.append(True)
            self._consecutive_failures = 0
            self._probe_in_flight = False
            self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._outcomes.append(False)
            self._consecutive_failures += 1
            self._probe_in_flight = False
            if self._current_state() is BreakerState.HALF_OPEN or self._should_open():
                self._opened_at = self._clock()
                self._move(BreakerState.OPEN)

    def _should_open(self) -> bool:
        if self._consecutive_failures >= self._failures_to_open:
            return True
        if len(self._outcomes) < self._min_calls:
            return False
        failed = sum(1 for ok in self._outcomes if not ok)
        return failed / len(self._outcomes) > self._max_failure_rate

    def _current_state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._open_s:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def _move(self, new: BreakerState) -> None:
        old = self._state
        if new is old:
            return
        self._state = new
        if new is BreakerState.CLOSED:
            self._outcomes.clear()
        if self._on_change is not None:
            self._on_change(old, new)
