"""The ONNX provider on token-id models (built with ``onnx.helper``, a WordLevel tokenizer trained by
``tokenizers`` on the ticket-topic training set, a logistic-regression head fitted by scikit-learn)
run by the real onnxruntime: a classifier's label, its quality on the shipped validation set, an
embedder's vectors, the token bound and its truncation, and a tokenizer changed after registration."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from onnx_models import (
    MAX_TOKENS,
    TICKET_LABELS,
    embed_like_the_model,
    ticket_rows,
    ticket_tokenizer,
    token_classifier,
    token_embedder,
)

from registry.errors import ContextOverflowError, IntegrityError, UserError
from registry.providers import GenerationRequest, provider_for
from registry.providers.gguf_file import sha256_of
from registry.providers.onnx import OnnxProvider
from registry.providers.onnx_model import inspect_onnx
from registry.spec import Hardware, ModelSpec

pytestmark = pytest.mark.integration

CHARGED = "I was charged twice for my subscription, please refund one payment."
LONG = " ".join(["refund"] * (MAX_TOKENS + 6))


def _spec(path: Path, tokenizer: Path, name: str) -> ModelSpec:
    """The spec ``Catalog.register_onnx`` makes, built here so no MLflow store is needed."""
    labels = TICKET_LABELS if name == "ticket-tok" else None
    info = inspect_onnx(path, tokenizer=tokenizer, labels=labels)
    return ModelSpec(name=name, kind="onnx", source=str(path), sha256=sha256_of(path), size_bytes=info.size_bytes,
                     capabilities=info.capabilities, context_window=MAX_TOKENS, labels=info.labels,
                     architecture=info.contract, hardware=Hardware(min_memory_mb=info.min_memory_mb()),
                     provenance=info.provenance())


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-tokens")


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> Path:
    return ticket_tokenizer(folder / "tokenizer.json")


@pytest.fixture(scope="module")
def classifier(folder: Path, tokenizer: Path) -> OnnxProvider:
    provider = provider_for(_spec(token_classifier(folder / "clf.onnx"), tokenizer, "ticket-tok"), n_threads=1, n_ctx=64)
    assert isinstance(provider, OnnxProvider)
    provider.load()
    return provider


@pytest.fixture(scope="module", params=[True, False], ids=["pooled", "token-vectors"])
def embedder(request: pytest.FixtureRequest, folder: Path, tokenizer: Path) -> OnnxProvider:
    path = token_embedder(folder / f"embed-{request.param}.onnx", pooled=request.param)
    provider = OnnxProvider(_spec(path, tokenizer, "ticket-embed"), n_threads=1)
    provider.load()
    return provider


def test_the_classifier_answers_the_argmax_label_and_counts_tokens(classifier: OnnxProvider) -> None:
    whole = classifier.generate(GenerationRequest(prompt=CHARGED))
    assert whole.text == "billing" and (whole.prompt_tokens, whole.completion_tokens) == (13, 1)
    chat = GenerationRequest(messages=({"role": "system", "content": "Sort it."},
                                       {"role": "user", "content": "My parcel has not arrived and tracking shows nothing."}))
    assert classifier.generate(chat).text == "shipping"
    assert classifier.health().ok


def test_the_classifier_on_the_shipped_validation_set(classifier: OnnxProvider) -> None:
    """The ticket-topic benchmark's items, answered one request at a time: accuracy and latency."""
    rows = ticket_rows("ticket-topic.jsonl")
    timings, right = [], 0
    for text, label in rows:
        started = time.perf_counter()
        right += classifier.generate(GenerationRequest(prompt=text)).text == label
        timings.append((time.perf_counter() - started) * 1000)
    accuracy = right / len(rows)
    print(f"token-id classifier: accuracy {accuracy:.3f} on {len(rows)} items, p50 {statistics.median(timings):.3f} ms")
    assert accuracy >= 0.8  # 0.896 measured; 0.25 by chance


