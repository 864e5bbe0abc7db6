"""What reading any ONNX model needs, whichever contract it meets: shared by ``onnx_model`` (the
common checks and the text classifier) and ``onnx_tokens`` (the token-id contracts), so both import
it and neither imports the other for its helpers.

It holds how a graph's inputs and outputs are typed and named in an error (``name:
tensor(float)[?, 3]``), onnxruntime's messages on one line without its C++ source locations, and
session options that keep onnxruntime from printing a second copy of an error arbiter raises.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx and onnxruntime are imported when a model is inspected, not with the catalog
    import onnxruntime
    from onnx import GraphProto, ValueInfoProto

DOCS = "docs/custom-models.md"
SAMPLE_TEXT = "arbiter checks this model"
STRING, INT64, FLOAT = 8, 7, 1  # onnx.TensorProto element types
_ORT_LOCATION = re.compile(r"[\w/.-]+\.(?:cc|cpp|h):\d+ onnxruntime::[^ ]*?(?:\((?:[^()]|\([^()]*\))*\))?(?:::<lambda\(\)>)? ")


def fed_inputs(graph: GraphProto) -> list[ValueInfoProto]:
    """The inputs a caller feeds: the graph's inputs less those an initializer gives a value."""
    initializers = {tensor.name for tensor in graph.initializer}
    return [value for value in graph.input if value.name not in initializers]


def element_type(value: ValueInfoProto) -> int | None:
    """The element type of a tensor value, None for a sequence, map or other type."""
    return value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else None


def rank_of(value: ValueInfoProto) -> int | None:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    return len(value.type.tensor_type.shape.dim)


def dims_of(value: ValueInfoProto) -> list[str]:
    return [str(dim.dim_value) if dim.HasField("dim_value") else "?" for dim in value.type.tensor_type.shape.dim]


def describe(value: ValueInfoProto) -> str:
    """``name: tensor(float)[?, 3]`` — how an error names an input or output."""
    from onnx import TensorProto

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return f"{value.name}: {kind.removesuffix('_type') if kind else 'untyped'}"
    element = TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()
    shape = f"[{', '.join(dims_of(value))}]" if rank_of(value) is not None else ""
    return f"{value.name}: tensor({element}){shape}"


def first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def ort_reason(exc: Exception) -> str:
    """onnxruntime's message on one line, without its error-code prefix and C++ source location."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc).strip())
    return " ".join(_ORT_LOCATION.sub("", text).split())


def quiet_options() -> onnxruntime.SessionOptions:
    """Session options that keep onnxruntime from printing its own copy of an error we raise."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # fatal only
    return options
