"""Read what an ONNX file says about itself, and refuse one arbiter could never serve.

Registration is the one place a bad model can be stopped cheaply: a version is immutable, so a file
that is not ONNX, is cut short, needs an opset this onnxruntime lacks, or does not meet the one
contract the provider serves would otherwise sit in the catalog and fail at its first request. So
each step a served model goes through is done once here: ``onnx.load``, the ONNX checker, the
opsets against the range this onnxruntime runs (probed from onnxruntime itself, not a table that
drifts with upgrades), the contract, and a real CPU ``InferenceSession`` that classifies one text.

The contracts (docs/custom-models.md):

- a **text classifier**: one ``tensor(string)`` input shaped ``[N, 1]`` or ``[N]``; an output
  ``tensor(string)`` or ``tensor(int64)`` holding each row's label; an output ``tensor(float)``
  ``[N, n_labels]`` of scores; the labels, in the scores' column order, from the classifier node's
  ``classlabels_strings`` (or its integer labels, as strings). This is what skl2onnx writes for a
  scikit-learn classifier converted with ``options={id(clf): {"zipmap": False}}``.
- **token ids in** (what ``torch.onnx.export`` writes for a BERT-style model): an ``input_ids``
  ``tensor(int64)[batch, seq]`` input, optionally ``attention_mask`` and ``token_type_ids`` of the
  same shape, both axes dynamic, and a Hugging Face ``tokenizer.json`` beside it. A float ``logits``
  ``[batch, n_labels]`` output makes a **token-id classifier** (its labels given in the logits'
  column order: the file does not carry them); any other float output ``[batch, dim]`` (pooled) or
  ``[batch, seq, dim]`` (mean-pooled over the attention mask) makes a **token-id embedder**. A
  ``logits`` ``[batch, seq, vocab]`` output is a causal LM: refused (llama.cpp serves those, as GGUF).

Example::

    info = inspect_onnx(Path("ticket-topic.onnx"))
    info.labels        # ('account', 'billing', 'shipping', 'technical')
    info.provenance()  # {'onnx_contract': 'text-classifier', 'onnx_input': 'text', …}
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import IntegrityError, ModelFileError, UserError
from registry.providers.gguf_file import sha256_of

if TYPE_CHECKING:  # onnx, onnxruntime and tokenizers are imported when a model is inspected, not with the catalog
    import onnxruntime
    from onnx import GraphProto, ModelProto, ValueInfoProto
    from tokenizers import Tokenizer

CONTRACT = "text-classifier"
TOKEN_CLASSIFIER = "token-classifier"
TOKEN_EMBEDDER = "token-embedder"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Float outputs an embedder is read from when it has several, best first (sentence-transformers and
# optimum names); a model with one float output is read from that one.
EMBEDDING_OUTPUTS = ("sentence_embedding", "embeddings", "last_hidden_state")
SAMPLE_TEXT = "arbiter checks this model"
# onnxruntime's working set for a small classifier (session, arena, string tensors) above the file.
RUNTIME_OVERHEAD_MB = 64
# onnxruntime's own floor: it "only *guarantees* support for models stamped with opset version 7 or
# above for opset domain 'ai.onnx'" (its load warning); below that it may load but not run.
ORT_MIN_OPSET = 7
DOCS = "docs/custom-models.md"
_STRING, _INT64, _FLOAT = 8, 7, 1  # onnx.TensorProto element types
_ORT_LOCATION = re.compile(r"[\w/.-]+\.(?:cc|cpp|h):\d+ onnxruntime::[^ ]*?(?:\((?:[^()]|\([^()]*\))*\))?(?:::<lambda\(\)>)? ")


@dataclass(frozen=True)
class TokenIds:
    """How a token-id model is fed and read: its optional inputs, the output read, how it is pooled,
    the most tokens one text may have, and the tokenizer (path and sha256) that makes its ids.

    The version refers to the user's tokenizer file and records its sha256, and the provider refuses
    to load when the file no longer has it (:func:`verify_tokenizer`), exactly as for the .onnx file
    itself: the version's immutability is kept the same way for both of its files, and arbiter keeps
    no second copy of a user's files in its home (a copy of the tokenizer alone would still leave the
    model's file where the user put it)."""

    attention_mask: str | None
    token_type_ids: str | None
    output: str
    pooling: str  # "model": the output is [N, width]; "mean": [N, seq, width], mean-pooled over the mask
    width: int  # n_labels of a classifier, dim of an embedder
    max_tokens: int
    tokenizer: Path
    tokenizer_sha256: str

    def provenance(self) -> dict[str, str]:
        return {
            "onnx_attention_mask": self.attention_mask or "", "onnx_token_type_ids": self.token_type_ids or "",
            "onnx_output": self.output, "onnx_pooling": self.pooling, "onnx_width": str(self.width),
            "onnx_max_tokens": str(self.max_tokens), "tokenizer": str(self.tokenizer),
            "tokenizer_sha256": self.tokenizer_sha256,
        }

    @classmethod
    def from_provenance(cls, provenance: dict[str, str]) -> TokenIds:
        """What :meth:`provenance` wrote, read back by the provider."""
        return cls(attention_mask=provenance["onnx_attention_mask"] or None,
                   token_type_ids=provenance["onnx_token_type_ids"] or None, output=provenance["onnx_output"],
                   pooling=provenance["onnx_pooling"], width=int(provenance["onnx_width"]),
                   max_tokens=int(provenance["onnx_max_tokens"]), tokenizer=Path(provenance["tokenizer"]),
                   tokenizer_sha256=provenance["tokenizer_sha256"])

    def feeds(self, rows: list[list[int]], masks: list[list[int]]) -> dict[str, Any]:
        """The session's inputs for rows of ids already padded to one length (pad positions masked 0)."""
        import numpy as np

        ids = np.asarray(rows, dtype=np.int64)
        feeds = {"input_ids": ids}
        if self.attention_mask:
            feeds[self.attention_mask] = np.asarray(masks, dtype=np.int64)
        if self.token_type_ids:
            feeds[self.token_type_ids] = np.zeros_like(ids)
        return feeds

    def pooled(self, output: Any, masks: list[list[int]]) -> Any:
        """One row per text: the output itself, or its token vectors averaged over the mask (the
        pooling sentence-transformers uses), so padding never moves a vector."""
        import numpy as np

        if self.pooling == "model":
            return np.asarray(output, dtype=np.float64)
        weights = np.asarray(masks, dtype=np.float64)[:, :, None]
        return (np.asarray(output, dtype=np.float64) * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)


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
        raise ModelFileError(f"{path}: not an ONNX model ({_first_line(exc)}); is it whole? export or copy it again") from None
    if not model.HasField("graph") or model.ir_version == 0:
        raise ModelFileError(f"{path}: not an ONNX model (no graph or IR version in it); export the model again")
    opset, ml_opset = _check_opsets(path, model)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, onnx.shape_inference.InferenceError
        raise ModelFileError(f"{path}: not a valid ONNX model (onnx checker: {_first_line(exc)}); export it again") from None
    made = {"opset": opset, "ml_opset": ml_opset, "exporter": model.producer_name or "unknown",
            "exporter_version": model.producer_version or "unknown", "size_bytes": size}
    if any(value.name == "input_ids" for value in model.graph.input):
        return _inspect_token_model(path, model.graph, tokenizer, labels, made)
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


