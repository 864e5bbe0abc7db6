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
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


# --- token ids in: a tokenizer, an embedder, a classifier over it, a causal LM ------------------

TICKET_LABELS = ("billing", "technical", "account", "shipping")  # the token-id classifier's logits, in this order
DIM = 32  # the embedding table's width
MAX_TOKENS = 64
_DATASETS = Path(__file__).resolve().parents[1] / "datasets"


def ticket_rows(name: str = "ticket-topic.train.jsonl") -> list[tuple[str, str]]:
    """(text, label) of a shipped ticket-topic set: the training set, or ``ticket-topic.jsonl`` (validation)."""
    rows = [json.loads(line) for line in (_DATASETS / name).read_text().splitlines() if line.strip()]
    return [(row["text"], row["label"]) for row in rows]


def ticket_tokenizer(path: Path, *, max_tokens: int | None = MAX_TOKENS) -> Path:
    """A WordLevel tokenizer trained by tokenizers' own trainer on the ticket-topic training texts
    (lowercased, split on whitespace and punctuation; ``[PAD]`` 0, ``[UNK]`` 1), truncating at
    ``max_tokens`` (None: no truncation length, which registration refuses)."""
    path.write_text(_tokenizer_json(max_tokens))
    return path


@functools.cache
def _tokenizer_json(max_tokens: int | None) -> str:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([text for text, _ in ticket_rows()],
                                  trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    if max_tokens is not None:
        tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer.to_str()


def token_embedder(path: Path, *, pooled: bool = True, vocab: int | None = None, mask: bool = True) -> Path:
    """A sentence embedder over :func:`ticket_tokenizer`'s ids: Gather from the embedding table
    (:func:`_table`), then (``pooled``) a masked mean in the graph, output ``sentence_embedding``
    [batch, DIM], or the token vectors as ``last_hidden_state`` [batch, seq, DIM]. ``vocab``: rows
    in the table (default: the tokenizer's size; fewer makes ids the model cannot look up).
    ``mask=False`` (token vectors only): no ``attention_mask`` input at all."""
    name, shape = ("sentence_embedding", ["batch", DIM]) if pooled else ("last_hidden_state", ["batch", "seq", DIM])
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["hidden" if pooled else name]),
             *(_pooled_nodes() if pooled else [])]
    return _token_model(path, nodes, [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
                        {"table": _table(vocab)}, inputs=("input_ids", "attention_mask") if mask else ("input_ids",))


def token_classifier(path: Path) -> Path:
    """A ticket-topic classifier: :func:`token_embedder`'s pooled vectors into a MatMul head whose
    weights are a logistic regression fitted (scikit-learn) on the training set's pooled vectors;
    output ``logits`` [batch, 4] in :data:`TICKET_LABELS` order."""
    path.write_bytes(_classifier_model_bytes())
    return path


@functools.cache
def _classifier_model_bytes() -> bytes:
    import tempfile

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rows = ticket_rows()
    features = np.stack([embed_like_the_model(text) for text, _ in rows])
    head = LogisticRegression(max_iter=2000, C=10.0).fit(features, [TICKET_LABELS.index(label) for _, label in rows])
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["hidden"]), *_pooled_nodes(),
             helper.make_node("MatMul", ["sentence_embedding", "weights"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], ["logits"])]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(TICKET_LABELS)])
    with tempfile.TemporaryDirectory() as folder:
        file = _token_model(Path(folder) / "m.onnx", nodes, [out], {
            "table": _table(None), "weights": head.coef_.T.astype(np.float32), "bias": head.intercept_.astype(np.float32)})
        return file.read_bytes()


def causal_lm(path: Path) -> Path:
    """A causal LM's shape: token ids in, ``logits`` [batch, seq, vocab] out (Gather then MatMul)."""
    import numpy as np

    table = _table(None)
    unembed = np.ascontiguousarray(table.T)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["hidden"]),
             helper.make_node("MatMul", ["hidden", "unembed"], ["logits"])]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", table.shape[0]])
    return _token_model(path, nodes, [out], {"table": table, "unembed": unembed})


def embed_like_the_model(text: str) -> Any:
    """What the pooled embedder answers for ``text``, computed in numpy: the mean of its tokens' rows."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_str(_tokenizer_json(MAX_TOKENS)).encode(text).ids
    return _table(None)[ids].mean(axis=0)


@functools.cache
def _table(vocab: int | None) -> Any:
    """The embedding table: per word, its smoothed log share of each label's training texts (what
    makes the pooled vectors separate the topics, as a trained encoder's would), then seeded noise."""
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(_tokenizer_json(MAX_TOKENS))
    size = vocab or tokenizer.get_vocab_size()
    counts = np.ones((size, len(TICKET_LABELS)))
    for text, label in ticket_rows():
        for token in tokenizer.encode(text).ids:
            if token < size:
                counts[token, TICKET_LABELS.index(label)] += 1
    topical = np.log(counts / counts.sum(axis=1, keepdims=True))
    noise = np.random.default_rng(0).standard_normal((size, DIM - len(TICKET_LABELS))) * 0.1
    table = np.hstack([topical, noise]).astype(np.float32)
    table.flags.writeable = False
    return table


def _pooled_nodes() -> list[Any]:
    """``hidden`` [batch, seq, DIM] mean-pooled over ``attention_mask`` into ``sentence_embedding``."""
    return [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask_3d"]),
        helper.make_node("Mul", ["hidden", "mask_3d"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask_3d", "seq_axis"], ["counts"], keepdims=0),
        helper.make_node("Max", ["counts", "one"], ["safe_counts"]),
        helper.make_node("Div", ["summed", "safe_counts"], ["sentence_embedding"]),
    ]


def _token_model(
    path: Path, nodes: list[Any], outputs: list[Any], weights: Mapping[str, Any],
    inputs: Sequence[str] = ("input_ids", "attention_mask"),
) -> Path:
    """A model with ``inputs`` int64 [batch, seq] (both axes dynamic, as ``torch.onnx.export`` with
    ``dynamic_axes`` writes them), the graph ``nodes`` and ``weights``."""
    import numpy as np
    from onnx import numpy_helper

    constants = {"last_axis": np.array([-1], dtype=np.int64), "seq_axis": np.array([1], dtype=np.int64),
                 "one": np.array(1.0, dtype=np.float32), **weights}
    values = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"]) for name in inputs]
    used = {name for node in nodes for name in node.input}
    initializers = [numpy_helper.from_array(np.asarray(value), name) for name, value in constants.items() if name in used]
    graph = helper.make_graph(nodes, "token-model", values, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pytorch",
                              producer_version="2.9.0")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
