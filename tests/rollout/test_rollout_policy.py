"""The rollout's judgement of one step: hold, advance or roll back on each live signal's anytime-valid test.

Pure rules, no model and no store: every ``Evidence`` is built by hand (seeded draws where a signal is
noisy), so each verdict is the one the sequential test gives on exactly those observations.
"""

from __future__ import annotations

import numpy as np
import pytest

from registry.quality.sequential import confidence_path, split_alpha
from registry.quality.signals import Evidence
from registry.rollout.policy import RolloutPolicy, judge

pytestmark = pytest.mark.unit

POLICY = RolloutPolicy(ramp=(10, 50, 100), step_seconds=60, min_samples=10)
QUALITY = ("scorer", "feedback")  # the gating signals of a route whose task declares live scorers


def calls(n: int, *, ok: float = 1.0, speed: float = 50.0, prefix: str = "c", **quality: list[float]) -> Evidence:
    """``n`` calls that all succeed (``ok=1``) or all fail (``ok=0``) at a steady decode speed, and
    for each quality signal given, its scores on the first calls (``{prefix}{i}`` as call ids)."""
    return Evidence(success=[ok] * n, speed=[speed] * n if ok else [],
                    quality={signal: {f"{prefix}{i}": float(v) for i, v in enumerate(scores)}
                             for signal, scores in quality.items()})


def decisions(check) -> dict[str, str]:
    return {name: test["decision"] for name, test in check.figures["signals"].items()}


def test_too_few_challenger_calls_hold_even_after_the_step_ends_and_say_how_many() -> None:
    check = judge(POLICY, calls(40), calls(9), step_elapsed_s=600)
    assert check.action == "hold"
    assert check.reasons == ["waiting for samples: challenger has 9 of 10 calls in this rollout"]


def test_too_few_champion_calls_hold_and_say_how_many() -> None:
    check = judge(POLICY, calls(4), calls(40), step_elapsed_s=600)
    assert check.action == "hold" and check.reasons == ["waiting for samples: champion has 4 of 10 calls"]


def test_a_dead_challenger_rolls_back_without_a_champion_baseline() -> None:
    for champion in (None, calls(3)):
        check = judge(POLICY, champion, calls(10, ok=0.0), step_elapsed_s=1)
        assert check.action == "rollback" and check.reasons == ["challenger failed all 10 calls in this rollout"]
    assert judge(POLICY, None, calls(10), step_elapsed_s=600).action == "hold"  # alive: wait for a baseline


def test_a_clear_success_regression_rolls_back_long_before_the_step_ends() -> None:
    check = judge(POLICY, calls(30), calls(30, ok=0.0), step_elapsed_s=1)
    assert check.action == "rollback" and len(check.reasons) == 1
    assert check.reasons[0].startswith("success: challenger 0.000 [0.000, ")
    assert "< 0.95 × champion 1.000" in check.reasons[0]
    assert decisions(check)["success"] == "regression"


def test_a_clearly_slower_challenger_rolls_back_on_decode_speed() -> None:
    rng = np.random.default_rng(5)
    champion = Evidence(success=[1.0] * 200, speed=rng.normal(50, 3, 200).tolist())
    challenger = Evidence(success=[1.0] * 200, speed=rng.normal(25, 2, 200).tolist())  # half as fast
    check = judge(POLICY, champion, challenger, step_elapsed_s=1)
    assert check.action == "rollback" and [r.split(":")[0] for r in check.reasons] == ["speed"]
    speed = check.figures["signals"]["speed"]
    assert speed["decision"] == "regression" and 49 < speed["reference_tokens_per_s"] < 51  # the champion's median
    assert speed["challenger"]["estimate"] == pytest.approx(0.5, abs=0.02)  # a share of it


def test_speed_is_scaled_by_the_champions_own_median_so_a_busier_machine_moves_both_alike() -> None:
    """Both sides four times slower than some earlier moment: the same verdict, nothing capped at once."""
    quiet = judge(POLICY, calls(200, speed=40.0), calls(200, speed=16.0), step_elapsed_s=1)
    busy = judge(POLICY, calls(200, speed=10.0), calls(200, speed=4.0), step_elapsed_s=1)
    for check in (quiet, busy):
        speed = check.figures["signals"]["speed"]
        assert (speed["champion"]["estimate"], speed["challenger"]["estimate"]) == (1.0, 0.4)
        assert check.action == "rollback" and check.reasons[0].startswith("speed: ")


