"""Energy figures and their sources: RAPL counters (read, summed, wrapped), the stated estimate, no GPU.

This machine has no RAPL (``/sys/class/powercap`` is absent), so the RAPL paths read
``fake_powercap``: a named fake of the kernel's sysfs tree, laid out as the kernel lays it out.
NVML's energy counter is ``FakeGpuEnergyCounter`` (no NVIDIA GPU here), and a meter that fails
is ``FailingEnergyMeter`` (a fault the real counters cannot be made to raise on demand).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from registry.cli.main import cli
from registry.errors import ConfigError
from registry.machine.costs import measure
from registry.machine.energy import (
    Energy,
    EnergyMeter,
    EnergyReading,
    as_precise_as,
    nvml_energy_mj,
    rapl_delta_uj,
    rapl_packages,
    watts_per_core,
)
from registry.machine.gpu import gpu_handles
from registry.settings import get_settings

pytestmark = pytest.mark.unit

MAX_RANGE_UJ = 262_143_328_850  # a real package's max_energy_range_uj


def _domain(root: Path, folder: str, name: str, energy_uj: int) -> Path:
    domain = root / folder
    domain.mkdir(parents=True)
    (domain / "name").write_text(name + "\n")
    (domain / "energy_uj").write_text(f"{energy_uj}\n")
    (domain / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
    return domain / "energy_uj"


@pytest.fixture
def fake_powercap(tmp_path: Path) -> Path:
    """Fake sysfs: two packages, a core sub-domain (part of package 0) and a psys domain."""
    root = tmp_path / "powercap"
    _domain(root, "intel-rapl:0", "package-0", 1_000_000)
    _domain(root, "intel-rapl:0:0", "core", 500_000)
    _domain(root, "intel-rapl:1", "package-1", MAX_RANGE_UJ - 1_000_000)
    _domain(root, "intel-rapl:2", "psys", 9_000_000)
    return root


def test_only_package_domains_are_counted(fake_powercap: Path) -> None:
    packages = rapl_packages(fake_powercap)
    assert [p.energy_file.parent.name for p in packages] == ["intel-rapl:0", "intel-rapl:1"]
    assert all(p.max_range_uj == MAX_RANGE_UJ for p in packages)


def test_rapl_energy_is_the_counters_delta_with_the_wrap_handled(fake_powercap: Path) -> None:
    meter = EnergyMeter(fake_powercap, gpus=())
    start = meter.start()
    (fake_powercap / "intel-rapl:0" / "energy_uj").write_text(f"{1_000_000 + 3_600_000}\n")  # +1 mWh
    (fake_powercap / "intel-rapl:1" / "energy_uj").write_text("2600000\n")  # wrapped: +1,000,000 +2,600,000 µJ
    (fake_powercap / "intel-rapl:0:0" / "energy_uj").write_text("99999999\n")  # a sub-domain: never added
    energy = meter.finish(start, cpu_ms=5000)
    assert energy.source == "rapl"
    assert energy.mwh == pytest.approx(2.0)
    assert "whole package" in energy.model


def test_delta_without_and_with_a_wrap() -> None:
    assert rapl_delta_uj(100, 350, 1000) == 250
    assert rapl_delta_uj(900, 50, 1000) == 150


def test_an_unreadable_counter_gives_the_flagged_estimate(fake_powercap: Path) -> None:
    # Kernels >= 5.10 make energy_uj root-only (EACCES). These tests run as root here, for whom a
    # chmod changes nothing, so the unreadable file is a directory in its place: open() fails as well.
    counter = fake_powercap / "intel-rapl:1" / "energy_uj"
    counter.unlink()
    counter.mkdir()
    assert rapl_packages(fake_powercap) == ()  # one unreadable package: a partial sum would understate
    meter = EnergyMeter(fake_powercap, gpus=(), watts=12)
    energy = meter.finish(meter.start(), cpu_ms=1234.5)
    assert energy.source == "estimate"
    assert energy.model == "estimate: cpu_ms x 12 W per busy core (ARBITER_CPU_WATTS_PER_CORE)"
    assert energy.mwh == 4.1  # 1234.5 ms x 12 W = 14.8 J = 4.115 mWh, kept to two significant digits


def test_no_powercap_tree_gives_the_estimate(tmp_path: Path) -> None:
    meter = EnergyMeter(tmp_path / "absent", gpus=(), watts=20)
    assert meter.packages == ()
    energy = meter.finish(meter.start(), cpu_ms=360)
    assert (energy.source, energy.mwh) == ("estimate", 2.0)
    assert "20 W" in energy.model


def test_the_watts_setting_is_read_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARBITER_CPU_WATTS_PER_CORE", raising=False)
    assert watts_per_core() == get_settings().cpu_watts_per_core == 12.0
    monkeypatch.setenv("ARBITER_CPU_WATTS_PER_CORE", "7.5")
    assert watts_per_core() == 7.5
    meter = EnergyMeter(tmp_path / "absent", gpus=())
    energy = meter.finish(meter.start(), cpu_ms=480)  # 480 ms x 7.5 W = 3.6 J = 1 mWh
    assert (energy.mwh, energy.model) == (1.0, "estimate: cpu_ms x 7.5 W per busy core (ARBITER_CPU_WATTS_PER_CORE)")


@pytest.mark.parametrize("bad", ["zero", "0", "-3", "inf", "nan"])
def test_a_bad_watts_value_fails_when_settings_are_built_not_at_the_first_call(
        bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # `arbiter serve` builds its settings before anything else, so it stops at start with this line
    # instead of answering every request with a 400 that blames the client.
    monkeypatch.setenv("ARBITER_CPU_WATTS_PER_CORE", bad)
    with pytest.raises(ConfigError, match=rf"^invalid setting: ARBITER_CPU_WATTS_PER_CORE='{bad}': ") as error:
        get_settings()
    assert "\n" not in str(error.value)
    result = CliRunner().invoke(cli, ["costs", "profile"])  # any command: the settings come first
    assert result.exit_code != 0 and result.stdout == ""
    assert result.stderr.startswith("error: invalid setting: ARBITER_CPU_WATTS_PER_CORE=")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(bool(gpu_handles()), reason="this machine has an NVIDIA GPU: the no-GPU path cannot be seen here")
def test_without_a_gpu_there_is_no_gpu_part() -> None:
    assert nvml_energy_mj(gpu_handles()) is None
    meter = EnergyMeter(Path("/nonexistent"))  # this machine's real GPUs: none
    assert meter.nvml is False
    energy = meter.finish(meter.start(), cpu_ms=100)
    assert energy.source == "estimate" and "GPU" not in energy.model


class FakeGpuEnergyCounter:
    """A named fake of NVML's total energy counter (this machine has no NVIDIA GPU): mJ per handle,
    or NotSupported for a GPU without the counter (pre-Volta)."""

    def __init__(self, counters: dict[str, int | None]) -> None:
        self.counters = counters

    def __call__(self, handle: str) -> int:
        import pynvml

        value = self.counters[handle]
        if value is None:
            raise pynvml.NVMLError_NotSupported()
        return value


def test_gpu_energy_counters_are_added_to_the_cpu_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    counter = FakeGpuEnergyCounter({"gpu0": 1_000, "gpu1": 50_000})
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", counter)
    meter = EnergyMeter(tmp_path / "absent", gpus=("gpu0", "gpu1"), watts=12)
    assert meter.nvml is True
    start = meter.start()
    counter.counters = {"gpu0": 1_000 + 3_600, "gpu1": 50_000 + 7_200}  # +1 mWh, +2 mWh
    energy = meter.finish(start, cpu_ms=300)  # estimate: 300 ms x 12 W = 1 mWh
    assert energy.source == "estimate+nvml"
    assert energy.mwh == pytest.approx(4.0)
    assert energy.model.endswith("; nvml: GPU energy counter, whole device(s)")


def test_a_sum_with_an_estimate_in_it_keeps_two_digits_and_counters_alone_keep_theirs(
        fake_powercap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    counter = FakeGpuEnergyCounter({"gpu0": 1_000})
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", counter)
    estimated = EnergyMeter(tmp_path / "absent", gpus=("gpu0",), watts=12)
    start = estimated.start()
    counter.counters = {"gpu0": 1_000 + 4_444}  # +1.234444 mWh
    energy = estimated.finish(start, cpu_ms=300)  # estimate: 1 mWh
    assert (energy.source, energy.mwh) == ("estimate+nvml", 2.2)  # not 2.234444: the estimate is a model

    counter.counters = {"gpu0": 1_000}
    measured = EnergyMeter(fake_powercap, gpus=("gpu0",), watts=12)
    start = measured.start()
    counter.counters = {"gpu0": 1_000 + 4_444}
    (fake_powercap / "intel-rapl:0" / "energy_uj").write_text(f"{1_000_000 + 3_600_000}\n")  # +1 mWh
    energy = measured.finish(start, cpu_ms=300)
    assert (energy.source, energy.mwh) == ("rapl+nvml", pytest.approx(2.234444))


class FailingEnergyMeter(EnergyMeter):
    """A named fake: a meter whose reading fails at the end of the call (a fault this machine's real
    counters cannot be made to raise)."""

    def finish(self, start: EnergyReading, cpu_ms: float) -> Energy:
        raise RuntimeError("fake meter fault")


def test_a_meter_that_fails_does_not_leave_the_next_call_flagged_overlapped(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="fake meter fault"), measure(FailingEnergyMeter(tmp_path, gpus=(), watts=12)):
        pass
    with measure(EnergyMeter(tmp_path / "absent", gpus=(), watts=12)) as cost:
        pass
    assert cost.cpu_overlapped is False
    assert cost.energy is not None and cost.energy.source == "estimate"


def test_a_gpu_without_an_energy_counter_is_named_not_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", FakeGpuEnergyCounter({"gpu0": None}))
    meter = EnergyMeter(tmp_path / "absent", gpus=("gpu0",), watts=12)
    assert meter.nvml is False
    energy = meter.finish(meter.start(), cpu_ms=300)
    assert energy.source == "estimate" and energy.mwh == 1.0
    assert energy.model.endswith("GPU energy not counted: NVML has no energy counter for this GPU")


def test_sums_with_an_estimate_in_them_keep_two_significant_digits() -> None:
    assert as_precise_as(312.50000000000006, ["estimate"]) == 310.0
    assert as_precise_as(0.123456, ["estimate+nvml"]) == 0.12
    assert as_precise_as(312.50000000000006, ["rapl"]) == 312.50000000000006
    assert as_precise_as(None, ["estimate"]) is None
