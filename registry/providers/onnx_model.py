"""Read what an ONNX file says about itself, and refuse one arbiter could never serve.

Registration is the one place a bad model can be stopped cheaply: a version is immutable, so a file
that is not ONNX, is cut short, needs an opset this onnxruntime lacks, or does not meet a contract
the provider serves would otherwise sit in the catalog and fail at its first request. So each step a
served model goes through is done once here: ``onnx.load``, the ONNX checker, the opsets against the
range this onnxruntime runs (probed from onnxruntime itself, not a table that drifts with upgrades),
the contract, and a real CPU ``InferenceSession`` that answers once.

This module does the checks every model gets and the **text classifier** contract
(docs/custom-models.md): one ``tensor(string)`` input shaped ``[N, 1]`` or ``[N]``; an output
``tensor(string)`` or ``tensor(int64)`` holding each row's label; an output ``tensor(float)``
``[N, n_labels]`` of scores; the labels, in the scores' column order, from the classifier node's
``classlabels_strings`` (or its integer labels, as strings). This is what skl2onnx writes for a
scikit-learn classifier converted with ``options={id(clf): {"zipmap": False}}``. A model with an
``input_ids`` input is a token-id classifier or embedder, checked by ``onnx_tokens``.

Example::

    info = inspect_onnx(Path("ticket-topic.onnx"))
    info.labels        # ('account', 'billing', 'shipping', 'technical')
    info.provenance()  # {'onnx_contract': 'text-classifier', 'onnx_input': 'text', …}
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import ModelFileError, UserError
from registry.providers.onnx_graph import (
    DOCS,
    FLOAT,
    INT64,
    SAMPLE_TEXT,
    STRING,
    describe,
    dims_of,
    element_type,
    fed_inputs,
    first_line,
    ort_reason,
    quiet_options,
    rank_of,
)
from registry.providers.onnx_tokens import TOKEN_EMBEDDER, TokenIds, inspect_token_model

if TYPE_CHECKING:  # onnx is imported when a model is inspected, not with the catalog
    from onnx import GraphProto, ModelProto, ValueInfoProto

CONTRACT = "text-classifier"
# onnxruntime's working set for a small classifier (session, arena, string tensors) above the file.
RUNTIME_OVERHEAD_MB = 64
# onnxruntime's own floor: it "only *guarantees* support for models stamped with opset version 7 or
# above for opset domain 'ai.onnx'" (its load warning); below that it may load but not run.
ORT_MIN_OPSET = 7


@dataclass(frozen=True)
class OnnxInfo:
    """What registration records about a model: its contract, where its input goes in, where its
    label and scores (or logits, or vectors) come out, its labels, and what made it."""

    contract: str
    input_name: str
    label_output: str
    scores_output: str
    labels: tuple[str, ...]
    opset: int
    ml_opset: int | None
    exporter: str
    exporter_version: str
    size_bytes: int
    token_ids: TokenIds | None = None  # a token-id model's, None for a text classifier

    def provenance(self) -> dict[str, str]:
        """The version's ``onnx_*``, ``tokenizer*`` and ``exporter*`` provenance entries (all strings, as tags are)."""
        outputs = ({"onnx_label_output": self.label_output, "onnx_scores_output": self.scores_output}
                   if self.token_ids is None else self.token_ids.provenance())
        return {
            "onnx_contract": self.contract,
            "onnx_input": self.input_name,
            **outputs,
            "onnx_opset": str(self.opset),
            "onnx_ml_opset": "" if self.ml_opset is None else str(self.ml_opset),
            "exporter": self.exporter,
            "exporter_version": self.exporter_version,
        }

    @property
    def capabilities(self) -> tuple[str, ...]:
        return ("embedding",) if self.contract == TOKEN_EMBEDDER else ("classification",)

    def min_memory_mb(self) -> int:
        """RAM to load it: the file plus onnxruntime's working set."""
        return self.size_bytes // (1024 * 1024) + RUNTIME_OVERHEAD_MB


