"""The performance-tracker bridge (the seeds' PerformanceTrackerBridge): applications report the
task executions they observe, and those reports become results the selector reads.

An execution is started (task, the model version used, the task's features), then completed
(success, quality, figures, metadata). Completion writes one ``calls`` row with
``source = 'tracker'``: the selector's profiles (registry/selection/profiles.py) read every live row of a
(version, task), so what applications observe — above all the quality they measure, which the
gateway cannot — moves selection. The rollout's and auto-swap's live checks read only rows of
calls a route served (gateway, facade), so a report never counts a call twice there.

The same rows are the source of the RL training data export (registry/selection/rl_export.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from registry.errors import NotFoundError, UserError
from registry.machine.hardware import fingerprint
from registry.results.feedback import FeedbackBook
from registry.results.store import ResultsStore, new_id, now_utc
from registry.spec import NAME_PATTERN, parse_ref


@dataclass
class _Execution:
    task: str
    model: str
    version: int
    features: dict[str, Any]
    started: float
    metadata: dict[str, Any] = field(default_factory=dict)


class PerformanceTrackerBridge:
    """Example::

        tracker = PerformanceTrackerBridge(ResultsStore(settings.results_dir))
        execution = tracker.start("qa", model="smollm2-135m/1", features={"prompt_chars": 42})
        tracker.complete(execution, success=True, quality=0.8, metadata={"user": "batch-7"})
        tracker.feedback(execution, thumbs="up", source="support-app")   # later, when the user says so
    """

    def __init__(self, store: ResultsStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        self._open: dict[str, _Execution] = {}
        self._lock = threading.Lock()

    def start(self, task: str, *, model: str, features: dict[str, Any] | None = None,
              metadata: dict[str, Any] | None = None) -> str:
        """Begin timing one execution of ``task`` by ``model`` (``NAME/VERSION``); returns its id."""
        if not NAME_PATTERN.match(task):
            raise UserError(f"{task!r} is not a task name; use a lowercase name such as 'qa' or 'summarize'")
        name, version = parse_ref(model)
        if version is None:
            raise UserError(f"model {model!r} needs its version: NAME/VERSION, e.g. smollm2-135m/1")
        _check_json("features", features)
        _check_json("metadata", metadata)
        execution_id = new_id()
        with self._lock:
            self._open[execution_id] = _Execution(task, name, version, dict(features or {}), self._clock(),
                                                  dict(metadata or {}))
        return execution_id

    def complete(self, execution_id: str, *, success: bool, quality: float | None = None,
                 prompt_tokens: int | None = None, completion_tokens: int | None = None, cpu_ms: float | None = None,
                 error: str | None = None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish an execution: its ``calls`` row is written now (and returned)."""
        with self._lock:
            execution = self._open.pop(execution_id, None)
        if execution is None:
            raise NotFoundError(f"no open execution {execution_id!r}: start it with tracker.start(...) first "
                                f"(each execution completes once)")
        if quality is not None and not 0.0 <= quality <= 1.0:
            raise UserError(f"quality must be between 0 and 1 (got {quality}); scale your measure to [0, 1]")
        _check_json("metadata", metadata)
        wall_ms = (self._clock() - execution.started) * 1000
        row = {
            "call_id": execution_id, "ts": now_utc(), "source": "tracker", "route": None, "task": execution.task,
            "model": execution.model, "version": execution.version, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "wall_ms": wall_ms, "cpu_ms": cpu_ms,
            "tokens_per_s": completion_tokens / (wall_ms / 1000) if completion_tokens and wall_ms > 0 else None,
            "ok": bool(success), "error": None if success else (error or "reported as failed"), "quality": quality,
            "features": json.dumps(execution.features), "metadata": json.dumps({**execution.metadata, **(metadata or {})}),
            **fingerprint().as_row(),
        }
        self.store.append("calls", [row])
        return row

    def feedback(self, call_id: str, *, score: float | None = None, thumbs: str | None = None,
                 source: str = "user", comment: str | None = None) -> dict[str, Any]:
        """A score for one answer, given later (a user's thumbs, a downstream check): ``call_id`` is
        an execution id from :meth:`start` or a gateway answer's ``x-arbiter-call-id``. One score per
        (call, source); another replaces it. Returns the ``feedback`` row."""
        return FeedbackBook(self.store).record(call_id, score=score, thumbs=thumbs, source=source, comment=comment)


def _check_json(what: str, value: dict[str, Any] | None) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise UserError(f"{what} must be a dict of JSON values, got {type(value).__name__}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{what} must hold JSON values only: {exc}") from None
