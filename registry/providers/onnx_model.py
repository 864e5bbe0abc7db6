"""Read what an ONNX file says about itself, and refuse one arbiter could never serve.

Registration is the one place a bad model can be stopped cheaply: a version is immutable, so a file
that is not ONNX, is cut short, needs an opset this onnxruntime lacks, or does not meet the one
contract the provider serves would otherwise sit in the catalog and fail at its first request. So
each step a served model goes through is done once here: ``onnx.load``, the ONNX checker, the
opsets against the range this onnxruntime runs (probed from onnxruntime itself, not a table that
drifts with upgrades), the contract, and a real CPU ``InferenceSession`` that classifies one text.

The contract (docs/custom-models.md), a **text classifier**: one ``tensor(string)`` input shaped
``[N, 1]`` or ``[N]``; an output ``tensor(string)`` or ``tensor(int64)`` holding each row's label;
an output ``tensor(float)`` ``[N, n_labels]`` of scores; the labels, in the scores' column order,
from the classifier node's ``classlabels_strings`` (or its integer labels, as strings). This is
what skl2onnx writes for a scikit-learn classifier converted with ``options={id(clf): {"zipmap": False}}``.

Example::

    info = inspect_onnx(Path("ticket-topic.onnx"))
    info.labels        # ('account', 'billing', 'shipping', 'technical')
    info.provenance()  # {'onnx_contract': 'text-classifier', 'onnx_input': 'text', …}
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import ModelFileError, UserError

if TYPE_CHECKING:  # onnx and onnxruntime are imported when a model is inspected, not with the catalog
    import onnxruntime
    from onnx import GraphProto, ModelProto, ValueInfoProto

CONTRACT = "text-classifier"
# onnxruntime's working set for a small classifier (session, arena, string tensors) above the file.
RUNTIME_OVERHEAD_MB = 64
# onnxruntime's own floor: it "only *guarantees* support for models stamped with opset version 7 or
# above for opset domain 'ai.onnx'" (its load warning); below that it may load but not run.
ORT_MIN_OPSET = 7
DOCS = "docs/custom-models.md"
_STRING, _INT64, _FLOAT = 8, 7, 1  # onnx.TensorProto element types
_ORT_LOCATION = re.compile(r"[\w/.-]+\.(?:cc|cpp|h):\d+ onnxruntime::[^ ]*?(?:\((?:[^()]|\([^()]*\))*\))?(?:::<lambda\(\)>)? ")


@dataclass(frozen=True)
class OnnxInfo:
    """What registration records about a text classifier: where its text goes in, where its
    label and scores come out, its labels, and what made it."""

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

    def provenance(self) -> dict[str, str]:
        """The version's ``onnx_*`` and ``exporter*`` provenance entries (all strings, as tags are)."""
        return {
            "onnx_contract": self.contract,
            "onnx_input": self.input_name,
            "onnx_label_output": self.label_output,
            "onnx_scores_output": self.scores_output,
            "onnx_opset": str(self.opset),
            "onnx_ml_opset": "" if self.ml_opset is None else str(self.ml_opset),
            "exporter": self.exporter,
            "exporter_version": self.exporter_version,
        }

    def min_memory_mb(self) -> int:
        """RAM to load it: the file plus onnxruntime's working set."""
        return self.size_bytes // (1024 * 1024) + RUNTIME_OVERHEAD_MB


