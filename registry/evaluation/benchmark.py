"""Benchmark one version on one task's validation set: warm up, run every item, score, measure.

The Prefect flow in ``flows/benchmark.py`` only orchestrates this; everything that decides a
figure lives here so it can be tested and reused without Prefect.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

from registry.catalog.candidates import Candidates
from registry.catalog.prompts import linked_prompts_tags
from registry.catalog.tracking import log_run
from registry.catalog.versions import Catalog
from registry.errors import UserError
from registry.evaluation import progress
from registry.evaluation.judge import ModelBasedJudge
from registry.evaluation.task_mlflow import register_task_prompt, validation_input
from registry.evaluation.tasks import TaskVersion
from registry.machine.energy import as_precise_as
from registry.machine.hardware import fingerprint
from registry.providers import GenerationRequest, Provider
from registry.results.store import new_id, now_utc
from registry.serving.calls import MeasuredCall, measured_call
from registry.serving.pool import WarmPool
from registry.spec import VersionRecord

BENCHMARK_EXPERIMENT = "arbiter-benchmarks"

WARMUP_MESSAGES: tuple[list[dict[str, str]], ...] = (
    [{"role": "user", "content": "Say hello in one short sentence."}],
    [{"role": "user", "content": "Count from one to five."}],
)
"""Unscored prompts sent before timing starts, so a model's first-call costs (weights paged in,
buffers allocated) do not land on the first scored item."""

ItemDone = progress.ItemDone


@dataclass(frozen=True)
class BenchmarkResult:
    run: dict[str, Any]
    calls: list[dict[str, Any]]
    task: TaskVersion  # what was measured: its prompt and data are logged with the run


def warm_up(provider: Provider) -> float:
    """Unscored prompts so the first scored item does not pay for cold caches; returns ms spent."""
    started = time.perf_counter()
    for messages in WARMUP_MESSAGES:
        provider.generate(GenerationRequest(messages=tuple(messages), max_tokens=8))
    return (time.perf_counter() - started) * 1000


def run_items(
    provider: Provider, record: VersionRecord, task: TaskVersion, run_id: str, limit: int | None = None,
    judge: ModelBasedJudge | None = None, on_item: ItemDone | None = None,
) -> list[MeasuredCall]:
    """Run and score each item (the first ``limit`` when given); one measured call per item, whose
    row keeps the answer and each scorer's score (``answer``, ``scores``) for per-item comparison.
    A classifier is sent the item's raw text rather than the prompt (``TaskVersion.request_for``)
    and scored by the same scorers; a judge still reads the prompt as the instruction."""
    items = task.items[:limit] if limit else task.items
    calls = []
    for done, item in enumerate(items, start=1):
        messages = task.messages(item)
        call = measured_call(provider, record, task.request_for(record, item, messages), source="benchmark", task=task.name,
                             run_id=run_id, item_id=item.id)
        if call.generation is not None:
            scored = task.score(item, messages, call.generation.text, judge)
            call.row.update(quality=scored.quality, answer=call.generation.text, scores=json.dumps(scored.scores),
                            score_problems="; ".join(scored.problems) or None)
        else:
            call.row["quality"] = 0.0  # a failed call is a wrong answer, not an unscored one
        calls.append(call)
        if on_item is not None:
            on_item(done, len(items))
    return calls


def summarize(
    calls: list[MeasuredCall], record: VersionRecord, task: TaskVersion, run_id: str,
    *, load_ms: float | None, warmup_ms: float, quality_source: str = "reference",
) -> dict[str, Any]:
    """The ``runs`` row: quality over all scored items (a failure scores 0), latency over successful
    calls, ``tokens_per_s`` the decode rate pooled over calls (see ``Generation.tokens_per_s``);
    ``quality_source`` says where quality came from (``reference`` or ``judge:NAME/VERSION``).
    Costs are over successful calls: CPU and energy per generated token (energy per 1,000, with the
    sources its calls used, e.g. ``estimate``), the mean of the calls' average RSS."""
    scored = [c.row["quality"] for c in calls if c.row["quality"] is not None]
    ok = [c for c in calls if c.ok]
    walls = sorted(c.cost.wall_ms for c in ok)
    generations = [c.generation for c in ok if c.generation]
    tokens = sum(g.completion_tokens for g in generations)
    decoded = [g for g in generations if g.decode_ms]
    decode_tokens = sum(g.decode_steps for g in decoded)
    decode_s = sum(g.decode_ms for g in decoded if g.decode_ms) / 1000
    ttfts = [c.generation.time_to_first_token_ms for c in ok if c.generation and c.generation.time_to_first_token_ms]
    energies = [c.cost.energy for c in ok if c.cost.energy is not None]
    sources = sorted({e.source for e in energies})
    energy_mwh = sum(e.mwh for e in energies) if energies else None
    return {
        "run_id": run_id,
        "ts": now_utc(),
        "task": task.name,
        "task_version": task.version,
        "task_sha256": task.sha256,
        "model": record.name,
        "version": record.version,
        "dataset_sha256": task.data_sha256,
        "n": len(calls),
        "n_ok": len(ok),
        "quality": statistics.fmean(scored) if scored else 0.0,
        "quality_source": quality_source,
        "n_unscored": len(calls) - len(scored),
        "p50_ms": _percentile(walls, 50),
        "p95_ms": _percentile(walls, 95),
        "ttft_p50_ms": statistics.median(ttfts) if ttfts else None,
        "tokens_per_s": decode_tokens / decode_s if decode_s > 0 else None,
        "cpu_ms_per_token": sum(c.cost.cpu_ms for c in ok) / tokens if tokens else None,
        "peak_rss_mb": max((c.cost.peak_rss_mb for c in calls), default=None),
        "load_ms": load_ms,
        "warmup_ms": warmup_ms,
        "avg_rss_mb": statistics.fmean(c.cost.avg_rss_mb for c in ok) if ok else None,
        "energy_mwh": as_precise_as(energy_mwh, sources),
        "energy_mwh_per_1k_tokens": as_precise_as(energy_mwh * 1000 / tokens, sources)
        if energy_mwh is not None and tokens else None,
        "energy_source": ",".join(sources) or None,
        **fingerprint().as_row(),
    }