def inspect_onnx(path: Path, *, tokenizer: Path | None = None, labels: Sequence[str] | None = None) -> OnnxInfo:
    """Validate an ONNX file as a servable model of one of the contracts and describe it; a one-line
    :class:`UserError` (a :class:`ModelFileError` for the file itself) for anything wrong.
    ``tokenizer`` and ``labels`` (in the logits' order) are a token-id model's; a text classifier's
    labels are in the file, and :meth:`Catalog.register_onnx` compares them with the given ones."""
    import onnx

    if not path.is_file():
        what = "not a file" if path.exists() else "no such file"
        raise ModelFileError(f"{path}: {what}; pass the path of an .onnx file")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{path}: not an ONNX model (the file is empty); export the model again")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError, a missing external-data file, …
        raise ModelFileError(f"{path}: not an ONNX model ({first_line(exc)}); is it whole? export or copy it again") from None
    if not model.HasField("graph") or model.ir_version == 0:
        raise ModelFileError(f"{path}: not an ONNX model (no graph or IR version in it); export the model again")
    opset, ml_opset = _check_opsets(path, model)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, onnx.shape_inference.InferenceError
        raise ModelFileError(f"{path}: not a valid ONNX model (onnx checker: {first_line(exc)}); export it again") from None
    made = {"opset": opset, "ml_opset": ml_opset, "exporter": model.producer_name or "unknown",
            "exporter_version": model.producer_version or "unknown", "size_bytes": size}
    if any(value.name == "input_ids" for value in model.graph.input):
        contract, given, token_ids = inspect_token_model(path, model.graph, tokenizer, labels)
        return OnnxInfo(contract=contract, input_name="input_ids", label_output="", scores_output="", labels=given,
                        token_ids=token_ids, **made)
    if tokenizer is not None:
        raise UserError(f"{path} reads text (no input_ids input); --tokenizer is for models that take token ids: "
                        "leave it out")
    input_name, label_output, scores_output = _contract(path, model.graph)
    file_labels = _labels(path, model.graph)
    _run_once(path, input_name, label_output, scores_output, file_labels)
    return OnnxInfo(contract=CONTRACT, input_name=input_name.name, label_output=label_output.name,
                    scores_output=scores_output.name, labels=file_labels, **made)


# --- opsets ----------------------------------------------------------------------------------


def _check_opsets(path: Path, model: ModelProto) -> tuple[int, int | None]:
    """The model's ai.onnx and ai.onnx.ml opsets, refused outside what this onnxruntime runs."""
    imports = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    opset, ml_opset = imports.get("ai.onnx"), imports.get("ai.onnx.ml")
    top, ml_top = ort_opset_range()
    wrong = []
    if opset is not None and not ORT_MIN_OPSET <= opset <= top:
        wrong.append(f"ai.onnx opset {opset}")
    if ml_opset is not None and not 1 <= ml_opset <= ml_top:
        wrong.append(f"ai.onnx.ml opset {ml_opset}")
    if wrong:
        import onnxruntime

        raise UserError(
            f"{path}: unsupported {' and '.join(wrong)}; onnxruntime {onnxruntime.__version__} here runs ai.onnx "
            f"opsets {ORT_MIN_OPSET}-{top} and ai.onnx.ml 1-{ml_top}: export it again with a target opset in that range"
        )
    if opset is None:
        raise UserError(f"{path}: imports no ai.onnx opset; export it again with a target opset")
    return opset, ml_opset


@functools.cache
def ort_opset_range() -> tuple[int, int]:
    """The highest ai.onnx and ai.onnx.ml opsets this onnxruntime builds a session for.

    onnxruntime registers schemas of opsets still under development (which it then refuses to
    load), so its schema list overstates; instead a one-node model is stamped with each opset
    from onnx's newest down until onnxruntime accepts it (a few ms, once per process)."""
    import onnx

    newest = onnx.helper.VERSION_TABLE[-1]  # (release, IR, ai.onnx, ai.onnx.ml, training)
    top = next(v for v in range(newest[2], 0, -1) if _ort_accepts([("", v)]))
    ml_top = next(v for v in range(newest[3], 0, -1) if _ort_accepts([("", top), ("ai.onnx.ml", v)]))
    return top, ml_top


