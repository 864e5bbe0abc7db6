"""``arbiter tasks add|list|show|validate``: a user's task file becomes a task every command serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from registry.cli import context
from registry.cli.output import emit_json, print_table
from registry.cli.progress import terminal_progress
from registry.evaluation.tasks import TaskVersion, compile_task

_COLUMNS = ("name", "version", "items", "scorers", "capabilities", "sha256", "source")


@click.group()
def tasks() -> None:
    """Tasks: a validation set, a prompt and a scorer, declared in a file (docs/tasks.md)."""


@tasks.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--new-version", is_flag=True, help="Record it as a new version of an existing task of that name.")
@click.option("--json", "as_json", is_flag=True)
def add(path: Path, new_version: bool, as_json: bool) -> None:
    """Validate the task file at PATH and its data, and record it as a task version."""
    with terminal_progress(enabled=not as_json, lines=False):  # a bar while every item's prompt is checked
        task, created = context.tasks().add(path, new_version=new_version)
    if as_json:
        emit_json({**task.summary(), "created": created})
        return
    what = "added" if created else "unchanged: already recorded as"
    click.echo(f"{what} task {task.ref} ({len(task.items)} items, sha256 {task.sha256[:12]}…)")
    _print_details(task)
    if created:
        click.echo(f"next: arbiter benchmark --task {task.name}   then   arbiter routes promote {task.name} "
                   "--model NAME --version N")


@tasks.command("validate")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def validate(path: Path, as_json: bool) -> None:
    """Check a task file and its data as `tasks add` would, recording nothing."""
    with terminal_progress(enabled=not as_json, lines=False):
        task, _ = compile_task(path)
    summary = {key: value for key, value in task.summary().items() if key not in ("version", "ref", "added")}
    if as_json:
        emit_json({**summary, "valid": True})
        return
    click.echo(f"valid: task {task.name} ({len(task.items)} items, sha256 {task.sha256[:12]}…); nothing recorded")
    _print_details(task)


@tasks.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """The latest version of every task."""
    latest = context.tasks().latest()
    if as_json:
        emit_json([t.summary() for t in latest])
        return
    print_table("tasks", [_row(t) for t in latest], _COLUMNS)


@tasks.command("show")
@click.argument("ref", metavar="NAME[/VERSION]")
@click.option("--json", "as_json", is_flag=True)
def show(ref: str, as_json: bool) -> None:
    """One task version (default: the latest), with its versions."""
    catalog = context.tasks()
    task = catalog.get(ref)
    versions = [{k: v[k] for k in ("version", "sha256", "added", "source", "n_items")} for v in catalog.versions(task.name)]
    if as_json:
        emit_json({**task.summary(), "versions": versions})
        return
    click.echo(f"task {task.ref}: {task.spec.description}")
    _print_details(task)
    print_table(f"versions of {task.name}", [{**v, "sha256": v["sha256"][:12]} for v in versions],
                ("version", "sha256", "n_items", "added", "source"))


def _print_details(task: TaskVersion) -> None:
    summary = task.summary()
    click.echo(f"  capabilities: {', '.join(summary['capabilities']) or 'none'}")
    click.echo(f"  fields: {', '.join(f'{k} ({v})' for k, v in summary['fields'].items())}")
    scorers = ", ".join(f"{s['label']}×{s['weight']:g}{' (no reference needed)' if s['reference_free'] else ''}"
                        for s in summary["scorers"])
    click.echo(f"  scoring ({summary['combine']}): {scorers}")
    live = summary["live"]
    if live is not None:
        parts = [f"{s['label']}×{s['weight']:g}" for s in live["scorers"]]
        parts += [f"judge on {', '.join(live['judge'])}"] if live["judge"] else []
        click.echo(f"  live scoring ({live['combine']}): {', '.join(parts)}")
    click.echo(f"  max tokens: {summary['max_tokens']}")


def _row(task: TaskVersion) -> dict[str, Any]:
    return {
        "name": task.name, "version": task.version, "items": len(task.items),
        "scorers": ", ".join(s.label for s in task.spec.scoring.scorers),
        "capabilities": ", ".join(task.spec.capabilities), "sha256": task.sha256[:12], "source": task.source,
    }
