"""The rollout judgement at its edges: the figures and reasons every verdict carries, how the
false-rollback rate is split, signals nobody measured, and the policy's CLI values."""

from __future__ import annotations

import pytest

from registry.errors import PromotionError
from registry.quality.signals import Evidence
from registry.rollout.policy import RolloutPolicy, judge

pytestmark = pytest.mark.unit

POLICY = RolloutPolicy(ramp=(10, 50, 100), step_seconds=60, min_samples=10)


def calls(n: int = 20, *, ok: float = 1.0, prefix: str = "c", **quality: list[float]) -> Evidence:
    return Evidence(success=[ok] * n, speed=[50.0] * n if ok else [],
                    quality={signal: {f"{prefix}{i}": v for i, v in enumerate(scores)} for signal, scores in quality.items()})


@pytest.mark.parametrize(
    ("champion", "challenger", "elapsed", "action"),
    [(calls(), None, 1.0, "hold"), (None, calls(10, ok=0.0), 1.0, "rollback"), (None, calls(), 1.0, "hold"),
     (calls(30), calls(30, ok=0.0), 1.0, "rollback"), (calls(), calls(), 1.0, "hold"), (calls(), calls(), 60.0, "advance")],
)
def test_every_verdict_carries_its_reasons_and_the_figures_it_was_made_on(champion, challenger, elapsed, action) -> None:
    summary = {"champion": {"n": 20}, "challenger": None, "judge": None}
    check = judge(POLICY, champion, challenger, step_elapsed_s=elapsed, gating=("feedback",), summary=summary)
    assert check.action == action and check.reasons and all(isinstance(reason, str) for reason in check.reasons)
    assert check.as_json() == {"action": action, "reasons": check.reasons, "figures": check.figures}
    figures = check.figures
    assert {k: figures[k] for k in summary} == summary
    assert (figures["step_elapsed_s"], figures["paired"], figures["false_rollback_rate"]) == (elapsed, False, 0.05)
    assert list(figures["signals"]) == ["success", "speed", "quality:feedback"]
    for test in figures["signals"].values():
        assert {"decision", "reason", "gating"} <= set(test) and test["gating"] is True and test["reason"]


def test_the_elapsed_time_is_shown_to_a_tenth_of_a_second() -> None:
    assert judge(POLICY, calls(), calls(), step_elapsed_s=12.345).figures["step_elapsed_s"] == 12.3


def test_waiting_reasons_count_the_calls_each_side_has() -> None:
    assert judge(POLICY, calls(), None, 1).reasons == ["waiting for samples: challenger has 0 of 10 calls in this rollout"]
    assert judge(POLICY, None, calls(), 1).reasons == ["waiting for samples: champion has 0 of 10 calls"]
    success = judge(POLICY, calls(7), calls(12), 1).figures["signals"]["success"]
    assert success == {"decision": "waiting", "n_champion": 7, "n_challenger": 12, "gating": True,
                       "reason": "7 and 12 of 10 observations a side"}


def test_a_champion_with_exactly_the_minimum_samples_is_a_baseline() -> None:
    check = judge(POLICY, calls(10), calls(), step_elapsed_s=60)
    assert check.action == "advance" and check.figures["signals"]["success"]["n_champion"] == 10
    assert judge(POLICY, calls(9), calls(), step_elapsed_s=60).action == "hold"


