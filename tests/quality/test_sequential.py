"""The anytime-valid test: its guarantee, its error rate, its power, and its edges — on seeded simulations.

Each simulation is a batch of streams, vectorised: ``confidence_path`` gives every stream's
interval after every sample, so "looked at after every sample" is checked at every sample.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from registry.quality.sequential import (
    Comparison,
    Interval,
    against_floor,
    compare_paired,
    compare_unpaired,
    confidence_path,
    confidence_sequence,
    split_alpha,
)

pytestmark = pytest.mark.unit

ALPHA = 0.05
STREAMS = 300


def extract_scores(rng: np.random.Generator, mean: float, shape: tuple[int, ...]) -> np.ndarray:
    """Scores like the ``extract`` task's: 0.3 for valid JSON, +0.7/3 per expected field right."""
    return 0.3 + 0.7 * rng.binomial(3, (mean - 0.3) / 0.7, shape) / 3


def unpaired_paths(champion: np.ndarray, challenger: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    """Both sides' bounds after every sample, each side at α/2 — as ``compare_unpaired`` builds them."""
    return (*confidence_path(champion, alpha / 2), *confidence_path(challenger, alpha / 2))


def paired_path(champion: np.ndarray, challenger: np.ndarray, ratio: float, alpha: float) -> tuple[np.ndarray, ...]:
    return confidence_path(challenger - ratio * champion, alpha, low=-ratio, high=1.0)


def first_true(flags: np.ndarray) -> np.ndarray:
    """Per stream, the sample count (1-based) at which ``flags`` is first true; inf when never."""
    return np.where(flags.any(axis=1), flags.argmax(axis=1) + 1, np.inf)


@pytest.mark.parametrize(
    ("name", "draw", "mean"),
    [
        ("bernoulli", lambda rng: rng.binomial(1, 0.8, (STREAMS, 500)).astype(float), 0.8),
        ("beta", lambda rng: rng.beta(2.0, 5.0, (STREAMS, 500)), 2 / 7),
        ("extract", lambda rng: extract_scores(rng, 0.83, (STREAMS, 500)), 0.83),
    ],
)
def test_the_interval_holds_the_true_mean_at_every_sample_count(name, draw, mean) -> None:
    lows, highs = confidence_path(draw(np.random.default_rng(7)), ALPHA)
    covered_throughout = ((lows <= mean) & (mean <= highs)).all(axis=1)
    assert covered_throughout.mean() >= 1 - ALPHA, name
    assert (lows <= highs).all()
    assert (np.diff(lows, axis=1) >= 0).all() and (np.diff(highs, axis=1) <= 0).all()  # the running intersection


@pytest.mark.parametrize("ratio", [0.95, 1.0])
def test_an_identical_challenger_is_rarely_ever_called_a_regression(ratio: float) -> None:
    """Looked at after every sample up to 400: the share of streams *ever* crying regression ≤ α."""
    rng = np.random.default_rng(11)
    champion, challenger = (extract_scores(rng, 0.83, (STREAMS, 400)) for _ in range(2))
    champ_low, _, _, chal_high = unpaired_paths(champion, challenger, ALPHA)
    unpaired_rate = (chal_high < ratio * champ_low).any(axis=1).mean()
    _, d_high = paired_path(champion, challenger, ratio, ALPHA)
    paired_rate = (d_high < 0).any(axis=1).mean()
    assert unpaired_rate <= ALPHA and paired_rate <= ALPHA, (unpaired_rate, paired_rate)


def test_the_planted_regression_is_caught_early() -> None:
    """The issue's planted regression: champion 0.83, challenger 0.64 (SmolLM2 Q4_1 vs Q4_0 on extract)."""
    rng = np.random.default_rng(23)
    champion, challenger = extract_scores(rng, 0.83, (STREAMS, 600)), extract_scores(rng, 0.64, (STREAMS, 600))
    champ_low, _, _, chal_high = unpaired_paths(champion, challenger, ALPHA)
    unpaired_n = first_true(chal_high < 0.95 * champ_low)
    _, d_high = paired_path(champion, challenger, 0.95, ALPHA)
    paired_n = first_true(d_high < 0)
    assert np.isfinite(unpaired_n).all() and np.isfinite(paired_n).all()  # every stream caught by n = 600
    assert np.median(unpaired_n) <= 250 and np.median(paired_n) <= 250, (np.median(unpaired_n), np.median(paired_n))


def test_an_identical_twin_is_declared_non_inferior_in_the_end() -> None:
    rng = np.random.default_rng(29)
    champion, challenger = (extract_scores(rng, 0.83, (STREAMS, 3000)) for _ in range(2))
    _, champ_high, chal_low, _ = unpaired_paths(champion, challenger, ALPHA)
    unpaired_n = first_true(chal_low >= 0.95 * champ_high)
    d_low, _ = paired_path(champion, challenger, 0.95, ALPHA)
    paired_n = first_true(d_low >= 0)
    assert np.median(unpaired_n) <= 2000 and np.median(paired_n) <= 2000, (np.median(unpaired_n), np.median(paired_n))


def test_the_comparisons_decide_as_the_paths_say() -> None:
    rng = np.random.default_rng(31)
    champion, challenger = extract_scores(rng, 0.83, 300), extract_scores(rng, 0.64, 300)
    unpaired = compare_unpaired(champion, challenger, ratio=0.95, alpha=ALPHA, signal="quality:scorer")
    champ_low, champ_high, chal_low, chal_high = (path[-1] for path in unpaired_paths(champion, challenger, ALPHA))
    assert unpaired.decision == "regression" and chal_high < 0.95 * champ_low
    assert (unpaired.champion.low, unpaired.challenger.high) == pytest.approx((champ_low, chal_high))
    assert unpaired.difference is None and unpaired.signal == "quality:scorer"
    assert unpaired.reason.startswith(f"challenger {unpaired.challenger.estimate:.3f} [") and " < 0.95 × champion " in unpaired.reason

    paired = compare_paired(list(zip(champion, challenger, strict=True)), ratio=0.95, alpha=ALPHA, signal="quality:judge")
    d_low, d_high = (path[-1] for path in paired_path(champion, challenger, 0.95, ALPHA))
    assert paired.decision == "regression" and (paired.difference.low, paired.difference.high) == pytest.approx((d_low, d_high))
    assert paired.champion is None and paired.challenger is None
    assert paired.difference.estimate == pytest.approx(float(np.mean(challenger - 0.95 * champion)))
    assert paired.reason.endswith("< 0")

    same_answers = [(x, x) for x in extract_scores(rng, 0.83, 1000)]  # d = 0.05 x > 0, yet bets are capped at 1/2
    twin = compare_paired(same_answers, ratio=0.95, alpha=ALPHA, signal="quality:judge")
    assert twin.decision == "non_inferior" and twin.reason.endswith("≥ 0")
    close = compare_unpaired(champion, champion[::-1], ratio=0.95, alpha=ALPHA, signal="success")
    assert close.decision == "undecided" and "more observations needed" in close.reason


def test_a_mean_against_a_floor() -> None:
    ones = [1.0] * 200
    assert against_floor(ones, floor=0.8, alpha=ALPHA, signal="success").decision == "non_inferior"
    failing = against_floor([1.0, 0.0] * 100, floor=0.8, alpha=ALPHA, signal="success")
    assert failing.decision == "regression" and "< floor 0.800" in failing.reason
    assert failing.ratio == 0.8 and failing.champion is None and failing.challenger.n == 200
    few = against_floor([1.0, 0.0, 1.0], floor=0.8, alpha=ALPHA, signal="success")
    assert few.decision == "undecided" and "spans the floor" in few.reason


def test_no_observations_decide_nothing() -> None:
    assert confidence_sequence([], ALPHA, low=0, high=80) == Interval(0, None, 0.0, 80.0)
    assert confidence_path([], ALPHA)[0].shape == (0,)
    empty = compare_unpaired([], [], ratio=0.95, alpha=ALPHA, signal="speed")
    assert empty.decision == "undecided" and "no observations yet" in empty.reason
    assert compare_paired([], ratio=1.0, alpha=ALPHA, signal="q").difference == Interval(0, None, -1.0, 1.0)
    assert against_floor([], floor=0.5, alpha=ALPHA, signal="q").decision == "undecided"


def test_one_observation_and_constant_streams() -> None:
    one = confidence_sequence([0.7], ALPHA)
    assert one.n == 1 and one.estimate == 0.7 and 0 <= one.low < 0.7 < one.high <= 1
    steady = confidence_sequence([0.7] * 2000, ALPHA)
    assert steady.low < 0.7 < steady.high and steady.high - steady.low < 0.05  # variance-adaptive: narrows fast
    perfect = confidence_sequence([1.0] * 500, ALPHA)
    assert perfect.high == 1.0 and perfect.low > 0.97
    assert confidence_sequence([0.0] * 500, ALPHA).low == 0.0


def test_values_at_the_bounds_and_another_scale() -> None:
    rng = np.random.default_rng(3)
    x = rng.beta(2, 2, 300)
    x[:10] = [0, 1] * 5
    unit, scaled = confidence_sequence(x, ALPHA), confidence_sequence(80 * x, ALPHA, low=0, high=80)
    assert (scaled.low, scaled.estimate, scaled.high) == pytest.approx((80 * unit.low, 80 * unit.estimate, 80 * unit.high))
    shifted = confidence_sequence(x - 1, ALPHA, low=-1, high=0)
    assert (shifted.low, shifted.high) == pytest.approx((unit.low - 1, unit.high - 1))


def test_a_drifting_mean_never_inverts_the_interval() -> None:
    """The running intersection of a stream whose mean moved comes out empty: the current interval is reported."""
    drifted = [1.0] * 300 + [0.0] * 3000
    lows, highs = confidence_path(drifted, ALPHA)
    assert (lows <= highs).all()
    last = confidence_sequence(drifted, ALPHA)
    assert last.low <= last.high < lows[299]  # not the stale interval of the first 300


def test_the_same_rows_give_the_same_interval() -> None:
    values = list(np.random.default_rng(5).beta(3, 1, 1000))
    assert confidence_sequence(values, ALPHA) == confidence_sequence(list(values), ALPHA)


def test_as_json_rounds_to_four_places() -> None:
    result = compare_unpaired([0.8123456] * 50, [0.7] * 50, ratio=0.95, alpha=split_alpha(0.05, 3), signal="q")
    doc = result.as_json()
    assert set(doc) == {"signal", "decision", "reason", "ratio", "alpha", "champion", "challenger", "difference"}
    assert doc["alpha"] == 0.0167 and doc["difference"] is None
    assert doc["champion"]["estimate"] == 0.8123 and doc["champion"]["n"] == 50
    assert isinstance(result, Comparison) and Interval(0, None, 0.0, 1.0).as_json()["estimate"] is None


def test_split_alpha() -> None:
    assert split_alpha(0.05, 1) == 0.05
    assert math.isclose(split_alpha(0.05, 3), 0.05 / 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: confidence_sequence([0.5], 0), "alpha 0 must be a rate strictly between 0 and 1"),
        (lambda: confidence_sequence([0.5], 1.0), "alpha 1.0"),
        (lambda: confidence_sequence([0.5], float("nan")), "alpha nan"),
        (lambda: confidence_sequence([0.5], True), "alpha True"),
        (lambda: confidence_sequence([0.5, 1.2, -1], ALPHA), "value 1.2 at position 1 lies outside [0.0, 1.0]"),
        (lambda: confidence_sequence([float("nan")], ALPHA), "value nan at position 0"),
        (lambda: confidence_sequence([0.5], ALPHA, low=1, high=1), "the values' range [1, 1] must be finite with low < high"),
        (lambda: confidence_sequence([0.5], ALPHA, high=float("inf")), "must be finite"),
        (lambda: compare_unpaired([1], [1], ratio=0, alpha=ALPHA, signal="q"), "ratio 0 must be a positive number"),
        (lambda: compare_unpaired([1], [1], ratio=float("inf"), alpha=ALPHA, signal="q"), "ratio inf"),
        (lambda: compare_unpaired([1], [2], ratio=1, alpha=ALPHA, signal="q"), "value 2.0 at position 0"),
        (lambda: compare_paired([(1, 0.5)], ratio=-1, alpha=ALPHA, signal="q"), "ratio -1"),
        (lambda: compare_paired([(1, 0.5, 0)], ratio=1, alpha=ALPHA, signal="q"), "pairs must be (champion_value, challenger_value)"),
        (lambda: compare_paired([(0.5, 0.5), (0.5, 1.5)], ratio=1, alpha=ALPHA, signal="q"), "value 1.5 at position 3"),
        (lambda: compare_paired([(1, 1)], ratio=1, alpha=2, signal="q"), "alpha 2"),
        (lambda: against_floor([1], floor=1.5, alpha=ALPHA, signal="q"), "floor 1.5 must lie within the values' range [0.0, 1.0]"),
        (lambda: split_alpha(0.05, 0), "the number of signals must be a whole number ≥ 1, not 0"),
        (lambda: split_alpha(0.05, 1.5), "not 1.5"),
        (lambda: split_alpha(0.0, 2), "alpha 0.0"),
    ],
)
def test_bad_input_is_one_clear_line(call, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        call()
    assert message in str(caught.value) and "\n" not in str(caught.value)
