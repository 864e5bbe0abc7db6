"""What this machine is, as one fingerprint every result row carries.

Benchmarks are only comparable on the same hardware, so each ``calls`` and ``runs`` row records
the CPU, core count, RAM, GPU (or none), OS and llama.cpp version, plus a short id over them.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import asdict, dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import psutil

from registry.gpu import gpu_names


@dataclass(frozen=True)
class HardwareFingerprint:
    """The machine a measurement was taken on."""

    hardware_id: str
    cpu_model: str
    cpu_cores: int
    ram_mb: int
    gpu: str
    os: str
    llama_cpp_version: str

    def as_row(self) -> dict[str, str | int]:
        return asdict(self)


@cache
def fingerprint() -> HardwareFingerprint:
    """Detect once per process: the hardware does not change under a running process."""
    cpu = _cpu_model()
    cores = psutil.cpu_count(logical=True) or 1
    ram_mb = psutil.virtual_memory().total // (1024 * 1024)
    gpus = gpu_names()
    gpu = ", ".join(gpus) if gpus else "none"
    os_name = f"{platform.system()} {platform.release()} {platform.machine()}"
    llama = _package_version("llama-cpp-python")
    key = "|".join([cpu, str(cores), str(ram_mb // 1024), gpu, os_name, llama])
    return HardwareFingerprint(
        hardware_id=hashlib.sha256(key.encode()).hexdigest()[:12],
        cpu_model=cpu,
        cpu_cores=cores,
        ram_mb=ram_mb,
        gpu=gpu,
        os=os_name,
        llama_cpp_version=llama,
    )


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
