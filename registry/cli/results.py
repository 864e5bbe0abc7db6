"""``arbiter results leaderboard|matrix|sql``: the Parquet results through DuckDB."""

from __future__ import annotations

from typing import Any

import click

from registry.cli.output import emit_json, print_table
from registry.results.store import ResultsStore
from registry.settings import get_settings

# One table per task, titled with it, so the task itself is not a column.
# Short headers for two columns so the table fits 80 columns (--json keeps tokens_per_s, energy_mwh_per_1k_tokens).
LEADERBOARD_COLUMNS = ("model", "version", "quality", "p50_ms", "p95_ms", "tok/s", "mWh/1k", "n")
MATRIX_COLUMNS = ("model", "version", "runtime", "hardware_class", "works", "quality", "tokens_per_s", "tasks",
                  "last_measured")


@click.group()
def results() -> None:
    """Benchmark and call results (Parquet, queried with DuckDB)."""


@results.command("leaderboard")
@click.option("--task", default=None, help="Only this task.")
@click.option("--json", "as_json", is_flag=True)
def leaderboard(task: str | None, as_json: bool) -> None:
    """The latest run of each version per task, best quality first."""
    rows = ResultsStore(get_settings().results_dir).leaderboard(task)
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("no benchmark runs yet; run `arbiter benchmark` or `make demo`")
    else:
        print_leaderboard(rows)


def print_leaderboard(rows: list[dict[str, Any]]) -> None:
    """One table per task version (titled ``task/version``; runs from before task versions: ``task``),
    rows in the leaderboard's order."""
    for name, task_version in dict.fromkeys((r["task"], r.get("task_version")) for r in rows):
        task_rows = [r for r in rows if r["task"] == name and r.get("task_version") == task_version]
        sources = {r["quality_source"] for r in task_rows}
        # Where quality came from is in the title: a judge's scores are not a reference's.
        scored_by = "" if sources == {"reference"} else f" (quality by {', '.join(sorted(sources))})"
        energy = sorted({r["energy_source"] for r in task_rows if r["energy_source"]})  # how mWh_per_1k was obtained
        energy_by = f", energy by {', '.join(energy)}" if energy else ""
        shown = [r | {"tok/s": r["tokens_per_s"], "mWh/1k": r["energy_mwh_per_1k_tokens"]} for r in task_rows]
        title = name if task_version is None else f"{name}/{task_version}"
        print_table(f"leaderboard: {title}{scored_by}{energy_by}", shown, LEADERBOARD_COLUMNS)


@results.command("matrix")
@click.option("--model", default=None, help="Only this model's versions.")
@click.option("--json", "as_json", is_flag=True)
def matrix(model: str | None, as_json: bool) -> None:
    """Where each version works: version × runtime × hardware class → works, quality, tokens/s."""
    from registry.cli import context
    from registry.evaluation.compat_matrix import matrix as compat_matrix
    from registry.evaluation.compat_matrix import version_kinds

    catalog = context.catalog()
    if model is not None:
        catalog.get(model)  # an unknown model is an error naming the known ones, not an empty matrix
    rows = compat_matrix(catalog.store, version_kinds(catalog), model)
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("no measurements yet; run `arbiter benchmark`, or `arbiter deploy` with a worker (docs/deploy.md)")
    else:
        print_table("compatibility", rows, MATRIX_COLUMNS)


@results.command("sql")
@click.argument("query")
@click.option("--json", "as_json", is_flag=True)
def sql(query: str, as_json: bool) -> None:
    """Run QUERY over the views calls, runs, events, learnings, judge_calibration and compat_matrix."""
    from registry.evaluation.compat_matrix import add_view
    from registry.results.store import SCHEMAS, query_on

    store = ResultsStore(get_settings().results_dir)
    connection = store.connect()
    if "compat_matrix" in query.lower():
        # The view's runtime column needs each version's kind from the registry; opening the
        # registry costs seconds (MLflow), so only a query that names the view pays for it.
        from registry.cli import context
        from registry.evaluation.compat_matrix import version_kinds

        try:
            add_view(connection, version_kinds(context.catalog()))
        except BaseException:
            connection.close()
            raise
    rows = query_on(connection, query, views=(*SCHEMAS, "compat_matrix"))
    if as_json:
        emit_json(rows)
    elif rows:
        print_table("result", rows, list(rows[0]))
    else:
        click.echo("(no rows)")
