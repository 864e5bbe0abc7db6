"""``arbiter models register|list|show|activate|deprecate``."""

from __future__ import annotations

import math
import re
from pathlib import Path

import click

from registry.catalog.versions import METRIC_PREFIX
from registry.cli import context
from registry.cli.output import emit_json, print_table
from registry.errors import UserError
from registry.providers.coreml_package import is_mlpackage
from registry.spec import REMOTE_KINDS, Status, VersionRecord, parse_ref

_COLUMNS = ("name", "version", "status", "quantization", "size_bytes", "context_window", "capabilities", "sha256")
_METRIC = re.compile(r"^([A-Za-z0-9_.\-/]+)=(.*)$")
_ONNX_ONLY = ("--task", "--trained-on", "--training-code", "--labels", "--metric", "--tokenizer")


@click.group()
def models() -> None:
    """Catalog models: immutable versions in the MLflow registry."""


@models.command("register")
@click.argument("source")
@click.option("--name", required=True, help="Catalog model (family) name, e.g. smollm2-135m.")
@click.option("--kind", type=click.Choice(["gguf", "onnx", "coreml", *sorted(k.value for k in REMOTE_KINDS)]),
              default=None,
              help="gguf: SOURCE is a file run in-process; onnx: SOURCE is a trained text classifier, or a "
                   "token-id classifier or embedder with --tokenizer (.onnx, docs/custom-models.md); coreml: SOURCE is a .mlpackage directory (runs on macOS on Apple "
                   "Silicon); ollama / openai: SOURCE is the model's name on a server. "
                   "Default: coreml for a .mlpackage, onnx for a .onnx file, else gguf.")
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
@click.option("--allow-template-errors", is_flag=True,
              help="GGUF: register a file whose chat template fails in llama-cpp-python's sandbox, recording the "
                   "reason as its chat_template_error provenance (its chat requests will fail).")
@click.option("--task", "task_ref", default=None,
              help="ONNX classifier (required): the classification task it was trained for (NAME or NAME/VERSION); "
                   "its labels must be the model's. Not for an embedder.")
@click.option("--trained-on", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="ONNX classifier (required): the training data file, checked against the task's expectations and "
                   "its validation set (no shared item); its sha256, size and rows are recorded. An embedder's "
                   "(optional): its sha256 and size.")
@click.option("--training-code", default=None,
              help="ONNX (required): what trained it, e.g. a git commit and script (git:4f2a9c1 train.py).")
@click.option("--labels", "labels_text", default=None,
              help="ONNX: the labels you expect, comma-separated (e.g. billing,technical); must be the model's. A "
                   "token-id classifier (logits) needs them, in its logits' column order.")
@click.option("--metric", "metrics", multiple=True,
              help="ONNX: a training metric NAME=NUMBER (repeatable), recorded and logged on the MLflow run.")
@click.option("--tokenizer", type=click.Path(path_type=Path), default=None,
              help="ONNX taking token ids (input_ids): its Hugging Face tokenizer.json, with a truncation length; "
                   "its sha256 is recorded and checked on every load.")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
def register(
    source: str, name: str, kind: str | None, base_url: str | None, context_window: int | None,
    capabilities: tuple[str, ...], chat_format: str | None, cpu_flags: tuple[str, ...],
    accelerators: tuple[str, ...], min_memory_mb: int | None, min_gpu_memory_mb: int | None,
    allow_template_errors: bool, task_ref: str | None, trained_on: Path | None, training_code: str | None,
    labels_text: str | None, metrics: tuple[str, ...], tokenizer: Path | None, as_json: bool,
) -> None:
    """Register SOURCE as a new immutable version of NAME: a GGUF file's path, a trained ONNX text
    classifier (with its task and training provenance), a CoreML .mlpackage directory, or with
    --kind ollama|openai the name of a model a server serves (arbiter checks the server knows it)."""
    catalog = context.catalog()
    kind = kind or ("coreml" if is_mlpackage(source) else "onnx" if source.lower().endswith(".onnx") else "gguf")
    onnx_options = (task_ref, trained_on, training_code, labels_text, metrics, tokenizer)
    if kind != "onnx" and any(onnx_options):
        raise UserError(f"{', '.join(_ONNX_ONLY)} describe a trained ONNX model (--kind onnx), not a {kind} model")
    if allow_template_errors and kind != "gguf":
        raise UserError(f"--allow-template-errors is for GGUF files, whose chat template runs in-process; not for {kind}")
    needs = {key: value for key, value in (
        ("cpu_flags", cpu_flags), ("accelerators", accelerators), ("min_memory_mb", min_memory_mb),
        ("min_gpu_memory_mb", min_gpu_memory_mb)) if value}  # (docs/hardware.md: declaring needs)
    if needs and kind != "gguf":
        raise UserError(f"--needs-* and --min-*-memory-mb declare what a GGUF file needs; a {kind} model's needs "
                        "come from its package or its server")
    if kind == "onnx":
        if base_url is not None or context_window is not None or chat_format is not None or capabilities:
            raise UserError("--base-url, --context-window, --chat-format and --capability are not for ONNX "
                            "classifiers: it runs in-process, reads one text and answers one of its labels")
        record, created = _register_onnx(Path(source), name, task_ref, trained_on, training_code, labels_text, metrics,
                                         tokenizer)
        where = _onnx_summary(record)
    elif kind == "coreml":
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
            Path(source), name=name, capabilities=list(capabilities) or None, chat_format=chat_format, needs=needs,
            allow_template_errors=allow_template_errors,
        )
        where = f"sha256 {record.spec.sha256}"
        if "chat_template_error" in record.spec.provenance:
            click.echo(f"warning: {record.ref}'s chat template fails in llama-cpp-python's sandbox "
                       f"({record.spec.provenance['chat_template_error']}); its chat requests will fail", err=True)
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
        return
    for key, value in record.as_json().items():
        if key == "labels":
            if value:
                click.echo(f"{key:>15}: {', '.join(value)}")
        elif key == "provenance":
            click.echo(f"{key:>15}:" + ("" if value else " none"))
            for entry in sorted(value):
                click.echo(f"{'':>17}{entry}: {value[entry]}")
        else:
            click.echo(f"{key:>15}: {value}")


