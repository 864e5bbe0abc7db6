"""The token-id contracts: an ONNX model fed a tokenizer's ids, checked at registration and fed and
read the same way by the provider.

They are a second kind of model beside ``onnx_model``'s text classifier, with a second file (the
tokenizer) that is part of the version, so they live apart: ``onnx_model.inspect_onnx`` hands a
graph with an ``input_ids`` input here, and ``providers/onnx.py`` reads :class:`TokenIds` back to
serve one (docs/custom-models.md).

**Token ids in** (what ``torch.onnx.export`` writes for a BERT-style model): an ``input_ids``
``tensor(int64)[batch, seq]`` input, optionally ``attention_mask`` and ``token_type_ids`` of the
same shape, both axes dynamic, and a Hugging Face ``tokenizer.json`` beside it. A float ``logits``
``[batch, n_labels]`` output makes a **token-id classifier** (its labels given in the logits'
column order: the file does not carry them); any other float output ``[batch, dim]`` (pooled) or
``[batch, seq, dim]`` (mean-pooled over the attention mask) makes a **token-id embedder**. A
``logits`` ``[batch, seq, vocab]`` output is a causal LM: refused (llama.cpp serves those, as GGUF).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import UserError
from registry.providers.gguf_file import sha256_of
from registry.providers.onnx_graph import (
    DOCS,
    FLOAT,
    INT64,
    SAMPLE_TEXT,
    describe,
    dims_of,
    element_type,
    fed_inputs,
    first_line,
    ort_reason,
    quiet_options,
    rank_of,
)

if TYPE_CHECKING:  # onnx and tokenizers are imported when a model is inspected, not with the catalog
    from onnx import GraphProto, ValueInfoProto
    from tokenizers import Tokenizer

TOKEN_CLASSIFIER = "token-classifier"
TOKEN_EMBEDDER = "token-embedder"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Float outputs an embedder is read from when it has several, best first (sentence-transformers and
# optimum names); a model with one float output is read from that one.
EMBEDDING_OUTPUTS = ("sentence_embedding", "embeddings", "last_hidden_state")


@dataclass(frozen=True)
class TokenIds:
    """How a token-id model is fed and read: its optional inputs, the output read, how it is pooled,
    the most tokens one text may have, and the tokenizer (path and sha256) that makes its ids.

    The version refers to the user's tokenizer file and records its sha256, and the provider refuses
    to load when the file no longer has it (``gguf_file.verify_recorded``), exactly as for the .onnx file
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


def inspect_token_model(
    path: Path, graph: GraphProto, tokenizer: Path | None, labels: Sequence[str] | None
) -> tuple[str, tuple[str, ...], TokenIds]:
    """A model fed token ids: its inputs and output checked, then its tokenizer loaded and both run
    together once, at the longest input and with the tokenizer's highest id. Returns its contract
    (:data:`TOKEN_CLASSIFIER` or :data:`TOKEN_EMBEDDER`), its labels and how it is fed and read."""
    inputs = _token_inputs(path, graph)
    output, contract = _token_output(path, graph)
    if tokenizer is None:
        raise UserError(f"{path} takes token ids, so arbiter needs its tokenizer: pass --tokenizer tokenizer.json "
                        "(the Hugging Face tokenizers file saved with the model)")
    given = _token_labels(path, contract, labels)
    loaded, max_tokens = load_tokenizer(tokenizer)
    rank = rank_of(output)
    contract_ids = TokenIds(
        attention_mask="attention_mask" if "attention_mask" in inputs else None,
        token_type_ids="token_type_ids" if "token_type_ids" in inputs else None, output=output.name,
        pooling="mean" if rank == 3 else "model", width=0, max_tokens=max_tokens, tokenizer=tokenizer.resolve(),
        tokenizer_sha256=sha256_of(tokenizer),
    )
    width = _run_tokens(path, contract_ids, loaded, given)
    return contract, given, replace(contract_ids, width=width)


def _token_inputs(path: Path, graph: GraphProto) -> frozenset[str]:
    """``input_ids`` and the optional mask and type ids: each int64 ``[batch, seq]`` with both axes
    dynamic (a fixed axis would make every text the same length), and nothing else."""
    inputs = fed_inputs(graph)
    wrong = [value for value in inputs
             if value.name not in TOKEN_INPUTS or element_type(value) != INT64 or rank_of(value) != 2]
    if wrong:
        raise UserError(
            f"{path}: unsupported contract: inputs {', '.join(map(describe, inputs))}; a token-id model takes "
            f"{', '.join(TOKEN_INPUTS[:2])} (and optionally {TOKEN_INPUTS[2]}), each tensor(int64)[batch, seq] ({DOCS})"
        )
    fixed = [value for value in inputs if any(dim != "?" for dim in dims_of(value))]
    if fixed:
        raise UserError(
            f"{path}: its input {describe(fixed[0])} has a fixed batch or sequence axis; export it again with "
            "dynamic_axes={'input_ids': {0: 'batch', 1: 'sequence'}, …} for every input"
        )
    return frozenset(value.name for value in inputs)


def _token_output(path: Path, graph: GraphProto) -> tuple[ValueInfoProto, str]:
    """The output read and the contract it makes: ``logits`` [batch, n] a classifier, another float
    output [batch, dim] or [batch, seq, dim] an embedder; ``logits`` [batch, seq, vocab] refused."""
    floats = [value for value in graph.output if element_type(value) == FLOAT and rank_of(value) in (2, 3)]
    logits = next((value for value in floats if value.name == "logits"), None)
    if logits is not None and rank_of(logits) == 3:
        raise UserError(
            f"{path}: its logits are {describe(logits)}, one row per token: a causal language model, which arbiter "
            "serves as GGUF under llama.cpp (convert it with llama.cpp's convert_hf_to_gguf.py and register the .gguf)"
        )
    if logits is not None:
        return logits, TOKEN_CLASSIFIER
    named = [value for name in EMBEDDING_OUTPUTS for value in floats if value.name == name]
    if named or len(floats) == 1:
        return (named or floats)[0], TOKEN_EMBEDDER
    raise UserError(
        f"{path}: unsupported contract: outputs {', '.join(map(describe, graph.output)) or 'none'}; a token-id model "
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
        raise UserError(f"{path}: not a tokenizer ({first_line(exc)}); pass the tokenizer.json saved with the model "
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
        session = onnxruntime.InferenceSession(str(path), quiet_options(), providers=["CPUExecutionProvider"])
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