# --- token ids in: a token-id classifier or embedder ------------------------------------------


def _inspect_token_model(
    path: Path, graph: GraphProto, tokenizer: Path | None, labels: Sequence[str] | None, made: dict[str, Any]
) -> OnnxInfo:
    """A model fed token ids: its inputs and output checked, then its tokenizer loaded and both run
    together once, at the longest input and with the tokenizer's highest id."""
    inputs = _token_inputs(path, graph)
    output, contract = _token_output(path, graph)
    if tokenizer is None:
        raise UserError(f"{path} takes token ids, so arbiter needs its tokenizer: pass --tokenizer tokenizer.json "
                        "(the Hugging Face tokenizers file saved with the model)")
    given = _token_labels(path, contract, labels)
    loaded, max_tokens = load_tokenizer(tokenizer)
    rank = _rank(output)
    contract_ids = TokenIds(
        attention_mask=inputs.get("attention_mask"), token_type_ids=inputs.get("token_type_ids"), output=output.name,
        pooling="mean" if rank == 3 else "model", width=0, max_tokens=max_tokens, tokenizer=tokenizer.resolve(),
        tokenizer_sha256=sha256_of(tokenizer),
    )
    width = _run_tokens(path, contract_ids, loaded, given)
    return OnnxInfo(contract=contract, input_name="input_ids", label_output="", scores_output="", labels=given,
                    token_ids=replace(contract_ids, width=width), **made)


