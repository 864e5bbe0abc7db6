"""``arbiter models register|list|show|activate|deprecate``."""

from __future__ import annotations

from pathlib import Path

import click

from registry.catalog import parse_ref
from registry.cli import context
from registry.cli.output import emit_json, print_table
from registry.errors import UserError
from registry.spec import Status

_COLUMNS = ("name", "version", "status", "quantization", "size_bytes", "context_window", "capabilities", "sha256")


@click.group()
def models() -> None:
    """Catalog models: immutable versions in the MLflow registry."""


@models.command("register")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Catalog model (family) name, e.g. smollm2-135m.")
@click.option("--capability", "capabilities", multiple=True, help="Repeatable: chat, text-generation, json, …")
@click.option("--chat-format", default=None, help="llama.cpp chat format for files without a chat template (e.g. gemma).")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
def register(path: Path, name: str, capabilities: tuple[str, ...], chat_format: str | None, as_json: bool) -> None:
    """Register the GGUF file at PATH as a new immutable version of NAME."""
    record, created = context.catalog().register(
        path, name=name, capabilities=list(capabilities) or None, chat_format=chat_format
    )
    if as_json:
        emit_json({**record.as_json(), "created": created})
    else:
        verb = "registered" if created else "already registered as"
        click.echo(f"{verb} {record.ref} (sha256 {record.spec.sha256}, status {record.status})")


@models.command("list")
@click.option("--capability", default=None, help="Only versions with this capability.")
@click.option("--status", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--json", "as_json", is_flag=True)
def list_(capability: str | None, status: str | None, as_json: bool) -> None:
    """List every catalog version."""
    rows = [r.as_json() for r in context.catalog().list_versions(capability=capability, status=status)]
    if as_json:
        emit_json(rows)
    else:
        print_table("models", rows, _COLUMNS)


@models.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def show(ref: str, as_json: bool) -> None:
    """Show NAME (newest version) or NAME/VERSION."""
    record = context.catalog().get_ref(ref)
    if as_json:
        emit_json(record.as_json())
    else:
        for key, value in record.as_json().items():
            click.echo(f"{key:>15}: {value}")


def _status_command(status: Status, verb: str) -> click.Command:
    @click.argument("ref")
    @click.option("--json", "as_json", is_flag=True)
    def command(ref: str, as_json: bool) -> None:
        name, version = parse_ref(ref)
        if version is None:
            raise UserError(f"{verb} needs NAME/VERSION, e.g. arbiter models {verb} {name}/1")
        record = context.catalog().set_status(name, version, status)
        if as_json:
            emit_json(record.as_json())
        else:
            click.echo(f"{record.ref} is now {record.status}")

    command.__doc__ = f"Mark NAME/VERSION as {status.value}."
    return click.command(verb)(command)


models.add_command(_status_command(Status.ACTIVE, "activate"))
models.add_command(_status_command(Status.DEPRECATED, "deprecate"))
