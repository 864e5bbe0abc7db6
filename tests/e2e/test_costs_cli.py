"""``arbiter costs profile`` over real calls rows: benchmark runs and live calls, some that ran at once."""

from __future__ import annotations

import json
import statistics
import threading

import pytest
from click.testing import CliRunner

from registry.benchmark import benchmark_version, record_result
from registry.calls import measured_call
from registry.catalog import Catalog
from registry.cli.main import cli
from registry.datasets import load_validation_set
from registry.energy import as_precise_as
from registry.pool import WarmPool
from registry.providers import GenerationRequest
from registry.providers.llamacpp import LlamaCppProvider

pytestmark = pytest.mark.e2e


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["costs", "profile", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def measured(catalog: Catalog, smollm2, session_pool: WarmPool):
    """Real rows: a 3-item qa benchmark run, and two live calls on route qa that ran at the same time."""
    record = catalog.register(smollm2.path, name="smollm2-135m")[0]
    for task, limit in (("qa", 3), ("extract", 2)):
        validation_set = load_validation_set(task, catalog.settings.datasets_dir)
        record_result(catalog, benchmark_version(session_pool, record, validation_set, limit=limit))
    providers = [LlamaCppProvider(record.spec, n_threads=1, n_ctx=512) for _ in range(2)]
    rows: list[dict] = []
    barrier = threading.Barrier(2)

    def live(provider: LlamaCppProvider) -> None:
        provider.load()
        barrier.wait()
        request = GenerationRequest(messages=({"role": "user", "content": "Name a colour."},), max_tokens=16)
        rows.append(measured_call(provider, record, request, source="gateway", route="qa").row)
        provider.unload()

    threads = [threading.Thread(target=live, args=(p,)) for p in providers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    catalog.store.append("calls", rows)
    return record


def test_profile_groups_version_task_hardware_with_means_p95_energy_and_hints(catalog: Catalog, measured) -> None:
    code, out, _ = run("--json")
    assert code == 0
    profiles = json.loads(out)
    assert [(p["model"], p["version"], p["task"]) for p in profiles] == [("smollm2-135m", 1, "extract"),
                                                                          ("smollm2-135m", 1, "qa")]
    qa = profiles[1]
    rows = catalog.store.query("select * from calls where ok and coalesce(task, route) = 'qa'")
    assert qa["calls"] == len(rows) == 5
    assert qa["hardware_id"] == rows[0]["hardware_id"] and qa["hardware_class"] == rows[0]["hardware_class"]
    assert qa["cpu_overlapped_calls"] == sum(r["cpu_overlapped"] for r in rows) == 2
    alone = [r for r in rows if not r["cpu_overlapped"]]
    assert qa["cpu_basis"] == "alone"
    assert qa["cpu_ms"]["avg"] == pytest.approx(statistics.fmean(r["cpu_ms"] for r in alone))
    walls = sorted(r["wall_ms"] for r in rows)
    assert qa["wall_ms"] == {"avg": pytest.approx(statistics.fmean(walls)), "p95": walls[-1]}  # 5 calls: p95 = max
    assert qa["avg_rss_mb"]["avg"] <= qa["peak_rss_mb"]["avg"]
    tokens = sum(r["completion_tokens"] for r in rows)
    per_1k = sum(r["energy_mwh"] for r in rows) * 1000 / tokens  # an estimate keeps two significant digits
    assert qa["energy_mwh_per_1k_tokens"] == pytest.approx(as_precise_as(per_1k, qa["energy_sources"]))
    assert qa["energy_sources"] == sorted({r["energy_source"] for r in rows})
    assert qa["energy_models"] == sorted({r["energy_model"] for r in rows})
    utilization = sum(r["cpu_ms"] for r in alone) / sum(r["wall_ms"] * r["cpu_cores"] for r in alone)
    assert qa["cpu_utilization"] == pytest.approx(utilization)
    cores = rows[0]["cpu_cores"]
    assert qa["n_threads"] == 1 and {r["n_threads"] for r in rows} == {1}  # what llama.cpp ran with
    assert qa["n_gpu_layers"] == rows[0]["n_gpu_layers"] is not None
    assert any(h.startswith("CPU busy") for h in qa["hints"]) == (1 < cores and utilization < 0.5)
    assert any("offload layers" in h for h in qa["hints"]) == (rows[0]["gpu"] != "none")

    code, out, _ = run("--model", "smollm2-135m/1", "--task", "extract", "--json")
    assert code == 0 and [(p["task"], p["calls"]) for p in json.loads(out)] == [("extract", 2)]
    code, out, _ = run("--task", "qa")  # the table for people, with the hints under it
    assert code == 0 and "costs: qa on" in out and "smollm2-135m/1" in out


@pytest.mark.parametrize(("args", "expected", "exit_code"), [
    (("--model", "ghost"), "unknown model 'ghost'", 3),
    (("--model", "smollm2-135m/9"), "smollm2-135m", 3),
    (("--model", "smollm2-135m/x"), "invalid version", 2),
    (("--task", "poetry"), "unknown task 'poetry'; use one of: classify, extract, qa, summarize", 2),
])
def test_bad_filters_are_one_line_with_the_fix(catalog: Catalog, smollm2, args, expected, exit_code) -> None:
    catalog.register(smollm2.path, name="smollm2-135m")
    code, out, err = run(*args)
    assert code == exit_code and out == ""
    assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1


def test_no_calls_yet_is_said_plainly(catalog: Catalog, smollm2) -> None:
    catalog.register(smollm2.path, name="smollm2-135m")
    assert run("--json") == (0, "[]\n", "")
    code, out, _ = run("--model", "smollm2-135m", "--task", "qa")
    assert code == 0 and out.startswith("no calls recorded yet for smollm2-135m on qa; run `arbiter benchmark`")
