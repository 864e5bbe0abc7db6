"""Task learnings: what arbiter knows about a *task*, kept apart from any model so it outlives swaps.

Keyed by task alone — no model id — so whatever version serves ``qa`` next inherits what was
learned about ``qa``. Each setting is a row in the results table ``learnings`` (``task, key, value``
as JSON, ``source`` ``manual`` | ``learned``, ``ts``), appended and never edited; the newest row per
(task, key) is the value. Nothing lives only in memory, so a restart or a route swap (which
touches MLflow, not this table) changes none of them.

Keys:

- ``prefer``: ``fast`` | ``quality`` | ``low-memory``; ``complexity``: ``low`` | ``medium`` | ``high``;
  ``quality_threshold`` (0–1, the quality the task must keep: auto-swap's trigger reads it);
  ``max_latency_ms`` (the task's latency target) — set by hand with :meth:`TaskLearnings.set`;
- ``patterns`` (learned): over every version's profile on the task — p50 range (min, median, max),
  quality range (min, mean, max), pooled success rate, samples, versions;
- ``latency_target_ms`` (learned): the median of the versions' p50s;
- ``prefer`` (learned) only when the data clearly says so, among ≥ 2 versions with ≥ 10 samples
  each: ``fast`` when their qualities differ by ≤ 0.05 but their p50s by ≥ 2× (speed is the only
  difference); ``quality`` when qualities differ by ≥ 0.2 and p50s by < 1.5× (speed costs nothing).

:meth:`TaskLearnings.learn` never writes a key whose newest row is ``manual``: a person's setting
is never overwritten by a learned one.

How :meth:`TaskLearnings.enhance` changes a task's :class:`~registry.selection.selector.Criteria`:

1. ``prefer``: the task's, unless the caller gave one (the selector then moves 0.2 of weight to
   that part: ``fast`` → latency, ``quality`` → quality, ``low-memory`` → memory).
2. ``max_latency_ms`` when the caller gave none: the task's manual target; else, when the task
   prefers fast, the learned ``latency_target_ms``.
3. ``complexity`` scales the latency limit then in force: ``high`` × 1.5 (hard tasks take longer),
   ``low`` × 0.75, ``medium`` unchanged.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from registry.errors import UserError
from registry.results.cache import ExpiringCache
from registry.results.store import ResultsStore, now_utc
from registry.selection.criteria import PREFERENCES, Criteria
from registry.selection.profiles import Profile, ProfileCache
from registry.spec import NAME_PATTERN

MANUAL, LEARNED = "manual", "learned"
COMPLEXITIES = ("low", "medium", "high")
COMPLEXITY_LATENCY = {"low": 0.75, "medium": 1.0, "high": 1.5}
MIN_SAMPLES_TO_LEARN = 10
SAME_QUALITY = 0.05
DIFFERENT_QUALITY = 0.2
CLEARLY_FASTER = 2.0
SIMILAR_SPEED = 1.5


@dataclass(frozen=True)
class TaskLearning:
    """Everything known about one task; ``sources`` says which keys are ``manual`` or ``learned``."""

    task: str
    prefer: str | None = None
    complexity: str | None = None
    quality_threshold: float | None = None
    max_latency_ms: float | None = None
    latency_target_ms: float | None = None
    patterns: dict[str, Any] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    updated_at: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The JSON contract of ``arbiter learnings show --json``."""
        return {
            "task": self.task,
            "prefer": self.prefer,
            "complexity": self.complexity,
            "quality_threshold": self.quality_threshold,
            "max_latency_ms": self.max_latency_ms,
            "latency_target_ms": self.latency_target_ms,
            "patterns": self.patterns,
            "sources": dict(self.sources),
            "updated_at": dict(self.updated_at),
        }


