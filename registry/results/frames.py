"""Results as pandas DataFrames: the runs, the leaderboard and each item's answer, for notebooks.

The CLI prints rows and ``--json`` writes them; a data scientist wants frames to filter, pivot and
plot. Runs and answers come from DuckDB through Arrow, so their columns keep the tables' types (UTC
timestamps, integers) and an empty result still has its columns: a notebook's code that picks
columns runs before the first benchmark too.

Example::

    runs = runs_frame(store, task="support")
    answers = answers_frame(store, task="support")
    answers.pivot(index="item_id", columns="ref", values="quality")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from registry.results.store import ResultsStore

ModelFilter = tuple[str, int | None]
"""A model name and, optionally, one of its versions (None: every version)."""

SCORE_PREFIX = "score_"
"""Each scorer's score is a column of the answers frame, named ``score_<its label>``."""


def runs_frame(
    store: ResultsStore, *, task: str | None = None, task_version: int | None = None,
    models: Sequence[ModelFilter] = (), run_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every benchmark run that matches, oldest first, with ``ref`` (``model/version``) first."""
    where, params = _filters(task=task, task_version=task_version, models=models, run_ids=run_ids)
    return _frame(store, f"select model || '/' || version as ref, * from runs where {where} order by ts", params)


def answers_frame(
    store: ResultsStore, *, task: str | None = None, task_version: int | None = None,
    models: Sequence[ModelFilter] = (), run_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per benchmarked item: its answer, quality, each scorer's score (``score_<label>``)
    and what it cost. Without ``run_ids``, the latest run of each version on the newest version of
    the task that was measured (figures from two versions of a task are not comparable)."""
    where, params = _filters(task=task, task_version=task_version, models=models, run_ids=run_ids)
    newest = "true" if run_ids is not None or task_version is not None else (
        f"task_version is not distinct from (select max(task_version) from runs where {where})"
    )
    latest = "true" if run_ids is not None else "latest = 1"
    frame = _frame(
        store,
        f"""
        with chosen as (
            select run_id, task, task_version, ts as run_ts from (
                select *, row_number() over (partition by model, version order by ts desc) as latest
                from runs where {where} and {newest})
            where {latest})
        select c.model || '/' || c.version as ref, c.run_id, c.model, c.version, r.task, r.task_version, c.item_id,
               c.answer, c.quality, c.scores, c.score_problems, c.ok, c.error, c.wall_ms, c.ttft_ms, c.prompt_tokens,
               c.completion_tokens, c.energy_mwh, c.energy_source, c.ts
        from calls c join chosen r using (run_id)
        where c.source = 'benchmark'
        order by r.run_ts, c.ts
        """,
        params * 2 if newest != "true" else params,
    )
    return _spread_scores(frame)


def leaderboard_frame(store: ResultsStore, task: str | None = None, task_version: int | None = None) -> pd.DataFrame:
    """``store.leaderboard`` as a frame (the one definition of the leaderboard), with ``ref`` first
    and ``ts`` a timestamp; empty, without columns, until something is benchmarked."""
    rows = [row for row in store.leaderboard(task) if task_version is None or row["task_version"] == task_version]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame.insert(0, "ref", frame["model"] + "/" + frame["version"].astype(str))
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def _filters(
    *, task: str | None, task_version: int | None, models: Sequence[ModelFilter], run_ids: Sequence[str] | None,
) -> tuple[str, list[Any]]:
    """A ``where`` clause over the runs table and its parameters (positional, in order)."""
    clauses, params = ["true"], []
    if task is not None:
        clauses.append("task = ?")
        params.append(task)
    if task_version is not None:
        clauses.append("task_version = ?")
        params.append(task_version)
    if models:
        chosen = []
        for name, version in models:
            chosen.append("model = ?" if version is None else "(model = ? and version = ?)")
            params += [name] if version is None else [name, version]
        clauses.append(f"({' or '.join(chosen)})")
    if run_ids is not None:
        clauses.append("list_contains(?, run_id)")
        params.append(list(run_ids))
    return " and ".join(clauses), params


def _frame(store: ResultsStore, sql: str, params: list[Any]) -> pd.DataFrame:
    """Through Arrow: DuckDB's own ``.df()`` trips a pandas deprecation warning (``drop(inplace=)``)."""
    connection = store.connect()
    try:
        return connection.sql(sql, params=params).to_arrow_table().to_pandas()
    finally:
        connection.close()


def _spread_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``scores`` JSON text as one float column per scorer, in the order the scorers ran; an
    answer that a scorer did not score (a failed call, an unscored item) reads NaN there."""
    parsed = [json.loads(text) if isinstance(text, str) else {} for text in frame.pop("scores")]
    labels = dict.fromkeys(label for scores in parsed for label in scores)
    for label in labels:
        frame[f"{SCORE_PREFIX}{label}"] = pd.Series([scores.get(label) for scores in parsed], index=frame.index,
                                                   dtype="float64")
    return frame
