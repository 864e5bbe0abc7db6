"""GPU figures through NVML when an NVIDIA GPU is present, and an explicit ``None`` otherwise.

``nvmlInit`` raises on machines without the driver; that is the normal case on a laptop or a CI
runner, so it is answered once with "no GPU" and never turns into a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class GpuSample:
    """Device-wide figures at one instant (NVML cannot attribute them to one process cheaply)."""

    memory_used_mb: float
    utilization_pct: float


@cache
def gpu_handles() -> tuple[object, ...]:
    """NVML handles of every NVIDIA GPU, opened once per process; empty when there is no GPU or driver."""
    import pynvml

    try:
        pynvml.nvmlInit()
        return tuple(pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount()))
    except pynvml.NVMLError:  # LibraryNotFound, DriverNotLoaded, …: no usable GPU here
        return ()


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs NVML sees; empty when there are none."""
    import pynvml

    names = []
    for handle in gpu_handles():
        name = pynvml.nvmlDeviceGetName(handle)
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return names


def sample_gpu() -> GpuSample | None:
    """Memory and utilisation summed over all GPUs, or ``None`` when there is no GPU."""
    handles = gpu_handles()
    if not handles:
        return None
    import pynvml

    try:
        used = sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles) / (1024 * 1024)
        util = sum(pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles) / len(handles)
    except pynvml.NVMLError:  # e.g. NotSupported on MIG slices: no figure rather than a failed call
        return None
    return GpuSample(memory_used_mb=used, utilization_pct=float(util))