def test_the_planted_quality_regression_rolls_back_on_the_scorer_signal() -> None:
    """The demo's regression: a challenger at 0.64 quality against a champion at 0.83, at the same speed."""
    rng = np.random.default_rng(16)
    n = 250
    champion = calls(n, scorer=np.clip(rng.normal(0.83, 0.1, n), 0, 1).tolist())
    challenger = calls(n, prefix="d", scorer=np.clip(rng.normal(0.64, 0.1, n), 0, 1).tolist())
    check = judge(POLICY, champion, challenger, step_elapsed_s=10, gating=QUALITY)
    assert check.action == "rollback"
    assert [reason.split(": ")[0] for reason in check.reasons] == ["quality:scorer"]
    assert decisions(check)["quality:scorer"] == "regression" and decisions(check)["quality:feedback"] == "absent"
    assert "regression" not in (decisions(check)["success"], decisions(check)["speed"])
    scorer = check.figures["signals"]["quality:scorer"]
    assert scorer["gating"] is True and scorer["n_champion"] == scorer["n_challenger"] == n
    assert scorer["challenger"]["high"] < 0.95 * scorer["champion"]["low"]


def test_the_same_gap_on_a_diagnostic_judge_is_shown_but_never_rolls_back() -> None:
    """A judge under its calibration floor: its regression is in the figures, marked not gating."""
    rng = np.random.default_rng(16)
    n = 250
    success = (rng.random((2, n)) < 0.9).astype(float).tolist()  # undecided: only time advances the step
    champion = Evidence(success=success[0], speed=[50.0] * n,
                        quality={"judge": {f"c{i}": float(v) for i, v in enumerate(rng.normal(0.83, 0.1, n).clip(0, 1))}})
    challenger = Evidence(success=success[1], speed=[50.0] * n,
                          quality={"judge": {f"d{i}": float(v) for i, v in enumerate(rng.normal(0.64, 0.1, n).clip(0, 1))}})
    during = judge(POLICY, champion, challenger, step_elapsed_s=10, gating=QUALITY, diagnostic=("judge",))
    after = judge(POLICY, champion, challenger, step_elapsed_s=60, gating=QUALITY, diagnostic=("judge",))
    assert (during.action, after.action) == ("hold", "advance")
    for check in (during, after):
        shown = check.figures["signals"]["quality:judge"]
        assert shown["decision"] == "regression" and shown["gating"] is False
        assert not any("judge" in reason for reason in check.reasons)
    gating = judge(POLICY, champion, challenger, step_elapsed_s=10, gating=("judge",))  # the same judge calibrated
    assert gating.action == "rollback" and gating.reasons[0].startswith("quality:judge: ")


def _paired_step(n: int, paired: bool):
    """A shadow step: the challenger answered copies of the champion's requests, 0.19 worse on each.
    Half the requests are easy and half hard, so each side's scores spread widely; the difference
    on the same request hardly varies."""
    rng = np.random.default_rng(16)
    difficulty = np.where(rng.random(n) < 0.5, 0.15, -0.45)
    ours = np.clip(0.85 + difficulty, 0, 1)
    theirs = np.clip(0.66 + difficulty + rng.normal(0, 0.02, n), 0, 1)
    champion = Evidence(success=[1.0] * n, speed=[50.0] * n,
                        quality={"scorer": {f"user{i}": float(v) for i, v in enumerate(ours)}})
    challenger = Evidence(success=[1.0] * n, speed=[50.0] * n, shadow_calls=n,
                          quality={"scorer": {f"shadow{i}": float(v) for i, v in enumerate(theirs)}},
                          mirrors={f"shadow{i}": f"user{i}" for i in range(n)})
    return judge(POLICY, champion, challenger, step_elapsed_s=10, gating=("scorer",), paired=paired)


def _first_rollback(paired: bool, start: int, stop: int) -> int | None:
    return next((n for n in range(start, stop) if _paired_step(n, paired).action == "rollback"), None)


def test_paired_shadow_quality_needs_fewer_observations_than_unpaired_for_the_same_gap() -> None:
    paired_n = _first_rollback(True, POLICY.min_samples, 200)
    assert paired_n is not None
    unpaired_n = _first_rollback(False, paired_n, 400)  # the unpaired test is still undecided at paired_n
    assert unpaired_n is not None and paired_n < unpaired_n - 50, (paired_n, unpaired_n)  # seen: 120 pairs, 208 calls
    scorer = _paired_step(paired_n, True).figures["signals"]["quality:scorer"]
    assert scorer["pairs"] == paired_n and scorer["difference"]["high"] < 0 and scorer["champion"] is None
    assert _paired_step(paired_n, False).figures["signals"]["quality:scorer"]["decision"] == "undecided"


