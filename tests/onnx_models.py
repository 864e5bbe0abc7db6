"""Real ONNX files for the tests: a text classifier trained here and exported with skl2onnx, and
the bad files registration must refuse (no download; a classifier trains and converts in ~50 ms).

The classifier is what a user's would be: TfidfVectorizer + LogisticRegression on a handful of
texts, one ``tensor(string)`` input shaped ``[None, 1]``, outputs ``label`` and ``probabilities``
(``zipmap=False``). The vectorizer's ``locale`` option is ``C.UTF-8`` because these machines have no
``en_US`` locale, without which onnxruntime cannot build the StringNormalizer:
:func:`text_classifier` with ``locale=None`` makes exactly that unloadable model. Each builder
caches the file's bytes per argument set and writes a fresh copy where asked.
(Importable as ``onnx_models``: pytest puts ``tests/`` on ``sys.path`` for the root conftest.)
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, helper

LABELS = ("billing", "technical", "account", "shipping")
OPSET = 17  # ai.onnx opset of the exported classifier: explicit, and one onnxruntime 1.31 supports
ML_OPSET = 3  # ai.onnx.ml
IR_VERSION = 9  # onnx 1.23 writes IR 12 by default, newer than onnxruntime 1.31 reads (11)

_TEXTS = {
    "billing": ["refund my invoice please", "my card was charged twice", "the invoice total is wrong",
                "cancel the payment", "why was I billed again"],
    "technical": ["the app crashes on start", "error 500 on the login page", "the page will not load",
                  "sync fails with a timeout", "the button does nothing"],
    "account": ["change my email address", "delete my account", "reset my password",
                "update my profile name", "I cannot sign in to my account"],
    "shipping": ["where is my parcel", "the package is delayed", "tracking number not found",
                 "delivery went to the wrong address", "the box arrived damaged"],
}


def text_classifier(
    path: Path,
    labels: Sequence[str] = LABELS,
    texts: Mapping[str, Sequence[str]] | None = None,
    *,
    int_labels: bool = False,
    locale: str | None = "C.UTF-8",
    seed: int = 0,
) -> Path:
    """A trained text classifier at ``path``. ``texts`` maps each label to its training texts
    (default: ticket-topic texts for the four :data:`LABELS`, made-up ones for other labels);
    different texts or ``seed`` give a different file (a retrained model). ``int_labels`` trains on
    the labels' indices, so the model carries ``classlabels_int64s`` and an int64 label output."""
    key = (tuple(labels), _frozen(texts), int_labels, locale, seed)
    path.write_bytes(_classifier_bytes(*key))
    return path


@functools.cache
def _classifier_bytes(
    labels: tuple[str, ...], texts: tuple[tuple[str, tuple[str, ...]], ...] | None, int_labels: bool,
    locale: str | None, seed: int,
) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    by_label = dict(texts) if texts is not None else {
        label: _TEXTS.get(label, [f"{label} case {i}" for i in range(5)]) for label in labels
    }
    rows = [(text, index if int_labels else label)
            for index, label in enumerate(labels) for text in by_label[label]]
    random.Random(seed).shuffle(rows)
    vectorizer = TfidfVectorizer()
    classifier = LogisticRegression(max_iter=500, random_state=seed)
    pipeline = Pipeline([("tfidf", vectorizer), ("clf", classifier)])
    pipeline.fit([text for text, _ in rows], [label for _, label in rows])
    options: dict[int, dict[str, object]] = {id(classifier): {"zipmap": False}}
    if locale is not None:
        options[id(vectorizer)] = {"locale": locale}
    model = convert_sklearn(
        pipeline, initial_types=[("text", StringTensorType([None, 1]))],
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET}, options=options,
    )
    model.ir_version = min(model.ir_version, IR_VERSION)
    return model.SerializeToString()


def _frozen(texts: Mapping[str, Sequence[str]] | None) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    return None if texts is None else tuple((label, tuple(items)) for label, items in texts.items())


def truncated(source: Path, path: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``'s bytes at ``path``: an interrupted copy."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def random_bytes(path: Path, size: int = 4096, seed: int = 0) -> Path:
    """``size`` random bytes at ``path``: a file that is not ONNX at all."""
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def unsupported_opset(path: Path, opset: int = 99) -> Path:
    """A valid one-node model (Relu) stamped with ai.onnx ``opset``, beyond what onnxruntime supports."""
    return _float_model(path, opset=opset)


def float_regressor(path: Path) -> Path:
    """A valid model onnxruntime loads whose contract is not a text classifier: float[N, 3] → float[N, 3]."""
    return _float_model(path, opset=OPSET)


def _float_model(path: Path, *, opset: int) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx.helper",
                              producer_version=onnx.__version__)
    model.ir_version = IR_VERSION
    onnx.save(model, str(path))
    return path
