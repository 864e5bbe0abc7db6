"""Benchmark one version on one task's validation set: warm up, run every item, score, measure.

The Prefect flow in ``flows/benchmark.py`` only orchestrates this; everything that decides a
figure lives here so it can be tested and reused without Prefect.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from registry.catalog.tracking import log_run
from registry.catalog.versions import Catalog
from registry.errors import JudgeError, UserError
from registry.evaluation.datasets import ValidationSet
from registry.evaluation.judge import ModelBasedJudge
from registry.evaluation.prompts import WARMUP_MESSAGES, build_messages, max_tokens_for
from registry.evaluation.scoring import score
from registry.evaluation.tasks import JUDGED_TASKS, Item
from registry.machine.energy import as_precise_as
from registry.machine.hardware import fingerprint
from registry.providers import GenerationRequest, Provider
from registry.results.store import new_id, now_utc
from registry.serving.calls import MeasuredCall, measured_call
from registry.serving.pool import WarmPool
from registry.spec import VersionRecord

BENCHMARK_EXPERIMENT = "arbiter-benchmarks"


@dataclass(frozen=True)
class BenchmarkResult:
    run: dict[str, Any]
    calls: list[dict[str, Any]]


def warm_up(provider: Provider) -> float:
    """Unscored prompts so the first scored item does not pay for cold caches; returns ms spent."""
    started = time.perf_counter()
    for messages in WARMUP_MESSAGES:
        provider.generate(GenerationRequest(messages=tuple(messages), max_tokens=8))
    return (time.perf_counter() - started) * 1000


Scorer = Callable[[Item, list[dict[str, str]], str], float | None]


def reference_scorer(item: Item, messages: list[dict[str, str]], output: str) -> float:
    """Reference tasks: the answer against the item's references (registry/evaluation/scoring.py)."""
    return score(item, output)


def judge_scorer(judge: ModelBasedJudge) -> Scorer:
    """Judged tasks: the judge's mean over the task's criteria, given the instruction the model saw.
    An empty answer scores 0 without a judgement; a judge that fails twice leaves the item unscored
    (``None``, counted in the run's ``n_unscored``) rather than inventing a score."""

    def judged(item: Item, messages: list[dict[str, str]], output: str) -> float | None:
        if not output.strip():
            return 0.0
        try:
            judgements = judge.evaluate(messages[-1]["content"], output, JUDGED_TASKS[item.task])
        except JudgeError:
            return None
        return statistics.fmean(j.score for j in judgements)

    return judged


def run_items(
    provider: Provider, record: VersionRecord, validation_set: ValidationSet, run_id: str, limit: int | None = None,
    scorer: Scorer = reference_scorer,
) -> list[MeasuredCall]:
    """Run and score each item (the first ``limit`` when given); one measured call per item."""
    items = validation_set.items[:limit] if limit else validation_set.items
    calls = []
    for item in items:
        messages = build_messages(item)
        request = GenerationRequest(messages=tuple(messages), max_tokens=max_tokens_for(item.task))
        call = measured_call(provider, record, request, source="benchmark", task=item.task, run_id=run_id, item_id=item.id)
        call.row["quality"] = scorer(item, messages, call.generation.text) if call.generation else 0.0
        calls.append(call)
    return calls


def summarize(
    calls: list[MeasuredCall], record: VersionRecord, validation_set: ValidationSet, run_id: str,
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
        "task": validation_set.task,
        "model": record.name,
        "version": record.version,
        "dataset_sha256": validation_set.sha256,
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
    pool: WarmPool, record: VersionRecord, validation_set: ValidationSet, *, limit: int | None = None,
    judge: ModelBasedJudge | None = None,
) -> BenchmarkResult:
    """Warm up, run, score and summarize one version on one validation set (nothing written yet).
    A judged task (``JUDGED_TASKS``) needs ``judge``; its runs name the judge version."""
    scorer: Scorer = reference_scorer
    quality_source = "reference"
    if validation_set.task in JUDGED_TASKS:
        if judge is None:
            raise UserError(f"task {validation_set.task!r} is scored by a judge; pass one (route 'judgment')")
        quality_source = f"judge:{judge.judge_version().ref}"
        scorer = judge_scorer(judge)
    was_warm = pool.is_warm(record)
    provider = pool.get(record)
    warmup_ms = 0.0 if was_warm else warm_up(provider)
    run_id = new_id()
    calls = run_items(provider, record, validation_set, run_id, limit, scorer)
    # Only the run that loaded the model paid for the load; later tasks on the warm instance did not.
    load_ms = None if was_warm else provider.load_ms
    run = summarize(calls, record, validation_set, run_id, load_ms=load_ms, warmup_ms=warmup_ms,
                    quality_source=quality_source)
    return BenchmarkResult(run=run, calls=[c.row for c in calls])


def benchmark_and_record(
    catalog: Catalog, pool: WarmPool, record: VersionRecord, validation_set: ValidationSet, *,
    limit: int | None, judge: ModelBasedJudge | None = None,
) -> dict[str, Any]:
    """Benchmark one version on one task and record it; returns the ``runs`` row written. The one
    way every caller (the benchmark flow, the promote flow, a rollout without Prefect) does it. A
    judged task without ``judge`` is judged by the ``judgment`` route's champion on the same pool."""
    if judge is None and validation_set.task in JUDGED_TASKS:
        judge = ModelBasedJudge(catalog, pool)
    return record_result(catalog, benchmark_version(pool, record, validation_set, limit=limit, judge=judge))


def record_result(catalog: Catalog, result: BenchmarkResult) -> dict[str, Any]:
    """Log the run to MLflow tracking, then append ``calls`` and ``runs`` to the results store."""
    run = dict(result.run)
    run["mlflow_run_id"] = log_to_mlflow(catalog, run)
    catalog.store.append("calls", result.calls)
    catalog.store.append("runs", [run])
    return run


def log_to_mlflow(catalog: Catalog, run: dict[str, Any]) -> str:
    """One MLflow run per version × task × hardware, tagged with the model version it measured."""
    tags = {
        "arbiter.model": run["model"],
        "arbiter.version": str(run["version"]),
        "arbiter.model_version": f"{run['model']}/{run['version']}",
        "arbiter.task": run["task"],
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
        metrics={key: run[key] for key in metrics if run.get(key) is not None},
    )


def _percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile: simple, and exact on the small samples a benchmark has."""
    if not sorted_values:
        return None
    rank = max(1, round(pct / 100 * len(sorted_values) + 0.4999))
    return sorted_values[min(rank, len(sorted_values)) - 1]
