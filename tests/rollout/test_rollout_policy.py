"""The rollout's judgement of one step and its policy's validation: pure rules, no model."""

from __future__ import annotations

import pytest

from registry.errors import PromotionError
from registry.rollout.policy import LiveFigures, RolloutPolicy, judge

pytestmark = pytest.mark.unit

POLICY = RolloutPolicy(ramp=(10, 50, 100), step_seconds=60, min_samples=10)


def figures(n: int = 20, ok: int = 20, tps: float = 60.0, quality: float | None = None, quality_n: int = 0) -> LiveFigures:
    return LiveFigures(n=n, ok=ok, p50_ms=300.0, tokens_per_s=tps, quality=quality, quality_n=quality_n)


def test_a_healthy_step_holds_until_its_time_is_up_then_advances() -> None:
    assert judge(POLICY, figures(), figures(), step_elapsed_s=30).action == "hold"
    check = judge(POLICY, figures(), figures(), step_elapsed_s=60)
    assert check.action == "advance" and check.figures["challenger"]["success_rate"] == 1.0


def test_too_few_challenger_samples_hold_even_after_the_step_ends() -> None:
    check = judge(POLICY, figures(), figures(n=9, ok=9), step_elapsed_s=600)
    assert check.action == "hold" and "9 of 10" in check.reasons[0]


def test_a_success_regression_rolls_back_before_the_step_ends() -> None:
    check = judge(POLICY, figures(n=20, ok=20), figures(n=10, ok=9), step_elapsed_s=1)
    assert check.action == "rollback" and "success rate 0.900 < 0.95" in check.reasons[0]


def test_success_at_exactly_the_threshold_passes() -> None:
    assert judge(POLICY, figures(n=20, ok=20), figures(n=20, ok=19), step_elapsed_s=60).action == "advance"


def test_a_slow_challenger_rolls_back_on_decode_speed() -> None:
    check = judge(POLICY, figures(tps=60), figures(tps=30), step_elapsed_s=1)
    assert check.action == "rollback" and "decode speed 30.0 tok/s < 0.8" in check.reasons[0]
    assert judge(POLICY, figures(tps=60), figures(tps=49), step_elapsed_s=60).action == "advance"  # 0.82 ≥ 0.8


def test_quality_counts_only_with_enough_scored_calls_on_both_sides() -> None:
    worse = figures(quality=0.5, quality_n=10)
    assert judge(POLICY, figures(quality=0.8, quality_n=10), worse, 60).action == "rollback"
    assert judge(POLICY, figures(quality=0.8, quality_n=3), worse, 60).action == "advance"


def test_a_dead_challenger_rolls_back_without_a_champion_baseline() -> None:
    assert judge(POLICY, None, figures(n=10, ok=0), 1).action == "rollback"
    assert judge(POLICY, figures(n=2, ok=2), figures(n=10, ok=10), 600).action == "hold"


@pytest.mark.parametrize(
    ("ramp", "message"),
    [("10,5,100", "must increase"), ("0,50,100", "between 1 and 100"), ("10,50,150", "between 1 and 100"),
     ("10,50", "last step must be 100"), ("ten", "whole percentages"), ("", "at least one step")],
)
def test_bad_ramps_are_refused_with_the_fix(ramp: str, message: str) -> None:
    with pytest.raises(PromotionError, match=message) as caught:
        RolloutPolicy.parse(ramp=ramp)
    assert "10,25,50,100" in str(caught.value)


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(PromotionError, match="--min-ratio: "):
        RolloutPolicy.parse(min_ratio=1.5)
    with pytest.raises(PromotionError, match="--step-seconds: "):
        RolloutPolicy.parse(step_seconds=0)


def test_cli_values_build_the_policy() -> None:
    policy = RolloutPolicy.parse(ramp="25, 100", step_seconds=5, min_samples=None)
    assert policy.ramp == (25, 100) and policy.step_seconds == 5 and policy.min_samples == 10
