"""``arbiter select``: which version should serve a task on this machine, and why the others cannot."""

from __future__ import annotations

import click

from registry.cli import context
from registry.cli.output import emit_json, print_table
from registry.machine.hardware import fingerprint
from registry.selection.criteria import PREFERENCES, Criteria
from registry.selection.learnings import TaskLearnings
from registry.selection.profiles import ProfileCache
from registry.selection.selector import LocalModelSelector, Selection
from registry.spec import KNOWN_CAPABILITIES

CANDIDATE_COLUMNS = ("ref", "score", "quality", "p50_ms", "memory_mb", "success_rate", "samples", "note")


@click.command("select")
@click.option("--task", required=True, help="The task (route) to choose for, e.g. qa.")
@click.option("--max-latency-ms", type=float, default=None, help="Exclude versions whose p50 is slower.")
@click.option("--max-memory-mb", type=int, default=None, help="Exclude versions that need more memory.")
@click.option("--capability", "capabilities", multiple=True,
              help=f"Required capability (repeatable): {', '.join(sorted(KNOWN_CAPABILITIES))}.")
@click.option("--min-samples", type=int, default=0, help="Exclude versions measured fewer times on the task.")
@click.option("--prefer", default=None, help=f"Shift weight to one part of the score: {', '.join(PREFERENCES)}.")
@click.option("--json", "as_json", is_flag=True)
def select(task: str, max_latency_ms: float | None, max_memory_mb: int | None, capabilities: tuple[str, ...],
           min_samples: int, prefer: str | None, as_json: bool) -> None:
    """Pick the primary and fallback version for TASK from measured figures (task learnings applied)."""
    tasks = context.tasks()
    criteria = tasks.criteria_for(Criteria(
        task=task, capabilities=capabilities, max_latency_ms=max_latency_ms, max_memory_mb=max_memory_mb,
        min_samples=min_samples, prefer=prefer,
    ))
    catalog = context.catalog()
    selector = LocalModelSelector(catalog.list_versions, ProfileCache(catalog.store), TaskLearnings(catalog.store),
                                  hardware_id=fingerprint().hardware_id)
    chosen = selector.select(criteria, tasks.contract(task))  # a version that cannot serve the task: excluded, with why
    if as_json:
        emit_json(chosen.as_json())
    else:
        _print(chosen)


def _print(chosen: Selection) -> None:
    rows = []
    for candidate in chosen.candidates:
        profile = candidate.profile
        note = "primary" if candidate is chosen.primary else "fallback" if candidate is chosen.fallback else ""
        if candidate.conservative:
            note = ", ".join(filter(None, [note, "conservative"]))
        rows.append({"ref": candidate.ref, "score": candidate.score, "samples": candidate.samples, "note": note,
                     **({} if profile is None else {"quality": profile.quality, "p50_ms": profile.p50_ms,
                                                    "memory_mb": profile.memory_mb,
                                                    "success_rate": profile.success_rate})})
    print_table(f"select: {chosen.criteria.task}", rows, CANDIDATE_COLUMNS)
    for exclusion in chosen.excluded:
        click.echo(f"  excluded {exclusion.ref}: {'; '.join(exclusion.reasons)}")
    click.echo(chosen.reasoning)
