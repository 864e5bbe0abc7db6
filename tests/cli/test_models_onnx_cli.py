"""``arbiter models register model.onnx`` as a user runs it (click's runner, a real MLflow store, the
shipped ticket-topic task and its training set): provenance in ``models show`` text and JSON, the
same file again, and each bad input of issue 18 as one ``error:`` line with nothing registered; the
token-id classifier and embedder with --tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from onnx_models import (
    LABELS,
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
from support import assert_clean_error, run

from registry.catalog.versions import Catalog
from registry.providers.gguf_file import sha256_of
from registry.settings import get_settings

pytestmark = pytest.mark.integration

TASK = "ticket-topic"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cli")


@pytest.fixture(scope="module")
def model(files: Path) -> Path:
    return text_classifier(files / "ticket-topic.onnx")


@pytest.fixture(scope="module")
def training_set() -> Path:
    return get_settings().datasets_dir / "ticket-topic.train.jsonl"


def register(path: Path, *extra: str, training: Path | None = None) -> tuple[int, str, str]:
    trained_on = ["--trained-on", str(training)] if training is not None else []
    return run("models", "register", str(path), "--name", "ticket-clf", "--task", TASK, *trained_on,
               "--training-code", "git:4f2a9c1 train.py", *extra)


def test_register_records_provenance_that_show_reports(catalog: Catalog, model: Path, training_set: Path) -> None:
    code, out, err = register(model, "--labels", ",".join(LABELS), "--metric", "accuracy=0.9375",
                              "--metric", "macro_f1=0.93", "--json", training=training_set)
    assert code == 0, err
    registered = json.loads(out)
    assert registered["created"] is True and registered["kind"] == "onnx" and registered["version"] == 1
    assert registered["labels"] == sorted(LABELS) and registered["capabilities"] == ["classification"]
    provenance = registered["provenance"]
    assert provenance["trained_for_task"].startswith(f"{TASK}/")
    assert provenance["training_data"] == str(training_set)
    assert provenance["training_data_sha256"] == sha256_of(training_set)
    assert provenance["training_data_bytes"] == str(training_set.stat().st_size)
    assert provenance["training_data_rows"] == str(len(training_set.read_text().splitlines()))
    assert provenance["training_code"] == "git:4f2a9c1 train.py" and provenance["exporter"] == "skl2onnx"
    assert (provenance["metric.accuracy"], provenance["metric.macro_f1"]) == ("0.9375", "0.93")

    code, out, _ = run("models", "show", "ticket-clf/1", "--json")
    assert code == 0 and json.loads(out)["provenance"] == provenance
    code, out, _ = run("models", "show", "ticket-clf")
    assert code == 0 and "labels: account, billing, shipping, technical" in out
    assert f"  training_data_sha256: {sha256_of(training_set)}\n" in out and "  metric.accuracy: 0.9375\n" in out
    tags = catalog.client.get_model_version("ticket-clf", "1").tags
    assert tags["arbiter.provenance.training_code"] == "git:4f2a9c1 train.py"

    code, out, _ = register(model, "--metric", "accuracy=0.9375", "--metric", "macro_f1=0.93", training=training_set)
    assert code == 0 and out.startswith("already registered as ticket-clf/1 (text classifier: account, billing, ")


def test_a_kind_onnx_file_without_suffix_and_a_gguf_flag_mix(model: Path, files: Path) -> None:
    plain = files / "classifier.bin"
    plain.write_bytes(model.read_bytes())
    code, _, err = run("models", "register", str(plain), "--name", "ticket-clf", "--task", TASK)
    assert_clean_error(code, err, "--task, --trained-on, --training-code, --labels, --metric, --tokenizer describe a "
                                  "trained ONNX model (--kind onnx), not a gguf model")
    code, _, err = run("models", "register", str(model), "--name", "ticket-clf", "--allow-template-errors")
    assert_clean_error(code, err, "--allow-template-errors is for GGUF files")


def test_bad_input_is_one_line_and_registers_nothing(catalog: Catalog, model: Path, files: Path,
                                                     training_set: Path) -> None:
    validation = get_settings().datasets_dir / "ticket-topic.jsonl"
    leaked = files / "leaked.train.jsonl"  # the training set plus one validation item
    leaked.write_text(training_set.read_text() + validation.read_text().splitlines()[0] + "\n")
    unknown_label = files / "returns.train.jsonl"
    unknown_label.write_text(training_set.read_text() + json.dumps(
        {"id": "tt-train-999", "text": "I want to send this jacket back for a refund.", "label": "returns"}) + "\n")
    other_labels = text_classifier(files / "other.onnx", labels=("billing", "technical", "account", "returns"))
    cases = [
        (register(random_bytes(files / "noise.onnx"), training=training_set), "not an ONNX model ("),
        (register(truncated(model, files / "half.onnx"), training=training_set), "not an ONNX model ("),
        (register(unsupported_opset(files / "opset99.onnx"), training=training_set), "unsupported ai.onnx opset 99;"),
        (register(float_regressor(files / "regressor.onnx"), training=training_set), "unsupported contract: inputs x"),
        (register(model, "--labels", "billing,technical,account,returns", training=training_set),
         "its labels are account, billing, shipping, technical, not the given billing, technical, account, returns"),
        (register(other_labels, training=training_set),
         "its labels are account, billing, returns, technical, but task ticket-topic/"),
        (run("models", "register", str(model), "--name", "ticket-clf", "--task", "qa", "--trained-on",
             str(training_set), "--training-code", "x"), "has no classification: section"),
        (register(model), "an ONNX classifier needs --task NAME, --trained-on DATA and --training-code REF"),
        (register(model, "--metric", "accuracy", training=training_set), "--metric 'accuracy' is not NAME=NUMBER"),
        (register(model, "--metric", "accuracy=high", training=training_set), "--metric 'accuracy=high' is not"),
        (register(model, "--metric", "accuracy=nan", training=training_set), "--metric 'accuracy=nan' is not"),
        (register(model, "--metric", "f1=0.9", "--metric", "f1=0.8", training=training_set), "--metric f1 is given twice"),
        (register(model, "--labels", "billing,,technical", training=training_set), "give each label once"),
        (register(model, training=leaked), "shares 1 item with task ticket-topic/"),
        (register(model, training=unknown_label), str(unknown_label)),
    ]
    for (code, _, err), expected in cases:
        assert_clean_error(code, err, expected)
    assert catalog.list_versions() == [] and catalog.client.search_registered_models() == []


@pytest.fixture(scope="module")
def tokenizer(files: Path) -> Path:
    return ticket_tokenizer(files / "tokenizer.json")


def test_a_token_id_classifier_and_embedder_register_and_show_their_tokenizer(
    catalog: Catalog, files: Path, tokenizer: Path, training_set: Path
) -> None:
    sha = sha256_of(tokenizer)
    code, out, err = register(token_classifier(files / "tok-clf.onnx"), "--tokenizer", str(tokenizer), "--labels",
                              ",".join(TICKET_LABELS), training=training_set)
    assert code == 0, err
    assert out.startswith(f"registered ticket-clf/1 (token-id classifier: billing, technical, account, shipping; "
                          f"tokenizer sha256 {sha}; sha256 ")
    code, out, _ = run("models", "show", "ticket-clf/1")
    assert code == 0 and "  onnx_contract: token-classifier\n" in out and f"  tokenizer_sha256: {sha}\n" in out
    assert "labels: billing, technical, account, shipping" in out

    code, out, err = run("models", "register", str(token_embedder(files / "embed.onnx")), "--name", "ticket-embed",
                         "--tokenizer", str(tokenizer), "--training-code", "git:4f2a9c1 embed.py",
                         "--trained-on", str(training_set), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["capabilities"] == ["embedding"] and shown["provenance"]["onnx_contract"] == "token-embedder"
    assert shown["provenance"]["training_data_sha256"] == sha256_of(training_set)
    assert "trained_for_task" not in shown["provenance"]


def test_bad_token_id_input_is_one_line_and_registers_nothing(
    catalog: Catalog, files: Path, tokenizer: Path, training_set: Path
) -> None:
    classifier, embedder = token_classifier(files / "tok-clf.onnx"), token_embedder(files / "embed.onnx")
    not_a_tokenizer = files / "vocab.txt"
    not_a_tokenizer.write_text("[PAD]\n[UNK]\nrefund\n")
    labels = ("--labels", ",".join(TICKET_LABELS))
    cases = [
        (register(classifier, *labels, training=training_set), "takes token ids, so arbiter needs its tokenizer: pass "
                                                                "--tokenizer tokenizer.json"),
        (register(classifier, "--tokenizer", str(not_a_tokenizer), *labels, training=training_set),
         "vocab.txt: not a tokenizer ("),
        (register(classifier, "--tokenizer", str(tokenizer), "--labels", "billing,technical,account",
                  training=training_set), "its logits have 4 columns but --labels gives 3"),
        (register(causal_lm(files / "lm.onnx"), "--tokenizer", str(tokenizer), training=training_set),
         "one row per token: a causal language model, which arbiter serves as GGUF under llama.cpp"),
        (register(embedder, "--tokenizer", str(tokenizer), training=training_set),
         "is an embedder: it serves no classification task; leave --task out"),
        (run("models", "register", str(embedder), "--name", "e", "--tokenizer", str(tokenizer)),
         "an ONNX embedder needs --training-code REF"),
        (register(text_classifier(files / "text.onnx"), "--tokenizer", str(tokenizer), training=training_set),
         "reads text (no input_ids input); --tokenizer is for models that take token ids"),
    ]
    for (code, _, err), expected in cases:
        assert_clean_error(code, err, expected)
    assert catalog.list_versions() == [] and catalog.client.search_registered_models() == []
