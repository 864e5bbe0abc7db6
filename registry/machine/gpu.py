"""GPU figures through NVML when an NVIDIA GPU is present, and an explicit ``None`` otherwise.

``nvmlInit`` raises on machines without the driver; that is the normal case on a laptop or a CI
runner, so it is answered once with "no GPU" and never turns into a crash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class GpuDevice:
    """One NVIDIA GPU as ``arbiter hardware`` reports it (memory as NVML reports it now)."""

    index: int
    name: str
    memory_total_mb: int | None  # None: NVML would not say (e.g. a MIG slice), never a made-up 0
    memory_used_mb: int | None

    def as_json(self) -> dict[str, int | str]:
        return asdict(self)


def gpu_devices() -> list[GpuDevice]:
    """Every NVIDIA GPU with its memory; empty when there are none."""
    import pynvml

    devices = []
    for index, (handle, name) in enumerate(zip(gpu_handles(), gpu_names(), strict=True)):
        try:
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        except pynvml.NVMLError:  # NotSupported on MIG slices, GPU lost: report the GPU, not a crash
            devices.append(GpuDevice(index, name, None, None))
            continue
        devices.append(GpuDevice(index, name, memory.total // (1024 * 1024), memory.used // (1024 * 1024)))
    return devices


def gpu_driver() -> dict[str, str] | None:
    """The NVIDIA driver's version and the newest CUDA it supports (``"12.4"``), or ``None``
    without a GPU: a llama.cpp CUDA build needs a driver at least as new as its CUDA."""
    if not gpu_handles():
        return None
    import pynvml

    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # e.g. 12040
    except pynvml.NVMLError:
        return None
    return {
        "driver_version": driver.decode() if isinstance(driver, bytes) else str(driver),
        "cuda_version": f"{cuda // 1000}.{cuda % 1000 // 10}",
    }


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs NVML sees; empty when there are none."""
    import pynvml

    names = []
    for index, handle in enumerate(gpu_handles()):
        try:
            name = pynvml.nvmlDeviceGetName(handle)
        except pynvml.NVMLError:
            name = f"NVIDIA GPU {index}"
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
