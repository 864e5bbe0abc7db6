"""Rollout: gradual promotion of a challenger (the state machine, its pure policy, the per-route lock,
the live figures it judges), whether one version can replace another, and auto-swap.
"""

from registry.rollout.autoswap import AutoSwapper
from registry.rollout.compatibility import check_compatibility
from registry.rollout.policy import RolloutPolicy
from registry.rollout.promotion import Rollout

__all__ = ["AutoSwapper", "Rollout", "RolloutPolicy", "check_compatibility"]
