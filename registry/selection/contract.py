"""A task's contract: which versions can serve it at all, whatever their figures.

Two kinds of model answer a task. A text model (an LLM) reads the task's prompt and answers in
words, so it needs the task's ``capabilities`` (``chat``, ``json``…). A text classifier
(:attr:`registry.spec.ModelSpec.is_classifier`, e.g. an ONNX model) reads one text and answers one
of its fixed labels and nothing else, so it can serve only a classification task (a task file's
``classification:`` section) and only when its labels are that task's labels, as a set: any other
label would be an answer the task's scorer and its callers never expect.

The rule lives here, as data, because every wing that decides who serves a route applies it: the
task (``TaskVersion.cannot_serve``), the selector (an exclusion), the compatibility check and the
rollout, and ``Routes.promote`` in the catalog. The catalog and the selection wing sit below the
tasks, so a task's contract travels down to them as this object, never as an import up.

Example::

    contract = TaskContract("ticket-topic", ("chat",), labels=("billing", "technical"))
    contract.cannot_serve(record)   # None, or one line saying why record cannot serve the task
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry.spec import ModelSpec, VersionRecord


@dataclass(frozen=True)
class TaskContract:
    """What a task asks of a version: ``capabilities`` of a text model, and for a classification
    task (``labels`` not None) the fixed label set a classifier must answer with. ``task`` names
    the task (its ``NAME/VERSION``) in the reasons."""

    task: str
    capabilities: tuple[str, ...]
    labels: tuple[str, ...] | None = None

    @property
    def is_classification(self) -> bool:
        return self.labels is not None

    def as_json(self) -> dict[str, Any]:
        return {"task": self.task, "capabilities": list(self.capabilities),
                "labels": None if self.labels is None else list(self.labels)}

    def missing(self, spec: ModelSpec) -> list[str]:
        """What the version lacks to serve the task (empty: it can serve it): the capabilities a text
        model lacks; for a classifier, ``labels …`` when its labels are not the task's, or what a task
        that is not a classification task needs (a classifier has none of it to give)."""
        if not spec.is_classifier:
            return sorted(c for c in self.capabilities if not spec.has_capability(c))
        if self.labels is None:
            return sorted(set(self.capabilities) - set(spec.capabilities)) or ["a classification task"]
        return [] if set(spec.labels) == set(self.labels) else [f"labels {', '.join(self.labels)}"]

    def cannot_serve(self, record: VersionRecord) -> str | None:
        """One line saying why ``record`` cannot serve the task, or None when it can."""
        spec = record.spec
        missing = self.missing(spec)
        if not missing:
            return None
        if not spec.is_classifier:
            return f"{record.ref} lacks {missing}, which task {self.task} needs"
        answers = f"{record.ref} is a text classifier (labels {', '.join(spec.labels) or 'none'})"
        if self.labels is None:
            needs = ", ".join(self.capabilities) or "a text model"
            return f"{answers}; task {self.task} is not a classification task (it needs {needs})"
        extra = [label for label in spec.labels if label not in self.labels]
        lacking = [label for label in self.labels if label not in spec.labels]
        differ = "; ".join(filter(None, (
            f"not the task's: {', '.join(extra)}" if extra else "", f"missing: {', '.join(lacking)}" if lacking else "",
        )))
        return f"{answers}; task {self.task} answers labels {', '.join(self.labels)} ({differ})"
