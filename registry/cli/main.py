"""Entry point: the root group, and the one place user errors become clean one-line messages."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from registry.errors import ArbiterError, UserError


class ArbiterGroup(click.Group):
    """Turns our errors into ``error: …`` on stderr and an exit code, never a stack trace; loads a
    command's module when the command is asked for (``_COMMANDS``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS and cmd_name not in self.commands:
            module, attribute = _COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except ArbiterError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except BrokenPipeError:  # `arbiter models list | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            sys.exit(1)  # silent, as rich's tables already end on a closed pipe (Console.on_broken_pipe)
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


_COMMANDS: dict[str, str] = {
    "models": "registry.cli.models:models",
    "routes": "registry.cli.routes:routes",
    "results": "registry.cli.results:results",
    "costs": "registry.cli.costs:costs",
    "tasks": "registry.cli.tasks:tasks",
    "benchmark": "registry.cli.benchmark:benchmark",
    "deploy": "registry.cli.deploy:deploy",
    "generate": "registry.cli.generate:generate",
    "demo": "registry.cli.demo:demo",
    "serve": "registry.cli.serve:serve",
    "select": "registry.cli.select:select",
    "learnings": "registry.cli.learnings:learnings",
    "judge": "registry.cli.judge:judge",
    "export": "registry.cli.export:export",
    "hardware": "registry.cli.hardware:hardware",
    "feedback": "registry.cli.feedback:feedback",
}
"""Each command's module, imported only when that command runs (or ``--help`` lists them all): a
command pays for its own imports, not every other command's (llama.cpp, DuckDB, MLflow, …)."""


def main() -> None:
    cli()
