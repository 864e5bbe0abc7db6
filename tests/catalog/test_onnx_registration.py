"""A real ONNX text classifier registered in a real MLflow store: its spec and provenance as version
tags and run metrics, the same file again (idempotent, and refused when it claims another
history), a retrained file as version 2, and every bad input registering nothing; token-id models
(a classifier and an embedder) with their tokenizer recorded."""

from __future__ import annotations

from pathlib import Path

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

from registry.catalog.versions import Catalog
from registry.errors import UserError
from registry.providers.gguf_file import sha256_of

pytestmark = pytest.mark.integration

TRAINING = {"training_data": "/data/ticket-topic.train.jsonl", "training_data_sha256": "ab" * 32,
            "training_data_bytes": "5120", "training_data_rows": "80", "trained_for_task": "ticket-topic",
            "training_code": "git:4f2a9c1 train.py", "metric.accuracy": "0.9375", "metric.macro_f1": "0.93"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def model(files: Path) -> Path:
    return text_classifier(files / "ticket-topic.onnx")


def test_registration_records_the_classifier_and_its_provenance(catalog: Catalog, model: Path) -> None:
    record, created = catalog.register_onnx(model, name="ticket-clf", labels=list(LABELS), provenance=TRAINING)
    spec = record.spec
    assert created and record.ref == "ticket-clf/1" and record.status == "testing"
    assert (spec.kind, spec.source, spec.sha256, spec.size_bytes) == (
        "onnx", str(model), sha256_of(model), model.stat().st_size)
    assert spec.labels == tuple(sorted(LABELS)) and spec.is_classifier  # the model's order, not --labels'
    assert (spec.capabilities, spec.context_window, spec.architecture) == (("classification",), 8192, "text-classifier")
    assert spec.hardware.accelerators == ("cpu", "cuda") and spec.hardware.min_memory_mb == 64
    assert spec.provenance["onnx_input"] == "text" and spec.provenance["exporter"] == "skl2onnx"
    assert spec.provenance["metric.accuracy"] == "0.9375" and spec.provenance["training_code"] == "git:4f2a9c1 train.py"

    stored = catalog.client.get_model_version("ticket-clf", "1")  # what the MLflow UI shows
    provenance_tags = {k.removeprefix("arbiter.provenance."): v for k, v in stored.tags.items()
                       if k.startswith("arbiter.provenance.")}
    assert provenance_tags == spec.provenance
    assert stored.tags["arbiter.kind"] == "onnx" and stored.tags["arbiter.capabilities"] == "classification"
    assert stored.description.startswith("ONNX text classifier (account, billing, shipping, technical)")
    assert catalog.client.get_run(record.run_id).data.metrics == {"accuracy": 0.9375, "macro_f1": 0.93}
    assert record.as_json()["labels"] == list(spec.labels) and record.as_json()["provenance"] == spec.provenance

    again, created_again = catalog.register_onnx(model, name="ticket-clf", provenance=TRAINING)
    assert (created_again, again.version) == (False, 1)
    with pytest.raises(UserError, match=r"^ticket-clf/1 is this file already, registered with training_code "
                                        r"'git:4f2a9c1 train.py', not 'git:0000000'; a version is immutable"):
        catalog.register_onnx(model, name="ticket-clf", provenance={**TRAINING, "training_code": "git:0000000"})
    assert [r.ref for r in catalog.list_versions()] == ["ticket-clf/1"]


def test_a_retrained_file_is_a_new_version_with_its_own_provenance(catalog: Catalog, model: Path, files: Path) -> None:
    catalog.register_onnx(model, name="ticket-clf", provenance=TRAINING)
    texts = {label: [f"{label} question {i}" for i in range(4)] for label in LABELS}
    retrained = text_classifier(files / "retrained.onnx", texts=texts)
    record, created = catalog.register_onnx(retrained, name="ticket-clf",
                                            provenance={**TRAINING, "metric.accuracy": "0.96"})
    assert created and record.version == 2 and record.spec.sha256 == sha256_of(retrained) != sha256_of(model)
    assert record.spec.provenance["metric.accuracy"] == "0.96"
    assert catalog.client.get_run(record.run_id).data.metrics["accuracy"] == 0.96
    assert catalog.get("ticket-clf", 1).spec.provenance["metric.accuracy"] == "0.9375"


def test_bad_input_registers_nothing(catalog: Catalog, model: Path, files: Path) -> None:
    """Each a one-line error, and no registered model, version or run left behind."""
    bad = {
        "random bytes": (random_bytes(files / "noise.onnx"), {}),
        "truncated": (truncated(model, files / "half.onnx"), {}),
        "opset 99": (unsupported_opset(files / "opset99.onnx"), {}),
        "a float model": (float_regressor(files / "regressor.onnx"), {}),
        "other labels": (model, {"labels": ["billing", "technical", "account", "returns"]}),
        "a metric that is not a number": (model, {"provenance": {"metric.accuracy": "high"}}),
        "an infinite metric": (model, {"provenance": {"metric.accuracy": "inf"}}),
        "a provenance key MLflow refuses": (model, {"provenance": {"training data": "x"}}),
        "a provenance value past MLflow's limit": (model, {"provenance": {"notes": "x" * 100_001}}),
    }
    messages = {}
    for what, (path, options) in bad.items():
        with pytest.raises(UserError) as caught:
            catalog.register_onnx(path, name="ticket-clf", **options)
        messages[what] = str(caught.value)
    assert all("\n" not in message for message in messages.values()), messages
    assert messages["other labels"] == (
        f"{model}: its labels are account, billing, shipping, technical, not the given billing, technical, account, "
        "returns; pass --labels as the model's labels, or retrain it on the labels you mean")
    assert messages["a metric that is not a number"].startswith("training metric accuracy is 'high', not a finite number")
    assert "over MLflow's tag limit of 100000: shorten its provenance (the longest: notes)" in messages[
        "a provenance value past MLflow's limit"]
    assert catalog.list_versions() == [] and catalog.client.search_registered_models() == []
    assert catalog.client.search_runs([e.experiment_id for e in catalog.client.search_experiments()]) == []


def test_labels_are_compared_as_a_set(catalog: Catalog, model: Path) -> None:
    record, _ = catalog.register_onnx(model, name="ticket-clf", labels=["shipping", "account", "technical", "billing"])
    assert record.spec.labels == ("account", "billing", "shipping", "technical")


def test_token_id_models_register_with_their_tokenizer(catalog: Catalog, files: Path) -> None:
    tokenizer = ticket_tokenizer(files / "tokenizer.json")
    classifier, created = catalog.register_onnx(token_classifier(files / "tok-clf.onnx"), name="ticket-tok",
                                                labels=list(TICKET_LABELS), tokenizer=tokenizer, provenance=TRAINING)
    spec = classifier.spec
    assert created and spec.labels == TICKET_LABELS and spec.is_classifier  # the logits' order, as given
    assert (spec.capabilities, spec.context_window, spec.architecture) == (("classification",), MAX_TOKENS,
                                                                           "token-classifier")
    assert spec.provenance["tokenizer_sha256"] == sha256_of(tokenizer) and spec.provenance["tokenizer"] == str(tokenizer)
    stored = catalog.client.get_model_version("ticket-tok", "1")
    assert stored.tags["arbiter.provenance.tokenizer_sha256"] == sha256_of(tokenizer)
    assert stored.description.startswith("ONNX token-id classifier (billing, technical, account, shipping)")

    embedder, _ = catalog.register_onnx(token_embedder(files / "embed.onnx"), name="ticket-embed", tokenizer=tokenizer,
                                        provenance={"training_code": "git:4f2a9c1 embed.py"})
    assert (embedder.spec.capabilities, embedder.spec.labels, embedder.spec.is_classifier) == (("embedding",), (), False)
    assert catalog.client.get_model_version("ticket-embed", "1").description.startswith("ONNX token-id embedder (32 dims)")


def test_bad_token_id_models_register_nothing(catalog: Catalog, files: Path) -> None:
    tokenizer = ticket_tokenizer(files / "tokenizer.json")
    bad = {
        "no tokenizer": (token_classifier(files / "c.onnx"), {"labels": list(TICKET_LABELS)}, "pass --tokenizer"),
        "labels count": (token_classifier(files / "c.onnx"), {"labels": ["a", "b"], "tokenizer": tokenizer},
                         "its logits have 4 columns but --labels gives 2"),
        "causal LM": (causal_lm(files / "lm.onnx"), {"tokenizer": tokenizer}, "a causal language model"),
    }
    for path, options, says in bad.values():
        with pytest.raises(UserError, match=says):
            catalog.register_onnx(path, name="ticket-tok", **options)
    assert catalog.list_versions() == [] and catalog.client.search_registered_models() == []
