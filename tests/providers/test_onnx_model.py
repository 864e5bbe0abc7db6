"""inspect_onnx on real ONNX files (trained and exported here, run in onnxruntime): what a good
classifier records, and the one-line refusal of each file the issue's "Bad input" names."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx_models import LABELS, float_regressor, random_bytes, text_classifier, truncated, unsupported_opset

from registry.errors import ModelFileError, UserError
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
         "classifiers: one string input → label + scores (docs/custom-models.md)"),
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


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
