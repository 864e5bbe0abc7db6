"""``arbiter costs profile`` over real calls rows: benchmark runs and live calls, some that ran at once."""

from __future__ import annotations

import json
import statistics
import threading

import pytest
from click.testing import CliRunner

from registry.catalog.versions import Catalog
from registry.cli.main import cli
from registry.evaluation.benchmark import benchmark_version, record_result
from registry.evaluation.tasks import TaskCatalog
from registry.providers import GenerationRequest
from registry.providers.llamacpp import LlamaCppProvider
from registry.serving.calls import measured_call
from registry.serving.pool import WarmPool

pytestmark = pytest.mark.e2e


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["costs", "profile", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def measured(catalog: Catalog, smollm2, session_pool: WarmPool):
    """Real rows: a 3-item qa benchmark run, and two live calls on route qa that ran at the same time."""
    record = catalog.register(smollm2.path, name="smollm2-135m")[0]
    for task, limit in (("qa", 3), ("extract", 2)):
        validation_set = TaskCatalog(catalog.settings).get(task)
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
    assert [(p["model"], p["version"], p["task"], p["calls"]) for p in profiles] == [
        ("smollm2-135m", 1, "extract", 2), ("smollm2-135m", 1, "qa", 5)]
    qa = profiles[1]
    rows = catalog.store.query("select * from calls where ok and coalesce(task, route) = 'qa'")
    assert qa["hardware_id"] == rows[0]["hardware_id"] and qa["hardware_class"] == rows[0]["hardware_class"]
    # The 3 benchmark calls ran one after another; the 2 live calls ran at the same time.
    assert qa["cpu_overlapped_calls"] == 2
    assert (qa["cpu_basis"], qa["energy_basis"]) == ("alone", "alone")
    benchmark_rows = [r for r in rows if r["source"] == "benchmark"]
    assert qa["cpu_ms"]["avg"] == pytest.approx(statistics.fmean(r["cpu_ms"] for r in benchmark_rows))
    walls = sorted(r["wall_ms"] for r in rows)
    assert qa["wall_ms"] == {"avg": pytest.approx(statistics.fmean(walls)), "p95": walls[-1]}  # 5 calls: p95 = max
    assert qa["avg_rss_mb"]["avg"] <= qa["peak_rss_mb"]["avg"]
    assert 0 < qa["cpu_utilization"] <= 1
    # Energy per 1,000 tokens from the calls that ran alone: the benchmark's own run row over those
    # same 3 calls (computed by registry.evaluation.benchmark, not by the profile's query) must agree.
    (run_row,) = catalog.store.query("select * from runs where task = 'qa'")
    assert qa["energy_mwh_per_1k_tokens"] == pytest.approx(run_row["energy_mwh_per_1k_tokens"])
    assert qa["energy_sources"] == run_row["energy_source"].split(",")
    assert qa["n_threads"] == 1  # what llama.cpp ran with
    assert qa["n_gpu_layers"] in (0, -1) and qa["no_call_offloaded"] == (qa["n_gpu_layers"] == 0)
    cores = rows[0]["cpu_cores"]
    for hint in qa["hints"]:
        if hint.startswith("CPU busy"):  # on 2 cores one thread keeps ~50 % busy: either side of the line
            assert hint.startswith(f"CPU busy {qa['cpu_utilization']:.0%} of {cores} cores during calls, "
                                   "llama.cpp ran 1 thread(s)")
        else:
            assert rows[0]["gpu"] != "none" and "ARBITER_N_GPU_LAYERS=-1" in hint
    if rows[0]["gpu"] == "none":  # this machine: no GPU, so no offload hint
        assert not any("GPU" in h for h in qa["hints"])

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
