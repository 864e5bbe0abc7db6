"""What this machine is, as one fingerprint every result row carries.

Benchmarks are only comparable on the same hardware, so each ``calls`` and ``runs`` row records
the CPU, core count, RAM, GPU (or none), OS and llama.cpp version, plus a short id over them.

The same facts decide whether a version can run here at all (:func:`shortfalls`, the one rule
the selector and ``arbiter hardware`` share): an accelerator, CPU flags, GPU and RAM it needs.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import psutil

from registry.errors import UserError
from registry.machine.gpu import gpu_devices, gpu_names
from registry.spec import KNOWN_CPU_FLAGS, Hardware


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


# --- CPU features -------------------------------------------------------------------------------

# Other spellings of the flags specs name: Linux calls SSE3 ``pni``; macOS's sysctl writes
# ``AVX1.0``, ``SSE4.1``, ``AVX512VNNI``; Apple Silicon lists ``FEAT_*`` and ``AdvSIMD`` keys.
_FLAG_ALIASES = {
    "pni": ("sse3",), "avx1.0": ("avx",), "sse4.1": ("sse4_1",), "sse4.2": ("sse4_2",),
    "avx512vnni": ("avx512_vnni",), "avx512bf16": ("avx512_bf16",), "avx512fp16": ("avx512_fp16",),
    "asimd": ("asimd", "neon"), "neon": ("neon", "asimd"), "advsimd": ("neon", "asimd"),
    "feat_dotprod": ("asimddp",), "feat_i8mm": ("i8mm",), "feat_bf16": ("bf16",),
    "feat_fp16": ("fphp", "asimdhp"), "feat_sve": ("sve",), "feat_sve2": ("sve2",),
}


def normalize_cpu_flags(raw: list[str]) -> frozenset[str]:
    """The flags a spec can name (``KNOWN_CPU_FLAGS``) among an OS's raw feature words."""
    found: set[str] = set()
    for word in raw:
        word = word.strip().lower()
        found.update(_FLAG_ALIASES.get(word, (word,)))
    return frozenset(found & KNOWN_CPU_FLAGS)


@cache
def cpu_flags() -> frozenset[str]:
    """This CPU's inference-relevant flags: ``/proc/cpuinfo`` on Linux (``flags`` on x86,
    ``Features`` on ARM), ``sysctl`` on macOS; empty where neither answers."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return normalize_cpu_flags(value.split())
        return frozenset()
    if platform.system() == "Darwin":
        return normalize_cpu_flags(_sysctl_features())
    return frozenset()


def _sysctl_features() -> list[str]:
    """macOS: Intel's feature words, and on Apple Silicon each ``hw.optional.*`` key set to 1."""
    words = _sysctl("machdep.cpu.features", "machdep.cpu.leaf7_features").split()
    for line in _sysctl("hw.optional").splitlines():
        key, _, value = line.partition(":")
        if value.strip() == "1":
            words.append(key.strip().rsplit(".", 1)[-1])
    return words


def _sysctl(*names: str) -> str:
    """``sysctl -n`` output ("" for names this Mac lacks: Apple Silicon has no ``machdep.cpu.features``)."""
    try:
        done = subprocess.run(["sysctl", "-n", *names], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout


def apple_silicon() -> dict[str, str | bool | None]:
    """Whether this is a Mac on Apple Silicon (every one has a Neural Engine), and which chip."""
    here = platform.system() == "Darwin" and platform.machine() == "arm64"
    chip = (_sysctl("machdep.cpu.brand_string").strip() or None) if here else None
    return {"apple_silicon": here, "chip": chip, "neural_engine": here}


# --- can a version run here ---------------------------------------------------------------------

RUNS_ANYWHERE = "remote"  # served by another server: this machine's hardware does not matter
GPU_ACCELERATORS = frozenset({"cuda"})  # own memory; Metal shares RAM
CLASS_ACCELERATORS = {
    "cpu": frozenset({"cpu"}),
    "cuda": frozenset({"cpu", "cuda"}),
    "apple": frozenset({"cpu", "metal", "ane"}),
}


@dataclass(frozen=True)
class Machine:
    """What a version's needs are checked against: this machine, or any machine of a class.

    ``None`` figures are not known (a class in general has no RAM size), so not judged."""

    label: str
    hardware_class: str
    accelerators: frozenset[str]
    cpu_flags: frozenset[str] | None = None
    ram_total_mb: int | None = None
    gpu_memory_mb: int | None = None

    @property
    def not_judged(self) -> list[str]:
        """The needs this machine's figures cannot decide."""
        figures = {"cpu_flags": self.cpu_flags, "min_memory_mb": self.ram_total_mb,
                   "min_gpu_memory_mb": self.gpu_memory_mb}
        return [need for need, figure in figures.items() if figure is None]


@cache
def this_machine() -> Machine:
    """This machine's figures, read once (the selector checks every version against them)."""
    gpus = gpu_devices()
    return Machine(
        label="this machine",
        hardware_class=hardware_class(),
        accelerators=accelerators_available(),
        cpu_flags=cpu_flags(),
        ram_total_mb=fingerprint().ram_mb,
        gpu_memory_mb=max((g.memory_total_mb for g in gpus if g.memory_total_mb is not None), default=0),
    )


def class_machine(name: str) -> Machine:
    """Any machine of hardware class ``name``: only its accelerators are known."""
    name = parse_hardware_class(name)
    article = "an" if name[0] in "aeiou" else "a"
    return Machine(label=f"{article} {name} machine", hardware_class=name, accelerators=CLASS_ACCELERATORS[name])


def shortfalls(needs: Hardware, machine: Machine, *, memory: bool = True) -> tuple[str, ...]:
    """Why a version with these needs cannot run on ``machine``, worded with the figures;
    empty when it can. ``memory=False`` leaves out RAM: the selector holds a version to the
    memory *available*, which is never more than the total.

    Example::

        shortfalls(Hardware(accelerators=("ane",), min_memory_mb=100), this_machine())
        # ('needs ane (macOS on Apple Silicon); this machine has cpu',)
    """
    if RUNS_ANYWHERE in needs.accelerators:
        return ()
    usable = machine.accelerators.intersection(needs.accelerators)
    found: list[str] = []
    if not usable:
        wanted = " or ".join(f"{a} ({ACCELERATOR_NEEDS.get(a, 'hardware arbiter does not detect')})"
                             for a in needs.accelerators)
        found.append(f"needs {wanted}; {machine.label} has {', '.join(sorted(machine.accelerators))}")
    missing = sorted(set(needs.cpu_flags) - machine.cpu_flags) if machine.cpu_flags is not None else []
    if missing:
        found.append(f"needs CPU flags {', '.join(missing)}; {machine.label}'s CPU lacks them")
    gpu = machine.gpu_memory_mb
    if usable and usable <= GPU_ACCELERATORS and gpu is not None and needs.min_gpu_memory_mb > gpu:
        found.append(f"needs {needs.min_gpu_memory_mb} MB of GPU memory; {machine.label}'s largest GPU has {gpu} MB")
    ram = machine.ram_total_mb
    if memory and ram is not None and needs.min_memory_mb > ram:
        found.append(f"needs {needs.min_memory_mb} MB (spec min_memory_mb); {machine.label} has {ram} MB total")
    return tuple(found)
