"""Whether the judgment route's judge may gate a swap: its calibration against the floor.

The judge scores live answers whatever its calibration (those rows are always written); this
decides, when a rollout or auto-swap step is judged, whether the judge's scores count as evidence
or are shown as diagnostic only. A 135M judge agrees with the team's labels no better than a coin
(docs/judge.md: accuracy 0.44), and a swap decided on its scores would be decided by noise.

The standing is read from the ``judge_calibration`` table (``arbiter judge calibrate``): the judge
version's **latest calibration run**, its ``all`` row — accuracy at the pass threshold over every
labelled item (an item with no valid judgement counts as a disagreement) and Spearman over the
judged items. Why the ``all`` row rather than the mean of the per-criterion rows: it is the same
run's figure over every item, each weighed once, and Spearman per criterion is often undefined (a
judge that gives one score to every item of a criterion has no ranking); the mean of defined ones
would hide that. The floor (``ARBITER_JUDGE_MIN_ACCURACY``, default 0.75, and
``ARBITER_JUDGE_MIN_SPEARMAN``, default 0.5) must both be met, on at least ``min_items`` items: a
calibration cut short with ``--limit 5`` can pass by chance.

Not calibrated, no ranking at all, too few items, or below either figure: not allowed, with the
reason and the command that changes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from registry.results.store import ResultsStore

if TYPE_CHECKING:
    from registry.settings import Settings

MIN_ITEMS = 20  # the labelled set has 79; a calibration over fewer is a sample, not a measure


@dataclass(frozen=True)
class JudgeStanding:
    """One judge version against the floor: whether its live scores may gate, and why."""

    judge: str  # NAME/VERSION
    allowed: bool
    accuracy: float | None
    spearman: float | None
    n: int
    min_accuracy: float
    min_spearman: float
    reason: str
    calibrated_at: str | None = None  # ISO 8601 of the calibration read; None: never calibrated

    def as_json(self) -> dict[str, Any]:
        """What ``routes status --json`` shows for the judge signal."""
        return {"judge": self.judge, "allowed": self.allowed, "accuracy": self.accuracy, "spearman": self.spearman,
                "n": self.n, "min_accuracy": self.min_accuracy, "min_spearman": self.min_spearman,
                "reason": self.reason, "calibrated_at": self.calibrated_at}


class JudgeGate:
    """Example::

        gate = JudgeGate(store)                           # or JudgeGate.from_settings(settings, store)
        standing = gate.standing("smollm2-135m", 1)
        standing.allowed, standing.reason                 # False, 'judge smollm2-135m/1 is below the floor: …'
    """

    def __init__(self, store: ResultsStore, min_accuracy: float = 0.75, min_spearman: float = 0.5, *,
                 min_items: int = MIN_ITEMS) -> None:
        self.store = store
        self.min_accuracy = min_accuracy
        self.min_spearman = min_spearman
        self.min_items = min_items

    @classmethod
    def from_settings(cls, settings: Settings, store: ResultsStore | None = None) -> JudgeGate:
        return cls(store or ResultsStore(settings.results_dir), settings.judge_min_accuracy, settings.judge_min_spearman)

    def standing(self, model: str, version: int) -> JudgeStanding:
        """The judge version's standing from its latest calibration run (one small query)."""
        ref = f"{model}/{version}"
        rows = self.store.query(
            "select ts, n, accuracy, spearman from judge_calibration "
            "where model = $1 and version = $2 and criterion = 'all' order by ts desc limit 1",
            [model, version],
        )
        if not rows:
            return self._standing(ref, False, None, None, 0, None,
                                  f"judge {ref} was never calibrated, so it cannot gate; run "
                                  f"`arbiter judge calibrate --judge {ref}`")
        row = rows[0]
        accuracy, spearman, n = row["accuracy"], row["spearman"], int(row["n"])
        at = row["ts"].isoformat()
        figures = (f"accuracy {accuracy:.3f} (floor {self.min_accuracy:g}), Spearman "
                   f"{'none' if spearman is None else f'{spearman:.3f}'} (floor {self.min_spearman:g}) on {n} items")
        if n < self.min_items:
            return self._standing(ref, False, accuracy, spearman, n, at,
                                  f"judge {ref} was calibrated on {n} items only, fewer than {self.min_items}: "
                                  f"run `arbiter judge calibrate --judge {ref}` without --limit")
        if spearman is None:
            return self._standing(ref, False, accuracy, spearman, n, at,
                                  f"judge {ref} is diagnostic only: it gave every labelled item the same score "
                                  f"(no ranking); {figures}")
        below = [name for name, value, floor in (("accuracy", accuracy, self.min_accuracy),
                                                  ("Spearman", spearman, self.min_spearman)) if value < floor]
        if below:
            return self._standing(ref, False, accuracy, spearman, n, at,
                                  f"judge {ref} is diagnostic only: {' and '.join(below)} below the floor; {figures}")
        return self._standing(ref, True, accuracy, spearman, n, at, f"judge {ref} meets the floor: {figures}")

    def _standing(self, ref: str, allowed: bool, accuracy: float | None, spearman: float | None, n: int,
                  at: str | None, reason: str) -> JudgeStanding:
        return JudgeStanding(ref, allowed, accuracy, spearman, n, self.min_accuracy, self.min_spearman, reason, at)
