"""The judge's calibration floor: a judge version gates only when its latest calibration run meets
both figures on enough items; never calibrated, no ranking, a short run or a figure below the floor
is diagnostic only, with the reason and the command. Rows are written as ``arbiter judge calibrate``
writes them, into a real store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from registry.machine.hardware import fingerprint
from registry.quality.judge_gate import JudgeGate
from registry.results.store import ResultsStore, new_id, now_utc
from registry.settings import get_settings

pytestmark = pytest.mark.data


def calibration(store: ResultsStore, model: str, version: int, accuracy: float, spearman: float | None, *,
                n: int = 79, days_ago: float = 0) -> None:
    """One calibration run's rows: the ``all`` row and, as calibrate writes, one per criterion (these
    per-criterion figures are far off on purpose: only the ``all`` row may count)."""
    stamp = now_utc() - timedelta(days=days_ago)
    rows = [{"criterion": "all", "n": n, "accuracy": accuracy, "spearman": spearman},
            {"criterion": "faithfulness", "n": 20, "accuracy": 1.0 - accuracy, "spearman": None},
            {"criterion": "safety", "n": 21, "accuracy": 0.1, "spearman": -0.9}]
    store.append("judge_calibration", [
        {"calibration_id": new_id(), "ts": stamp, "model": model, "version": version, "n_failed": 0,
         "mean_abs_error": 0.2, "dataset_sha256": "0" * 64, "seconds_per_item": 4.3, "mlflow_run_id": new_id(),
         **row, **fingerprint().as_row()} for row in rows])


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path / "results")


def test_never_calibrated_is_not_allowed_and_says_the_command(store: ResultsStore) -> None:
    standing = JudgeGate(store).standing("smollm2-135m", 1)
    assert not standing.allowed and standing.n == 0 and standing.accuracy is None and standing.calibrated_at is None
    assert standing.reason == ("judge smollm2-135m/1 was never calibrated, so it cannot gate; run "
                               "`arbiter judge calibrate --judge smollm2-135m/1`")


def test_a_judge_above_the_floor_gates(store: ResultsStore) -> None:
    calibration(store, "big-judge", 3, accuracy=0.82, spearman=0.64)
    standing = JudgeGate(store).standing("big-judge", 3)
    assert standing.allowed and (standing.accuracy, standing.spearman, standing.n) == (0.82, 0.64, 79)
    assert standing.reason == ("judge big-judge/3 meets the floor: accuracy 0.820 (floor 0.75), Spearman 0.640 "
                               "(floor 0.5) on 79 items")
    assert standing.as_json() == {"judge": "big-judge/3", "allowed": True, "accuracy": 0.82, "spearman": 0.64,
                                  "n": 79, "min_accuracy": 0.75, "min_spearman": 0.5, "reason": standing.reason,
                                  "calibrated_at": standing.calibrated_at}


@pytest.mark.parametrize(("accuracy", "spearman", "n", "says"), [
    (0.443, 0.144, 79, "is diagnostic only: accuracy and Spearman below the floor; accuracy 0.443 (floor 0.75), "
                       "Spearman 0.144 (floor 0.5) on 79 items"),  # the shipped SmolLM2 judge, as measured
    (0.70, 0.90, 79, "is diagnostic only: accuracy below the floor"),
    (0.90, 0.30, 79, "is diagnostic only: Spearman below the floor"),
    (0.90, None, 79, "is diagnostic only: it gave every labelled item the same score (no ranking)"),
    (1.00, 1.00, 5, "was calibrated on 5 items only, fewer than 20: run `arbiter judge calibrate --judge j/1` "
                    "without --limit"),
])
def test_below_the_floor_is_diagnostic_with_its_figures(store: ResultsStore, accuracy: float, spearman: float | None,
                                                        n: int, says: str) -> None:
    calibration(store, "j", 1, accuracy, spearman, n=n)
    standing = JudgeGate(store).standing("j", 1)
    assert not standing.allowed and standing.accuracy == accuracy and standing.spearman == spearman
    assert standing.reason.startswith("judge j/1 ") and says in standing.reason


def test_the_latest_calibration_of_that_version_counts(store: ResultsStore) -> None:
    calibration(store, "j", 1, accuracy=0.9, spearman=0.8, days_ago=3)
    calibration(store, "j", 1, accuracy=0.5, spearman=0.2)  # re-calibrated since: worse
    calibration(store, "j", 2, accuracy=0.9, spearman=0.8)  # another version's figures are its own
    gate = JudgeGate(store)
    assert not gate.standing("j", 1).allowed and gate.standing("j", 1).accuracy == 0.5
    assert gate.standing("j", 2).allowed


def test_the_floor_comes_from_the_settings(store: ResultsStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calibration(store, "j", 1, accuracy=0.443, spearman=0.144)
    monkeypatch.setenv("ARBITER_JUDGE_MIN_ACCURACY", "0.4")
    monkeypatch.setenv("ARBITER_JUDGE_MIN_SPEARMAN", "0.1")
    standing = JudgeGate.from_settings(get_settings(), store).standing("j", 1)
    assert standing.allowed and (standing.min_accuracy, standing.min_spearman) == (0.4, 0.1)
