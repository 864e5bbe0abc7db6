"""What this machine is, as one fingerprint every result row carries.

Benchmarks are only comparable on the same hardware, so each ``calls`` and ``runs`` row records
the CPU, core count, RAM, GPU (or none), OS and llama.cpp version, plus a short id over them.
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import asdict, dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import psutil

from registry.errors import UserError
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
    hardware_class: str

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
        hardware_class=hardware_class(),
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


# What each accelerator needs, for the message that says why a version cannot run here.
ACCELERATOR_NEEDS = {
    "cpu": "any machine",
    "cuda": "an NVIDIA GPU with its driver",
    "metal": "macOS on Apple Silicon",
    "ane": "macOS on Apple Silicon",
}


@cache
def accelerators_available() -> frozenset[str]:
    """What this machine can run a model on: always ``cpu``; ``cuda`` when NVML finds an NVIDIA
    GPU; ``metal`` and ``ane`` (the Neural Engine CoreML uses) on macOS on Apple Silicon.
    Cached: the hardware does not change under a running process."""
    found = {"cpu"}
    if gpu_names():
        found.add("cuda")
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        found |= {"metal", "ane"}
    return frozenset(found)


# One Prefect work pool per class: a benchmark deployed to ``cuda`` runs only where a worker on an
# NVIDIA machine picks it up. ``apple`` is macOS on Apple Silicon (Metal, Neural Engine).
HARDWARE_CLASSES = ("cpu", "cuda", "apple")


def hardware_class() -> str:
    """This machine's class: ``cuda`` with an NVIDIA GPU, ``apple`` on Apple Silicon, else ``cpu``."""
    here = accelerators_available()
    if "cuda" in here:
        return "cuda"
    if "ane" in here:
        return "apple"
    return "cpu"


def parse_hardware_class(name: str) -> str:
    """``name`` if it is a known class, else a :class:`UserError` that lists them."""
    if name not in HARDWARE_CLASSES:
        raise UserError(f"unknown hardware class {name!r}: use one of {', '.join(HARDWARE_CLASSES)}")
    return name


_MEMORY_FRESH_S = 1.0
_memory_seen: tuple[float, int] = (float("-inf"), 0)


def available_memory_mb() -> int:
    """Memory free for a new model, re-read at most once a second: it moves as models load and
    unload, but reading it costs ~85 µs, most of a selection's 1 ms budget."""
    global _memory_seen
    stamp, value = _memory_seen
    now = time.monotonic()
    if now - stamp > _MEMORY_FRESH_S:
        value = int(psutil.virtual_memory().available // (1024 * 1024))
        _memory_seen = (now, value)
    return value