def test_the_rate_is_split_over_the_gating_signals_only_and_the_shadow_steps_paired_test() -> None:
    """Bonferroni: 5 % over (success, speed, scorer); a diagnostic judge takes no share but is judged
    at the same level; a shadow step's paired test is one more test of each signal."""
    check = judge(POLICY, calls(), calls(), 1, gating=("scorer",), diagnostic=("judge",))
    alphas = {name: test.get("alpha") for name, test in check.figures["signals"].items()}
    assert alphas == {"success": round(0.05 / 3, 4), "speed": round(0.05 / 3, 4), "quality:scorer": None,
                      "quality:judge": None}  # the quality tests are absent: no alpha until they are tested
    shadow = POLICY.model_copy(update={"shadow": True})
    assert judge(shadow, calls(), calls(), 1, paired=True).figures["signals"]["success"]["alpha"] == 0.05 / 4
    rate = RolloutPolicy(ramp=(100,), false_rollback_rate=0.2, min_samples=10)
    scored = judge(rate, calls(scorer=[0.9] * 20), calls(prefix="d", scorer=[0.9] * 20), 1,
                   gating=("scorer",), diagnostic=("judge",))
    assert scored.figures["false_rollback_rate"] == 0.2
    assert scored.figures["signals"]["quality:scorer"]["alpha"] == round(0.2 / 3, 4)


def test_a_signal_nobody_measured_is_absent_and_does_not_block() -> None:
    check = judge(POLICY, calls(), calls(), 60, gating=("scorer", "feedback"), diagnostic=("judge",))
    assert check.action == "advance"
    assert {name: test["decision"] for name, test in check.figures["signals"].items() if name.startswith("quality")} == {
        "quality:scorer": "absent", "quality:feedback": "absent", "quality:judge": "absent"}


def test_a_challenger_with_too_few_scores_is_unmeasured_and_holds_past_the_step() -> None:
    """Few scores, failed or dropped alike: the signal is unmeasured on the challenger and the step
    holds even after its time (never a silent pass); failures with enough scores: the scores are
    compared, the failures shown beside them."""
    champion = calls(30, scorer=[0.8] * 30)
    few = calls(30, prefix="d", scorer=[0.8] * 5)
    verdict = judge(POLICY, champion, few, 10_000, gating=("scorer",))
    assert verdict.figures["signals"]["quality:scorer"]["decision"] == "unmeasured" and verdict.action == "hold"
    enough = calls(30, prefix="d", scorer=[0.8] * 20)
    enough.failed = {"scorer": 10}
    test = judge(POLICY, champion, enough, 10, gating=("scorer",)).figures["signals"]["quality:scorer"]
    assert (test["decision"], test["n_challenger"], test["failed_challenger"]) == ("undecided", 20, 10)


def test_an_unmeasured_signal_is_named_while_the_step_runs() -> None:
    challenger = calls(30, prefix="d")
    challenger.failed = {"feedback": 3}
    check = judge(POLICY, calls(30, feedback=[1.0] * 30), challenger, 20, gating=("feedback",))
    assert check.action == "hold" and check.reasons == [
        "no regression so far; the step ends in 40 s", "quality:feedback: 30 and 0 of 10 observations a side"]


def test_a_rollback_names_every_regressed_gating_signal() -> None:
    champion = calls(60, scorer=[1.0] * 60)
    challenger = Evidence(success=[0.0] * 60, quality={"scorer": {f"d{i}": 0.0 for i in range(60)}})
    check = judge(POLICY, champion, challenger, 1, gating=("scorer",))
    assert check.action == "rollback" and [reason.split(": ")[0] for reason in check.reasons] == ["success", "quality:scorer"]


def test_the_shadow_and_false_rollback_rate_flags_build_the_policy() -> None:
    policy = RolloutPolicy.parse(shadow=True, false_rollback_rate=0.1)
    assert (policy.shadow, policy.false_rollback_rate, policy.ramp) == (True, 0.1, (10, 25, 50, 100))
    assert RolloutPolicy.parse(shadow=None, false_rollback_rate=None) == RolloutPolicy()


@pytest.mark.parametrize("rate", [0, 0.7, -0.1])
def test_a_false_rollback_rate_outside_its_range_is_refused_naming_the_flag(rate: float) -> None:
    with pytest.raises(PromotionError, match="--false-rollback-rate: ") as caught:
        RolloutPolicy.parse(false_rollback_rate=rate)
    assert "--false-rollback-rate 0.05" in str(caught.value)


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
