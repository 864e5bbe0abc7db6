"""NVML failing on a machine that has a GPU (a MIG slice, a GPU lost under us) is reported, not a crash.

This machine has no NVIDIA GPU, so the fault is caused with a named fake: ``FakeLostGpu`` stands
in for NVML's handle, and NVML's own calls are made to raise its real ``NVMLError``.
"""

from __future__ import annotations

import pynvml
import pytest

from registry.machine import gpu

pytestmark = pytest.mark.unit


class FakeLostGpu:
    """A handle NVML no longer answers for."""


@pytest.fixture
def lost_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: object) -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(gpu, "gpu_handles", lambda: (FakeLostGpu(),))
    for call in ("nvmlDeviceGetName", "nvmlDeviceGetMemoryInfo", "nvmlSystemGetDriverVersion",
                 "nvmlSystemGetCudaDriverVersion", "nvmlDeviceGetUtilizationRates"):
        monkeypatch.setattr(pynvml, call, fail)


def test_a_lost_gpu_is_listed_with_unknown_memory_and_no_driver(lost_gpu: None) -> None:
    assert gpu.gpu_names() == ["NVIDIA GPU 0"]
    (device,) = gpu.gpu_devices()
    assert (device.name, device.memory_total_mb, device.memory_used_mb) == ("NVIDIA GPU 0", None, None)
    assert gpu.gpu_driver() is None
    assert gpu.sample_gpu() is None