def benchmark_version(
    pool: WarmPool, record: VersionRecord, task: TaskVersion, *, limit: int | None = None,
    judge: ModelBasedJudge | None = None, on_item: ItemDone | None = None,
) -> BenchmarkResult:
    """Warm up, run, score and summarize one version on one task (nothing written yet). A task
    with a judge scorer needs ``judge``; its runs name the judge version. Without ``on_item`` the
    command's progress reporter (``progress.reporting``) is told of each item."""
    if on_item is None:
        with progress.tracked(f"{record.ref} · {task.ref}", len(task.items[:limit]), "benchmarked") as on_item:
            return benchmark_version(pool, record, task, limit=limit, judge=judge, on_item=on_item)
    quality_source = "reference"
    if task.needs_judge:
        if judge is None:
            raise UserError(f"task {task.name!r} is scored by a judge; pass one (route 'judgment')")
        quality_source = f"judge:{judge.judge_version().ref}"
    refused = task.cannot_serve(record)
    if refused:
        raise UserError(f"{refused}; benchmark a version that can serve it"
                        + ("" if record.spec.is_classifier else ", or register it with --capability"))
    was_warm = pool.is_warm(record)
    provider = pool.get(record)
    warmup_ms = 0.0 if was_warm else warm_up(provider)
    run_id = new_id()
    calls = run_items(provider, record, task, run_id, limit, judge if task.needs_judge else None, on_item)
    # Only the run that loaded the model paid for the load; later tasks on the warm instance did not.
    load_ms = None if was_warm else provider.load_ms
    run = summarize(calls, record, task, run_id, load_ms=load_ms, warmup_ms=warmup_ms, quality_source=quality_source)
    return BenchmarkResult(run=run, calls=[c.row for c in calls], task=task)


def benchmark_and_record(
    catalog: Catalog, pool: WarmPool, record: VersionRecord, task: TaskVersion, *,
    limit: int | None, judge: ModelBasedJudge | None = None, on_item: ItemDone | None = None,
) -> dict[str, Any]:
    """Benchmark one version on one task and record it; returns the ``runs`` row written. The one
    way every caller (the benchmark flow, the promote flow, a rollout without Prefect) does it. A
    judged task without ``judge`` is judged by the ``judgment`` route's champion on the same pool.
    When the task's route exists, the version is then offered there with its new figures (the
    MLflow UI's candidates to promote: ``catalog/candidates.py``)."""
    if judge is None and task.needs_judge:
        judge = ModelBasedJudge(catalog, pool)
    run = record_result(catalog, benchmark_version(pool, record, task, limit=limit, judge=judge, on_item=on_item))
    Candidates(catalog, task.name).publish(record)
    return run


def record_result(catalog: Catalog, result: BenchmarkResult) -> dict[str, Any]:
    """Log the run to MLflow tracking, then append ``calls`` and ``runs`` to the results store."""
    run = dict(result.run)
    run["mlflow_run_id"] = log_to_mlflow(catalog, run, result.task)
    catalog.store.append("calls", result.calls)
    catalog.store.append("runs", [run])
    return run


def log_to_mlflow(catalog: Catalog, run: dict[str, Any], task: TaskVersion) -> str:
    """One MLflow run per version × task × hardware, tagged with the model version and the task
    version it measured; the run is linked to the task version's prompt (``arbiter.prompt`` and
    MLflow's own link) and has its validation set as a dataset input (``task_mlflow``)."""
    prompt = register_task_prompt(catalog, task)
    tags = {
        "arbiter.model": run["model"],
        "arbiter.version": str(run["version"]),
        "arbiter.model_version": f"{run['model']}/{run['version']}",
        "arbiter.task": run["task"],
        "arbiter.task_version": str(run["task_version"]),
        "arbiter.task_sha256": run["task_sha256"],
        "arbiter.prompt": prompt.uri,
        **linked_prompts_tags([prompt]),
        "arbiter.hardware_id": run["hardware_id"],
        "arbiter.cpu_model": run["cpu_model"],
        "arbiter.gpu": run["gpu"],
        "arbiter.energy_source": run.get("energy_source") or "none",
        "arbiter.dataset_sha256": run["dataset_sha256"],
        "arbiter.run_id": run["run_id"],
    }
    metrics = ("quality", "p50_ms", "p95_ms", "ttft_p50_ms", "tokens_per_s", "cpu_ms_per_token", "peak_rss_mb", "load_ms",
               "avg_rss_mb", "energy_mwh_per_1k_tokens", "n", "n_ok")
    return log_run(
        catalog, BENCHMARK_EXPERIMENT, run_name=f"{run['model']}-v{run['version']}-{run['task']}", tags=tags,
        metrics={key: run[key] for key in metrics if run.get(key) is not None}, inputs=[validation_input(task)],
    )


def _percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile: simple, and exact on the small samples a benchmark has."""
    if not sorted_values:
        return None
    rank = max(1, round(pct / 100 * len(sorted_values) + 0.4999))
    return sorted_values[min(rank, len(sorted_values)) - 1]
