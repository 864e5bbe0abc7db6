"""The llama.cpp provider on the real SmolLM2 file: counts, timings, streaming, lifecycle."""

from __future__ import annotations

import pytest

from registry.catalog.versions import Catalog
from registry.errors import ContextOverflowError, ProviderError
from registry.machine.costs import measure
from registry.machine.hardware import fingerprint
from registry.providers import GenerationRequest
from registry.providers.llamacpp import LlamaCppProvider
from registry.serving.pool import WarmPool

pytestmark = pytest.mark.integration

QUESTION = ({"role": "user", "content": "What is the capital of France?"},)


@pytest.fixture
def provider(catalog: Catalog, smollm2, session_pool: WarmPool):
    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    return session_pool.get(record)


def test_generate_reports_tokens_and_timings(provider) -> None:
    generation = provider.generate(GenerationRequest(messages=QUESTION, max_tokens=16))
    assert generation.text.strip()
    assert 0 < generation.completion_tokens <= 16
    # the count llama.cpp itself reports for the same request (non-streaming)
    reference = provider._llm.create_chat_completion(messages=list(QUESTION), max_tokens=16, temperature=0.0)
    assert generation.prompt_tokens == reference["usage"]["prompt_tokens"]
    assert generation.completion_tokens == reference["usage"]["completion_tokens"]
    assert generation.text == reference["choices"][0]["message"]["content"]
    assert 0 < generation.time_to_first_token_ms <= generation.generation_ms
    assert generation.tokens_per_s > 0
    assert provider.load_ms is not None and provider.load_ms > 0


@pytest.mark.parametrize("content", ["Write three emojis about the sea: 🌊", "What is the capital of France?"])
def test_token_counts_match_llama_cpp_even_for_multibyte_answers(provider, content: str) -> None:
    messages = ({"role": "user", "content": content},)
    generation = provider.generate(GenerationRequest(messages=messages, max_tokens=24))
    reference = provider._llm.create_chat_completion(messages=list(messages), max_tokens=24, temperature=0.0)
    assert (generation.prompt_tokens, generation.completion_tokens) == (
        reference["usage"]["prompt_tokens"], reference["usage"]["completion_tokens"])
    assert generation.finish_reason == reference["choices"][0]["finish_reason"]


def test_plain_prompt_and_stream_agree_at_temperature_zero(provider) -> None:
    request = GenerationRequest(prompt="The capital of France is", max_tokens=8)
    whole = provider.generate(request)
    stream = provider.stream(request)
    streamed: list[str] = []
    while True:
        try:
            streamed.append(next(stream))
        except StopIteration as done:
            finished = done.value
            break
    assert len(streamed) >= 2
    assert "".join(streamed) == whole.text == finished.text
    assert (finished.prompt_tokens, finished.completion_tokens) == (whole.prompt_tokens, whole.completion_tokens)


def test_closing_a_stream_early_frees_the_instance(provider) -> None:
    stream = provider.stream(GenerationRequest(prompt="Count: one, two, three,", max_tokens=32))
    next(stream)
    stream.close()  # a client that hung up mid-stream
    assert provider.generate(GenerationRequest(prompt="The capital of France is", max_tokens=4)).completion_tokens > 0


def test_measure_reports_wall_cpu_rss_and_no_gpu(provider) -> None:
    with measure() as cost:
        provider.generate(GenerationRequest(messages=QUESTION, max_tokens=8))
    assert cost.wall_ms > 0 and cost.cpu_ms > 0
    assert cost.peak_rss_mb > 50
    if fingerprint().gpu == "none":
        assert cost.gpu_memory_mb is None and cost.gpu_utilization_pct is None
    else:
        assert cost.gpu_memory_mb is not None and cost.gpu_memory_mb > 0


def test_lifecycle_health_and_unload(catalog: Catalog, smollm2, settings) -> None:
    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    provider = LlamaCppProvider(record.spec, n_threads=settings.n_threads, n_ctx=512)
    assert not provider.health().ok
    with pytest.raises(ProviderError, match="before load"):
        provider.generate(GenerationRequest(prompt="hi", max_tokens=2))
    provider.load()
    assert provider.health().ok
    provider.unload()
    provider.unload()  # idempotent
    assert provider.health().detail == "not loaded"


def test_a_prompt_over_the_context_is_the_callers_error_not_a_backend_fault(catalog: Catalog, smollm2, settings) -> None:
    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    provider = LlamaCppProvider(record.spec, n_threads=settings.n_threads, n_ctx=256)
    provider.load()
    try:
        with pytest.raises(ContextOverflowError, match="context window.*shorten the prompt"):
            provider.generate(GenerationRequest(prompt="word " * 400, max_tokens=4))
    finally:
        provider.unload()


def test_a_shared_prefix_is_read_once_and_answers_as_a_fresh_context_does(provider) -> None:
    """Consecutive requests share the chat template's opening and the system prompt: llama.cpp evaluates
    only what follows it, and the answer and its counts are what a reset context gives, greedy or sampled
    with a seed (benchmarks and tests rely on both)."""
    import llama_cpp

    system = {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."}
    france, italy = ({"role": "user", "content": f"What is the capital of {country}?"} for country in ("France", "Italy"))
    for temperature in (0.0, 0.9):
        provider.generate(GenerationRequest(messages=(system, france), max_tokens=12, temperature=temperature))
        second = GenerationRequest(messages=(system, italy), max_tokens=12, temperature=temperature, seed=7)
        llama_cpp.llama_perf_context_reset(provider._llm.ctx)
        cached = provider.generate(second)
        assert 0 < llama_cpp.llama_perf_context(provider._llm.ctx).n_p_eval < cached.prompt_tokens / 2
        again = provider.generate(second)  # all of its prompt cached: the last tokens are evaluated again
        provider._llm.reset()
        fresh = provider.generate(second)
        for answer in (cached, again):
            assert (answer.text, answer.prompt_tokens, answer.completion_tokens, answer.finish_reason) == (
                fresh.text, fresh.prompt_tokens, fresh.completion_tokens, fresh.finish_reason)
    colour = GenerationRequest(messages=({"role": "user", "content": "Name a colour."},), max_tokens=12)
    provider._llm.reset()
    first = provider.generate(colour)
    assert provider.generate(colour).text == first.text  # its last token evaluated alone flips the answer (seen)
