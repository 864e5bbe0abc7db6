"""inspect_onnx on real ONNX files (trained and exported here, or built with onnx.helper, run in
onnxruntime): what a good text classifier, token-id classifier and embedder record, and the one-line
refusal of each file the issue's "Bad input" names."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx_models import (
    LABELS,
    MAX_TOKENS,
    TICKET_LABELS,
    causal_lm,
    float_regressor,
    random_bytes,
    text_classifier,
    ticket_tokenizer,
    token_classifier,
    token_embedder,
    truncated,
    unsupported_opset,
)

from registry.errors import ModelFileError, UserError
from registry.providers.gguf_file import sha256_of
from registry.providers.onnx_model import ORT_MIN_OPSET, inspect_onnx, ort_opset_range

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def good(files: Path) -> Path:
    return text_classifier(files / "ticket-topic.onnx")


def test_a_text_classifier_is_described_with_its_labels_and_exporter(good: Path) -> None:
    info = inspect_onnx(good)
    assert (info.contract, info.input_name, info.label_output, info.scores_output) == (
        "text-classifier", "text", "label", "probabilities")
    assert info.labels == tuple(sorted(LABELS))  # scikit-learn's classes_ order: the scores' columns
    assert (info.exporter, info.size_bytes) == ("skl2onnx", good.stat().st_size)
    model = onnx.load(str(good))
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    assert (info.opset, info.ml_opset) == (opsets[""], opsets["ai.onnx.ml"])
    assert info.exporter_version == model.producer_version
    assert info.provenance() == {
        "onnx_contract": "text-classifier", "onnx_input": "text", "onnx_label_output": "label",
        "onnx_scores_output": "probabilities", "onnx_opset": str(info.opset), "onnx_ml_opset": str(info.ml_opset),
        "exporter": "skl2onnx", "exporter_version": model.producer_version,
    }
    assert info.min_memory_mb() == 64  # a 4 KB file: onnxruntime's working set only


def test_integer_labels_are_read_as_strings(files: Path) -> None:
    info = inspect_onnx(text_classifier(files / "ints.onnx", int_labels=True))
    assert info.labels == ("0", "1", "2", "3")


def test_the_opset_range_is_what_this_onnxruntime_loads() -> None:
    top, ml_top = ort_opset_range()
    assert ORT_MIN_OPSET < top <= onnx.defs.onnx_opset_version() and ml_top >= 3


@pytest.mark.parametrize(
    ("build", "error", "says"),
    [
        (lambda folder, good: folder / "absent.onnx", ModelFileError, "no such file"),
        (lambda folder, good: folder, ModelFileError, "not a file; pass the path of an .onnx file"),
        (lambda folder, good: _write(folder / "empty.onnx", b""), ModelFileError, "not an ONNX model (the file is empty)"),
        (lambda folder, good: random_bytes(folder / "noise.onnx"), ModelFileError, "not an ONNX model ("),
        (lambda folder, good: _write(folder / "model.gguf.onnx", b"GGUF" + bytes(60)), ModelFileError, "not an ONNX model ("),
        (lambda folder, good: truncated(good, folder / "half.onnx"), ModelFileError, "is it whole?"),
        (lambda folder, good: truncated(good, folder / "most.onnx", 0.97), ModelFileError, "not an ONNX model ("),
        (lambda folder, good: unsupported_opset(folder / "opset99.onnx"), UserError, "unsupported ai.onnx opset 99;"),
        (lambda folder, good: unsupported_opset(folder / "opset5.onnx", 5), UserError, "unsupported ai.onnx opset 5;"),
        (lambda folder, good: float_regressor(folder / "regressor.onnx"), UserError,
         "unsupported contract: inputs x: tensor(float)[?, 3]; outputs y: tensor(float)[?, 3]; arbiter serves text "
         "classifiers: one string input → label + scores, and token ids (input_ids) → logits or embeddings "
         "(docs/custom-models.md)"),
        (lambda folder, good: text_classifier(folder / "en_US.onnx", locale=None), UserError,
         "onnxruntime cannot run it here: "),
    ],
    ids=["missing", "folder", "empty", "random-bytes", "other-format", "truncated", "truncated-tail", "opset-99", "opset-5",
         "float-contract", "unloadable"],
)
def test_bad_files_are_refused_in_one_line(files: Path, good: Path, build, error: type[Exception], says: str) -> None:
    path = build(files, good)
    with pytest.raises(error) as caught:
        inspect_onnx(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)) and says in message


def test_the_opset_error_states_the_supported_range(files: Path) -> None:
    top, ml_top = ort_opset_range()
    with pytest.raises(UserError, match=rf"runs ai.onnx opsets {ORT_MIN_OPSET}-{top} and ai.onnx.ml 1-{ml_top}: "):
        inspect_onnx(unsupported_opset(files / "opset-range.onnx"))


def test_a_missing_locale_names_the_export_option(files: Path) -> None:
    with pytest.raises(UserError, match=r"Failed to construct locale .*options=\{id\(vectorizer\): \{'locale': 'C.UTF-8'\}\}$"):
        inspect_onnx(text_classifier(files / "no-locale.onnx", locale=None))


def test_a_zipmap_export_is_refused_with_the_option_that_fixes_it(files: Path, good: Path) -> None:
    """skl2onnx's default wraps the scores in a ZipMap (a sequence of maps); the fix is zipmap=False."""
    from onnx import TensorProto, helper

    model = onnx.load(str(good))
    zipped = helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml",
                              classlabels_strings=sorted(LABELS))
    model.graph.node.append(zipped)
    scores = next(output for output in model.graph.output if output.name == "probabilities")
    model.graph.output.remove(scores)
    model.graph.output.append(helper.make_value_info(
        "output_probability",
        helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.STRING,
                                                                   helper.make_tensor_type_proto(TensorProto.FLOAT, []))),
    ))
    path = files / "zipmap.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UserError, match=r"output_probability: sequence; .*\{'zipmap': False\}\}\)$"):
        inspect_onnx(path)


