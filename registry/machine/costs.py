"""Measure one operation: wall time, CPU time, RSS, GPU figures and energy with its source.

Wraps any provider call from the outside (never inside a provider), so every backend is
measured the same way.

- **CPU**: ``cpu_ms`` is the process's CPU time from the OS (``CLOCK_PROCESS_CPUTIME_ID``: every
  thread, llama.cpp's OpenMP workers included — with 2 threads the calling thread alone does only
  half the work). When another measured block runs at the same time (the gateway serves calls at
  once) the process figure also holds the neighbours' work: the block is marked
  ``cpu_overlapped`` and ``cpu_thread_ms`` (the calling thread's own CPU time) is the figure no
  neighbour can inflate — a lower bound. The truth lies between the two (docs/costs.md).
- **RSS**: sampled during the call (by one shared thread) for the peak and the average, because
  the kernel's own peak (``ru_maxrss``) is a lifetime maximum and would blur one model into the next.
- **GPU**: NVML, device-wide; utilisation averaged over samples taken during the call, and
  ``gpu_ms`` = wall time × that average (the GPU's busy time). ``None`` without a GPU; on a machine
  with one, set on every call, even one that put nothing on it (another process's work counts too).
- **Energy**: :mod:`registry.machine.energy` (RAPL, NVML, or the stated estimate).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import psutil

from registry.machine.energy import Energy, EnergyMeter
from registry.machine.gpu import GpuSample, gpu_handles, sample_gpu

_SAMPLE_INTERVAL_S = 0.01
_GPU_EVERY = 10  # GPU utilisation every 10th RSS sample (~100 ms): NVML averages over ~1/6 s anyway
_LINGER_S = 2.0  # keep sampling this long after the last measured block
_MB = 1024 * 1024


@dataclass
class Cost:
    """Figures for one measured operation; filled in when the ``measure`` block exits."""

    wall_ms: float = 0.0
    cpu_ms: float = 0.0
    cpu_thread_ms: float | None = None  # None when the block ended in another thread than it began
    cpu_overlapped: bool = False
    peak_rss_mb: float = 0.0
    avg_rss_mb: float = 0.0
    gpu_memory_mb: float | None = None
    gpu_utilization_pct: float | None = None
    gpu_ms: float | None = None
    energy: Energy | None = None


@dataclass
class _Window:
    """What the sampler collects for one open block."""

    peak: int
    rss_sum: int
    rss_n: int = 1
    gpu_util_sum: float = 0.0
    gpu_n: int = 0
    overlapped: bool = False

    def add_rss(self, rss: int) -> None:
        self.peak = max(self.peak, rss)
        self.rss_sum += rss
        self.rss_n += 1


class _Sampler:
    """One process-wide thread that samples RSS (and GPU utilisation) while measured blocks are open.

    Each open block is a *window* that keeps only its own figures, and learns whether another
    window was open at any moment of its life (``overlapped``). Shared, so a gateway serving many
    calls at once does not start a thread per call. It keeps sampling for a short while after the
    last window closes, so back-to-back calls neither wake it each time nor read ``/proc`` twice
    each: a sample younger than one interval stands in for a fresh read.
    """

    def __init__(self) -> None:
        self._windows: dict[int, _Window] = {}
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
            window = _Window(peak=rss, rss_sum=rss)
            if self._windows:
                window.overlapped = True
                for other in self._windows.values():
                    other.overlapped = True
            self._windows[self._next_id] = window
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="arbiter-rss-sampler", daemon=True)
                self._thread.start()
            if self._sleeping:
                self._wake.notify()
            return self._next_id

    def close(self, window_id: int) -> _Window:
        """The window's figures, the end of the block included. Removed before anything that can
        fail, so an error here cannot leave it open (and flag every later call overlapped)."""
        with self._wake:
            window = self._windows.pop(window_id)
        window.add_rss(self._fresh_rss())
        return window

    def _fresh_rss(self) -> int:
        if time.perf_counter() - self._latest_at < _SAMPLE_INTERVAL_S:
            return self._latest
        return _rss_reader(os.getpid())()

    def _run(self) -> None:
        last_busy = time.perf_counter()
        has_gpu = bool(gpu_handles())
        tick = 0
        while True:
            with self._wake:
                while not self._windows and time.perf_counter() - last_busy > _LINGER_S:
                    self._sleeping = True
                    self._wake.wait()
                    last_busy = time.perf_counter()
                self._sleeping = False
            rss = _rss_reader(os.getpid())()
            tick += 1
            gpu = sample_gpu() if has_gpu and tick % _GPU_EVERY == 0 else None
            now = time.perf_counter()
            with self._wake:
                self._latest, self._latest_at = rss, now
                if self._windows:
                    last_busy = now
                for window in self._windows.values():
                    window.add_rss(rss)
                    if gpu is not None:
                        window.gpu_util_sum += gpu.utilization_pct
                        window.gpu_n += 1
            time.sleep(_SAMPLE_INTERVAL_S)


@cache
def _rss_reader(pid: int) -> Callable[[], int]:
    """Process ``pid``'s RSS in bytes, as cheaply as the OS allows: on Linux one ``pread`` of its
    ``/proc/PID/statm`` kept open (~2 µs; ``psutil.Process().memory_info()`` opens the file each
    time, ~40 µs, and the sampler reads it 100 times a second), else psutil. Keyed by pid, so a
    forked child never reads its parent's file."""
    try:
        fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
    except OSError:
        process = psutil.Process(pid)
        return lambda: process.memory_info().rss
    page = os.sysconf("SC_PAGE_SIZE")
    return lambda: int(os.pread(fd, 128, 0).split()[1]) * page


