"""``arbiter generate --route ROUTE "prompt"``: one prompt through a route's champion."""

from __future__ import annotations

import click

from registry.cli import context
from registry.cli.output import emit_json
from registry.errors import ProviderError, UserError
from registry.providers import GenerationRequest
from registry.serving.calls import measured_call
from registry.serving.pool import WarmPool


@click.command()
@click.argument("prompt")
@click.option("--route", required=True, help="Route (task) whose champion answers.")
@click.option("--max-tokens", type=click.IntRange(min=1, max=4096), default=128)
@click.option("--json", "as_json", is_flag=True)
def generate(prompt: str, route: str, max_tokens: int, as_json: bool) -> None:
    """Answer PROMPT with ROUTE's champion; prints the text and its measured figures."""
    if not prompt.strip():
        raise UserError("the prompt is empty; pass the text to answer, e.g. arbiter generate --route qa \"What is 2+2?\"")
    routes = context.routes()
    record = routes.champion(route)
    with WarmPool(routes.catalog.settings) as pool:
        provider = pool.get(record)
        request = GenerationRequest(messages=({"role": "user", "content": prompt},), max_tokens=max_tokens)
        call = measured_call(provider, record, request, source="cli", route=route, task=route)
    routes.store.append("calls", [call.row])
    if call.generation is None:
        raise ProviderError(call.row["error"])
    figures = {k: call.row[k] for k in ("model", "version", "prompt_tokens", "completion_tokens", "wall_ms",
                                        "ttft_ms", "tokens_per_s", "cpu_ms", "cpu_thread_ms", "peak_rss_mb",
                                        "avg_rss_mb", "gpu_memory_mb", "gpu_utilization_pct", "gpu_ms", "energy_mwh",
                                        "energy_source", "energy_model", "n_threads", "n_gpu_layers")}
    gpu = "none" if figures["gpu_memory_mb"] is None else f"{figures['gpu_memory_mb']:.0f} MB"
    if as_json:
        emit_json({"route": route, "text": call.generation.text, **figures, "load_ms": provider.load_ms})
    else:
        click.echo(call.generation.text.strip())
        click.echo(
            f"— {record.ref} via route {route}: {figures['completion_tokens']} tokens in {figures['wall_ms']:.0f} ms "
            f"(first token {figures['ttft_ms'] or 0:.0f} ms, {figures['tokens_per_s'] or 0:.0f} tok/s), "
            f"CPU {figures['cpu_ms']:.0f} ms, peak RSS {figures['peak_rss_mb']:.0f} MB, "
            f"GPU {gpu}, energy {figures['energy_mwh']:.2g} mWh ({figures['energy_source']})"
        )
