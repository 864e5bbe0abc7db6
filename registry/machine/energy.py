"""Energy of one measured call, always with how it was obtained.

Three sources, best first; the CPU part and the GPU part are added and ``source`` names both:

- ``rapl``: the CPU package energy counters (``/sys/class/powercap/intel-rapl:N/energy_uj``, one
  per package, in µJ, wrapping at ``max_energy_range_uj``). They count the whole package — every
  process and the idle floor — during the call, not this process alone. Since Linux 5.10 the file is
  readable by root only (a side channel); unreadable means no RAPL, never a crash.
- ``estimate``: when RAPL cannot be read, ``cpu_ms × W per busy core`` with W from the setting
  ``cpu_watts_per_core`` (``ARBITER_CPU_WATTS_PER_CORE``, default 12 W; checked when settings are
  built, so a bad value stops ``arbiter serve`` at start, not at the first request). A model, not a
  measurement: the row says so in ``energy_model`` and the figure is rounded to two significant
  digits, so it never looks precise — and so is any sum that contains it (``estimate+nvml``).
- ``nvml``: each NVIDIA GPU's total energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ
  since the driver loaded; Volta and newer), whole device. Added to the CPU part as ``rapl+nvml``
  or ``estimate+nvml``; a GPU without the counter is named in ``energy_model`` as not counted.

Every counter is machine-wide (package, device) and the estimate uses the process's CPU time, so a
call that overlapped another records roughly both calls' energy: an upper bound (the ``calls`` row
keeps ``cpu_overlapped``; ``registry.machine.cost_profile`` uses the calls that ran alone).

The powercap root is an argument so tests can point it at a tree of their own (this machine has no
RAPL); everything else reads the real ``/sys``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from registry.machine.gpu import gpu_handles
from registry.settings import get_settings

POWERCAP_ROOT = Path("/sys/class/powercap")
WATTS_ENV = "ARBITER_CPU_WATTS_PER_CORE"
_UJ_PER_MWH = 3.6e6  # 1 mWh = 3.6 J
_MJ_PER_MWH = 3.6e3


@dataclass(frozen=True)
class Energy:
    """One call's energy: ``mwh``, ``source`` (``rapl``, ``estimate``, either ``+nvml``) and
    ``model``, the words that say how the figure was obtained."""

    mwh: float
    source: str
    model: str


@dataclass(frozen=True)
class RaplPackage:
    """One CPU package's energy counter file and the value at which it wraps to zero."""

    energy_file: Path
    max_range_uj: int

    def read_uj(self) -> int:
        return int(self.energy_file.read_text())


def rapl_packages(root: Path = POWERCAP_ROOT) -> tuple[RaplPackage, ...]:
    """Every package domain under ``root`` when all of them can be read now, else ``()``.

    Sub-domains (``intel-rapl:0:0`` core, uncore, dram) are parts of a package and would count
    twice; ``psys`` (the whole platform, on some laptops) is not the CPU. One unreadable package
    makes the lot unusable: a partial sum would understate the energy without saying so.
    """
    packages = []
    for folder in sorted(root.glob("intel-rapl:*")):
        if folder.name.count(":") != 1:
            continue
        try:
            if not (folder / "name").read_text().strip().startswith("package"):
                continue
            package = RaplPackage(folder / "energy_uj", int((folder / "max_energy_range_uj").read_text()))
            package.read_uj()
        except (OSError, ValueError):  # EACCES on kernels ≥ 5.10 without root, or a malformed file
            return ()
        packages.append(package)
    return tuple(packages)


def rapl_delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Energy between two counter readings; the counter wraps to zero past ``max_range_uj``."""
    return end - start if end >= start else end + max_range_uj - start


def watts_per_core() -> float:
    """The estimate's watts per busy core: the ``cpu_watts_per_core`` setting (``ARBITER_CPU_WATTS_PER_CORE``,
    default 12 W). A bad value raises ``get_settings()``'s one-line ``ConfigError``."""
    return get_settings().cpu_watts_per_core


