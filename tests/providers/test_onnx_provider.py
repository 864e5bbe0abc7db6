"""The ONNX provider on a real text classifier (trained here with scikit-learn, exported with skl2onnx)
run by the real onnxruntime: the label whole and streamed, what it reports, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx_models import LABELS, text_classifier

from registry.errors import ContextOverflowError, IntegrityError, ProviderError, UserError
from registry.providers import Generation, GenerationRequest, Provider, provider_for
from registry.providers.gguf_file import sha256_of
from registry.providers.onnx import MAX_TEXT_BYTES, OnnxProvider, ort_build
from registry.providers.onnx_model import inspect_onnx
from registry.spec import Hardware, ModelSpec

pytestmark = pytest.mark.integration

CHARGED = "my card was charged twice"


def _spec(path: Path) -> ModelSpec:
    """The spec ``Catalog.register_onnx`` makes (common.md), built here so no MLflow store is needed."""
    info = inspect_onnx(path)
    return ModelSpec(name="ticket-clf", kind="onnx", source=str(path), sha256=sha256_of(path),
                     size_bytes=info.size_bytes, capabilities=("classification",), context_window=8192,
                     labels=info.labels, hardware=Hardware(accelerators=("cpu", "cuda"), min_memory_mb=info.min_memory_mb()),
                     provenance=info.provenance())


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return text_classifier(tmp_path_factory.mktemp("onnx") / "clf.onnx")


@pytest.fixture(scope="module")
def provider(model_file: Path) -> OnnxProvider:
    provider = provider_for(_spec(model_file), n_threads=1, n_ctx=2048)
    assert isinstance(provider, OnnxProvider) and isinstance(provider, Provider)
    provider.load()
    return provider


def test_it_answers_the_label_of_a_prompt_or_of_the_one_user_turn(provider: OnnxProvider) -> None:
    whole = provider.generate(GenerationRequest(prompt=CHARGED))
    assert whole.text == "billing"
    chat = GenerationRequest(messages=({"role": "system", "content": "You sort support tickets."},
                                       {"role": "user", "content": "where is my parcel"}))
    assert provider.generate(chat).text == "shipping"
    # Measured as a classifier: one label, no decode phase (so no decode rate), the words it read.
    assert (whole.completion_tokens, whole.prompt_tokens, whole.finish_reason) == (1, 5, "stop")
    assert whole.time_to_first_token_ms == whole.generation_ms > 0
    assert whole.tokens_per_s is None and whole.decode_ms == 0
    assert whole.n_threads == 1 and whole.n_gpu_layers is None


def test_a_stream_yields_the_label_as_one_fragment_and_returns_the_generation(provider: OnnxProvider) -> None:
    stream = provider.stream(GenerationRequest(prompt="reset my password"))
    assert next(stream) == "account"
    with pytest.raises(StopIteration) as done:
        next(stream)
    generation = done.value.value
    assert isinstance(generation, Generation) and generation.text == "account"


def test_health_and_load_say_what_onnxruntime_runs_it_on(provider: OnnxProvider) -> None:
    health = provider.health()
    assert health.ok and health.extra == {"execution_provider": ort_build().model_runs_on, "n_threads": "1"}
    assert provider.execution_provider == ort_build().model_runs_on
    assert provider.load_ms is not None and provider.load_ms > 0
    assert "CPUExecutionProvider" in ort_build().available_providers


@pytest.mark.parametrize(("request_", "cannot"), [
    (GenerationRequest(prompt=CHARGED, json_schema='{"type": "object"}'), "a response format"),
    (GenerationRequest(messages=({"role": "user", "content": "hi"}, {"role": "assistant", "content": "billing"},
                                 {"role": "user", "content": CHARGED})), "'assistant' turns"),
    (GenerationRequest(messages=({"role": "user", "content": "a"}, {"role": "user", "content": "b"})),
     "2 user turns"),
], ids=["format", "history", "two-users"])
def test_what_a_classifier_cannot_answer_is_refused_naming_what_it_can_do(
    provider: OnnxProvider, request_: GenerationRequest, cannot: str
) -> None:
    with pytest.raises(UserError) as caught:
        provider.generate(request_)
    assert str(caught.value).startswith(
        "ticket-clf is a text classifier (labels account, billing, shipping, technical): it answers one text "
        f"with its label; it cannot take {cannot}")


def test_an_empty_or_oversized_text_is_the_callers_to_fix(provider: OnnxProvider) -> None:
    with pytest.raises(UserError, match="the text to classify is empty"):
        provider.generate(GenerationRequest(prompt="  "))
    with pytest.raises(ContextOverflowError, match=f"is {MAX_TEXT_BYTES + 1} bytes; .* at most {MAX_TEXT_BYTES}"):
        provider.generate(GenerationRequest(prompt="x" * (MAX_TEXT_BYTES + 1)))
    assert provider.generate(GenerationRequest(prompt="é" * (MAX_TEXT_BYTES // 2))).text in LABELS  # 64 KiB exactly


def test_an_int64_label_output_answers_the_label_as_text(tmp_path: Path) -> None:
    path = text_classifier(tmp_path / "int.onnx", int_labels=True)
    provider = OnnxProvider(_spec(path), n_threads=1)
    provider.load()
    assert provider.generate(GenerationRequest(prompt=CHARGED)).text == str(LABELS.index("billing"))


def test_a_changed_file_is_refused_at_load_and_unload_is_idempotent(tmp_path: Path, model_file: Path) -> None:
    copy = tmp_path / "clf.onnx"
    copy.write_bytes(model_file.read_bytes())
    provider = OnnxProvider(_spec(copy), n_threads=1)
    copy.write_bytes(text_classifier(tmp_path / "retrained.onnx", seed=1).read_bytes())  # retrained in place
    with pytest.raises(IntegrityError, match="changed since it was registered"):
        provider.load()
    assert provider.health().ok is False and provider.load_ms is None
    with pytest.raises(ProviderError, match="generate called before load"):
        provider.generate(GenerationRequest(prompt=CHARGED))
    provider.unload()
    provider.unload()


def test_a_model_onnxruntime_cannot_load_here_is_a_provider_error(tmp_path: Path, model_file: Path) -> None:
    """Registered where an ``en_US`` locale exists, served here where none does: the vectorizer's
    StringNormalizer fails to build (common.md)."""
    path = text_classifier(tmp_path / "no-locale.onnx", locale=None)
    spec = _spec(model_file).model_copy(update={"source": str(path), "sha256": sha256_of(path)})
    with pytest.raises(ProviderError, match="^ticket-clf: onnxruntime could not load .*no-locale.onnx: "):
        OnnxProvider(spec, n_threads=1).load()


def test_after_unload_it_loads_again(model_file: Path) -> None:
    provider = OnnxProvider(_spec(model_file), n_threads=1)
    provider.load()
    provider.unload()
    assert provider.health().detail == "not loaded"
    provider.load()
    assert provider.generate(GenerationRequest(prompt=CHARGED)).text == "billing"