def test_paired_quality_pairs_only_copies_whose_user_call_was_scored() -> None:
    champion = calls(30, prefix="user", scorer=[0.9] * 30)
    challenger = calls(30, prefix="shadow", scorer=[0.9] * 30)
    challenger.mirrors = {f"shadow{i}": f"user{i}" for i in range(5)} | {f"shadow{i}": f"elsewhere{i}" for i in range(5, 30)}
    test = judge(POLICY, champion, challenger, 10, gating=("scorer",), paired=True).figures["signals"]["quality:scorer"]
    assert test["pairs"] == 5 and test["decision"] == "waiting" and test["reason"] == "5 of 10 scored pairs"


def test_every_gating_signal_within_its_margin_advances_before_the_step_ends() -> None:
    check = judge(POLICY, calls(300, scorer=[1.0] * 300), calls(300, prefix="d", scorer=[1.0] * 300),
                  step_elapsed_s=5, gating=QUALITY)
    assert check.action == "advance"
    assert check.reasons == ["every gating signal shows the challenger within its margin: success, speed, quality:scorer"]
    assert decisions(check)["quality:feedback"] == "absent"  # a signal nobody measured does not block


def test_an_undecided_step_holds_until_its_time_is_up_then_advances() -> None:
    champion, challenger = calls(30, scorer=[0.8] * 30), calls(30, prefix="d", scorer=[0.8] * 30)
    during = judge(POLICY, champion, challenger, step_elapsed_s=20, gating=QUALITY)
    assert during.action == "hold" and during.reasons == ["no regression so far; the step ends in 40 s"]
    after = judge(POLICY, champion, challenger, step_elapsed_s=60, gating=QUALITY)
    assert set(decisions(after).values()) == {"undecided", "absent"}
    undecided = ", ".join(name for name, decision in decisions(after).items() if decision == "undecided")
    assert after.action == "advance" and after.reasons == [
        f"no regression over the whole step; still undecided: {undecided} (a longer step would gather more evidence)"]


def test_a_gating_signal_unmeasured_on_the_challenger_holds_even_after_the_step_ends() -> None:
    """The champion's answers were scored, every scoring of the challenger's failed: never a silent pass."""
    challenger = calls(30, prefix="d")
    challenger.failed = {"scorer": 30}
    for elapsed in (10, 600):
        check = judge(POLICY, calls(30, scorer=[0.8] * 30), challenger, step_elapsed_s=elapsed, gating=QUALITY)
        assert check.action == "hold"
        assert "quality:scorer: 30 and 0 of 10 observations a side" in check.reasons
        scorer = check.figures["signals"]["quality:scorer"]
        assert (scorer["decision"], scorer["failed_challenger"], scorer["failed_champion"]) == ("unmeasured", 30, 0)
    assert check.reasons[0] == "the step is over but a gating signal is not measured on the challenger"


def test_an_identical_twin_is_not_rolled_back_when_looked_at_after_every_call() -> None:
    """200 seeded twins: both sides succeed with probability 0.9, 60 calls each, judged at every call
    count from ``min_samples`` on. The judgement's success test is the challenger's interval wholly
    under 0.95 × the champion's; it is computed here for every look of every twin at once, and
    ``judge`` itself is run at every look of the first twins (and of planted regressions) to show
    that it decides exactly so."""
    rng = np.random.default_rng(2016)
    twins = (rng.random((200, 2, 60)) < 0.9).astype(float)
    worse = np.stack([twins[:8, 0], (rng.random((8, 60)) < 0.2).astype(float)], axis=1)
    # The rate is split over the two gating signals (success, speed), one test each; each side its half.
    alpha = split_alpha(POLICY.false_rollback_rate, POLICY.tests_per_signal * 2) / 2

    def predicted(ok: np.ndarray) -> np.ndarray:
        lows, highs = confidence_path(ok, alpha)
        return highs[:, 1] < POLICY.min_ratio * lows[:, 0]  # [stream, calls - 1]

    def judged(ok: np.ndarray) -> np.ndarray:
        return np.array([[judge(POLICY, Evidence(success=list(ok[s, 0, :n]), speed=[50.0] * n),
                                Evidence(success=list(ok[s, 1, :n]), speed=[50.0] * n), 1.0).action == "rollback"
                          for n in range(POLICY.min_samples, 61)] for s in range(len(ok))])

    looks = slice(POLICY.min_samples - 1, None)
    false_rollbacks = int(predicted(twins)[:, looks].any(axis=1).sum())
    assert false_rollbacks <= 0.05 * 200 / 2, false_rollbacks  # seen: 0 of 200
    assert (judged(twins[:8]) == predicted(twins[:8])[:, looks]).all()
    caught = predicted(worse)[:, looks]
    assert caught[:, -1].all() and (judged(worse) == caught).all()  # the same test does catch 0.2 against 0.9
