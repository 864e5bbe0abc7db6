"""``arbiter export rl``: task executions as RL training data (Parquet, schema in registry/selection/rl_export.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from registry.cli import context
from registry.cli.output import emit_json
from registry.errors import UserError
from registry.selection.rl_export import export_rl


@click.group()
def export() -> None:
    """Export results for other tools."""


@export.command("rl")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="A .parquet file to write.")
@click.option("--since", help="Only executions from this date or time on (ISO 8601, e.g. 2026-11-01).")
@click.option("--latency-weight", type=float, default=0.05, show_default=True, help="Reward lost per second.")
@click.option("--cost-weight", type=float, default=0.05, show_default=True, help="Reward lost per CPU second.")
@click.option("--json", "as_json", is_flag=True)
def rl(out: Path, since: str | None, latency_weight: float, cost_weight: float, as_json: bool) -> None:
    """Write every task execution (tracker reports, gateway and facade calls) with its reward."""
    start = _parse_since(since) if since else None
    rows = export_rl(context.catalog().store, out, since=start, latency_weight=latency_weight, cost_weight=cost_weight)
    summary = {"out": str(out), "rows": rows, "since": start.isoformat() if start else None}
    emit_json(summary) if as_json else click.echo(f"{rows} executions written to {out}")


def _parse_since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since {text!r}: give an ISO 8601 date or time, e.g. 2026-11-01 or 2026-11-01T08:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