def inspect_onnx(path: Path) -> OnnxInfo:
    """Validate an ONNX file as a servable text classifier and describe it; a one-line
    :class:`UserError` (a :class:`ModelFileError` for the file itself) for anything wrong."""
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
        raise ModelFileError(f"{path}: not an ONNX model ({_first_line(exc)}); is it whole? export or copy it again") from None
    if not model.HasField("graph") or model.ir_version == 0:
        raise ModelFileError(f"{path}: not an ONNX model (no graph or IR version in it); export the model again")
    opset, ml_opset = _check_opsets(path, model)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, onnx.shape_inference.InferenceError
        raise ModelFileError(f"{path}: not a valid ONNX model (onnx checker: {_first_line(exc)}); export it again") from None
    input_name, label_output, scores_output = _contract(path, model.graph)
    labels = _labels(path, model.graph)
    _run_once(path, input_name, label_output, scores_output, labels)
    return OnnxInfo(
        contract=CONTRACT, input_name=input_name.name, label_output=label_output.name,
        scores_output=scores_output.name, labels=labels, opset=opset, ml_opset=ml_opset,
        exporter=model.producer_name or "unknown", exporter_version=model.producer_version or "unknown",
        size_bytes=size,
    )


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
        onnxruntime.InferenceSession(model.SerializeToString(), _quiet_options(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own Fail/InvalidGraph types
        return False
    return True


# --- the contract ----------------------------------------------------------------------------


def _contract(path: Path, graph: GraphProto) -> tuple[ValueInfoProto, ValueInfoProto, ValueInfoProto]:
    """The string input, the label output and the scores output, or the one-line refusal."""
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    labels = [o for o in graph.output if _tensor(o) in (_STRING, _INT64) and _rank(o) in (1, 2)]
    scores = [o for o in graph.output if _tensor(o) == _FLOAT and _rank(o) == 2]
    text_ok = (len(inputs) == 1 and _tensor(inputs[0]) == _STRING
               and (_rank(inputs[0]) == 1 or (_rank(inputs[0]) == 2 and _dims(inputs[0])[1] in ("1", "?"))))
    if text_ok and len(labels) == 1 and len(scores) == 1:
        return inputs[0], labels[0], scores[0]
    described = (f"inputs {', '.join(map(_describe, inputs)) or 'none'}; "
                 f"outputs {', '.join(map(_describe, graph.output)) or 'none'}")
    hint = ""
    if text_ok and len(labels) == 1 and any(o.type.HasField("sequence_type") for o in graph.output):
        hint = " (its scores are a ZipMap: convert with skl2onnx options={id(classifier): {'zipmap': False}})"
    raise UserError(
        f"{path}: unsupported contract: {described}; arbiter serves text classifiers: one string input → "
        f"label + scores ({DOCS}){hint}"
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

    shape = (1,) if _rank(text_input) == 1 else (1, 1)
    try:
        session = onnxruntime.InferenceSession(str(path), _quiet_options(), providers=["CPUExecutionProvider"])
        label, scores = session.run([label_output.name, scores_output.name],
                                    {text_input.name: np.full(shape, "arbiter checks this model", dtype=object)})
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


def ort_reason(exc: Exception) -> str:
    """onnxruntime's message on one line, without its error-code prefix and C++ source location."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc).strip())
    return " ".join(_ORT_LOCATION.sub("", text).split())


def _quiet_options() -> onnxruntime.SessionOptions:
    """Session options that keep onnxruntime from printing its own copy of an error we raise."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # fatal only
    return options


# --- describing types ------------------------------------------------------------------------


def _tensor(value: ValueInfoProto) -> int | None:
    """The element type of a tensor value, None for a sequence, map or other type."""
    return value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else None


def _rank(value: ValueInfoProto) -> int | None:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    return len(value.type.tensor_type.shape.dim)


def _dims(value: ValueInfoProto) -> list[str]:
    return [str(dim.dim_value) if dim.HasField("dim_value") else "?" for dim in value.type.tensor_type.shape.dim]


def _describe(value: ValueInfoProto) -> str:
    """``name: tensor(float)[?, 3]`` — how an error names an input or output."""
    from onnx import TensorProto

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return f"{value.name}: {kind.removesuffix('_type') if kind else 'untyped'}"
    element = TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()
    shape = f"[{', '.join(_dims(value))}]" if _rank(value) is not None else ""
    return f"{value.name}: tensor({element}){shape}"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
