"""Measure one operation: wall time, process CPU time, peak RSS and GPU figures.

Wraps any provider call from the outside (never inside a provider), so every backend is
measured the same way. Peak RSS is sampled during the call (by one shared thread) because the
kernel's own peak (``ru_maxrss``) is a lifetime maximum and would blur one model into the next.
CPU time is the whole process's: with concurrent calls (the gateway) each call's figure also
counts its neighbours' work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from registry.gpu import GpuSample, sample_gpu

_SAMPLE_INTERVAL_S = 0.01
_LINGER_S = 2.0  # keep sampling this long after the last measured block
_MB = 1024 * 1024


@dataclass
class Cost:
    """Figures for one measured operation; filled in when the ``measure`` block exits."""

    wall_ms: float = 0.0
    cpu_ms: float = 0.0
    peak_rss_mb: float = 0.0
    gpu_memory_mb: float | None = None
    gpu_utilization_pct: float | None = None


class _RssSampler:
    """One process-wide thread that samples RSS while measured blocks are open.

    Each open block is a *window* that keeps only its own peak. Shared, so a gateway serving
    many calls at once does not start a thread per call. It keeps sampling for a short while
    after the last window closes, so back-to-back calls neither wake it each time nor read
    ``/proc`` twice each: a sample younger than one interval stands in for a fresh read.
    """

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._windows: dict[int, int] = {}
        self._next_id = 0
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._sleeping = True
        self._latest = 0
        self._latest_at = -1.0

    def open(self) -> int:
        rss = self._fresh_rss()
        with self._wake:
            self._next_id += 1
            self._windows[self._next_id] = rss
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="arbiter-rss-sampler", daemon=True)
                self._thread.start()
            if self._sleeping:
                self._wake.notify()
            return self._next_id

    def close(self, window: int) -> int:
        """The window's peak, the end of the block included."""
        rss = self._fresh_rss()
        with self._wake:
            return max(self._windows.pop(window), rss)

    def _fresh_rss(self) -> int:
        if time.perf_counter() - self._latest_at < _SAMPLE_INTERVAL_S:
            return self._latest
        return self._process.memory_info().rss

    def _run(self) -> None:
        last_busy = time.perf_counter()
        while True:
            with self._wake:
                while not self._windows and time.perf_counter() - last_busy > _LINGER_S:
                    self._sleeping = True
                    self._wake.wait()
                    last_busy = time.perf_counter()
                self._sleeping = False
            rss = self._process.memory_info().rss
            now = time.perf_counter()
            with self._wake:
                self._latest, self._latest_at = rss, now
                if self._windows:
                    last_busy = now
                for window, peak in self._windows.items():
                    if rss > peak:
                        self._windows[window] = rss
            time.sleep(_SAMPLE_INTERVAL_S)


_SAMPLER = _RssSampler()


@contextmanager
def measure() -> Iterator[Cost]:
    """Measure the block; read the ``Cost`` after it exits.

    Example::

        with measure() as cost:
            provider.generate(request)
        cost.wall_ms, cost.cpu_ms, cost.peak_rss_mb
    """
    cost = Cost()
    window = _SAMPLER.open()
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.wall_ms = (time.perf_counter() - wall_start) * 1000
        cost.cpu_ms = (time.process_time() - cpu_start) * 1000
        cost.peak_rss_mb = _SAMPLER.close(window) / _MB
        gpu: GpuSample | None = sample_gpu()
        if gpu is not None:
            cost.gpu_memory_mb = gpu.memory_used_mb
            cost.gpu_utilization_pct = gpu.utilization_pct
