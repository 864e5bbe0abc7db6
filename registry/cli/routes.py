"""``arbiter routes list|show|promote|rollback``."""

from __future__ import annotations

import click

from registry.cli import context
from registry.cli.output import emit_json
from registry.routes import RouteState


@click.group()
def routes() -> None:
    """Routes: tasks whose MLflow aliases pick the serving version."""


def _print(state: RouteState, as_json: bool) -> None:
    if as_json:
        emit_json(state.as_json())
        return
    payload = state.as_json()
    click.echo(f"route {state.route}")
    for alias in ("champion", "previous", "challenger"):
        target = payload[alias]
        shown = f"{target['model']}/{target['version']}" if target else "—"
        click.echo(f"  {alias:>10}: {shown}")


@routes.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """List route names."""
    names = context.routes().list()
    emit_json(names) if as_json else click.echo("\n".join(names) or "no routes yet")


@routes.command("show")
@click.argument("route")
@click.option("--json", "as_json", is_flag=True)
def show(route: str, as_json: bool) -> None:
    """Show ROUTE's champion, previous and challenger (read live from MLflow)."""
    _print(context.routes().show(route), as_json)


@routes.command("promote")
@click.argument("route")
@click.option("--model", required=True, help="Catalog model name.")
@click.option("--version", "version", type=click.IntRange(min=1), required=True, help="Catalog version number.")
@click.option("--force", is_flag=True, help="Promote without a benchmark or below 0.9 × the champion's quality.")
@click.option("--json", "as_json", is_flag=True)
def promote(route: str, model: str, version: int, force: bool, as_json: bool) -> None:
    """Make MODEL/VERSION the champion of ROUTE; the old champion becomes previous."""
    _print(context.routes().promote(route, model, version, force=force), as_json)


@routes.command("rollback")
@click.argument("route")
@click.option("--json", "as_json", is_flag=True)
def rollback(route: str, as_json: bool) -> None:
    """Swap ROUTE's champion and previous."""
    _print(context.routes().rollback(route), as_json)
