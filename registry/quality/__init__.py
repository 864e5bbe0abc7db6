"""Live quality: what a route's answers are worth, measured while it serves, and the test that
decides a swap on it.

Signals (each a row of the ``feedback`` table, joined to its ``calls`` row): an application's or a
person's feedback, the task's reference-free live scorers, and the judgment route's judge while its
calibration meets the floor. ``sequential`` compares a challenger with the champion on them with a
test that stays valid however often it is looked at (docs/rollout.md).

- ``signals.py``: a route's evidence per version (success, speed, each quality signal per call);
- ``sequential.py``: the anytime-valid confidence sequences and the comparisons made on them (pure);
- ``live_scoring.py``: the live scorers and the judge, run off the request path;
- ``judge_gate.py``: whether the judge's calibration lets its scores gate a swap.
"""

from registry.quality.judge_gate import JudgeGate, JudgeStanding
from registry.quality.live_scoring import LiveCall, LiveScorer
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
from registry.quality.signals import Evidence, evidence

__all__ = [
    "Comparison",
    "Evidence",
    "Interval",
    "JudgeGate",
    "JudgeStanding",
    "LiveCall",
    "LiveScorer",
    "against_floor",
    "compare_paired",
    "compare_unpaired",
    "confidence_path",
    "confidence_sequence",
    "evidence",
    "split_alpha",
]
