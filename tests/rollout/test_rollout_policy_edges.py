"""The rollout judgement at its edges: thresholds met exactly, baselines that scale, and the figures and
reasons every verdict carries (the gaps `make mutation` found in tests/rollout/test_rollout_policy.py)."""

from __future__ import annotations

import pytest

from registry.rollout.policy import LiveFigures, RolloutPolicy, judge

pytestmark = pytest.mark.unit

POLICY = RolloutPolicy(ramp=(10, 50, 100), step_seconds=60, min_samples=10)


def figures(n: int = 20, ok: int = 20, tps: float = 60.0, quality: float | None = None, quality_n: int = 0) -> LiveFigures:
    return LiveFigures(n=n, ok=ok, p50_ms=300.0, tokens_per_s=tps, quality=quality, quality_n=quality_n)


@pytest.mark.parametrize(
    ("champion", "challenger", "elapsed", "action"),
    [(figures(), None, 1.0, "hold"), (None, figures(n=10, ok=0), 1.0, "rollback"), (None, figures(), 1.0, "hold"),
     (figures(), figures(n=20, ok=10), 1.0, "rollback"), (figures(), figures(), 1.0, "hold"),
     (figures(), figures(), 60.0, "advance")],
)
def test_every_verdict_carries_its_reasons_and_the_figures_it_was_made_on(champion, challenger, elapsed, action) -> None:
    check = judge(POLICY, champion, challenger, step_elapsed_s=elapsed)
    assert check.action == action and check.reasons and all(isinstance(reason, str) for reason in check.reasons)
    assert check.as_json() == {"action": action, "reasons": check.reasons, "figures": check.figures}
    assert check.figures["step_elapsed_s"] == elapsed
    assert check.figures["champion"] == (champion.as_json() if champion else None)
    assert check.figures["challenger"] == (challenger.as_json() if challenger else None)


def test_the_elapsed_time_is_shown_to_a_tenth_of_a_second_and_the_rate_to_four_places() -> None:
    check = judge(POLICY, figures(), figures(n=30, ok=20), step_elapsed_s=12.345)
    assert check.figures["step_elapsed_s"] == 12.3
    assert check.figures["challenger"]["success_rate"] == 0.6667


def test_waiting_reasons_count_the_calls_each_side_has() -> None:
    assert judge(POLICY, figures(), None, 1).reasons == ["waiting for samples: challenger has 0 of 10 calls in this step"]
    assert judge(POLICY, None, figures(), 1).reasons == ["waiting for samples: champion has 0 of 10 calls"]
    assert judge(POLICY, None, figures(n=10, ok=0), 1).reasons == ["challenger failed all 10 calls in this step"]


def test_a_champion_with_exactly_the_minimum_samples_is_a_baseline() -> None:
    assert judge(POLICY, figures(n=10, ok=10), figures(), step_elapsed_s=60).action == "advance"


def test_a_healthy_step_says_how_long_it_has_left_and_then_advances() -> None:
    assert judge(POLICY, figures(), figures(), step_elapsed_s=20).reasons == [
        "no regression so far; the step ends in 40 s"]
    assert judge(POLICY, figures(), figures(), step_elapsed_s=60).reasons == ["no regression over the whole step"]


def test_the_success_floor_scales_with_the_champions_own_rate() -> None:
    half = figures(n=20, ok=10)  # the champion itself succeeds half the time: the floor is 0.95 × 0.5
    assert judge(POLICY, half, figures(n=25, ok=12), step_elapsed_s=60).action == "advance"  # 0.48 ≥ 0.475
    assert judge(POLICY, half, figures(n=20, ok=9), step_elapsed_s=60).action == "rollback"  # 0.45 < 0.475


def test_quality_and_speed_exactly_at_their_ratio_pass_and_under_it_roll_back_with_the_figures() -> None:
    policy = RolloutPolicy(ramp=(100,), step_seconds=60, min_samples=10, min_ratio=0.5, speed_ratio=0.5)
    champion = figures(tps=60.0, quality=0.8, quality_n=10)
    assert judge(policy, champion, figures(tps=30.0, quality=0.4, quality_n=10), 60).action == "advance"
    assert judge(policy, champion, figures(tps=30.0, quality=0.45, quality_n=10), 60).action == "advance"
    check = judge(policy, champion, figures(tps=29.0, quality=0.3, quality_n=10), 60)
    assert check.action == "rollback" and check.reasons == [
        "quality 0.300 < 0.5 × champion's 0.800", "decode speed 29.0 tok/s < 0.5 × champion's 60.0 tok/s"]