_SAMPLER = _Sampler()


@cache
def default_meter() -> EnergyMeter:
    """This process's energy meter (the real ``/sys`` and GPUs), made on the first measured call."""
    return EnergyMeter()


@contextmanager
def measure(meter: EnergyMeter | None = None) -> Iterator[Cost]:
    """Measure the block; read the ``Cost`` after it exits. ``meter`` defaults to this machine's.

    Example::

        with measure() as cost:
            provider.generate(request)
        cost.wall_ms, cost.cpu_ms, cost.peak_rss_mb, cost.energy
    """
    meter = meter or default_meter()
    cost = Cost()
    window_id = _SAMPLER.open()
    energy_start = meter.start()
    thread = threading.get_ident()
    thread_start = time.thread_time()
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.wall_ms = (time.perf_counter() - wall_start) * 1000
        cost.cpu_ms = (time.process_time() - cpu_start) * 1000
        if threading.get_ident() == thread:
            cost.cpu_thread_ms = (time.thread_time() - thread_start) * 1000
        try:
            cost.energy = meter.finish(energy_start, cost.cpu_ms)
        finally:  # a meter that fails must not leave the window open: every later call would read as overlapped
            window = _SAMPLER.close(window_id)
        cost.cpu_overlapped = window.overlapped
        cost.peak_rss_mb = window.peak / _MB
        cost.avg_rss_mb = window.rss_sum / window.rss_n / _MB
        _gpu_figures(cost, window, sample_gpu())


@contextmanager
def stopwatch() -> Iterator[Cost]:
    """Wall and process CPU time only, and no sampler window: for a span that *contains* measured
    calls (a benchmark whose load may fail). A :func:`measure` window there would flag every call
    inside it as overlapped, and their CPU figures would drop out of the cost profile."""
    cost = Cost()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    try:
        yield cost
    finally:
        cost.wall_ms = (time.perf_counter() - wall_start) * 1000
        cost.cpu_ms = (time.process_time() - cpu_start) * 1000


def _gpu_figures(cost: Cost, window: _Window, last: GpuSample | None) -> None:
    """Memory as the call ends; utilisation averaged over the call's samples and this last one."""
    if last is None:
        return
    cost.gpu_memory_mb = last.memory_used_mb
    utilization = (window.gpu_util_sum + last.utilization_pct) / (window.gpu_n + 1)
    cost.gpu_utilization_pct = utilization
    cost.gpu_ms = cost.wall_ms * utilization / 100
