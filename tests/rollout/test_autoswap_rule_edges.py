"""The auto-swap degradation rule at its quality edge (a gap `make mutation` found in test_autoswap_rule.py)."""

from __future__ import annotations

import pytest

from registry.rollout.autoswap import AutoSwapPolicy, degradation
from registry.rollout.policy import LiveFigures

pytestmark = pytest.mark.unit

POLICY = AutoSwapPolicy(min_samples=10, success_threshold=0.8, quality_factor=0.5)


def scored(quality: float) -> LiveFigures:
    return LiveFigures(n=10, ok=10, p50_ms=100.0, tokens_per_s=50.0, quality=quality, quality_n=10)


def test_quality_exactly_at_the_factor_of_the_threshold_is_healthy() -> None:
    assert degradation(POLICY, scored(0.4), quality_threshold=0.8) == []


def test_quality_under_it_is_degraded_and_the_reason_names_both_figures() -> None:
    assert degradation(POLICY, scored(0.3), quality_threshold=0.8) == [
        "quality 0.300 < 0.5 × the route's threshold 0.800"]
