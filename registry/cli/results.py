"""``arbiter results leaderboard|matrix|sql|compact|check``: the results tables through DuckDB, and their upkeep."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Any

import click

from registry.cli.output import emit_json, print_table
from registry.results.check import SHOWN
from registry.results.check import check as check_tables
from registry.results.store import SCHEMAS, ResultsStore
from registry.settings import get_settings

# One table per task, titled with it, so the task itself is not a column; a version as its ref
# (smollm2-135m/1) and short headers, so the table fits 80 columns (--json keeps model, version,
# tokens_per_s, energy_mwh_per_1k_tokens, energy_mwh_per_answer).
LEADERBOARD_COLUMNS = ("model", "quality", "p50_ms", "p95_ms", "tok/s", "mWh/1k", "mWh/ans", "n")
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
        shown = [r | {"model": f"{r['model']}/{r['version']}", "tok/s": r["tokens_per_s"], "mWh/1k": _per_1k_tokens(r),
                      "mWh/ans": _significant(r.get("energy_mwh_per_answer"))} for r in task_rows]
        title = name if task_version is None else f"{name}/{task_version}"
        print_table(f"leaderboard: {title}{scored_by}{energy_by}", shown, LEADERBOARD_COLUMNS)


def _per_1k_tokens(row: dict[str, Any]) -> float | None:
    """Energy per 1,000 generated tokens, where tokens were decoded. A run with no decode rate (a
    text classifier: one label per answer, no decoding) shows none: its "tokens" are answers, and
    the figure would read as 1,000 answers beside the LLMs' 1,000 tokens. mWh/ans compares all."""
    return row["energy_mwh_per_1k_tokens"] if row["tokens_per_s"] is not None else None


def _significant(value: float | None) -> str | None:
    """Two significant digits, as the energy estimate has (docs/costs.md): a classifier's answer
    costs thousandths of a mWh, which three decimals would print as 0.001 or 0.000."""
    return None if value is None else f"{value:.2g}"


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
    from registry.results.store import query_on

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


@results.command("compact")
@click.option("--json", "as_json", is_flag=True)
def compact(as_json: bool) -> None:
    """Commit staged rows, merge small files, drop calls past ARBITER_RESULTS_RETAIN_DAYS, tidy the logs.

    `arbiter serve` does the same in the background; this does all of it now. When another process
    holds the results' maintenance lock (serve's pass, another compact), it says so and waits: that
    pass takes seconds, and the home is then compacted by whichever finishes second."""
    from registry.results.maintenance import Maintenance

    settings = get_settings()
    store = ResultsStore(settings.results_dir)
    before = _footprint(store)
    maintenance = Maintenance(store, retain_days=settings.results_retain_days, min_small_files=2)
    report = maintenance.run(compact=True, wait=False)
    if not report.ran:
        click.echo("another process is maintaining the results (arbiter serve, or a compact); waiting for it…",
                   err=True)
        report = maintenance.run(compact=True)
    after = _footprint(store)
    if as_json:
        emit_json(report.as_dict() | {"before": before, "after": after, "retain_days": settings.results_retain_days})
        return
    rows = [{"table": table, "rows committed": report.committed_rows.get(table, 0),
             "files": f"{before[table]['files']:,} → {after[table]['files']:,}",
             "size": f"{_bytes(before[table]['bytes'])} → {_bytes(after[table]['bytes'])}"} for table in before]
    print_table("results compact", rows, ("table", "rows committed", "files", "size"))
    kept = (f"calls older than {settings.results_retain_days} days" if settings.results_retain_days
            else "none: ARBITER_RESULTS_RETAIN_DAYS is unset, every row is kept")
    click.echo(f"retention: {report.dropped_rows:,} calls rows dropped ({kept})")
    click.echo(f"vacuumed: {report.vacuumed_files:,} files compacted away over an hour ago")
    for path in report.quarantined:
        click.echo(f"quarantined: {path} is not a readable results file; its rows are in no table "
                   "(see `arbiter results check`)")


def _footprint(store: ResultsStore) -> dict[str, dict[str, int]]:
    """Per table, the files a query reads now (table files and staged files not yet in it) and their bytes."""
    footprint: dict[str, dict[str, int]] = {}
    for table in SCHEMAS:
        files = store.files(table)
        footprint[table] = {"files": len(files), "bytes": sum(_size(f) for f in files)}
    return footprint


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:,.1f} GB"


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:  # committed and deleted since it was listed
        return 0


@results.command("check")
@click.option("--table", "tables", type=click.Choice(list(SCHEMAS)), multiple=True,
              help="Only this table (repeat for more); default: every table.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Only rows from this UTC date or time on, e.g. 2026-11-01 (default: every row).")
@click.option("--show", type=click.IntRange(min=1), default=SHOWN, show_default=True,
              help="Failing rows named per expectation.")
@click.option("--json", "as_json", is_flag=True)
def check(tables: tuple[str, ...], since: datetime | None, show: int, as_json: bool) -> None:
    """Validate the result tables with their Great Expectations suites; exit 1 naming each failure.

    Unique ids, ts present and not in the future, times, tokens and energy not negative, known energy
    sources and schema versions; and no file in a results folder that no reader reads (quarantined,
    foreign, untracked). Every row is checked: a month of one busy gateway's calls (26 M rows) in about
    half a minute on 2 cores; --since bounds it."""
    start = since.replace(tzinfo=UTC) if since is not None else None
    report = check_tables(ResultsStore(get_settings().results_dir), tables or tuple(SCHEMAS), since=start, shown=show)
    problems = report.lines()
    if as_json:
        emit_json(report.as_dict())
    else:
        rows = [{"table": name, "rows": result.rows, "expectations": result.expectations,
                 "failed": "unreadable" if result.error else len(result.failures),
                 "pending files": report.pending.get(name, 0), "s": result.seconds}
                for name, result in report.tables.items()]
        print_table("results check" + (f" since {start.isoformat()}" if start else ""), rows,
                    ("table", "rows", "expectations", "failed", "pending files", "s"))
        for line in problems:
            click.echo(line)
        if not problems:
            click.echo("ok: every row meets its table's expectations, and every file is one the tables hold")
    if problems:
        sys.exit(1)
