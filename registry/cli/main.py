"""Entry point: the root group, and the one place user errors become clean one-line messages."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from registry.errors import ArbiterError, UserError


class ArbiterGroup(click.Group):
    """Turns our errors into ``error: …`` on stderr and an exit code, never a stack trace."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except ArbiterError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:  # unreadable model file, unwritable ARBITER_HOME, full disk, …
            where = f" {exc.filename}" if exc.filename else ""
            click.echo(f"error: cannot use{where}: {exc.strerror or exc}; check the path and its permissions", err=True)
            sys.exit(1)


@click.group(cls=ArbiterGroup)
@click.version_option(package_name="arbiter-registry")
def cli() -> None:
    """arbiter — a local-first model registry and hot-swap router for LLMs."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _register_commands() -> None:
    from registry.cli import (
        benchmark,
        costs,
        demo,
        deploy,
        export,
        generate,
        hardware,
        judge,
        learnings,
        models,
        results,
        routes,
        select,
        serve,
        tasks,
    )

    cli.add_command(models.models)
    cli.add_command(routes.routes)
    cli.add_command(results.results)
    cli.add_command(costs.costs)
    cli.add_command(tasks.tasks)
    cli.add_command(benchmark.benchmark)
    cli.add_command(deploy.deploy)
    cli.add_command(generate.generate)
    cli.add_command(demo.demo)
    cli.add_command(serve.serve)
    cli.add_command(select.select)
    cli.add_command(learnings.learnings)
    cli.add_command(judge.judge)
    cli.add_command(export.export)
    cli.add_command(hardware.hardware)


_register_commands()


def main() -> None:
    cli()
