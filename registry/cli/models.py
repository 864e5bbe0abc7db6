"""``arbiter models register|list|show|activate|deprecate``."""

from __future__ import annotations

from pathlib import Path

import click

from registry.cli import context
from registry.cli.output import emit_json, print_table
from registry.errors import UserError
from registry.providers.coreml_package import is_mlpackage
from registry.spec import REMOTE_KINDS, Status, parse_ref

_COLUMNS = ("name", "version", "status", "quantization", "size_bytes", "context_window", "capabilities", "sha256")


@click.group()
def models() -> None:
    """Catalog models: immutable versions in the MLflow registry."""


@models.command("register")
@click.argument("source")
@click.option("--name", required=True, help="Catalog model (family) name, e.g. smollm2-135m.")
@click.option("--kind", type=click.Choice(["gguf", "coreml", *sorted(k.value for k in REMOTE_KINDS)]), default=None,
              help="gguf: SOURCE is a file run in-process; coreml: SOURCE is a .mlpackage directory (runs on macOS "
                   "on Apple Silicon); ollama / openai: SOURCE is the model's name on a server. "
                   "Default: coreml for a .mlpackage, else gguf.")
@click.option("--base-url", default=None,
              help="ollama: the host (default: OLLAMA_HOST); openai: the API root, e.g. http://127.0.0.1:8000/v1.")
@click.option("--context-window", type=click.IntRange(min=1), default=None,
              help="Served models: the server's context size (required for openai; Ollama reports its own). "
                   "coreml: the most tokens the model takes, when it has no input_ids input saying so.")
@click.option("--capability", "capabilities", multiple=True, help="Repeatable: chat, text-generation, json, …")
@click.option("--chat-format", default=None, help="llama.cpp chat format for files without a chat template (e.g. gemma).")
@click.option("--needs-cpu-flag", "cpu_flags", multiple=True,
              help="GGUF: a CPU flag the build needs (repeatable, /proc/cpuinfo names: avx2, avx512f, …).")
@click.option("--needs-accelerator", "accelerators", multiple=True,
              help="GGUF: what it runs on (repeatable: cpu, cuda, metal). Default: cpu.")
@click.option("--min-memory-mb", type=click.IntRange(min=0), default=None,
              help="GGUF: RAM it needs to load, when more than the file's size + runtime says.")
@click.option("--min-gpu-memory-mb", type=click.IntRange(min=0), default=None,
              help="GGUF: GPU memory it needs when it runs on cuda only.")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
def register(
    source: str, name: str, kind: str | None, base_url: str | None, context_window: int | None,
    capabilities: tuple[str, ...], chat_format: str | None, cpu_flags: tuple[str, ...],
    accelerators: tuple[str, ...], min_memory_mb: int | None, min_gpu_memory_mb: int | None, as_json: bool,
) -> None:
    """Register SOURCE as a new immutable version of NAME: a GGUF file's path, a CoreML .mlpackage
    directory, or with --kind ollama|openai the name of a model a server serves (arbiter checks the
    server knows it)."""
    catalog = context.catalog()
    kind = kind or ("coreml" if is_mlpackage(source) else "gguf")
    needs = {key: value for key, value in (
        ("cpu_flags", cpu_flags), ("accelerators", accelerators), ("min_memory_mb", min_memory_mb),
        ("min_gpu_memory_mb", min_gpu_memory_mb)) if value}  # (docs/hardware.md: declaring needs)
    if needs and kind != "gguf":
        raise UserError(f"--needs-* and --min-*-memory-mb declare what a GGUF file needs; a {kind} model's needs "
                        "come from its package or its server")
    if kind == "coreml":
        if base_url is not None or chat_format is not None:
            raise UserError("--base-url and --chat-format are not for CoreML packages: a .mlpackage runs in-process "
                            "on macOS and has no chat template")
        record, created = catalog.register_coreml(
            Path(source), name=name, capabilities=list(capabilities) or None, context_window=context_window
        )
        where = f"sha256 {record.spec.sha256}, needs macOS on Apple Silicon"
    elif kind == "gguf":
        if base_url is not None or context_window is not None:
            raise UserError("--base-url and --context-window are for served models (--kind ollama|openai); "
                            "a GGUF file runs in-process and carries its own context window")
        record, created = catalog.register(
            Path(source), name=name, capabilities=list(capabilities) or None, chat_format=chat_format, needs=needs
        )
        where = f"sha256 {record.spec.sha256}"
    else:
        if chat_format is not None:
            raise UserError(f"--chat-format is for GGUF files; the {kind} server applies its own chat template")
        record, created = catalog.register_remote(
            kind=kind, name=name, source=source, base_url=base_url,
            capabilities=list(capabilities) or None, context_window=context_window,
        )
        where = f"{kind} {record.spec.source!r} at {record.spec.base_url or 'OLLAMA_HOST'}"
    if as_json:
        emit_json({**record.as_json(), "created": created})
    else:
        verb = "registered" if created else "already registered as"
        click.echo(f"{verb} {record.ref} ({where}, status {record.status})")


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