def _token_inputs(path: Path, graph: GraphProto) -> dict[str, str]:
    """``input_ids`` and the optional mask and type ids: each int64 ``[batch, seq]`` with both axes
    dynamic (a fixed axis would make every text the same length), and nothing else."""
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    wrong = [value for value in inputs if value.name not in TOKEN_INPUTS or _tensor(value) != _INT64 or _rank(value) != 2]
    if wrong:
        raise UserError(
            f"{path}: unsupported contract: inputs {', '.join(map(_describe, inputs))}; a token-id model takes "
            f"{', '.join(TOKEN_INPUTS[:2])} (and optionally {TOKEN_INPUTS[2]}), each tensor(int64)[batch, seq] ({DOCS})"
        )
    fixed = [value for value in inputs if any(dim != "?" for dim in _dims(value))]
    if fixed:
        raise UserError(
            f"{path}: its input {_describe(fixed[0])} has a fixed batch or sequence axis; export it again with "
            "dynamic_axes={'input_ids': {0: 'batch', 1: 'sequence'}, …} for every input"
        )
    return {value.name: value.name for value in inputs}


def _token_output(path: Path, graph: GraphProto) -> tuple[ValueInfoProto, str]:
    """The output read and the contract it makes: ``logits`` [batch, n] a classifier, another float
    output [batch, dim] or [batch, seq, dim] an embedder; ``logits`` [batch, seq, vocab] refused."""
    floats = [value for value in graph.output if _tensor(value) == _FLOAT and _rank(value) in (2, 3)]
    logits = next((value for value in floats if value.name == "logits"), None)
    if logits is not None and _rank(logits) == 3:
        raise UserError(
            f"{path}: its logits are {_describe(logits)}, one row per token: a causal language model, which arbiter "
            "serves as GGUF under llama.cpp (convert it with llama.cpp's convert_hf_to_gguf.py and register the .gguf)"
        )
    if logits is not None:
        return logits, TOKEN_CLASSIFIER
    named = [value for name in EMBEDDING_OUTPUTS for value in floats if value.name == name]
    if named or len(floats) == 1:
        return (named or floats)[0], TOKEN_EMBEDDER
    raise UserError(
        f"{path}: unsupported contract: outputs {', '.join(map(_describe, graph.output)) or 'none'}; a token-id model "
        f"answers a float 'logits' [batch, n_labels] (a classifier) or one float output [batch, dim] or "
        f"[batch, seq, dim] (an embedder; with several, name it one of {', '.join(EMBEDDING_OUTPUTS)}) ({DOCS})"
    )


def _token_labels(path: Path, contract: str, labels: Sequence[str] | None) -> tuple[str, ...]:
    """A classifier's labels as given (its logits carry no names, so their order is the user's to
    say); an embedder has none."""
    if contract == TOKEN_EMBEDDER:
        if labels:
            raise UserError(f"{path} is an embedder (no logits output); --labels is for classifiers: leave it out")
        return ()
    if not labels:
        raise UserError(f"{path} answers logits, whose columns carry no names: pass --labels a,b,c in the order "
                        "of the model's logits (its id2label)")
    return tuple(labels)


