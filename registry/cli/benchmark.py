"""``arbiter benchmark``: run the Prefect benchmark flow for chosen versions and tasks."""

from __future__ import annotations

import click

from registry.cli import context
from registry.cli.output import emit_json
from registry.cli.prefect_server import prefect_api
from registry.cli.progress import terminal_progress
from registry.errors import UserError
from registry.evaluation.judge import route_judge
from registry.providers.gguf_file import verify_file


@click.command()
@click.option("--model", "models", multiple=True, help="NAME or NAME/VERSION; repeatable. Default: every version.")
@click.option("--task", "tasks", multiple=True, metavar="NAME[/VERSION]",
              help="A task (`arbiter tasks list`); repeatable. Default: every task that needs no judge; judged "
                   "ones (summarize) when named.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N items of each set.")
@click.option("--json", "as_json", is_flag=True)
def benchmark(models: tuple[str, ...], tasks: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """Benchmark versions on tasks' validation sets and record the results."""
    catalog = context.catalog()
    records = [catalog.get_ref(ref) for ref in models] if models else catalog.list_versions()
    if not records:
        raise UserError("no model versions registered; register one with `arbiter models register PATH --name NAME`")
    task_catalog = context.tasks()
    # Refuse unknown tasks, bad data and changed files before Prefect starts, each with a one-line message.
    chosen = [task_catalog.get(ref) for ref in tasks] if tasks else [task_catalog.get(n) for n in task_catalog.default_names()]
    if not chosen:
        raise UserError("no tasks to benchmark; add one with `arbiter tasks add PATH` (docs/tasks.md)")
    for task in chosen:
        for record in records if models else ():  # named versions must fit every named task
            refused = task.cannot_serve(record)
            if refused:
                raise UserError(f"{refused}; benchmark it on another task"
                                + ("" if record.spec.is_classifier else ", or register a version with those capabilities"))
    if any(task.needs_judge for task in chosen):
        route_judge(catalog)  # a judged task without a judge is refused before Prefect starts
    for record in records:
        verify_file(record.spec)
    with prefect_api(catalog.settings):  # its server ends with this command, even a killed one
        from flows.benchmark import benchmark_flow

        with terminal_progress(enabled=not as_json):
            runs = benchmark_flow(models=[r.ref for r in records], tasks=[t.ref for t in chosen], limit=limit,
                                  home=str(catalog.settings.home))
    if as_json:
        emit_json(runs)
    else:
        for run in runs:
            p50 = "—" if run["p50_ms"] is None else f"{run['p50_ms']:.0f} ms"
            rate = "—" if run["tokens_per_s"] is None else f"{run['tokens_per_s']:.0f} tok/s"
            click.echo(
                f"{run['model']}/{run['version']} {run['task']}/{run['task_version']}: quality {run['quality']:.3f} "
                f"({run['quality_source']}), p50 {p50}, {rate} "
                f"(n={run['n']}, failed {run['n'] - run['n_ok']}, unscored {run['n_unscored']})"
            )