def test_a_model_without_labels_is_refused(files: Path, good: Path) -> None:
    model = onnx.load(str(good))
    for node in model.graph.node:
        kept = [a for a in node.attribute if a.name != "classlabels_strings"]
        del node.attribute[:]
        node.attribute.extend(kept)
    path = files / "no-labels.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UserError, match="no classifier node with classlabels_strings"):
        inspect_onnx(path)


@pytest.fixture(scope="module")
def tokenizer(files: Path) -> Path:
    return ticket_tokenizer(files / "tokenizer.json")


def test_a_token_id_classifier_records_its_inputs_output_labels_and_tokenizer(files: Path, tokenizer: Path) -> None:
    info = inspect_onnx(token_classifier(files / "tok-clf.onnx"), tokenizer=tokenizer, labels=TICKET_LABELS)
    assert (info.contract, info.labels, info.capabilities) == ("token-classifier", TICKET_LABELS, ("classification",))
    assert info.provenance() == {
        "onnx_contract": "token-classifier", "onnx_input": "input_ids", "onnx_attention_mask": "attention_mask",
        "onnx_token_type_ids": "", "onnx_output": "logits", "onnx_pooling": "model", "onnx_width": "4",
        "onnx_max_tokens": str(MAX_TOKENS), "tokenizer": str(tokenizer), "tokenizer_sha256": sha256_of(tokenizer),
        "onnx_opset": "17", "onnx_ml_opset": "", "exporter": "pytorch", "exporter_version": "2.9.0",
    }


@pytest.mark.parametrize(("pooled", "output", "pooling"), [(True, "sentence_embedding", "model"),
                                                           (False, "last_hidden_state", "mean")])
def test_a_token_id_embedder_records_its_output_and_pooling(
    files: Path, tokenizer: Path, pooled: bool, output: str, pooling: str
) -> None:
    info = inspect_onnx(token_embedder(files / f"embed-{pooled}.onnx", pooled=pooled), tokenizer=tokenizer)
    assert (info.contract, info.labels, info.capabilities) == ("token-embedder", (), ("embedding",))
    assert info.token_ids is not None
    assert (info.token_ids.output, info.token_ids.pooling, info.token_ids.width) == (output, pooling, 32)


def _fixed_axes(source: Path, path: Path) -> Path:
    """``source`` with its inputs' sequence axis fixed at 128, as an export without dynamic_axes writes it."""
    model = onnx.load(str(source))
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[1].dim_value = 128
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("build", "says"), [
    (lambda files, tok: (causal_lm(files / "lm.onnx"), tok, None),
     "its logits are logits: tensor(float)[?, ?, 872], one row per token: a causal language model, which arbiter "
     "serves as GGUF under llama.cpp"),
    (lambda files, tok: (token_embedder(files / "e.onnx"), None, None),
     "takes token ids, so arbiter needs its tokenizer: pass --tokenizer tokenizer.json"),
    (lambda files, tok: (token_embedder(files / "e.onnx"), _write(files / "t.json", b'{"a": 1}'), None),
     "t.json: not a tokenizer ("),
    (lambda files, tok: (token_embedder(files / "e.onnx"), files / "absent.json", None), "absent.json: no such file"),
    (lambda files, tok: (token_embedder(files / "e.onnx"), ticket_tokenizer(files / "n.json", max_tokens=None), None),
     "n.json: sets no truncation length"),
    (lambda files, tok: (token_classifier(files / "c.onnx"), tok, None),
     "answers logits, whose columns carry no names: pass --labels a,b,c in the order of the model's logits"),
    (lambda files, tok: (token_classifier(files / "c.onnx"), tok, TICKET_LABELS[:3]),
     "its logits have 4 columns but --labels gives 3 (billing, technical, account); give one label per column"),
    (lambda files, tok: (token_embedder(files / "e.onnx"), tok, ("a", "b")),
     "is an embedder (no logits output); --labels is for classifiers"),
    (lambda files, tok: (token_embedder(files / "small.onnx", vocab=50), tok, None),
     "onnxruntime cannot run it on tokenizer.json's ids (64 tokens, ids up to 871): Non-zero status code returned "
     "while running Gather node"),
    (lambda files, tok: (_fixed_axes(token_embedder(files / "e.onnx"), files / "fixed.onnx"), tok, None),
     "has a fixed batch or sequence axis; export it again with dynamic_axes="),
    (lambda files, tok: (text_classifier(files / "text.onnx"), tok, None),
     "reads text (no input_ids input); --tokenizer is for models that take token ids"),
], ids=["causal-lm", "no-tokenizer", "not-a-tokenizer", "tokenizer-missing", "no-max-length", "no-labels",
        "labels-count", "labels-on-embedder", "ids-past-the-table", "fixed-axis", "tokenizer-for-text"])
def test_bad_token_id_models_are_refused_in_one_line(files: Path, tokenizer: Path, build, says: str) -> None:
    path, tok, labels = build(files, tokenizer)
    with pytest.raises(UserError) as caught:
        inspect_onnx(path, tokenizer=tok, labels=labels)
    message = str(caught.value)
    assert "\n" not in message and says in message, message


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
