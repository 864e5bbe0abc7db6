"""What the figures of one generation mean: decode rate without prompt processing."""

from __future__ import annotations

import pytest

from registry.providers import Generation, GenerationRequest

pytestmark = pytest.mark.unit


def _generation(tokens: int, ttft: float | None, total: float, finish: str | None) -> Generation:
    return Generation(text="x", prompt_tokens=100, completion_tokens=tokens, time_to_first_token_ms=ttft,
                      generation_ms=total, finish_reason=finish)


def test_decode_rate_leaves_out_the_prompt() -> None:
    # 11 tokens, the first after 500 ms of prompt processing, the other 10 in 100 ms
    assert _generation(11, 500.0, 600.0, "length").tokens_per_s == pytest.approx(100.0)


def test_a_one_token_answer_that_stopped_counts_its_end_of_sequence_step() -> None:
    generation = _generation(1, 300.0, 310.0, "stop")
    assert generation.decode_steps == 1 and generation.tokens_per_s == pytest.approx(100.0)


def test_no_rate_when_nothing_was_decoded() -> None:
    assert _generation(1, 300.0, 300.0, "length").tokens_per_s is None
    assert _generation(0, None, 50.0, "stop").tokens_per_s is None


def test_a_request_needs_exactly_one_of_messages_or_prompt() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        GenerationRequest()
    with pytest.raises(ValueError, match="exactly one"):
        GenerationRequest(prompt="a", messages=({"role": "user", "content": "b"},))
    with pytest.raises(ValueError, match="max_tokens"):
        GenerationRequest(prompt="a", max_tokens=0)
