"""``arbiter learnings show|set|learn``: what arbiter knows about a task, whichever model serves it."""

from __future__ import annotations

import click

from registry.cli import context
from registry.cli.output import emit_json
from registry.selection.criteria import PREFERENCES
from registry.selection.learnings import COMPLEXITIES, TaskLearning, TaskLearnings


@click.group()
def learnings() -> None:
    """Task learnings: preferences, complexity and measured patterns per task (they survive swaps)."""


def _store_learnings() -> TaskLearnings:
    return TaskLearnings(context.catalog().store)


def _print(learning: TaskLearning, as_json: bool) -> None:
    if as_json:
        emit_json(learning.as_json())
        return
    payload = learning.as_json()
    click.echo(f"task {learning.task}")
    for key in ("prefer", "complexity", "quality_threshold", "max_latency_ms", "latency_target_ms", "patterns"):
        value = payload[key]
        source = f"  ({payload['sources'][key]}, {payload['updated_at'][key]})" if key in payload["sources"] else ""
        click.echo(f"  {key:>18}: {'—' if value is None else value}{source}")


@learnings.command("show")
@click.argument("task")
@click.option("--json", "as_json", is_flag=True)
def show(task: str, as_json: bool) -> None:
    """Show what is known about TASK."""
    _print(_store_learnings().get(task), as_json)


@learnings.command("set")
@click.argument("task")
@click.option("--prefer", default=None, help=f"One of: {', '.join(PREFERENCES)}.")
@click.option("--complexity", default=None, help=f"One of: {', '.join(COMPLEXITIES)}.")
@click.option("--quality-threshold", type=float, default=None, help="Quality the task must keep, 0–1.")
@click.option("--max-latency-ms", type=float, default=None, help="The task's latency target.")
@click.option("--json", "as_json", is_flag=True)
def set_(task: str, prefer: str | None, complexity: str | None, quality_threshold: float | None,
         max_latency_ms: float | None, as_json: bool) -> None:
    """Set TASK's characteristics by hand (learning never overwrites them)."""
    learning = _store_learnings().set(task, prefer=prefer, complexity=complexity,
                                      quality_threshold=quality_threshold, max_latency_ms=max_latency_ms)
    _print(learning, as_json)


@learnings.command("learn")
@click.argument("task")
@click.option("--json", "as_json", is_flag=True)
def learn(task: str, as_json: bool) -> None:
    """Derive TASK's patterns from the results store and keep them."""
    _print(_store_learnings().learn(task), as_json)
