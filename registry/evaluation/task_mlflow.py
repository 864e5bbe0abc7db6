"""What MLflow shows of a task version: its prompt in the prompt registry, and its validation set as
a dataset input of every benchmark run, so a person in the UI sees which prompt and which data (by
digest) each figure came from.

A task version's prompt is the MLflow prompt ``task.<name>``: one prompt version per task version,
found again by its ``arbiter.task_sha256`` tag (registered once, whoever asks first: ``arbiter tasks
add`` or the first benchmark of it). It holds the chat template as the task file writes it (system
message, the worked examples as the model sees them, the item's template), the generation settings
as MLflow's model config, and a JSON Schema as its response format. The templates are Jinja2 and
arbiter renders them in its own sandbox (``templates.PromptTemplate``); MLflow's
``PromptVersion.format`` renders them alike only when they use plain ``{{ field }}`` or ``{% %}``
(it applies Jinja2 to a template only when it finds ``{% %}``), so the registry's copy is the
record of the prompt, not a second renderer.
"""

from __future__ import annotations

from typing import Any

from registry.catalog.prompts import PromptRef, register_prompt
from registry.catalog.tracking import DataInput
from registry.catalog.versions import Catalog
from registry.evaluation.tasks import TaskVersion
from registry.spec import TASK_PROMPT_PREFIX

VALIDATION_CONTEXT = "validation"

_MLFLOW_TYPES = {"text": "string", "string": "string", "integer": "long", "number": "double", "boolean": "boolean",
                 "object": "any"}


def register_task_prompt(catalog: Catalog, task: TaskVersion) -> PromptRef:
    """The prompt version of ``task`` (``prompts:/task.<name>/<n>``), registered on first use."""
    spec = task.spec
    generation = spec.generation
    config: dict[str, Any] = {"max_tokens": generation.max_tokens, "temperature": generation.temperature}
    if generation.stop:
        config["stop_sequences"] = list(generation.stop)
    return register_prompt(
        catalog, f"{TASK_PROMPT_PREFIX}{task.name}", _chat_template(task), identity=("arbiter.task_sha256", task.sha256),
        description=spec.description, tags={"arbiter.task": task.name, "arbiter.task_version": str(task.version)},
        response_format=generation.json_schema, model_config=config,
    )


def validation_input(task: TaskVersion) -> DataInput:
    """The task's validation set as a run's dataset input: ``<name>/<version>``, the data's sha256
    (MLflow keeps its first 36 hex characters as the digest; the input's ``arbiter.dataset_sha256``
    tag holds it whole), the snapshot's data file, its declared fields and item count."""
    fields = task.spec.data.fields
    columns = tuple({"name": name, **_mlflow_type(field.type), "required": field.required} for name, field in fields.items())
    return DataInput(
        name=task.ref, digest=task.data_sha256, path=task.data_path, context=VALIDATION_CONTEXT,
        n_rows=len(task.items), columns=columns, tags={"arbiter.dataset_sha256": task.data_sha256},
    )


def _chat_template(task: TaskVersion) -> list[dict[str, str]]:
    """System message and item template as written; the worked examples as rendered for every item
    (they are the same for all of them), taken from the first item's messages."""
    prompt = task.spec.prompt
    rendered = task.messages(task.items[0])
    system = [{"role": "system", "content": prompt.system}] if prompt.system else []
    return [*system, *rendered[len(system):-1], {"role": "user", "content": prompt.template}]


def _mlflow_type(kind: str) -> dict[str, Any]:
    """A field's type as an MLflow colspec type: ``list[integer]`` → an array of ``long``."""
    if kind.startswith("list["):
        return {"type": "array", "items": {"type": _MLFLOW_TYPES[kind[5:-1]]}}
    return {"type": _MLFLOW_TYPES[kind]}