def _ort_accepts(opsets: list[tuple[str, int]]) -> bool:
    import onnxruntime
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 7  # every onnxruntime that runs opset 12+ reads IR 7
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), quiet_options(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own Fail/InvalidGraph types
        return False
    return True


# --- the contract ----------------------------------------------------------------------------


def _contract(path: Path, graph: GraphProto) -> tuple[ValueInfoProto, ValueInfoProto, ValueInfoProto]:
    """The string input, the label output and the scores output, or the one-line refusal."""
    inputs = fed_inputs(graph)
    labels = [o for o in graph.output if element_type(o) in (STRING, INT64) and rank_of(o) in (1, 2)]
    scores = [o for o in graph.output if element_type(o) == FLOAT and rank_of(o) == 2]
    text_ok = (len(inputs) == 1 and element_type(inputs[0]) == STRING
               and (rank_of(inputs[0]) == 1 or (rank_of(inputs[0]) == 2 and dims_of(inputs[0])[1] in ("1", "?"))))
    if text_ok and len(labels) == 1 and len(scores) == 1:
        return inputs[0], labels[0], scores[0]
    described = (f"inputs {', '.join(map(describe, inputs)) or 'none'}; "
                 f"outputs {', '.join(map(describe, graph.output)) or 'none'}")
    hint = ""
    if text_ok and len(labels) == 1 and any(o.type.HasField("sequence_type") for o in graph.output):
        hint = " (its scores are a ZipMap: convert with skl2onnx options={id(classifier): {'zipmap': False}})"
    raise UserError(
        f"{path}: unsupported contract: {described}; arbiter serves text classifiers: one string input → "
        f"label + scores, and token ids (input_ids) → logits or embeddings ({DOCS}){hint}"
    )


def _labels(path: Path, graph: GraphProto) -> tuple[str, ...]:
    """The classifier node's labels, in its scores' column order."""
    found = set()
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings":
                found.add(tuple(value.decode() for value in attribute.strings))
            elif attribute.name in ("classlabels_ints", "classlabels_int64s"):
                found.add(tuple(str(value) for value in attribute.ints))
    if len(found) != 1:
        why = "no classifier node with classlabels_strings" if not found else "classifier nodes with different labels"
        raise UserError(
            f"{path}: {why} (ai.onnx.ml), so its labels are unknown; arbiter reads a classifier's labels "
            f"from that attribute, as skl2onnx writes it ({DOCS})"
        )
    labels = found.pop()
    if len(labels) < 2 or len(set(labels)) != len(labels) or not all(label.strip() for label in labels):
        raise UserError(f"{path}: its labels {list(labels)} are not two or more distinct non-blank labels")
    return labels


def _run_once(
    path: Path, text_input: ValueInfoProto, label_output: ValueInfoProto, scores_output: ValueInfoProto,
    labels: tuple[str, ...],
) -> None:
    """Build the CPU session the provider will build and classify one text, so a model that
    cannot load or run here is refused with onnxruntime's own reason."""
    import numpy as np
    import onnxruntime

    shape = (1,) if rank_of(text_input) == 1 else (1, 1)
    try:
        session = onnxruntime.InferenceSession(str(path), quiet_options(), providers=["CPUExecutionProvider"])
        label, scores = session.run([label_output.name, scores_output.name],
                                    {text_input.name: np.full(shape, SAMPLE_TEXT, dtype=object)})
    except Exception as exc:  # onnxruntime's Fail, InvalidGraph, NotImplemented, RuntimeException …
        reason = ort_reason(exc)
        hint = ("; export the TfidfVectorizer with skl2onnx options={id(vectorizer): {'locale': 'C.UTF-8'}}"
                if "locale" in reason else "")
        raise UserError(f"{path}: onnxruntime cannot run it here: {reason}{hint}") from None
    if np.shape(scores) != (1, len(labels)) or str(np.ravel(label)[0]) not in labels:
        raise UserError(
            f"{path}: unsupported contract: for one text it returned label {np.ravel(label).tolist()} and scores of "
            f"shape {list(np.shape(scores))}, not one of its {len(labels)} labels and [1, {len(labels)}] ({DOCS})"
        )
