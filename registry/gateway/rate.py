"""A rate bound for endpoints whose every request writes a row (feedback): a client in a loop
gets 429s, not a disk full of rows."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up: one per request, none left → refuse."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 when a token was taken; otherwise the seconds until one is there."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self._rate
