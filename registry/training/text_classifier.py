"""Train a small text classifier for a fixed-label task and export it to ONNX, with its provenance.

The model is a scikit-learn pipeline: TF-IDF over character 2–5-grams (sublinear term frequency)
and a multinomial logistic regression (``saga``, seeded). Measured on ticket-topic's 240 training
texts with 5-fold cross-validation (the validation set never takes part in choosing), character
n-grams beat word n-grams (accuracy 0.90 against 0.82: support messages are short and full of
forms a word vocabulary has not seen, "crashes", "crashing") and logistic regression matched or
beat a calibrated linear SVM (0.88); ``saga`` fits the same model 3–6× faster than ``lbfgs`` here.

skl2onnx converts the pipeline with a string input ``[None, 1]``, ``zipmap=False`` (a label output
and a float ``[N, n_labels]`` probabilities output, the text-classifier contract the ONNX provider
runs) and the vectorizer's ``locale`` set to ``C.UTF-8``: without it onnxruntime cannot build the
StringNormalizer on a machine with no ``en_US`` locale. skl2onnx warns that a character analyzer
"may not work"; rather than trust or silence that blindly, every export is run in onnxruntime on
the training texts and must answer exactly what scikit-learn answers, or nothing is written.

Training is deterministic (same data, same seed: the same bytes), so the file is named by its
sha256 and training again at set-up finds the version already registered; other data or another
seed is another file, another sha256, a new version.

Example::

    trained = train_text_classifier(check_training_data(path, task), task, home / "trained")
    trained.path.name, trained.metrics   # ('ticket-topic-clf-1f3a….onnx', {'cv_accuracy': 0.9, …})
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import UserError
from registry.training.data import MIN_ROWS_PER_LABEL, TrainingData

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from registry.evaluation.tasks import TaskVersion

EXPORTER = "skl2onnx"
FOLDS = MIN_ROWS_PER_LABEL  # stratified: every fold holds every label
OPSET = 17  # ai.onnx, explicit so the file does not change with skl2onnx's default; onnxruntime 1.31 runs it
ML_OPSET = 3  # ai.onnx.ml
IR_VERSION = 9  # onnx 1.23 stamps IR 12, newer than onnxruntime 1.31 reads (11); opset 17 needs only 8
INPUT = "text"
_SOURCE = Path(__file__)
_SHOWN = 3  # texts named when the export disagrees


@dataclass(frozen=True)
class TrainedClassifier:
    """A classifier trained, exported and checked: its ONNX file, labels (in the model's order) and
    cross-validated metrics, and everything its registered version records about how it was made."""

    path: Path
    sha256: str
    labels: tuple[str, ...]
    metrics: dict[str, float] = field(hash=False)
    data: TrainingData
    task: str  # the task version it was trained for, e.g. ``ticket-topic/1``
    seed: int
    exporter_version: str
    training_code: str

    def provenance(self) -> dict[str, str]:
        """The version's provenance: the training data's keys, the exporter, the code, the task, the
        seed and each metric as ``metric.<name>``."""
        return {
            **self.data.provenance(), "exporter": EXPORTER, "exporter_version": self.exporter_version,
            "training_code": self.training_code, "trained_for_task": self.task, "training_seed": str(self.seed),
            **{f"metric.{name}": f"{value:.4f}" for name, value in self.metrics.items()},
        }


def train_text_classifier(data: TrainingData, task: TaskVersion, out_dir: Path, *, seed: int = 0) -> TrainedClassifier:
    """Cross-validate, fit on all of ``data``, export to ``out_dir/<task>-clf-<sha12>.onnx`` and check
    the export answers as scikit-learn does. ``data`` must have been checked against ``task``
    (:func:`registry.training.data.check_training_data`)."""
    if data.task != task.ref:
        raise UserError(f"the training set {data.path} was checked against task {data.task}, not {task.ref}; "
                        f"check it against {task.ref} (check_training_data) before training for it")
    metrics = _cross_validated(data, seed)
    pipeline = _pipeline(seed).fit(list(data.texts), list(data.targets))
    name = f"{task.name}-clf"
    model = _exported(pipeline, name)
    _answers_as_trained(model, pipeline, data.texts)
    sha256 = hashlib.sha256(model).hexdigest()
    path = _written(Path(out_dir) / f"{name}-{sha256[:12]}.onnx", model)
    return TrainedClassifier(
        path=path, sha256=sha256, labels=tuple(str(label) for label in pipeline.classes_), metrics=metrics,
        data=data, task=task.ref, seed=seed, exporter_version=importlib.metadata.version(EXPORTER),
        training_code=training_code(),
    )


def training_code() -> str:
    """This module named by the sha256 of its own bytes (and the package's version): exact whether
    arbiter runs from a git checkout, a dirty one, or an installed wheel with no git at all."""
    digest = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:12]
    return f"registry/training/{_SOURCE.name}@sha256:{digest} (arbiter-registry {importlib.metadata.version('arbiter-registry')})"


def _pipeline(seed: int) -> Pipeline:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("tfidf", TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True)),
        ("classifier", LogisticRegression(C=10.0, solver="saga", max_iter=5000, random_state=seed)),
    ])


def _cross_validated(data: TrainingData, seed: int) -> dict[str, float]:
    """Stratified ``FOLDS``-fold accuracy and macro F1 on the training set alone."""
    from sklearn.model_selection import StratifiedKFold, cross_validate

    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    scores = cross_validate(_pipeline(seed), list(data.texts), list(data.targets), cv=folds,
                            scoring=("accuracy", "f1_macro"), error_score="raise")
    return {"cv_accuracy": float(scores["test_accuracy"].mean()), "cv_macro_f1": float(scores["test_f1_macro"].mean())}


def _exported(pipeline: Pipeline, name: str) -> bytes:
    """The ONNX file's bytes, the same for the same model in any process: the graph is named
    (skl2onnx would draw a random name) and the opsets sorted."""
    from onnx import helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType

    vectorizer, classifier = pipeline.named_steps["tfidf"], pipeline.named_steps["classifier"]
    with warnings.catch_warnings():
        # "The conversion of CountVectorizer may not work" for a character analyzer: checked below instead.
        warnings.filterwarnings("ignore", message="The conversion of CountVectorizer may not work", category=UserWarning)
        model = convert_sklearn(
            pipeline, name=name, initial_types=[(INPUT, StringTensorType([None, 1]))],
            target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
            options={id(vectorizer): {"locale": "C.UTF-8"}, id(classifier): {"zipmap": False}},
        )
    model.ir_version = min(model.ir_version, IR_VERSION)
    # skl2onnx collects the opsets it used in a set: their order, and so the bytes, followed Python's
    # string hashing, which differs per process (PYTHONHASHSEED). Sorted, the same model is the same file.
    opsets = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets)
    return model.SerializeToString()


def _answers_as_trained(model: bytes, pipeline: Pipeline, texts: tuple[str, ...]) -> None:
    """The export, run in onnxruntime, must give every training text scikit-learn's label."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    label_output = session.get_outputs()[0].name
    [exported] = session.run([label_output], {INPUT: np.array(texts, dtype=object).reshape(-1, 1)})
    expected = pipeline.predict(list(texts))
    differ = [text for text, got, want in zip(texts, exported, expected, strict=True) if str(got) != str(want)]
    if differ:
        shown = "; ".join(repr(t) for t in differ[:_SHOWN])
        raise UserError(f"the ONNX export labels {len(differ)} of {len(texts)} training texts differently from the "
                        f"scikit-learn model ({shown}), so it cannot stand in for it; rewrite or drop those texts "
                        "(characters the ONNX tokenizer reads differently) and train again")


def _written(path: Path, model: bytes) -> Path:
    """``model`` at ``path``, written whole (a temporary name, then a rename) or already there."""
    if path.is_file() and path.read_bytes() == model:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(model)
    os.replace(partial, path)
    return path

