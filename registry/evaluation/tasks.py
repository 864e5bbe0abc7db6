"""The benchmark tasks and their items: the vocabulary datasets, prompts and scoring share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry.errors import DatasetError

TASKS: tuple[str, ...] = ("qa", "extract", "classify")
"""Tasks scored against references (registry/evaluation/scoring.py): what `arbiter benchmark` runs by default."""

JUDGED_TASKS: dict[str, tuple[str, ...]] = {"summarize": ("faithfulness", "relevance", "minimality")}
"""Open-ended tasks with no single right answer: quality is the judge's mean score over these criteria
(registry/evaluation/judge.py), and every run records which judge version gave it."""

ALL_TASKS: tuple[str, ...] = (*TASKS, *JUDGED_TASKS)


@dataclass(frozen=True)
class Item:
    """One validation item; ``data`` is the raw JSON row, so new task fields need no new class."""

    id: str
    task: str
    data: dict[str, Any]


def unknown_task(task: str) -> DatasetError:
    """The error every per-task function raises for a task it has no rules for."""
    return DatasetError(f"Unknown task {task!r}; known tasks: {', '.join(ALL_TASKS)}.")
