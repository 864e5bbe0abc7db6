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
    """One process-wide thread that samples RSS while any measured block is open.

    Each open block is a *window* that keeps only its own peak. Shared, so a gateway serving
    many calls at once does not start a thread per call, and idle when nothing is measured.
    """

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._windows: dict[int, int] = {}
        self._next_id = 0
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def open(self) -> int:
        rss = self._process.memory_info().rss
        with self._wake:
            self._next_id += 1
            self._windows[self._next_id] = rss
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="arbiter-rss-sampler", daemon=True)
                self._thread.start()
            self._wake.notify()
            return self._next_id

    def close(self, window: int) -> int:
        """The window's peak, the end of the block included."""
        rss = self._process.memory_info().rss
        with self._wake:
            return max(self._windows.pop(window), rss)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._windows:
                    self._wake.wait()
            rss = self._process.memory_info().rss
            with self._wake:
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
