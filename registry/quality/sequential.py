"""The test that decides a swap: anytime-valid confidence sequences on each side's live mean.

A rollout looks at its evidence every few seconds and stops as soon as it is clear. A fixed-sample
test looked at that often would cry "regression" on an identical model far more often than its
stated rate; a *confidence sequence* does not: with probability ≥ 1 − α its interval holds the true
mean at every sample count at once, so the decision may be taken at any look, as early as the data
allow, and the false-rollback rate stays ≤ α (docs/sequential.md).

The interval is the predictable plug-in empirical-Bernstein confidence sequence (PrPl-EB) of
Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting", JRSS-B 86(1),
2024 (arXiv:2010.09686), Theorem 2 — closed form, variance-adaptive (it narrows faster for steady
scores than Hoeffding would), O(n) with cumulative sums. For x_1..x_t rescaled to [0, 1]:

- μ̂_t = (1/2 + Σ_{i≤t} x_i) / (t + 1),   σ̂²_t = (1/4 + Σ_{i≤t} (x_i − μ̂_i)²) / (t + 1)
  (μ̂_0 = 1/2, σ̂²_0 = 1/4: one pseudo-observation, so nothing divides by zero);
- λ_t = min(√(2 log(2/α) / (σ̂²_{t−1} · t · log(1 + t))), 1/2) — predictable: uses x_1..x_{t−1} only;
- v_t = 4 (x_t − μ̂_{t−1})²,   ψ_E(λ) = (−log(1 − λ) − λ) / 4;
- CS_t = Σλ_i x_i / Σλ_i ± (log(2/α) + Σ v_i ψ_E(λ_i)) / Σλ_i, cut to [0, 1], and intersected
  with every earlier CS_s (valid because all hold at once; it only tightens). Should that running
  intersection ever come out empty — which the guarantee says happens with probability ≤ α, or when
  the mean drifted — the current CS_t alone is reported, so an interval is never inverted.

Checked against the reference implementation (``confseq`` 0.0.11, ``predmix_lower_cs`` on x and
1 − x at α/2 with the paper's λ_t and centring μ̂_{i−1}): the same bounds to 1e-12. (confseq's
``predmix_empbern_twosided_cs`` centres v_t on the plain running mean instead; any predictable
centring is valid, and the two differ in the fourth decimal.)

The guarantee assumes each observation's mean given the past is the same μ (i.i.d. scores do) and
that the observations are passed *in the order they arrived*: the bets λ_t depend on the order, so
the same rows in the same order always give the same interval — a rerun after a crash decides what
the killed run would have. Everything here is pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Decision = Literal["regression", "non_inferior", "undecided"]

_MAX_BET = 0.5  # the paper's truncation c = 1/2


@dataclass(frozen=True)
class Interval:
    """One side's mean, in the observations' own scale: ``estimate`` is the plain sample mean
    (None with no observations), ``[low, high]`` the confidence sequence at this sample count.

    The interval is centred on a bet-weighted mean, so on a stream whose mean drifted the plain
    mean may lie outside it; on a steady stream the two agree closely."""

    n: int
    estimate: float | None
    low: float
    high: float

    def as_json(self) -> dict[str, Any]:
        return {"n": self.n, "estimate": _round(self.estimate), "low": _round(self.low), "high": _round(self.high)}

    def describe(self) -> str:
        """``0.641 [0.580, 0.700] (n=120)`` — the figures a reason quotes."""
        if self.estimate is None:
            return "with no observations yet (n=0)"
        return f"{_num(self.estimate)} [{_num(self.low)}, {_num(self.high)}] (n={self.n})"


@dataclass(frozen=True)
class Comparison:
    """One signal's verdict on the challenger, with the figures it rests on.

    ``ratio`` is the margin (the challenger must reach ``ratio`` × the champion) or, for
    :func:`against_floor`, the floor. A paired comparison carries only ``difference``
    (the mean of challenger − ratio × champion on the same requests); an unpaired one
    ``champion`` and ``challenger``; a floor check only ``challenger``.
    """

    signal: str
    decision: Decision
    reason: str
    ratio: float
    alpha: float
    champion: Interval | None
    challenger: Interval | None
    difference: Interval | None

    def as_json(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "decision": self.decision,
            "reason": self.reason,
            "ratio": _round(self.ratio),
            "alpha": _round(self.alpha),
            "champion": self.champion.as_json() if self.champion else None,
            "challenger": self.challenger.as_json() if self.challenger else None,
            "difference": self.difference.as_json() if self.difference else None,
        }


def confidence_path(
    values: npt.ArrayLike, alpha: float, *, low: float = 0.0, high: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """The running confidence sequence after every observation: ``(lows, highs)``, shaped like ``values``.

    The last axis is time; any leading axes are independent streams (a batch of simulations, or the
    points of a plot of a rollout). ``lows[..., t - 1], highs[..., t - 1]`` is the interval after t
    observations, in the values' own scale.

    Example::

        lows, highs = confidence_path([0.8, 1.0, 0.6], 0.05)   # three ever-narrower intervals
    """
    _check_alpha(alpha)
    _check_bounds(low, high)
    x = _within(np.asarray(values, dtype=float), low, high)
    lo01, hi01 = _running_cs((x - low) / (high - low), alpha)
    return low + (high - low) * lo01, low + (high - low) * hi01


def confidence_sequence(values: Sequence[float], alpha: float, *, low: float = 0.0, high: float = 1.0) -> Interval:
    """The mean of ``values`` (each in ``[low, high]``, in arrival order) with its anytime-valid interval.

    Example::

        confidence_sequence([0.9, 0.7, 1.0, 0.8], alpha=0.05)   # Interval(n=4, estimate=0.85, low=…, high=…)
        confidence_sequence([], alpha=0.05, low=0, high=80)     # Interval(n=0, estimate=None, low=0, high=80)
    """
    _check_alpha(alpha)
    _check_bounds(low, high)
    return _interval(_within(np.asarray(values, dtype=float).reshape(-1), low, high), alpha, low, high)


def compare_unpaired(
    champion: Sequence[float],
    challenger: Sequence[float],
    *,
    ratio: float,
    alpha: float,
    signal: str,
    low: float = 0.0,
    high: float = 1.0,
) -> Comparison:
    """Is the challenger's mean under ``ratio`` × the champion's? Each side from its own calls.

    Each side gets a confidence sequence at α/2, so both hold at every look with probability
    ≥ 1 − α (union bound); "regression" needs the challenger's whole interval under ``ratio`` ×
    the champion's whole interval, "non_inferior" the reverse. Higher values are better.

    Example::

        compare_unpaired(champion_scores, challenger_scores, ratio=0.95, alpha=0.05, signal="quality:scorer")
    """
    _check_ratio(ratio)
    _check_alpha(alpha)
    champ = confidence_sequence(champion, alpha / 2, low=low, high=high)
    chal = confidence_sequence(challenger, alpha / 2, low=low, high=high)
    margin = f"{ratio:g} × champion {champ.describe()}"
    if chal.high < ratio * champ.low:
        decision: Decision = "regression"
        reason = f"challenger {chal.describe()} < {margin}"
    elif chal.low >= ratio * champ.high:
        decision = "non_inferior"
        reason = f"challenger {chal.describe()} ≥ {margin}"
    else:
        decision = "undecided"
        reason = f"challenger {chal.describe()} and {margin} overlap: more observations needed"
    return Comparison(signal, decision, reason, float(ratio), float(alpha), champ, chal, None)


def compare_paired(
    pairs: Sequence[tuple[float, float]],
    *,
    ratio: float,
    alpha: float,
    signal: str,
    low: float = 0.0,
    high: float = 1.0,
) -> Comparison:
    """Is the challenger under ``ratio`` × the champion on the *same* requests (shadow copies)?

    ``pairs`` are ``(champion_value, challenger_value)``, in arrival order. The test runs on
    d = challenger − ratio × champion, which lies in ``[low − ratio·high, high − ratio·low]``:
    the request's own difficulty cancels out, so it needs fewer samples than the unpaired test.
    "regression" when d's interval lies under 0, "non_inferior" when it lies at or above 0.

    Example::

        compare_paired([(0.9, 0.6), (1.0, 0.7)], ratio=0.95, alpha=0.05, signal="quality:judge")
    """
    _check_ratio(ratio)
    _check_alpha(alpha)
    _check_bounds(low, high)
    both = np.asarray(pairs, dtype=float)
    if both.size == 0:
        both = both.reshape(0, 2)
    if both.ndim != 2 or both.shape[1] != 2:
        raise ValueError("pairs must be (champion_value, challenger_value) tuples")
    _within(both.reshape(-1), low, high)
    d = both[:, 1] - ratio * both[:, 0]
    d_low, d_high = low - ratio * high, high - ratio * low
    diff = _interval(np.clip(d, d_low, d_high), alpha, d_low, d_high)
    what = f"challenger − {ratio:g} × champion on the same requests: {diff.describe()}"
    if diff.high < 0:
        decision: Decision = "regression"
        reason = f"{what} < 0"
    elif diff.low >= 0:
        decision = "non_inferior"
        reason = f"{what} ≥ 0"
    else:
        decision = "undecided"
        reason = f"{what} spans 0: more observations needed"
    return Comparison(signal, decision, reason, float(ratio), float(alpha), None, None, diff)


def against_floor(
    values: Sequence[float], *, floor: float, alpha: float, signal: str, low: float = 0.0, high: float = 1.0
) -> Comparison:
    """Is the serving model's mean under a fixed ``floor`` (auto-swap: no challenger to compare with)?

    "regression" when the whole interval lies under the floor, "non_inferior" when it lies at or
    above it. The result's ``ratio`` holds the floor.

    Example::

        against_floor(success_flags, floor=0.8, alpha=0.05, signal="success")
    """
    _check_bounds(low, high)
    if not (math.isfinite(floor) and low <= floor <= high):
        raise ValueError(f"floor {floor!r} must lie within the values' range [{low}, {high}]")
    mean = confidence_sequence(values, alpha, low=low, high=high)
    if mean.high < floor:
        decision: Decision = "regression"
        reason = f"mean {mean.describe()} < floor {_num(floor)}"
    elif mean.low >= floor:
        decision = "non_inferior"
        reason = f"mean {mean.describe()} ≥ floor {_num(floor)}"
    else:
        decision = "undecided"
        reason = f"mean {mean.describe()} spans the floor {_num(floor)}: more observations needed"
    return Comparison(signal, decision, reason, float(floor), float(alpha), None, mean, None)


def split_alpha(alpha: float, k: int) -> float:
    """Each of ``k`` signals tested together gets α / k (Bonferroni), so that the chance that *any*
    of them cries regression on an equal challenger stays ≤ α."""
    _check_alpha(alpha)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of signals must be a whole number ≥ 1, not {k!r}")
    return alpha / k


def _interval(x: np.ndarray, alpha: float, low: float, high: float) -> Interval:
    """The interval after the last of ``x`` (1-D, already checked to lie in ``[low, high]``)."""
    if x.size == 0:
        return Interval(0, None, float(low), float(high))
    lo01, hi01 = _running_cs((x - low) / (high - low), alpha)
    return Interval(int(x.size), float(x.mean()), low + (high - low) * float(lo01[-1]), low + (high - low) * float(hi01[-1]))


def _running_cs(x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """PrPl-EB over the last axis of ``x`` (values in [0, 1]), running intersection taken."""
    if x.shape[-1] == 0:
        return x.copy(), x.copy()
    t = np.arange(1, x.shape[-1] + 1, dtype=float)
    log_term = math.log(2 / alpha)
    mu = (0.5 + np.cumsum(x, axis=-1)) / (t + 1)
    sigma2 = (0.25 + np.cumsum((x - mu) ** 2, axis=-1)) / (t + 1)
    mu_before = _shift(mu, 0.5)
    sigma2_before = _shift(sigma2, 0.25)
    bets = np.minimum(np.sqrt(2 * log_term / (sigma2_before * t * np.log1p(t))), _MAX_BET)
    psi = (-np.log1p(-bets) - bets) / 4
    spread = 4 * (x - mu_before) ** 2
    staked = np.cumsum(bets, axis=-1)
    centre = np.cumsum(bets * x, axis=-1) / staked
    margin = (log_term + np.cumsum(spread * psi, axis=-1)) / staked
    lows = np.maximum(centre - margin, 0.0)
    highs = np.minimum(centre + margin, 1.0)
    run_lows = np.maximum.accumulate(lows, axis=-1)
    run_highs = np.minimum.accumulate(highs, axis=-1)
    empty = run_lows > run_highs
    return np.where(empty, lows, run_lows), np.where(empty, highs, run_highs)


def _shift(a: np.ndarray, first: float) -> np.ndarray:
    """``a`` one step later in time: the value before each observation, ``first`` before the first."""
    before = np.empty_like(a)
    before[..., 0] = first
    before[..., 1:] = a[..., :-1]
    return before


def _within(x: np.ndarray, low: float, high: float) -> np.ndarray:
    outside = ~((x >= low) & (x <= high))  # NaN is outside too
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        at = where[0] if len(where) == 1 else where
        raise ValueError(f"value {float(x[where])!r} at position {at} lies outside [{low}, {high}]")
    return np.clip(x, low, high)


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise ValueError(f"alpha {alpha!r} must be a rate strictly between 0 and 1, e.g. 0.05")


def _check_ratio(ratio: float) -> None:
    if isinstance(ratio, bool) or not (isinstance(ratio, int | float) and math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio {ratio!r} must be a positive number, e.g. 0.95")


def _check_bounds(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"the values' range [{low}, {high}] must be finite with low < high")


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