def _register_onnx(
    path: Path, name: str, task_ref: str | None, trained_on: Path | None, training_code: str | None,
    labels_text: str | None, metric_options: tuple[str, ...], tokenizer: Path | None,
) -> tuple[VersionRecord, bool]:
    """A trained model with its provenance, every check done before anything is registered: the
    file and its contract first (a classifier and an embedder need different provenance), then a
    classifier's task and training data, or an embedder's training code."""
    from registry.providers.onnx_model import inspect_onnx
    from registry.providers.onnx_tokens import TOKEN_EMBEDDER

    labels = _labels(labels_text)
    metrics = {f"{METRIC_PREFIX}{key}": value for key, value in _metrics(metric_options).items()}
    tokenizer = None if tokenizer is None else tokenizer.expanduser().resolve()
    info = inspect_onnx(path.expanduser().resolve(), tokenizer=tokenizer, labels=labels)
    if info.contract == TOKEN_EMBEDDER:
        provenance = _embedder_provenance(path, task_ref, trained_on, training_code)
    else:
        provenance = _classifier_provenance(path, info.labels, task_ref, trained_on, training_code)
    return context.catalog().register_onnx(path, name=name, labels=labels, tokenizer=tokenizer,
                                           provenance={**provenance, **metrics})


def _classifier_provenance(
    path: Path, labels: tuple[str, ...], task_ref: str | None, trained_on: Path | None, training_code: str | None,
) -> dict[str, str]:
    """A classifier's task and training data: the task's labels are the model's (it serves that
    task's route), and the training data meets the task's expectations and shares no item with its
    validation set (else the benchmark would measure memory)."""
    from registry.training.data import check_training_data

    if task_ref is None or trained_on is None or not (training_code or "").strip():
        raise UserError(
            "an ONNX classifier needs --task NAME, --trained-on DATA and --training-code REF: its provenance, and "
            "what keeps its benchmark honest (the training data is checked against the task's validation set)"
        )
    task = context.tasks().get(task_ref)
    if task.classification is None:
        raise UserError(
            f"task {task.ref} has no classification: section, so no classifier can serve it; add one naming the "
            "item field the classifier reads and the label set (docs/custom-models.md), or pick a classification task"
        )
    if set(labels) != set(task.classification.labels):
        raise UserError(
            f"{path}: its labels are {', '.join(labels)}, but task {task.ref} answers "
            f"{', '.join(task.classification.labels)}; train it on the task's labels, or register it for another task"
        )
    training = check_training_data(trained_on.expanduser().resolve(), task)
    return {**training.provenance(), "trained_for_task": task.ref, "training_code": str(training_code).strip()}


def _embedder_provenance(
    path: Path, task_ref: str | None, trained_on: Path | None, training_code: str | None,
) -> dict[str, str]:
    """An embedder's training code, and its training data's sha256 and size when given: it serves
    no classification task, so there is no task whose expectations the data could be checked by."""
    from registry.providers.gguf_file import sha256_of

    if task_ref is not None:
        raise UserError(f"{path} is an embedder: it serves no classification task; leave --task out")
    if not (training_code or "").strip():
        raise UserError("an ONNX embedder needs --training-code REF (what trained or exported it): its provenance")
    provenance = {"training_code": str(training_code).strip()}
    if trained_on is not None:
        data = trained_on.expanduser().resolve()
        provenance |= {"training_data": str(data), "training_data_sha256": sha256_of(data),
                       "training_data_bytes": str(data.stat().st_size)}
    return provenance


def _onnx_summary(record: VersionRecord) -> str:
    """What ``models register`` says a registered ONNX version is."""
    spec = record.spec
    tokenizer = f"; tokenizer sha256 {spec.provenance['tokenizer_sha256']}" if "tokenizer_sha256" in spec.provenance else ""
    if "embedding" in spec.capabilities:
        return f"token-id embedder: {spec.provenance.get('onnx_width')} dims{tokenizer}; sha256 {spec.sha256}"
    what = "token-id classifier" if tokenizer else "text classifier"
    return f"{what}: {', '.join(spec.labels)}{tokenizer}; sha256 {spec.sha256}"


def _labels(text: str | None) -> list[str] | None:
    """``--labels a,b,c`` as a list, refused when an entry is blank or repeated."""
    if text is None:
        return None
    labels = [label.strip() for label in text.split(",")]
    if not all(labels) or len(set(labels)) != len(labels):
        raise UserError(f"--labels {text!r}: give each label once, comma-separated, e.g. --labels billing,technical")
    return labels


def _metrics(options: tuple[str, ...]) -> dict[str, str]:
    """``--metric name=value`` options as provenance values, each checked to be a finite number."""
    metrics: dict[str, str] = {}
    for option in options:
        match = _METRIC.match(option.strip())
        try:
            valid = match is not None and math.isfinite(float(match[2]))
        except ValueError:
            valid = False
        if not valid:
            raise UserError(f"--metric {option!r} is not NAME=NUMBER; write e.g. --metric accuracy=0.93 "
                            "(NAME: letters, digits, _ - . /)")
        if match[1] in metrics:
            raise UserError(f"--metric {match[1]} is given twice; give each metric once")
        metrics[match[1]] = match[2].strip()
    return metrics


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
