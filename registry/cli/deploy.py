"""``arbiter deploy``: scheduled benchmarks on one Prefect work pool per hardware class."""

from __future__ import annotations

import click

from flows.deploy import DEFAULT_CRON
from flows.deploy import deploy as deploy_benchmarks
from flows.deployed_run import BenchmarkTarget
from registry.cli import context
from registry.cli.output import emit_json, print_table
from registry.cli.prefect_env import prepare_prefect
from registry.errors import UserError
from registry.machine.hardware import hardware_class, parse_hardware_class

COLUMNS = ("hardware_class", "work_pool", "deployment", "cron", "workers_online")


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@click.command()
@click.option("--class", "classes", default=None,
              help="Hardware classes, comma-separated (cpu, cuda, apple). Default: this machine's.")
@click.option("--cron", default=DEFAULT_CRON, show_default=True, help="When each deployment runs (five cron fields).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone of --cron.")
@click.option("--models", default=None, help="NAME/VERSION,… measured every run. Default: every version not deprecated.")
@click.option("--route", default=None, help="Measure this route's champion and challenger as they are at run time.")
@click.option("--tasks", default=None, help="Tasks, comma-separated. Default: the route's task, else every reference task.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N items of each set.")
@click.option("--name", default="nightly", show_default=True, help="Deployment name prefix (NAME-CLASS).")
@click.option("--json", "as_json", is_flag=True)
def deploy(classes: str | None, cron: str, timezone: str, models: str | None, route: str | None, tasks: str | None,
           limit: int | None, name: str, as_json: bool) -> None:
    """Deploy the benchmark flow on a work pool per hardware class, on a schedule.

    Needs a Prefect server (PREFECT_API_URL); `make workers` starts one with a worker for this machine.
    """
    chosen = [parse_hardware_class(c) for c in _split(classes)]
    if classes is not None and not chosen:
        raise UserError("--class is empty: pass one or more of cpu, cuda, apple, comma-separated")
    target = BenchmarkTarget(models=tuple(_split(models)), route=route, tasks=tuple(_split(tasks)), limit=limit)
    catalog = context.catalog()
    target.check(catalog)
    prepare_prefect(catalog.settings)
    rows = deploy_benchmarks(list(dict.fromkeys(chosen or [hardware_class()])), target, cron=cron, timezone=timezone, name=name)
    if as_json:
        emit_json(rows)
        return
    print_table("deployments", [{**r, "workers_online": len(r["workers_online"])} for r in rows], COLUMNS)
    for row in rows:
        if not row["workers_online"]:
            click.echo(f"no worker polls {row['work_pool']} yet: on a {row['hardware_class']} machine run "
                       f"`prefect worker start --pool {row['work_pool']} --type process` (or `make workers`)")
    click.echo(f"run one now: prefect deployment run '{rows[0]['deployment']}' --watch")
