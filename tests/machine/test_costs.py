"""Every figure of a real generation's calls row, and the run aggregates, on the shipped SmolLM2.

This machine has no RAPL and no GPU, so the real path here is the stated estimate and null GPU
figures. The RAPL-unreadable path uses ``unreadable_powercap``, a named fake of the kernel's sysfs
tree (a package whose ``energy_uj`` cannot be opened), around a real generation.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from registry.catalog.versions import Catalog
from registry.evaluation.benchmark import benchmark_version, record_result
from registry.evaluation.tasks import TaskCatalog
from registry.machine.costs import measure
from registry.machine.energy import EnergyMeter, as_precise_as, rapl_packages, watts_per_core
from registry.machine.gpu import gpu_handles
from registry.providers import GenerationRequest
from registry.providers.llamacpp import LlamaCppProvider
from registry.serving.calls import call_row, measured_call
from registry.serving.pool import WarmPool

pytestmark = pytest.mark.integration

REQUEST = GenerationRequest(messages=({"role": "user", "content": "Name three rivers in Europe."},), max_tokens=32)
NO_GPU = pytest.mark.skipif(bool(gpu_handles()), reason="an NVIDIA GPU is here: the no-GPU path cannot be seen")


@pytest.fixture
def record(catalog: Catalog, smollm2):
    return catalog.register(smollm2.path, name="smollm2-135m")[0]


@NO_GPU
def test_a_generations_row_has_every_cost_figure_with_its_source(record, session_pool: WarmPool) -> None:
    call = measured_call(session_pool.get(record), record, REQUEST, source="test", task="qa")
    row = call.row
    assert row["ok"] and row["completion_tokens"] > 0 and row["prompt_tokens"] > 0
    assert row["wall_ms"] > 0 and row["tokens_per_s"] > 0
    assert 0 < row["cpu_thread_ms"] <= row["cpu_ms"]
    assert row["cpu_overlapped"] is False
    assert 0 < row["avg_rss_mb"] <= row["peak_rss_mb"]
    # No GPU: no GPU figure at all, rather than a zero that would read as "measured idle".
    assert (row["gpu_ms"], row["gpu_utilization_pct"], row["gpu_memory_mb"]) == (None, None, None)
    if rapl_packages():  # a machine whose RAPL counters this process can read measures instead
        assert row["energy_source"] == "rapl" and row["energy_model"].startswith("rapl: CPU package energy counter")
        assert row["energy_mwh"] > 0
        return
    # No readable RAPL (this development machine): the estimate, with its model named and two significant digits.
    assert row["energy_source"] == "estimate"
    assert row["energy_model"] == f"estimate: cpu_ms x {watts_per_core():g} W per busy core (ARBITER_CPU_WATTS_PER_CORE)"
    assert row["energy_mwh"] == float(f"{row['cpu_ms'] * watts_per_core() / 3600:.2g}")


@pytest.fixture
def unreadable_powercap(tmp_path: Path) -> Path:
    """Fake sysfs with one package whose counter cannot be opened (root-only since Linux 5.10;
    these tests run as root, so a directory stands where the file would be)."""
    package = tmp_path / "powercap" / "intel-rapl:0"
    package.mkdir(parents=True)
    (package / "name").write_text("package-0\n")
    (package / "max_energy_range_uj").write_text("262143328850\n")
    (package / "energy_uj").mkdir()
    return tmp_path / "powercap"


def test_unreadable_rapl_falls_back_to_the_flagged_estimate(record, session_pool: WarmPool,
                                                            unreadable_powercap: Path) -> None:
    provider = session_pool.get(record)
    meter = EnergyMeter(unreadable_powercap, watts=10)
    with measure(meter) as cost:
        generation = provider.generate(REQUEST)
    row = call_row(record, generation, cost, error=None, source="test")
    assert meter.packages == ()
    assert row["energy_source"].split("+")[0] == "estimate"
    assert row["energy_model"].startswith("estimate: cpu_ms x 10 W per busy core")
    assert row["energy_mwh"] == pytest.approx(row["cpu_ms"] * 10 / 3600, rel=0.05)


def test_calls_that_ran_at_once_are_flagged_and_keep_their_own_thread_figure(record) -> None:
    providers = [LlamaCppProvider(record.spec, n_threads=1, n_ctx=512) for _ in range(2)]
    for provider in providers:
        provider.load()
    started = threading.Barrier(2)
    rows: list[dict] = []

    def call(provider: LlamaCppProvider) -> None:
        started.wait()
        rows.append(measured_call(provider, record, REQUEST, source="test").row)

    try:
        threads = [threading.Thread(target=call, args=(p,)) for p in providers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        alone = measured_call(providers[0], record, REQUEST, source="test").row
    finally:
        for provider in providers:
            provider.unload()
    assert [r["cpu_overlapped"] for r in rows] == [True, True]
    for row in rows:  # the process clock holds both calls' work; the thread's only its own
        assert row["cpu_thread_ms"] < row["cpu_ms"]
    assert alone["cpu_overlapped"] is False


def test_a_run_row_aggregates_energy_per_1000_tokens(record, catalog: Catalog, session_pool: WarmPool) -> None:
    validation_set = TaskCatalog(catalog.settings).get("qa")
    run = record_result(catalog, benchmark_version(session_pool, record, validation_set, limit=3))
    calls = catalog.store.query("select energy_mwh, completion_tokens, energy_source, avg_rss_mb from calls "
                                "where run_id = $1 and ok", [run["run_id"]])
    assert len(calls) == 3
    tokens = sum(c["completion_tokens"] for c in calls)
    energy = sum(c["energy_mwh"] for c in calls)
    stored = catalog.store.query("select * from runs where run_id = $1", [run["run_id"]])[0]
    # Sums of estimates stay estimates: two significant digits, as each call's figure (exact for counters).
    sources = [stored["energy_source"]]
    assert stored["energy_mwh"] == pytest.approx(as_precise_as(energy, sources))
    assert stored["energy_mwh_per_1k_tokens"] == pytest.approx(as_precise_as(energy * 1000 / tokens, sources))
    assert stored["energy_source"] == ",".join(sorted({c["energy_source"] for c in calls}))
    assert stored["avg_rss_mb"] == pytest.approx(sum(c["avg_rss_mb"] for c in calls) / 3)