class TaskLearnings:
    """Read, set, learn and apply task learnings (persisted in the ``learnings`` table).

    Example::

        learnings = TaskLearnings(store)
        learnings.set("qa", prefer="fast", complexity="high")
        learnings.learn("qa")                      # patterns from the results store
        criteria = learnings.enhance(Criteria(task="qa"))
    """

    def __init__(
        self, store: ResultsStore, *, max_age_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        # Every task's newest values, read in one query; a write here invalidates it at once.
        self._latest = ExpiringCache(lambda: _read(store), max_age_s=max_age_s, clock=clock)

    @property
    def max_age_s(self) -> float:
        return self._latest.max_age_s

    def get(self, task: str) -> TaskLearning:
        """The task's learnings (all None for a task nothing is known about yet)."""
        _check_task(task)
        return self._all().get(task) or TaskLearning(task)

    def set(
        self,
        task: str,
        *,
        prefer: str | None = None,
        complexity: str | None = None,
        quality_threshold: float | None = None,
        max_latency_ms: float | None = None,
    ) -> TaskLearning:
        """Set characteristics by hand (``manual``: learning never overwrites them). None leaves a key as is."""
        _check_task(task)
        values: dict[str, Any] = {}
        if prefer is not None:
            if prefer not in PREFERENCES:
                raise UserError(f"unknown preference {prefer!r}; use one of: {', '.join(PREFERENCES)}")
            values["prefer"] = prefer
        if complexity is not None:
            if complexity not in COMPLEXITIES:
                raise UserError(f"unknown complexity {complexity!r}; use one of: {', '.join(COMPLEXITIES)}")
            values["complexity"] = complexity
        if quality_threshold is not None:
            if not 0 <= quality_threshold <= 1:
                raise UserError(f"quality threshold must be between 0 and 1 (got {quality_threshold:g}), e.g. 0.7")
            values["quality_threshold"] = float(quality_threshold)
        if max_latency_ms is not None:
            if not max_latency_ms > 0:
                raise UserError(f"max latency must be milliseconds > 0 (got {max_latency_ms:g}), e.g. 2000")
            values["max_latency_ms"] = float(max_latency_ms)
        if not values:
            raise UserError("nothing to set: pass --prefer, --complexity, --quality-threshold or --max-latency-ms")
        self._write(task, values, MANUAL)
        return self.get(task)

    def learn(self, task: str, profiles: ProfileCache | None = None) -> TaskLearning:
        """Derive the task's patterns from every version's profile on it and persist them.

        Raises ``UserError`` when nothing was measured on the task yet."""
        _check_task(task)
        measured = (profiles or ProfileCache(self.store)).refresh().for_task(task)
        if not measured:
            raise UserError(f"nothing measured on {task!r} yet; run `arbiter benchmark --task {task}` first")
        p50s = sorted(p.p50_ms for p in measured if p.p50_ms is not None)
        qualities = [p.quality for p in measured if p.quality is not None]
        samples = sum(p.samples for p in measured)
        patterns = {
            "p50_ms": _range(p50s, "median", statistics.median),
            "quality": _range(qualities, "mean", statistics.fmean),
            "success_rate": sum(p.success_rate * p.samples for p in measured) / samples,
            "samples": samples,
            "versions": len({p.ref for p in measured}),
        }
        values: dict[str, Any] = {"patterns": patterns}
        if p50s:
            values["latency_target_ms"] = statistics.median(p50s)
        inferred = _inferred_preference(measured)
        if inferred is not None:
            values["prefer"] = inferred
        current = self.get(task)
        values = {key: value for key, value in values.items() if current.sources.get(key) != MANUAL}
        self._write(task, values, LEARNED)
        return self.get(task)

    def enhance(self, criteria: Criteria) -> Criteria:
        """``criteria`` tightened or relaxed by the task's learnings (rules in the module docstring)."""
        learning = self._all().get(criteria.task)
        if learning is None:
            return criteria
        prefer = criteria.prefer or learning.prefer
        latency = criteria.max_latency_ms
        if latency is None:
            if learning.max_latency_ms is not None:  # only ever set by hand
                latency = learning.max_latency_ms
            elif prefer == "fast":
                latency = learning.latency_target_ms
        if latency is not None and learning.complexity is not None:
            latency *= COMPLEXITY_LATENCY[learning.complexity]
        if prefer == criteria.prefer and latency == criteria.max_latency_ms:
            return criteria
        return criteria.model_copy(update={"prefer": prefer, "max_latency_ms": latency})

    def _write(self, task: str, values: dict[str, Any], source: str) -> None:
        if values:
            stamp = now_utc()
            self.store.append(
                "learnings",
                [{"ts": stamp, "task": task, "key": key, "value": json.dumps(value), "source": source}
                 for key, value in values.items()],
            )
        self._latest.invalidate()  # the next read sees what was just written

    def _all(self) -> dict[str, TaskLearning]:
        return self._latest.get()


def _read(store: ResultsStore) -> dict[str, TaskLearning]:
    """Every task's newest row per key, in one query."""
    rows = store.query(
        """
        select task, key, value, source, ts from learnings
        qualify row_number() over (partition by task, key order by ts desc) = 1
        order by task, key
        """
    )
    by_task: dict[str, dict[str, Any]] = {}
    for row in rows:
        fields = by_task.setdefault(row["task"], {"task": row["task"], "sources": {}, "updated_at": {}})
        fields[row["key"]] = json.loads(row["value"])
        fields["sources"][row["key"]] = row["source"]
        ts: datetime = row["ts"]
        fields["updated_at"][row["key"]] = ts.isoformat()
    known = set(TaskLearning.__dataclass_fields__)
    return {task: TaskLearning(**{k: v for k, v in f.items() if k in known}) for task, f in by_task.items()}


def _check_task(task: str) -> None:
    if not NAME_PATTERN.match(task):
        raise UserError(f"invalid task {task!r}: use a lowercase task name such as 'qa' or 'extract'")


def _range(values: list[float], centre: str, of: Callable[[list[float]], float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), centre: of(values), "max": max(values)}


def _inferred_preference(measured: list[Profile]) -> str | None:
    """A preference only where the figures leave no doubt (rules in the module docstring)."""
    solid = [p for p in measured if p.samples >= MIN_SAMPLES_TO_LEARN and p.quality is not None and p.p50_ms]
    if len({p.ref for p in solid}) < 2:
        return None
    quality_spread = max(p.quality for p in solid) - min(p.quality for p in solid)
    speed_ratio = max(p.p50_ms for p in solid) / min(p.p50_ms for p in solid)
    if quality_spread <= SAME_QUALITY and speed_ratio >= CLEARLY_FASTER:
        return "fast"
    if quality_spread >= DIFFERENT_QUALITY and speed_ratio < SIMILAR_SPEED:
        return "quality"
    return None