def test_the_classifier_refuses_a_text_over_its_tokens_and_embeddings(classifier: OnnxProvider) -> None:
    with pytest.raises(ContextOverflowError, match=f"^ticket-tok: the text is {MAX_TOKENS + 6} tokens; it takes at most "
                                                   f"{MAX_TOKENS} "):
        classifier.generate(GenerationRequest(prompt=LONG))
    with pytest.raises(UserError, match="^ticket-tok is a text classifier .*; it cannot take embeddings"):
        classifier.embed(["a"])


def test_the_embedder_answers_the_mean_of_its_token_vectors(embedder: OnnxProvider) -> None:
    texts = ["Where is my parcel?", CHARGED]
    embedded = embedder.embed(texts)
    assert embedded.prompt_tokens == 5 + 13 and len(embedded.vectors) == 2
    for text, vector in zip(texts, embedded.vectors, strict=True):
        assert np.allclose(vector, embed_like_the_model(text), atol=1e-5)  # padding never moves a vector
    assert np.allclose(embedder.embed([texts[0]]).vectors[0], embedded.vectors[0], atol=1e-6)
    with pytest.raises(UserError, match="^ticket-embed is an embedder: it answers embeddings"):
        embedder.generate(GenerationRequest(prompt=CHARGED))


def test_the_embedder_refuses_a_long_or_empty_text_or_embeds_its_first_tokens_when_asked(embedder: OnnxProvider) -> None:
    with pytest.raises(ContextOverflowError, match=f"the text is {MAX_TOKENS + 6} tokens; it takes at most {MAX_TOKENS}"):
        embedder.embed(["short", LONG])
    with pytest.raises(UserError, match="^ticket-embed: the text '  ' has no tokens for its tokenizer; send some text"):
        embedder.embed(["fine", "  "])
    cut = embedder.embed([LONG], truncate=True)
    assert cut.prompt_tokens == MAX_TOKENS
    assert np.allclose(cut.vectors[0], embed_like_the_model("refund"), atol=1e-5)


def test_the_embedders_latency(embedder: OnnxProvider) -> None:
    timings = []
    for text, _ in ticket_rows("ticket-topic.jsonl")[:40]:
        started = time.perf_counter()
        embedder.embed([text])
        timings.append((time.perf_counter() - started) * 1000)
    print(f"token-id embedder ({embedder.spec.provenance['onnx_pooling']}): p50 {statistics.median(timings):.3f} ms")
    assert statistics.median(timings) < 50


def test_a_tokenizer_changed_after_registration_is_refused_at_load(folder: Path, tmp_path: Path) -> None:
    tokenizer = ticket_tokenizer(tmp_path / "tokenizer.json")
    spec = _spec(token_classifier(tmp_path / "clf.onnx"), tokenizer, "ticket-tok")
    ticket_tokenizer(tokenizer, max_tokens=32)  # the user saves it again, with another length
    with pytest.raises(IntegrityError, match="^ticket-tok: its tokenizer .*tokenizer.json changed since it was registered"):
        OnnxProvider(spec, n_threads=1).load()
    tokenizer.unlink()
    with pytest.raises(UserError, match="its tokenizer .* is gone; restore it"):
        OnnxProvider(spec, n_threads=1).load()


def test_an_embedder_without_an_attention_mask_embeds_each_text_alone(folder: Path, tokenizer: Path) -> None:
    """Nothing would tell it which positions are padding, so texts of different lengths are never batched."""
    path = token_embedder(folder / "no-mask.onnx", pooled=False, mask=False)
    provider = OnnxProvider(_spec(path, tokenizer, "ticket-embed"), n_threads=1)
    provider.load()
    texts = ["Where is my parcel?", CHARGED]
    for text, vector in zip(texts, provider.embed(texts).vectors, strict=True):
        assert np.allclose(vector, embed_like_the_model(text), atol=1e-5)
