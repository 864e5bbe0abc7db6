"""When a gradual rollout advances, holds or rolls back: the policy and the judgement of one check.

Pure logic over evidence, no MLflow and no clock, so every rule is tested in microseconds.

A check compares the challenger's live evidence *since the rollout began* with the champion's over
the same time — same hours, same load on the machine — so each step adds to one test rather than
starting a new one (a rollout that began at 100 % reads the champion from one step length before
it). Signals
(registry/quality/signals.py), each judged by an anytime-valid sequential test
(registry/quality/sequential.py) that may be looked at after every call:

- **success** (1 per answered call, 0 per failed one): the challenger's rate must not be under
  ``min_ratio`` (0.95) × the champion's;
- **speed** (decode tokens/s, as a share of the champion's median over the same window — one scale
  both sides share, so a machine busier or quieter than at any earlier moment moves both alike; a
  fixed reference taken under other load capped both sides at once and hid a model half as fast —
  each call capped at ``SPEED_CAP``, 1.25×): not under
  ``speed_ratio`` (0.8) × the champion's. Speed gets its own, looser margin: two versions
  sharing a 2-core machine under load differ by several per cent from run to run;
- **quality**, one test per signal the route has: ``scorer`` (the task's reference-free live
  scorers), ``feedback`` (applications), ``judge`` (only while its calibration meets the floor;
  otherwise shown, never gating): not under ``min_ratio`` × the champion's. In a shadow step both
  versions answered the same requests, so quality is compared pair by pair.

The chance of rolling back a challenger that is in truth within the margins is at most
``false_rollback_rate`` (5 %) over the whole rollout, split evenly over the gating signals
(Bonferroni) and, with a shadow step, over its paired test and the ramp's unpaired one. A regression rolls back as
soon as its test says so (never before ``min_samples`` calls on each side); a step advances early
when every gating signal shows the challenger within its margin, or when it has lasted
``step_seconds`` with no regression found — unless a gating signal the champion has stays
unmeasured on the challenger (its scorer or judge failing), which holds: never a silent pass.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from registry.errors import PromotionError, one_line
from registry.quality.sequential import Comparison, compare_paired, compare_unpaired, split_alpha
from registry.quality.signals import Evidence

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
    shadow: bool = Field(default=False, description="A step 0 before the ramp: the challenger answers copies, unseen.")
    false_rollback_rate: float = Field(default=0.05, gt=0, lt=0.5,
                                       description="Chance of rolling back a challenger within the margins.")

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

    @property
    def tests_per_signal(self) -> int:
        """One sequential test per signal over the whole rollout, plus the shadow step's paired one:
        each gets an equal share of the false-rollback rate."""
        return 1 + int(self.shadow)

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
          "force": "--force", "shadow": "--shadow", "false_rollback_rate": "--false-rollback-rate"}
_DEFAULTS_SHOWN = ("--ramp 10,25,50,100 --step-seconds 3600 --min-samples 10 --min-ratio 0.95 --speed-ratio 0.8 "
                   "--check-every 5 --false-rollback-rate 0.05")


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


SPEED_CAP = 1.25  # a call's speed counts up to 1.25 × the champion's: a narrow range narrows the interval fast,
# and one fast outlier cannot hide slow ones


def judge(
    policy: RolloutPolicy, champion: Evidence | None, challenger: Evidence | None, step_elapsed_s: float, *,
    gating: tuple[str, ...] = (), diagnostic: tuple[str, ...] = (), paired: bool = False,
    summary: dict[str, Any] | None = None,
) -> Check:
    """Advance, hold or roll back one step (rules in the module docstring). ``gating``: the quality
    signals that may decide; ``diagnostic``: those shown but not deciding (a judge under its floor);
    ``paired``: a shadow step, where quality is compared on the same requests; ``summary``: figures
    shown beside the verdict (each side's call counts, latency)."""
    champion = champion or Evidence()
    challenger = challenger or Evidence()
    signals = ("success", "speed", *(f"quality:{q}" for q in gating))
    alpha = split_alpha(policy.false_rollback_rate, policy.tests_per_signal * len(signals))
    tests = _tests(policy, champion, challenger, alpha, gating, diagnostic, paired)
    figures = {**(summary or {}), "step_elapsed_s": round(step_elapsed_s, 1), "paired": paired,
               "false_rollback_rate": policy.false_rollback_rate, "signals": tests}
    if challenger.n < policy.min_samples:
        return Check("hold", [f"waiting for samples: challenger has {challenger.n} of {policy.min_samples} calls "
                              "in this rollout"], figures)
    if champion.n < policy.min_samples:
        # Without a baseline a dead challenger is still caught: it has no success at all.
        if not any(challenger.success):
            return Check("rollback", [f"challenger failed all {challenger.n} calls in this rollout"], figures)
        return Check("hold", [f"waiting for samples: champion has {champion.n} of {policy.min_samples} calls"], figures)
    deciding = {name: test for name, test in tests.items() if test["gating"]}
    regressions = [f"{name}: {test['reason']}" for name, test in deciding.items() if test["decision"] == "regression"]
    if regressions:
        return Check("rollback", regressions, figures)
    unmeasured = [f"{name}: {test['reason']}" for name, test in deciding.items() if test["decision"] == "unmeasured"]
    measured = [test for test in deciding.values() if test["decision"] not in ("absent",)]
    if measured and all(test["decision"] == "non_inferior" for test in measured):
        names = ", ".join(name for name, test in deciding.items() if test["decision"] == "non_inferior")
        return Check("advance", [f"every gating signal shows the challenger within its margin: {names}"], figures)
    if step_elapsed_s < policy.step_seconds:
        left = policy.step_seconds - step_elapsed_s
        return Check("hold", [f"no regression so far; the step ends in {left:.0f} s", *unmeasured], figures)
    if unmeasured:
        return Check("hold", ["the step is over but a gating signal is not measured on the challenger", *unmeasured],
                     figures)
    undecided = [name for name, test in deciding.items() if test["decision"] in ("undecided", "waiting")]
    if undecided:  # said plainly: an advance on time is an absence of evidence against, not evidence for
        return Check("advance", [f"no regression over the whole step; still undecided: {', '.join(undecided)} "
                                 "(a longer step would gather more evidence)"], figures)
    return Check("advance", ["no regression over the whole step"], figures)


def _tests(
    policy: RolloutPolicy, champion: Evidence, challenger: Evidence, alpha: float, gating: tuple[str, ...],
    diagnostic: tuple[str, ...], paired: bool,
) -> dict[str, dict[str, Any]]:
    """Each signal's test, as JSON: its decision (``regression``, ``non_inferior``, ``undecided``;
    ``waiting`` under ``min_samples`` a side; ``absent`` when neither side has it; ``unmeasured``
    when the champion has it and the challenger's scorings failed), the figures and whether it gates."""
    tests = {
        "success": _unpaired(policy, "success", champion.success, challenger.success, policy.min_ratio, alpha),
        "speed": _speed(policy, champion, challenger, alpha),
    }
    for signal in (*gating, *diagnostic):
        tests[f"quality:{signal}"] = _quality(policy, signal, champion, challenger, alpha, paired)
    for name, test in tests.items():
        test["gating"] = name in ("success", "speed") or name.removeprefix("quality:") in gating
    return tests


def _speed(policy: RolloutPolicy, champion: Evidence, challenger: Evidence, alpha: float) -> dict[str, Any]:
    if not champion.speed:
        return _unpaired(policy, "speed", [], challenger.speed, policy.speed_ratio, alpha)
    reference = statistics.median(champion.speed)
    share = [min(value / reference, SPEED_CAP) for value in champion.speed]
    theirs = [min(value / reference, SPEED_CAP) for value in challenger.speed]
    test = _unpaired(policy, "speed", share, theirs, policy.speed_ratio, alpha, high=SPEED_CAP)
    test["reference_tokens_per_s"] = round(reference, 2)
    return test


def _quality(policy: RolloutPolicy, signal: str, champion: Evidence, challenger: Evidence, alpha: float,
             paired: bool) -> dict[str, Any]:
    ours, theirs = champion.quality.get(signal, {}), challenger.quality.get(signal, {})
    failed = {"failed_champion": champion.failed.get(signal, 0), "failed_challenger": challenger.failed.get(signal, 0)}
    if paired:
        pairs = [(ours[user], score) for shadow, score in theirs.items()
                 if (user := challenger.mirrors.get(shadow)) is not None and user in ours]
        if len(pairs) >= policy.min_samples:
            comparison = compare_paired(pairs, ratio=policy.min_ratio, alpha=alpha, signal=f"quality:{signal}")
            return {**_verdict(comparison), "pairs": len(pairs), **failed}
        if pairs or ours or theirs:
            return {"decision": _short(len(ours), len(theirs), failed, policy.min_samples),
                    "reason": f"{len(pairs)} of {policy.min_samples} scored pairs", "pairs": len(pairs), **failed}
    test = _unpaired(policy, f"quality:{signal}", list(ours.values()), list(theirs.values()), policy.min_ratio, alpha)
    if test["decision"] == "waiting":
        test["decision"] = _short(len(ours), len(theirs), failed, policy.min_samples)
    return {**test, **failed}


def _short(ours: int, theirs: int, failed: dict[str, int], floor: int) -> str:
    """Why a quality test cannot decide yet: nothing on either side, or the challenger's scorings fail."""
    if ours == 0 and theirs == 0:
        return "absent"
    if ours >= floor and theirs < floor:  # scorings failed or dropped: hold, never pass it unmeasured
        return "unmeasured"
    return "waiting"


def _unpaired(policy: RolloutPolicy, signal: str, champion: list[float], challenger: list[float], ratio: float,
              alpha: float, *, high: float = 1.0) -> dict[str, Any]:
    if min(len(champion), len(challenger)) < policy.min_samples:
        return {"decision": "waiting", "n_champion": len(champion), "n_challenger": len(challenger),
                "reason": f"{len(champion)} and {len(challenger)} of {policy.min_samples} observations a side"}
    comparison = compare_unpaired(champion, challenger, ratio=ratio, alpha=alpha, signal=signal, high=high)
    return {**_verdict(comparison), "n_champion": len(champion), "n_challenger": len(challenger)}


def _verdict(comparison: Comparison) -> dict[str, Any]:
    data = comparison.as_json()
    data.pop("signal")
    return data