def nvml_energy_mj(handles: tuple[object, ...]) -> float | None:
    """The GPUs' energy counters summed (mJ), or ``None`` when any lacks one (pre-Volta, some MIG slices)."""
    if not handles:
        return None
    import pynvml

    try:
        return float(sum(pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles))
    except pynvml.NVMLError:
        return None


@dataclass(frozen=True)
class EnergyReading:
    """The counters at the start of a call (``None`` where a counter is not used)."""

    rapl_uj: tuple[int, ...] | None
    nvml_mj: float | None


class EnergyMeter:
    """Reads the counters around one call and turns the difference into an :class:`Energy`.

    Decides once which counters exist (RAPL readable, NVML energy supported); a counter that fails
    later falls back for that call (RAPL to the estimate, NVML to "not counted").

    Example::

        meter = EnergyMeter()
        reading = meter.start()
        ...                                   # the call
        meter.finish(reading, cpu_ms=840.0)   # Energy(mwh=2.8, source='estimate', model='estimate: …')
    """

    def __init__(self, powercap_root: Path = POWERCAP_ROOT, *, gpus: tuple[object, ...] | None = None,
                 watts: float | None = None) -> None:
        self.packages = rapl_packages(powercap_root)
        self.watts = watts if watts is not None else watts_per_core()
        self._gpus = gpu_handles() if gpus is None else gpus
        self.nvml = nvml_energy_mj(self._gpus) is not None

    def start(self) -> EnergyReading:
        return EnergyReading(rapl_uj=self._read_rapl(), nvml_mj=nvml_energy_mj(self._gpus) if self.nvml else None)

    def finish(self, start: EnergyReading, cpu_ms: float) -> Energy:
        cpu = self._cpu_part(start, cpu_ms)
        gpu_note = ""
        if start.nvml_mj is not None and (end_mj := nvml_energy_mj(self._gpus)) is not None:
            gpu_mwh = (end_mj - start.nvml_mj) / _MJ_PER_MWH
            total = cpu.mwh + gpu_mwh  # an estimate in the sum keeps it to two significant digits
            return Energy(two_digits(total) if cpu.source == "estimate" else round(total, 6), f"{cpu.source}+nvml",
                          f"{cpu.model}; nvml: GPU energy counter, whole device(s)")
        if self._gpus:
            gpu_note = "; GPU energy not counted: NVML has no energy counter for this GPU"
        return Energy(cpu.mwh, cpu.source, cpu.model + gpu_note)

    def _read_rapl(self) -> tuple[int, ...] | None:
        if not self.packages:
            return None
        try:
            return tuple(p.read_uj() for p in self.packages)
        except (OSError, ValueError):
            return None

    def _cpu_part(self, start: EnergyReading, cpu_ms: float) -> Energy:
        end = self._read_rapl() if start.rapl_uj is not None else None
        if start.rapl_uj is not None and end is not None:
            uj = sum(rapl_delta_uj(a, b, p.max_range_uj) for a, b, p in zip(start.rapl_uj, end, self.packages,
                                                                             strict=True))
            return Energy(round(uj / _UJ_PER_MWH, 6), "rapl",
                          "rapl: CPU package energy counter, whole package (all processes) during the call")
        return Energy(two_digits(cpu_ms * self.watts / 3600), "estimate",
                      f"estimate: cpu_ms x {self.watts:g} W per busy core ({WATTS_ENV})")


def two_digits(value: float) -> float:
    """Two significant digits: an estimate must not look like a measurement."""
    return float(f"{value:.2g}")


def as_precise_as(value: float | None, sources: list[str]) -> float | None:
    """A sum or ratio of energies kept to two significant digits when any part came from the estimate."""
    if value is None or not any("estimate" in source for source in sources):
        return value
    return two_digits(value)
