"""``arbiter costs profile``: what each version costs per task and machine, and where hardware sits idle."""

from __future__ import annotations

from typing import Any

import click

from registry.cli import context
from registry.cli.output import emit_json, print_table
from registry.errors import UserError
from registry.machine.cost_profile import cost_profiles, tasks_with_calls
from registry.results.store import LIVE_DAYS, ResultsStore
from registry.settings import get_settings
from registry.spec import parse_ref

# One table per task × hardware (titled with both and the energy sources); --json has every figure.
TABLE_COLUMNS = ("version", "calls", "wall_ms", "cpu_ms", "rss_mb", "tok/s", "mWh/1k_tok")


@click.group()
def costs() -> None:
    """Measured compute costs of the calls (CPU, GPU, memory, energy)."""


@costs.command("profile")
@click.option("--model", default=None, help="Only this model: NAME or NAME/VERSION.")
@click.option("--task", default=None, help="Only this task (or the route the gateway served).")
@click.option("--days", type=click.IntRange(min=1), default=LIVE_DAYS, show_default=True,
              help="Live calls of this many days back count (benchmark calls always do).")
@click.option("--all-days", is_flag=True, help="Every live call ever kept (slow on a month of traffic).")
@click.option("--json", "as_json", is_flag=True)
def profile(model: str | None, task: str | None, days: int, all_days: bool, as_json: bool) -> None:
    """Per version × task × hardware: mean and p95 of each figure, energy per 1,000 tokens with its
    source, and hints where the hardware was under-used."""
    name, version = parse_ref(model) if model else (None, None)
    store = ResultsStore(get_settings().results_dir)
    rows = cost_profiles(store, model=name, version=version, task=task, days=None if all_days else days)
    if not rows:
        _explain_empty(store, name, version, task)
    if as_json:
        emit_json(rows)
    elif not rows:
        which = " for " + " on ".join(filter(None, (model, task))) if model or task else ""
        click.echo(f"no calls recorded yet{which}; run `arbiter benchmark`, `arbiter generate` or serve requests first")
    else:
        print_tables(rows)
        for row in rows:
            for hint in row["hints"]:
                click.echo(f"hint: {row['model']}/{row['version']} on {row['task']} ({row['hardware_class']}): {hint}")


def _explain_empty(store: ResultsStore, name: str | None, version: int | None, task: str | None) -> None:
    """No rows: a filter naming something that does not exist is the user's mistake, said with the fix;
    one that exists but has no calls yet is simply empty."""
    if name is not None:
        context.catalog().get(name, version)  # unknown model or version: NotFoundError with the known ones
    if task is not None:
        known = sorted({*context.tasks().names(), *tasks_with_calls(store)})
        if task not in known:
            raise UserError(f"unknown task {task!r}; use one of: {', '.join(known)}")


def print_tables(rows: list[dict[str, Any]]) -> None:
    """Means per version, one table per task × hardware."""
    groups: dict[tuple[str, str | None, str | None], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["hardware_class"], row["hardware_id"]), []).append(row)
    for (task, hardware_class, hardware_id), group in groups.items():
        sources = sorted({s for r in group for s in r["energy_sources"]})
        # Rows written before schema 4 have no class and no energy: say that, not "None" and "nothing".
        energy = f"energy by {', '.join(sources)}" if sources else "no energy recorded (calls older than schema 4)"
        title = f"costs: {task} on {hardware_class or 'an unrecorded class'} ({hardware_id}), {energy}"
        print_table(title, [_line(r) for r in group], TABLE_COLUMNS)


def _line(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": f"{row['model']}/{row['version']}", "calls": row["calls"], "wall_ms": row["wall_ms"]["avg"],
        "cpu_ms": row["cpu_ms"]["avg"], "rss_mb": row["avg_rss_mb"]["avg"], "tok/s": row["tokens_per_s"]["avg"],
        "mWh/1k_tok": row["energy_mwh_per_1k_tokens"],
    }
