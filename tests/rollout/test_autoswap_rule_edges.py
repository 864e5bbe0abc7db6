"""The auto-swap degradation rule at its edges: a mean exactly at its floor, too few scores, the
signals that may trigger, and the false-alarm rate's split."""

from __future__ import annotations

import pytest

from registry.quality.signals import Evidence
from registry.rollout.autoswap import AutoSwapPolicy, degradation

pytestmark = pytest.mark.unit

POLICY = AutoSwapPolicy(min_samples=10, success_threshold=0.8, quality_factor=0.5)


def scored(quality: float, n: int = 400, signal: str = "feedback") -> Evidence:
    return Evidence(success=[1.0] * n, quality={signal: {f"c{i}": quality for i in range(n)}})


def test_quality_exactly_at_the_factor_of_the_threshold_is_never_degraded_however_many_calls() -> None:
    reasons, tests = degradation(POLICY, scored(0.4), quality_threshold=0.8)
    assert reasons == [] and tests["quality:feedback"]["decision"] != "regression"


def test_quality_under_it_is_degraded_and_the_reason_names_the_factor_the_threshold_and_the_mean() -> None:
    reasons, _ = degradation(POLICY, scored(0.3), quality_threshold=0.8)
    assert len(reasons) == 1
    assert reasons[0].startswith("quality:feedback (floor: 0.5 × the route's threshold 0.8): mean 0.300 [")
    assert reasons[0].endswith("(n=400) < floor 0.400")


def test_success_exactly_at_its_threshold_is_never_degraded() -> None:
    at_floor = Evidence(success=[1.0, 1.0, 1.0, 1.0, 0.0] * 100)  # 0.8 over 500 calls
    assert degradation(POLICY, at_floor, None)[0] == []


def test_a_signal_with_fewer_scored_calls_than_the_minimum_is_not_tested() -> None:
    few = Evidence(success=[1.0] * 40, quality={"feedback": {f"c{i}": 0.0 for i in range(9)}})
    assert degradation(POLICY, few, 0.8) == ([], {"success": degradation(POLICY, few, None)[1]["success"]})


def test_only_the_gating_signals_can_trigger() -> None:
    judged = scored(0.0, signal="judge")
    assert degradation(POLICY, judged, 0.8)[0] == []  # the judge does not gate auto-swap by default
    reasons, tests = degradation(POLICY, judged, 0.8, gating=("judge",))
    assert [reason.split(" ")[0] for reason in reasons] == ["quality:judge"] and "quality:judge" in tests


def test_the_false_alarm_rate_is_split_over_the_signals_tested() -> None:
    policy = POLICY.model_copy(update={"false_alarm_rate": 0.12})
    both = Evidence(success=[1.0] * 40, quality={"scorer": {f"c{i}": 1.0 for i in range(40)},
                                                 "feedback": {f"c{i}": 1.0 for i in range(40)}})
    assert {test["alpha"] for test in degradation(policy, both, 0.8)[1].values()} == {0.04}
    assert degradation(policy, both, None)[1]["success"]["alpha"] == 0.12
