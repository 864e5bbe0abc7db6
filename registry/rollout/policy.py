"""When a gradual rollout advances, holds or rolls back: the policy and the judgement of one check.

Pure logic over figures, no MLflow and no clock, so every rule is tested in microseconds.

A check compares the challenger's live figures *in the current step* with the champion's in the
same step — same time, same load on the machine — or, when the step gives the champion too few
calls (at 100 % it gets none), over the whole rollout and one step length before it. Both come
from the gateway's ``calls`` rows:

- **success rate**: the challenger's must be ≥ ``min_ratio`` (0.95) × the champion's;
- **quality**, only when both sides carry at least ``min_samples`` scored calls (live gateway
  calls carry none; applications that report quality do): ≥ ``min_ratio`` × the champion's;
- **decode speed** (median tokens/s): ≥ ``speed_ratio`` (0.8) × the champion's. Speed gets its
  own, looser threshold: two versions sharing a 2-core machine under load differ by several
  per cent from run to run, and 0.95 would roll back an identical model.

A regression rolls back as soon as the challenger has ``min_samples`` calls in the step — it
does not wait for the step to end. A step advances only when it has lasted ``step_seconds`` and
both sides have enough samples; until then the check says what it waits for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from registry.errors import PromotionError, one_line

DEFAULT_RAMP = (10, 25, 50, 100)
Action = Literal["hold", "advance", "rollback"]


class RolloutPolicy(BaseModel):
    """How a candidate is ramped up and judged.

    Example::

        policy = RolloutPolicy(ramp=(10, 50, 100), step_seconds=600)
        RolloutPolicy.parse(ramp="10,25,50,100", step_seconds=3600)    # CLI strings, clear errors
    """

    model_config = ConfigDict(frozen=True)

    ramp: tuple[int, ...] = DEFAULT_RAMP
    step_seconds: float = Field(default=3600.0, gt=0)
    min_ratio: float = Field(default=0.95, gt=0, le=1, description="Success and quality vs the champion's.")
    speed_ratio: float = Field(default=0.8, gt=0, le=1, description="Median decode tokens/s vs the champion's.")
    min_samples: int = Field(default=10, ge=1, description="Calls per side before a step is judged.")
    check_every_s: float = Field(default=5.0, gt=0)
    benchmark_limit: int | None = Field(default=None, ge=1, description="Validation items benchmarked; None: all.")
    force: bool = Field(default=False, description="Ramp even when the compatibility check says no.")

    @field_validator("ramp")
    @classmethod
    def _ramp(cls, ramp: tuple[int, ...]) -> tuple[int, ...]:
        if not ramp:
            raise ValueError("the ramp needs at least one step")
        if any(share < 1 or share > 100 for share in ramp):
            raise ValueError("every step must be a share between 1 and 100")
        if any(later <= earlier for earlier, later in zip(ramp, ramp[1:], strict=False)):
            raise ValueError("the shares must increase")
        if ramp[-1] != 100:
            raise ValueError("the last step must be 100, where the candidate serves all traffic before it is promoted")
        return ramp

    @classmethod
    def parse(cls, *, ramp: str | None = None, **fields: Any) -> RolloutPolicy:
        """Build from CLI values; any problem is a ``PromotionError`` naming the fix."""
        values = {k: v for k, v in fields.items() if v is not None}
        if ramp is not None:
            try:
                values["ramp"] = tuple(int(part) for part in ramp.split(",") if part.strip())
            except ValueError:
                raise PromotionError(f"--ramp {ramp!r}: give whole percentages separated by commas, e.g. 10,25,50,100") from None
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = one_line(exc.errors(), where=lambda loc: _FLAGS.get(str(loc[0]), "policy") if loc else "policy")
            raise PromotionError(f"invalid rollout policy: {problems} (defaults: {_DEFAULTS_SHOWN})") from None


_FLAGS = {"ramp": "--ramp", "step_seconds": "--step-seconds", "min_ratio": "--min-ratio", "speed_ratio": "--speed-ratio",
          "min_samples": "--min-samples", "check_every_s": "--check-every", "benchmark_limit": "--benchmark-limit",
          "force": "--force"}
_DEFAULTS_SHOWN = ("--ramp 10,25,50,100 --step-seconds 3600 --min-samples 10 --min-ratio 0.95 --speed-ratio 0.8 "
                   "--check-every 5")


@dataclass(frozen=True)
class LiveFigures:
    """One version's calls on a route in a time window."""

    n: int
    ok: int
    p50_ms: float | None
    tokens_per_s: float | None
    quality: float | None
    quality_n: int

    @property
    def success_rate(self) -> float:
        return self.ok / self.n if self.n else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "success_rate": round(self.success_rate, 4)}


@dataclass(frozen=True)
class Check:
    """One judgement: what to do, why, and the figures it was made on."""

    action: Action
    reasons: list[str]
    figures: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": self.reasons, "figures": self.figures}


def judge(
    policy: RolloutPolicy, champion: LiveFigures | None, challenger: LiveFigures | None, step_elapsed_s: float
) -> Check:
    """Advance, hold or roll back one step of a rollout (rules in the module docstring)."""
    figures = {
        "champion": champion.as_json() if champion else None,
        "challenger": challenger.as_json() if challenger else None,
        "step_elapsed_s": round(step_elapsed_s, 1),
    }
    have = challenger.n if challenger else 0
    if challenger is None or have < policy.min_samples:
        return Check("hold", [f"waiting for samples: challenger has {have} of {policy.min_samples} calls in this step"], figures)
    if champion is None or champion.n < policy.min_samples:
        # Without a baseline a dead challenger is still caught: it has no success at all.
        if challenger.ok == 0:
            return Check("rollback", [f"challenger failed all {challenger.n} calls in this step"], figures)
        got = champion.n if champion else 0
        return Check("hold", [f"waiting for samples: champion has {got} of {policy.min_samples} calls"], figures)
    regressions = _regressions(policy, champion, challenger)
    if regressions:
        return Check("rollback", regressions, figures)
    if step_elapsed_s < policy.step_seconds:
        left = policy.step_seconds - step_elapsed_s
        return Check("hold", [f"no regression so far; the step ends in {left:.0f} s"], figures)
    return Check("advance", ["no regression over the whole step"], figures)


def _regressions(policy: RolloutPolicy, champion: LiveFigures, challenger: LiveFigures) -> list[str]:
    found = []
    floor = policy.min_ratio * champion.success_rate
    if challenger.success_rate < floor:
        found.append(
            f"success rate {challenger.success_rate:.3f} < {policy.min_ratio} × champion's {champion.success_rate:.3f}"
        )
    if (
        champion.quality is not None and challenger.quality is not None
        and min(champion.quality_n, challenger.quality_n) >= policy.min_samples
        and challenger.quality < policy.min_ratio * champion.quality
    ):
        found.append(f"quality {challenger.quality:.3f} < {policy.min_ratio} × champion's {champion.quality:.3f}")
    if (
        champion.tokens_per_s and challenger.tokens_per_s is not None
        and challenger.tokens_per_s < policy.speed_ratio * champion.tokens_per_s
    ):
        found.append(
            f"decode speed {challenger.tokens_per_s:.1f} tok/s < {policy.speed_ratio} × champion's "
            f"{champion.tokens_per_s:.1f} tok/s"
        )
    return found