def load_tokenizer(path: Path) -> tuple[Tokenizer, int]:
    """A Hugging Face ``tokenizer.json`` and the most tokens one text may have (its truncation
    length), or the one-line reason it cannot serve. The returned tokenizer neither pads nor
    truncates: the provider pads a batch itself and decides what a text too long becomes."""
    from tokenizers import Tokenizer

    if not path.is_file():
        raise UserError(f"{path}: {'not a file' if path.exists() else 'no such file'}; pass the model's tokenizer.json")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for JSON and schema errors
        raise UserError(f"{path}: not a tokenizer ({_first_line(exc)}); pass the tokenizer.json saved with the model "
                        "(tokenizer.save('tokenizer.json'), or the one in a Hugging Face model folder)") from None
    max_tokens = (tokenizer.truncation or {}).get("max_length")
    if not max_tokens:
        raise UserError(f"{path}: sets no truncation length, so the most tokens the model takes is unknown; save it "
                        "with tokenizer.enable_truncation(max_length=N) (N: the model's, e.g. 512 for BERT)")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer, int(max_tokens)


def _run_tokens(path: Path, contract: TokenIds, tokenizer: Tokenizer, labels: tuple[str, ...]) -> int:
    """Run a batch of two rows as long as the model may be asked: a sample text (padded, masked)
    and the tokenizer's highest id throughout, so ids past the model's embedding table or positions
    past its own limit fail here, in onnxruntime's words. Returns the output's width."""
    import numpy as np
    import onnxruntime

    length = contract.max_tokens
    sample = tokenizer.encode(SAMPLE_TEXT).ids[:length]
    top = tokenizer.get_vocab_size(with_added_tokens=True) - 1
    rows = [sample + [0] * (length - len(sample)), [top] * length]
    masks = [[1] * len(sample) + [0] * (length - len(sample)), [1] * length]
    try:
        session = onnxruntime.InferenceSession(str(path), _quiet_options(), providers=["CPUExecutionProvider"])
        (output,) = session.run([contract.output], contract.feeds(rows, masks))
    except Exception as exc:  # onnxruntime's Fail, InvalidArgument (an id out of the table), …
        raise UserError(f"{path}: onnxruntime cannot run it on {contract.tokenizer.name}'s ids ({length} tokens, ids "
                        f"up to {top}): {ort_reason(exc)}; is it the model's own tokenizer?") from None
    shape = list(np.shape(output))
    expected = 3 if contract.pooling == "mean" else 2
    if len(shape) != expected or shape[0] != 2 or (expected == 3 and shape[1] != length) or shape[-1] < 1:
        raise UserError(f"{path}: unsupported contract: for 2 rows of {length} tokens its {contract.output} has shape "
                        f"{shape}, not [2, {'n' if labels else 'dim'}]{'' if expected == 2 else ' per token'} ({DOCS})")
    if labels and shape[-1] != len(labels):
        raise UserError(f"{path}: its logits have {shape[-1]} columns but --labels gives {len(labels)} "
                        f"({', '.join(labels)}); give one label per column, in the model's order")
    return int(shape[-1])


def verify_tokenizer(name: str, provenance: dict[str, str]) -> Path:
    """A token-id version's tokenizer file, refused when gone or changed since registration (the
    version is immutable: other ids would be other answers from the same version)."""
    contract = TokenIds.from_provenance(provenance)
    path = contract.tokenizer
    if not path.is_file():
        raise ModelFileError(f"{name}: its tokenizer {path} is gone; restore it or register the model again")
    actual = sha256_of(path)
    if actual != contract.tokenizer_sha256:
        raise IntegrityError(
            f"{name}: its tokenizer {path} changed since it was registered (sha256 {actual[:12]}… ≠ "
            f"{contract.tokenizer_sha256[:12]}…); a version is immutable: restore the original file or register "
            "the model with the new one as a new version"
        )
    return path


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
