"""One measured generation and its ``calls`` row: the unit every path (benchmark, CLI, gateway) shares.

A failed generation is a row too (``ok = false`` and the error), because a benchmark that drops
its failures reports a quality and a latency the model never had.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry.errors import ProviderError
from registry.machine.costs import Cost, measure
from registry.machine.hardware import fingerprint
from registry.providers import Generation, GenerationRequest, Provider
from registry.results.store import new_id, now_utc
from registry.spec import VersionRecord


@dataclass(frozen=True)
class MeasuredCall:
    generation: Generation | None
    cost: Cost
    row: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.generation is not None


def measured_call(
    provider: Provider,
    record: VersionRecord,
    request: GenerationRequest,
    *,
    source: str,
    route: str | None = None,
    task: str | None = None,
    run_id: str | None = None,
    item_id: str | None = None,
) -> MeasuredCall:
    """Generate under :func:`registry.machine.costs.measure` and build the ``calls`` row (quality left empty)."""
    generation: Generation | None = None
    error: str | None = None
    with measure() as cost:
        try:
            generation = provider.generate(request)
        except ProviderError as exc:
            error = str(exc)
    row = call_row(record, generation, cost, error=error, source=source, route=route, task=task, run_id=run_id,
                   item_id=item_id)
    return MeasuredCall(generation=generation, cost=cost, row=row)


def call_row(
    record: VersionRecord,
    generation: Generation | None,
    cost: Cost,
    *,
    error: str | None,
    source: str,
    call_id: str | None = None,
    **context: Any,
) -> dict[str, Any]:
    """The ``calls`` row of one generation (or failed attempt); ``context`` fills the other columns
    (route, task, api, requested, queue_ms, overhead_ms, run_id, item_id, shadow_of); ``call_id`` is the
    one the caller already gave the answer (the gateway sends it before the stream starts), or a new
    one. A row that was never
    measured (no instance could take it) has zero times and null energy. ``ok`` is "no error", not
    "a generation": an embedding succeeds with no generation (its token figures stay null).
    Columns: docs/costs.md."""
    return {
        "call_id": call_id or new_id(),
        "ts": now_utc(),
        "source": source,
        "model": record.name,
        "version": record.version,
        "prompt_tokens": generation.prompt_tokens if generation else None,
        "completion_tokens": generation.completion_tokens if generation else None,
        "wall_ms": cost.wall_ms,
        "ttft_ms": generation.time_to_first_token_ms if generation else None,
        "tokens_per_s": generation.tokens_per_s if generation else None,
        "cpu_ms": cost.cpu_ms,
        "cpu_thread_ms": cost.cpu_thread_ms,
        "cpu_overlapped": cost.cpu_overlapped,
        "peak_rss_mb": cost.peak_rss_mb,
        "avg_rss_mb": cost.avg_rss_mb,
        "gpu_memory_mb": cost.gpu_memory_mb,
        "gpu_utilization_pct": cost.gpu_utilization_pct,
        "gpu_ms": cost.gpu_ms,
        "energy_mwh": cost.energy.mwh if cost.energy else None,
        "energy_source": cost.energy.source if cost.energy else None,
        "energy_model": cost.energy.model if cost.energy else None,
        "n_threads": generation.n_threads if generation else None,
        "n_gpu_layers": generation.n_gpu_layers if generation else None,
        "tool_calls": len(generation.tool_calls) if generation else None,
        "ok": error is None,
        "error": error,
        "quality": None,
        **context,
        **fingerprint().as_row(),
    }
