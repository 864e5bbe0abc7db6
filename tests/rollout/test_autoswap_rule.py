"""Auto-swap's degradation rule: pure figures, no model."""

from __future__ import annotations

import pytest

from registry.rollout.autoswap import AutoSwapPolicy, degradation
from registry.rollout.policy import LiveFigures

pytestmark = pytest.mark.unit


def figures(n: int, ok: int, quality: float | None = None, quality_n: int = 0) -> LiveFigures:
    return LiveFigures(n=n, ok=ok, p50_ms=100.0, tokens_per_s=50.0, quality=quality, quality_n=quality_n)


def test_the_degradation_rule() -> None:
    policy = AutoSwapPolicy(min_samples=10, success_threshold=0.8, quality_factor=0.9)
    assert degradation(policy, figures(9, 0), None) == []  # too few calls to judge
    assert degradation(policy, figures(10, 8), None) == []  # 0.8 is not under 0.8
    assert "success rate 0.700" in degradation(policy, figures(10, 7), None)[0]
    assert degradation(policy, figures(10, 10, quality=0.6, quality_n=10), 0.7) != []  # 0.6 < 0.9 × 0.7
    assert degradation(policy, figures(10, 10, quality=0.64, quality_n=10), 0.7) == []
    assert degradation(policy, figures(10, 10, quality=0.1, quality_n=10), None) == []  # no threshold, no trigger
