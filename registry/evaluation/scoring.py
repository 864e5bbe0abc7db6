"""A task's scoring, compiled once: its scorers bound (custom functions imported, the judge given),
and combined into one quality per item.

``combine: mean`` is the weighted mean of the scorers; ``max`` the best of them (the shipped ``qa``
task: a whole-word match is 1.0, else the best token F1). If any scorer cannot score an item (a
custom function that raised or returned something outside [0, 1], a judge with no valid judgement)
the item is unscored: it has no quality, and the run counts it in ``n_unscored``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import DatasetError, JudgeError
from registry.evaluation.scorers import JudgeScorer, PythonScorer, ScorerBase
from registry.evaluation.taskspec import ScoringSpec

if TYPE_CHECKING:
    from registry.evaluation.judge import ModelBasedJudge

UserFunction = Callable[[dict[str, Any], str], Any]


@dataclass(frozen=True)
class ItemScore:
    """One answer's quality (``None``: unscored), each scorer's score by label, and why any failed."""

    quality: float | None
    scores: dict[str, float | None]
    problems: tuple[str, ...] = field(default=())


class TaskScoring:
    """The scorers of one task, ready to score answers. ``judge`` is needed only by judge scorers."""

    def __init__(self, spec: ScoringSpec, task_dir: Path | None, source: str) -> None:
        self.spec = spec
        self._judge: ModelBasedJudge | None = None
        self._functions = {
            s.function: load_function(s, task_dir, source) for s in spec.scorers if isinstance(s, PythonScorer)
        }

    @property
    def needs_judge(self) -> bool:
        return any(isinstance(s, JudgeScorer) for s in self.spec.scorers)

    def with_judge(self, judge: ModelBasedJudge) -> TaskScoring:
        """The same scorers with ``judge`` for the judge scorers (the functions are not imported again)."""
        bound = copy.copy(self)
        bound._judge = judge
        return bound

    def score(self, data: dict[str, Any], instruction: str, answer: str) -> ItemScore:
        """Score ``answer`` to the item ``data`` whose prompt ended with ``instruction``."""
        scores: dict[str, float | None] = {}
        problems: list[str] = []
        for scorer in self.spec.scorers:
            value, problem = self._one(scorer, data, instruction, answer)
            scores[scorer.label] = value
            if problem:
                problems.append(f"{scorer.label}: {problem}")
        values = list(scores.values())
        if any(v is None for v in values):
            return ItemScore(None, scores, tuple(problems))
        if self.spec.combine == "max":
            return ItemScore(max(values), scores)  # type: ignore[type-var]
        weights = [s.weight for s in self.spec.scorers]
        total = math.fsum(w * v for w, v in zip(weights, values, strict=True))  # type: ignore[operator]
        return ItemScore(total / math.fsum(weights) if len(values) > 1 else values[0], scores)  # type: ignore[return-value]

    def _one(self, scorer: ScorerBase, data: dict[str, Any], instruction: str, answer: str) -> tuple[float | None, str | None]:
        if isinstance(scorer, PythonScorer):
            return _call_user_function(self._functions[scorer.function], scorer.function, data, answer)
        if isinstance(scorer, JudgeScorer):
            if self._judge is None:
                raise DatasetError("this task is scored by a judge; benchmark it with one (route 'judgment')")
            if not answer.strip():
                return 0.0, None
            try:
                judgements = self._judge.evaluate(instruction, answer, scorer.criteria)
            except JudgeError as exc:
                return None, str(exc)
            return statistics.fmean(j.score for j in judgements), None
        return scorer.score(data, answer), None


def _call_user_function(function: UserFunction, name: str, data: dict[str, Any], answer: str) -> tuple[float | None, str | None]:
    try:
        value = function(dict(data), answer)
    except Exception as exc:  # the user's code: any failure leaves this one item unscored
        return None, f"{name} raised {type(exc).__name__}: {exc}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        return None, f"{name} returned {value!r}, not a number in [0, 1]"
    return float(value), None


def load_function(scorer: PythonScorer, task_dir: Path | None, source: str) -> UserFunction:
    """Import ``module:function``: a ``module.py`` beside the task file first, else an installed module."""
    module_name, function_name = scorer.function.split(":")
    local = scorer_file(scorer, task_dir)
    try:
        if local is not None:
            digest = hashlib.sha256(local.read_bytes()).hexdigest()[:16]
            unique = f"arbiter_task_scorer_{module_name.replace('.', '_')}_{digest}"
            module = sys.modules.get(unique)
            if module is None:
                spec = importlib.util.spec_from_file_location(unique, local)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules[unique] = module
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: any import failure is theirs to fix
        raise DatasetError(
            f"{source}: scorer {scorer.function!r} cannot be imported ({type(exc).__name__}: {exc}); put "
            f"{module_name.replace('.', '/')}.py beside the task file or install the module"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise DatasetError(f"{source}: scorer {scorer.function!r}: {module_name} has no function {function_name!r}")
    return function


def scorer_file(scorer: PythonScorer, task_dir: Path | None) -> Path | None:
    """The module file beside the task file that a python scorer names, if there is one."""
    if task_dir is None:
        return None
    candidate = task_dir / (scorer.module.replace(".", "/") + ".py")
    return candidate if candidate.is_file() else None
