"""Measure one operation: wall time, process CPU time, peak RSS and GPU figures.

Wraps any provider call from the outside (never inside a provider), so every backend is
measured the same way. Peak RSS is sampled by a short-lived thread during the call because the
kernel's own peak (``ru_maxrss``) is a lifetime maximum and would blur one model into the next.
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


class _RssSampler(threading.Thread):
    """Keeps the highest RSS seen while it runs (only the peak: a long call stores nothing more)."""

    def __init__(self, process: psutil.Process) -> None:
        super().__init__(daemon=True, name="arbiter-rss-sampler")
        self._process = process
        self._stop_event = threading.Event()
        self.peak = process.memory_info().rss

    def run(self) -> None:
        while not self._stop_event.wait(_SAMPLE_INTERVAL_S):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> int:
        """Stop sampling; the peak, the end of the block included."""
        self._stop_event.set()
        self.join()
        return max(self.peak, self._process.memory_info().rss)


@contextmanager
def measure() -> Iterator[Cost]:
    """Measure the block; read the ``Cost`` after it exits.

    Example::

        with measure() as cost:
            provider.generate(request)
        cost.wall_ms, cost.cpu_ms, cost.peak_rss_mb
    """
    process = psutil.Process()
    cost = Cost()
    sampler = _RssSampler(process)
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    sampler.start()
    try:
        yield cost
    finally:
        cost.wall_ms = (time.perf_counter() - wall_start) * 1000
        cost.cpu_ms = (time.process_time() - cpu_start) * 1000
        cost.peak_rss_mb = sampler.stop() / _MB
        gpu: GpuSample | None = sample_gpu()
        if gpu is not None:
            cost.gpu_memory_mb = gpu.memory_used_mb
            cost.gpu_utilization_pct = gpu.utilization_pct
