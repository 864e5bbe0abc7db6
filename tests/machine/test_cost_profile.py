"""``cost_profiles`` over crafted ``calls`` rows in a real results store (Parquet read through DuckDB).

Every expected figure below is worked out by hand from the rows, not by the query's formula:
calls that ran alone against calls that overlapped, two tasks, two machines, estimate and RAPL
energy, mixed ``n_gpu_layers``, and a served model.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from registry.machine.cost_profile import cost_profiles
from registry.results.store import ResultsStore

pytestmark = pytest.mark.unit

T0 = datetime.now(UTC) - timedelta(hours=2)  # live calls count for LIVE_DAYS days
LAPTOP = {"hardware_id": "aaaa11112222", "hardware_class": "cpu", "cpu_cores": 4, "gpu": "none"}
H100 = {"hardware_id": "bbbb33334444", "hardware_class": "cuda", "cpu_cores": 8, "gpu": "NVIDIA H100"}
ESTIMATE = {"energy_source": "estimate", "energy_model": "estimate: cpu_ms x 12 W per busy core (ARBITER_CPU_WATTS_PER_CORE)"}
RAPL = {"energy_source": "rapl", "energy_model": "rapl: CPU package energy counter, whole package (all processes)"}
_made = 0


def call(model: str, task: str, machine: dict[str, Any], *, cpu_ms: float, wall_ms: float, energy_mwh: float | None,
         tokens: int, overlapped: bool = False, ok: bool = True, **extra: Any) -> dict[str, Any]:
    global _made
    _made += 1
    return {"call_id": f"c{_made}", "ts": T0 + timedelta(seconds=_made), "source": "benchmark", "model": model,
            "version": 1, "task": task, "ok": ok, "cpu_ms": cpu_ms, "wall_ms": wall_ms, "cpu_overlapped": overlapped,
            "energy_mwh": energy_mwh, "completion_tokens": tokens, **machine, **extra}


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    local = {"n_threads": 2, "n_gpu_layers": 0, **ESTIMATE}
    rows = [
        # smollm2 / qa on the laptop: 20 calls alone (cpu_ms 10..200, wall 40..800, 0.125..2.5 mWh, 10 tokens each) …
        *(call("smollm2", "qa", LAPTOP, cpu_ms=10.0 * i, wall_ms=40.0 * i, energy_mwh=0.125 * i, tokens=10, **local)
          for i in range(1, 21)),
        # … one that overlapped another (its CPU and energy hold the neighbour's too) …
        call("smollm2", "qa", LAPTOP, cpu_ms=5000.0, wall_ms=1000.0, energy_mwh=50.0, tokens=10, overlapped=True,
             **local),
        # … and one that failed: never in a profile.
        call("smollm2", "qa", LAPTOP, cpu_ms=9999.0, wall_ms=9999.0, energy_mwh=99.0, tokens=0, ok=False, **local),
        # smollm2 / qa on the H100: both calls overlapped; the older offloaded every layer, the newer none.
        call("smollm2", "qa", H100, cpu_ms=300.0, wall_ms=1000.0, energy_mwh=1.234567, tokens=20, overlapped=True,
             n_threads=8, n_gpu_layers=-1, gpu_utilization_pct=60.0, **RAPL),
        call("smollm2", "qa", H100, cpu_ms=500.0, wall_ms=1000.0, energy_mwh=2.0, tokens=30, overlapped=True,
             n_threads=8, n_gpu_layers=0, gpu_utilization_pct=80.0, **RAPL),
        # smollm2 / extract on the H100: no call put a layer on the GPU.
        *(call("smollm2", "extract", H100, cpu_ms=100.0, wall_ms=100.0, energy_mwh=0.5, tokens=5, n_threads=8,
               n_gpu_layers=0, gpu_utilization_pct=0.0, **RAPL) for _ in range(2)),
        # a served model on the H100: its hardware is its server's, no layer count, no hints.
        call("remote", "qa", H100, cpu_ms=2.0, wall_ms=300.0, energy_mwh=0.01, tokens=10, n_threads=None,
             n_gpu_layers=None, gpu_utilization_pct=0.0, **RAPL),
    ]
    store = ResultsStore(tmp_path / "results")
    store.append("calls", rows)
    return store


def profiles(store: ResultsStore) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(p["model"], p["task"], p["hardware_id"]): p for p in cost_profiles(store)}


def test_one_profile_per_version_task_and_machine_over_successful_calls(store: ResultsStore) -> None:
    found = profiles(store)
    assert sorted((m, t, h[:4], p["calls"]) for (m, t, h), p in found.items()) == [
        ("remote", "qa", "bbbb", 1), ("smollm2", "extract", "bbbb", 2), ("smollm2", "qa", "aaaa", 21),
        ("smollm2", "qa", "bbbb", 2)]


def test_cpu_and_energy_come_from_the_calls_that_ran_alone(store: ResultsStore) -> None:
    qa = profiles(store)["smollm2", "qa", LAPTOP["hardware_id"]]
    assert (qa["cpu_overlapped_calls"], qa["cpu_basis"], qa["energy_basis"]) == (1, "alone", "alone")
    # wall time is every call's: mean (40 × 210 + 1000) / 21; p95 nearest rank of 21 = the 20th = 800
    assert qa["wall_ms"] == {"avg": pytest.approx(9400 / 21), "p95": 800.0}
    # CPU of the 20 alone calls: mean 105, p95 nearest rank of 20 = the 19th = 190 (the overlapped 5000 left out)
    assert qa["cpu_ms"] == {"avg": pytest.approx(105.0), "p95": 190.0}
    assert qa["cpu_utilization"] == pytest.approx(2100 / (8400 * 4))  # 6.25 % of 4 cores
    # energy of the same 20: Σ 26.25 mWh over 200 tokens = 131.25 per 1k; an estimate, so two significant digits
    # (with the overlapped call's 50 mWh it would read 363)
    assert qa["energy_mwh"] == {"avg": 1.3, "p95": 2.4}  # 1.3125, 2.375
    assert qa["energy_mwh_per_1k_tokens"] == 130.0
    assert qa["energy_sources"] == ["estimate"]
    assert qa["energy_models"] == [ESTIMATE["energy_model"]]


def test_when_every_call_overlapped_all_are_used_and_the_basis_says_so(store: ResultsStore) -> None:
    qa = profiles(store)["smollm2", "qa", H100["hardware_id"]]
    assert (qa["cpu_overlapped_calls"], qa["cpu_basis"], qa["energy_basis"]) == (2, "overlapped", "overlapped")
    assert qa["cpu_ms"] == {"avg": pytest.approx(400.0), "p95": 500.0}
    # RAPL counters: kept as measured (no rounding to two digits); 3.234567 mWh over 50 tokens
    assert qa["energy_mwh"] == {"avg": pytest.approx(1.6172835), "p95": 2.0}
    assert qa["energy_mwh_per_1k_tokens"] == pytest.approx(64.69134)
    assert qa["energy_sources"] == ["rapl"]


def test_hints_name_idle_cores_and_a_gpu_no_call_used(store: ResultsStore) -> None:
    found = profiles(store)
    laptop = found["smollm2", "qa", LAPTOP["hardware_id"]]
    (hint,) = laptop["hints"]
    assert hint.startswith("CPU busy 6% of 4 cores during calls, llama.cpp ran 2 thread(s)")
    extract = found["smollm2", "extract", H100["hardware_id"]]
    assert (extract["n_gpu_layers"], extract["no_call_offloaded"]) == (0, True)
    (hint,) = extract["hints"]
    assert hint.startswith("a GPU (NVIDIA H100) is here but llama.cpp put no layers on it in any call")


def test_a_mixed_group_is_not_read_as_no_layers_on_the_gpu(store: ResultsStore) -> None:
    qa = profiles(store)["smollm2", "qa", H100["hardware_id"]]
    # the latest call's value (0), but one call offloaded every layer and the GPU was busy: no hint
    assert (qa["n_gpu_layers"], qa["no_call_offloaded"]) == (0, False)
    assert qa["gpu_utilization_pct"] == {"avg": pytest.approx(70.0), "p95": 80.0}
    assert qa["hints"] == []


def test_a_served_model_has_no_layer_count_and_no_hints(store: ResultsStore) -> None:
    served = profiles(store)["remote", "qa", H100["hardware_id"]]
    assert (served["n_threads"], served["n_gpu_layers"], served["no_call_offloaded"]) == (None, None, None)
    assert served["hints"] == []


def test_calls_without_an_energy_figure_give_no_energy_basis(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")  # rows written before energy was recorded
    store.append("calls", [call("old", "qa", LAPTOP, cpu_ms=10.0, wall_ms=20.0, energy_mwh=None, tokens=5)])
    (old,) = cost_profiles(store)
    assert (old["cpu_basis"], old["energy_basis"], old["energy_mwh_per_1k_tokens"]) == ("alone", None, None)
    assert old["energy_sources"] == []


def test_live_calls_older_than_the_window_count_only_when_asked(tmp_path: Path) -> None:
    """A month of live calls is not read on every profile: the last ``days`` do; benchmark calls of any age do."""
    store = ResultsStore(tmp_path / "results")
    old = datetime.now(UTC) - timedelta(days=10)
    store.append("calls", [
        call("smollm2", "qa", LAPTOP, cpu_ms=1.0, wall_ms=10.0, energy_mwh=None, tokens=1, ts=old),
        call("smollm2", "qa", LAPTOP, cpu_ms=1.0, wall_ms=10.0, energy_mwh=None, tokens=1, ts=old, run_id="r1"),
        call("smollm2", "qa", LAPTOP, cpu_ms=1.0, wall_ms=10.0, energy_mwh=None, tokens=1),
    ])
    assert [p["calls"] for p in cost_profiles(store)] == [2]  # the old live call is out, the old benchmark call in
    assert [p["calls"] for p in cost_profiles(store, days=30)] == [3]
    assert [p["calls"] for p in cost_profiles(store, days=None)] == [3]
