"""A classifier's training set, checked before anything is trained on it.

A trained model's quality is measured on its task's validation set, so the training set has to meet
the same expectations (the task's fields, through the very Great Expectations suite
``registry/evaluation/datasets.py`` builds for the validation set, with each label held to the
task's ``classification.labels``) and must share no item with the validation set: a copied item
(same id, or the same text once case, punctuation and articles are set aside) would let the
classifier be graded on answers it memorized. Its sha256, size and row count become the trained
version's provenance, so the registry says exactly which bytes a model learned from.

Example::

    data = check_training_data(Path("datasets/ticket-topic.train.jsonl"), tasks.get("ticket-topic"))
    data.rows, data.sha256[:12]        # (240, '…')
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from registry.errors import DatasetError, UserError
from registry.evaluation.datasets import read_items
from registry.evaluation.scorers import LabelScorer, normalize
from registry.evaluation.tasks import TaskVersion
from registry.evaluation.taskspec import ClassificationSpec, TaskSpec

MIN_ROWS_PER_LABEL = 5  # so each of the 5 cross-validation folds holds every label (text_classifier.py)
_SHOWN = 5  # items named in an overlap error, so it stays one readable line


@dataclass(frozen=True)
class TrainingData:
    """A training set that passed its task's expectations: where it is, what its bytes are, and the
    (text, label) pairs read from exactly those bytes, in file order."""

    path: Path
    sha256: str
    size_bytes: int
    rows: int
    texts: tuple[str, ...]
    targets: tuple[str, ...]  # each row's label
    task: str  # the task version it was checked against, e.g. ``ticket-topic/1``

    def provenance(self) -> dict[str, str]:
        """The ``training_data*`` keys of a trained version's provenance."""
        return {
            "training_data": str(self.path), "training_data_sha256": self.sha256,
            "training_data_bytes": str(self.size_bytes), "training_data_rows": str(self.rows),
        }


def check_training_data(path: Path, task: TaskVersion) -> TrainingData:
    """Validate ``path`` as a training set for ``task``; raise a one-line ``UserError`` naming the
    first failures (the file's expectations, a label with too few rows, items shared with the
    validation set)."""
    classification = _classification(task)
    label_field = _label_field(task)
    path = Path(path).resolve()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the training set {path} ({exc.strerror}); give the path of a JSONL, CSV "
                        "or Parquet file with the task's fields") from None
    rows = read_items(_with_fixed_labels(task.spec, label_field, classification), path, raw)
    _enough_per_label(path, [row[label_field] for row in rows], classification.labels)
    _apart_from_validation(path, rows, task, classification.input)
    return TrainingData(
        path=path, sha256=hashlib.sha256(raw).hexdigest(), size_bytes=len(raw), rows=len(rows),
        texts=tuple(str(row[classification.input]) for row in rows),
        targets=tuple(str(row[label_field]) for row in rows), task=task.ref,
    )


def _classification(task: TaskVersion) -> ClassificationSpec:
    if task.classification is None:
        raise UserError(f"task {task.ref} has no classification section, so nothing says what a classifier reads "
                        "and answers; add `classification: {input: FIELD, labels: [...]}` to its task file")
    return task.classification


def _label_field(task: TaskVersion) -> str:
    """The field holding each item's label: the reference of the task's ``label`` scorer."""
    for scorer in task.spec.scoring.scorers:
        if isinstance(scorer, LabelScorer) and scorer.reference:
            return scorer.reference
    raise UserError(f"task {task.ref} scores with no label scorer that has a reference, so no field holds an item's "
                    "label; add `{scorer: label, reference: FIELD}` to its scoring")


def _with_fixed_labels(spec: TaskSpec, label_field: str, classification: ClassificationSpec) -> TaskSpec:
    """The task's spec with its label field held to the classification labels, so the suite the
    validation set meets also refuses a training row with any other label."""
    fields = dict(spec.data.fields)
    fields[label_field] = fields[label_field].model_copy(update={"values": classification.labels})
    return spec.model_copy(update={"data": spec.data.model_copy(update={"fields": fields})})


def _enough_per_label(path: Path, targets: list[str], labels: tuple[str, ...]) -> None:
    counts = Counter(targets)
    short = [f"{label} ({counts[label]})" for label in labels if counts[label] < MIN_ROWS_PER_LABEL]
    if short:
        raise DatasetError(f"{path} has too few rows for {', '.join(short)}; give each label at least "
                           f"{MIN_ROWS_PER_LABEL} so the classifier can learn it and be cross-validated")


def _apart_from_validation(path: Path, rows: list[dict[str, object]], task: TaskVersion, input_field: str) -> None:
    """Refuse rows whose id or normalized input text is also the validation set's."""
    by_id = {item.id: item.id for item in task.items}
    by_text = {normalize(str(item.data[input_field])): item.id for item in task.items}
    id_field = task.spec.data.id
    shared = []
    for row in rows:
        row_id = str(row[id_field])
        if row_id in by_id:
            shared.append(f"{row_id} (same id)")
        elif (other := by_text.get(normalize(str(row[input_field])))) is not None:
            shared.append(f"{row_id} (same text as {other})")
    if shared:
        more = f" and {len(shared) - _SHOWN} more" if len(shared) > _SHOWN else ""
        them = "them" if len(shared) > 1 else "it"
        raise DatasetError(f"{path} shares {len(shared)} item{'s' * (len(shared) > 1)} with task {task.ref}'s "
                           f"validation set: {', '.join(shared[:_SHOWN])}{more}; remove {them}, or the classifier is "
                           "graded on items it learned")
