"""How well a judge version agrees with the team's labels (datasets/judge_calibration.jsonl).

Two figures per judge version, overall and per criterion:

- **accuracy at the pass threshold**: the share of items where judge and label agree on pass
  (score ≥ 0.5) or fail;
- **Spearman correlation** between the judge's scores and the labels (ranks, ties averaged).

Both count every item: an item the judge gave no valid judgement for (``JudgeError``) is a
disagreement for accuracy and is reported as ``n_failed``; Spearman is over the judged items only
and is ``None`` when the judge gave every item the same score (no ranking to correlate) — the
leaderboard says so in words rather than showing a number that means nothing. A small local model
may agree poorly; the figures are reported as measured.

Results go to the ``judge_calibration`` table and to MLflow (experiment ``arbiter-judges``, one
run per judge version, tagged with the version it measured).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from registry.catalog.tracking import log_run
from registry.catalog.versions import Catalog
from registry.errors import JudgeError
from registry.evaluation import progress
from registry.evaluation.datasets import CALIBRATION_FILE, CalibrationItem
from registry.evaluation.judge import ModelBasedJudge
from registry.evaluation.rubrics import CRITERIA, PASS_THRESHOLD
from registry.machine.hardware import fingerprint
from registry.results.store import new_id, now_utc

JUDGE_EXPERIMENT = "arbiter-judges"


@dataclass(frozen=True)
class Agreement:
    """One judge version's agreement on one criterion (or ``all``)."""

    criterion: str
    n: int
    n_failed: int
    accuracy: float
    spearman: float | None
    mean_abs_error: float | None

    def as_row(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "n": self.n, "n_failed": self.n_failed, "accuracy": self.accuracy,
                "spearman": self.spearman, "mean_abs_error": self.mean_abs_error}


def agreement(criterion: str, labels: Sequence[float], scores: Sequence[float | None]) -> Agreement:
    """The figures for paired labels and judge scores (``None``: no valid judgement)."""
    n = len(labels)
    judged = [(label, score) for label, score in zip(labels, scores, strict=True) if score is not None]
    agree = sum((label >= PASS_THRESHOLD) == (score >= PASS_THRESHOLD) for label, score in judged)
    frame = pd.DataFrame(judged, columns=["label", "score"])
    spearman = None
    if len(judged) >= 3 and frame["score"].nunique() > 1 and frame["label"].nunique() > 1:
        spearman = float(frame["label"].rank().corr(frame["score"].rank()))
    mae = float((frame["label"] - frame["score"]).abs().mean()) if judged else None
    return Agreement(criterion, n, n - len(judged), agree / n if n else 0.0, spearman, mae)


def calibrate(catalog: Catalog, judge: ModelBasedJudge, items: Sequence[CalibrationItem]) -> list[dict[str, Any]]:
    """Judge every item, compute the agreement, record it; returns the ``judge_calibration`` rows.
    The command's progress reporter (``progress.reporting``) is told of each item judged."""
    record = judge.judge_version()
    scores: list[float | None] = []
    started = time.perf_counter()
    with progress.tracked(f"{record.ref} · judge calibration", len(items), "judged") as on_item:
        for done, item in enumerate(items, start=1):
            try:
                scores.append(judge.evaluate(item.task, item.output, [item.criterion])[0].score)
            except JudgeError:
                scores.append(None)
            on_item(done, len(items))
    elapsed_s = time.perf_counter() - started
    results = [agreement("all", [i.label for i in items], scores)]
    for criterion in CRITERIA:
        pairs = [(i.label, s) for i, s in zip(items, scores, strict=True) if i.criterion == criterion]
        if pairs:
            results.append(agreement(criterion, [p[0] for p in pairs], [p[1] for p in pairs]))
    injections = [(i.label, s) for i, s in zip(items, scores, strict=True) if i.injection]
    if injections:
        results.append(agreement("injection", [p[0] for p in injections], [p[1] for p in injections]))
    sha = hashlib.sha256((catalog.settings.datasets_dir / CALIBRATION_FILE).read_bytes()).hexdigest()
    stamp = now_utc()
    mlflow_run_id = _log_to_mlflow(catalog, record.ref, results, sha, elapsed_s / max(len(items), 1))
    rows = [{"calibration_id": new_id(), "ts": stamp, "model": record.name, "version": record.version,
             **result.as_row(), "dataset_sha256": sha, "seconds_per_item": elapsed_s / max(len(items), 1),
             "mlflow_run_id": mlflow_run_id, **fingerprint().as_row()} for result in results]
    catalog.store.append("judge_calibration", rows)
    return rows


def judge_leaderboard(catalog: Catalog) -> list[dict[str, Any]]:
    """The latest calibration of each judge version on this dataset: agreement, with words when a
    figure cannot be trusted."""
    rows = catalog.store.query(
        """
        select * from (select *, row_number() over (partition by model, version, criterion, hardware_id
                                                     order by ts desc) as latest from judge_calibration)
        where latest = 1 order by criterion = 'all' desc, criterion, accuracy desc
        """
    )
    for row in rows:
        row.pop("latest")
        row["ts"] = row["ts"].isoformat()
        row["verdict"] = _verdict(row)
    return rows


def _verdict(row: dict[str, Any]) -> str:
    if row["n_failed"] == row["n"]:
        return "no valid judgement at all"
    if row["spearman"] is None:
        return "no ranking: the judge gave every item the same score"
    chance = "no better than chance" if row["accuracy"] <= 0.6 else "above chance"
    strength = "weak" if row["spearman"] < 0.3 else "moderate" if row["spearman"] < 0.6 else "strong"
    return f"{strength} rank agreement, pass/fail {chance}"


def _log_to_mlflow(catalog: Catalog, ref: str, results: list[Agreement], sha: str, seconds_per_item: float) -> str:
    name, _, version = ref.partition("/")
    tags = {"arbiter.model": name, "arbiter.version": version, "arbiter.model_version": ref,
            "arbiter.dataset_sha256": sha, "arbiter.hardware_id": fingerprint().hardware_id}
    metrics = {"seconds_per_item": seconds_per_item}
    for result in results:
        for key in ("accuracy", "spearman", "mean_abs_error", "n_failed"):
            value = getattr(result, key)
            if value is not None:
                metrics[f"{result.criterion}.{key}"] = float(value)
    return log_run(catalog, JUDGE_EXPERIMENT, run_name=f"judge-{name}-v{version}", tags=tags, metrics=metrics)
