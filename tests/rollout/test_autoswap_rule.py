"""Auto-swap's degradation rule: the serving champion's live evidence against fixed floors, each signal
judged by the anytime-valid test. Pure figures, no model and no store."""

from __future__ import annotations

import pytest

from registry.quality.signals import Evidence
from registry.rollout.autoswap import AutoSwapPolicy, degradation

pytestmark = pytest.mark.unit

POLICY = AutoSwapPolicy(min_samples=10, success_threshold=0.8, quality_factor=0.9)


def served(n: int, *, ok: float = 1.0, **quality: float) -> Evidence:
    """``n`` calls that all succeed or all fail, each scored ``quality[signal]`` on every signal given."""
    return Evidence(success=[ok] * n, speed=[50.0] * n,
                    quality={signal: {f"c{i}": score for i in range(n)} for signal, score in quality.items()})


def test_too_few_calls_give_no_reasons_and_no_tests() -> None:
    assert degradation(POLICY, served(9, ok=0.0), 0.8) == ([], {})
    assert degradation(POLICY, None, 0.8) == ([], {})


def test_a_champion_that_fails_every_call_is_degraded_on_its_success_rate() -> None:
    reasons, tests = degradation(POLICY, served(20, ok=0.0), None)
    assert len(reasons) == 1 and reasons[0].startswith("success rate: mean 0.000 [0.000, ")
    assert reasons[0].endswith("(n=20) < floor 0.800")
    assert tests["success"]["decision"] == "regression" and tests["success"]["challenger"]["n"] == 20


def test_a_healthy_champion_has_no_reasons() -> None:
    reasons, tests = degradation(POLICY, served(40, scorer=0.95, feedback=0.9), 0.8)
    assert reasons == [] and set(tests) == {"success", "quality:scorer", "quality:feedback"}
    assert all(test["decision"] != "regression" for test in tests.values())


def test_feedback_under_the_factor_of_the_threshold_is_degraded_once_enough_calls_are_scored() -> None:
    reasons, tests = degradation(POLICY, served(40, scorer=0.95, feedback=0.3), 0.8)
    assert reasons == ["quality:feedback (floor: 0.9 × the route's threshold 0.8): mean 0.300 [0.060, 0.540] (n=40) "
                       "< floor 0.720"]
    assert tests["quality:feedback"]["decision"] == "regression" and tests["quality:feedback"]["ratio"] == 0.72
    assert tests["quality:scorer"]["decision"] != "regression"


def test_no_threshold_means_no_quality_test() -> None:
    reasons, tests = degradation(POLICY, served(40, scorer=0.0, feedback=0.0), None)
    assert reasons == [] and list(tests) == ["success"]


def test_each_test_is_carried_as_json_with_its_figures() -> None:
    _, tests = degradation(POLICY, served(40, feedback=0.9), 0.8)
    assert list(tests) == ["success", "quality:feedback"]  # the scorer has no scores: not tested
    feedback = tests["quality:feedback"]
    assert feedback["signal"] == "quality:feedback" and feedback["challenger"]["estimate"] == 0.9
    assert {"signal", "decision", "reason", "ratio", "alpha", "champion", "challenger", "difference"} == set(feedback)
