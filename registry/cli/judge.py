"""``arbiter judge``: score an output with the judge model; ``judge calibrate|leaderboard``."""

from __future__ import annotations

import click

from registry.cli import context
from registry.cli.output import emit_json, print_table
from registry.cli.progress import terminal_progress
from registry.errors import UserError
from registry.evaluation.calibration import calibrate, judge_leaderboard
from registry.evaluation.datasets import load_calibration_set
from registry.evaluation.judge import JUDGE_ROUTE, ModelBasedJudge
from registry.evaluation.rubrics import CRITERIA
from registry.serving.pool import WarmPool


@click.group(invoke_without_command=True)
@click.option("--criterion", "criteria", multiple=True, type=click.Choice(CRITERIA),
              help="Repeatable. Default: all four.")
@click.option("--task", help="The instruction or question the output answers (e.g. 'Summarize: …').")
@click.option("--output", "output", help="The text to judge.")
@click.option("--judge", "judge_ref", help=f"A judge version NAME/VERSION. Default: route {JUDGE_ROUTE!r}'s champion.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def judge(ctx: click.Context, criteria: tuple[str, ...], task: str | None, output: str | None,
          judge_ref: str | None, as_json: bool) -> None:
    """Score OUTPUT (the answer to TASK) on faithfulness, relevance, minimality and safety (0–1)."""
    if ctx.invoked_subcommand is not None:
        return
    if task is None or output is None:
        raise UserError('give --task "…" and --output "…" (or use `arbiter judge calibrate`)')
    catalog = context.catalog()
    with WarmPool(catalog.settings) as pool:
        judgements = ModelBasedJudge(catalog, pool, version=judge_ref).evaluate(task, output, criteria or CRITERIA)
    if as_json:
        emit_json([j.as_json() for j in judgements])
        return
    for j in judgements:
        click.echo(f"{j.criterion:>12}: {j.score:.2f}  {j.reason}  ({j.judge}, {j.figures['wall_ms']:.0f} ms)")


@judge.command("calibrate")
@click.option("--judge", "judge_refs", multiple=True,
              help=f"Judge versions NAME/VERSION, repeatable. Default: route {JUDGE_ROUTE!r}'s champion.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N labelled items (a quick look).")
@click.option("--json", "as_json", is_flag=True)
def calibrate_command(judge_refs: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """Measure each judge version's agreement with the labelled set (accuracy at 0.5, Spearman)."""
    catalog = context.catalog()
    items = load_calibration_set(catalog.settings.datasets_dir)[:limit]
    for ref in judge_refs:
        catalog.get_ref(ref)  # an unknown version is refused before any model loads
    rows = []
    with WarmPool(catalog.settings) as pool, terminal_progress(enabled=not as_json):
        for ref in judge_refs or (None,):
            rows += calibrate(catalog, ModelBasedJudge(catalog, pool, version=ref), items)
    if as_json:
        emit_json(rows)
        return
    print_table("judge agreement with the labels", rows,
                ["model", "version", "criterion", "n", "n_failed", "accuracy", "spearman", "mean_abs_error"])


@judge.command("leaderboard")
@click.option("--json", "as_json", is_flag=True)
def leaderboard(as_json: bool) -> None:
    """The latest calibration of every judge version, with a plain verdict on each figure."""
    rows = judge_leaderboard(context.catalog())
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no judge calibrated yet; run `arbiter judge calibrate`")
        return
    print_table("judges", rows, ["model", "version", "criterion", "n", "accuracy", "spearman", "verdict"])
