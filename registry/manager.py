"""The Python facade for applications (the seeds' ArbiterModelManager): run a task on the right
model, and swap, roll back and inspect routes, without touching MLflow or the pool directly.

``execute_task`` serves a task by its route's champion. When the caller's criteria rule the
champion out (a capability it lacks, too slow, too much memory), the selector's best version
serves this request instead and the result says so (``swapped`` and why). The route's aliases are
not moved by one request: moving them is a promotion (``force_swap``, ``arbiter routes promote``)
or auto-swap's job, which keeps the routing table the one place a person reads the truth.

Every execution is a ``calls`` row (``source = 'manager'``), so what applications observe feeds
the same profiles the selector reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry.calls import measured_call
from registry.catalog import Catalog, VersionRecord
from registry.errors import NotFoundError, ProviderError
from registry.learnings import TaskLearnings
from registry.pool import WarmPool
from registry.profiles import ProfileCache
from registry.providers import GenerationRequest
from registry.recorder import Recorder
from registry.routes import Routes
from registry.selection import Criteria, LocalModelSelector
from registry.settings import Settings, get_settings


@dataclass(frozen=True)
class TaskExecution:
    """One executed task: the answer, the version that gave it, its measured figures."""

    output: str
    version: str
    figures: dict[str, Any]
    swapped: bool
    swap_reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"output": self.output, "version": self.version, "figures": self.figures,
                "swapped": self.swapped, "swap_reason": self.swap_reason}


_FIGURES = ("wall_ms", "ttft_ms", "tokens_per_s", "prompt_tokens", "completion_tokens", "cpu_ms", "peak_rss_mb")


class ArbiterModelManager:
    """Example::

        with ArbiterModelManager() as manager:
            result = manager.execute_task("What is the capital of France?", Criteria(task="qa"))
            result.output, result.version, result.figures["wall_ms"], result.swapped
            manager.force_swap("qa", "smollm2-135m/2")
            manager.rollback("qa")
            manager.task_summary("qa"), manager.statistics()
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.catalog = Catalog(self.settings)
        self.store = self.catalog.store
        self.routes = Routes(self.catalog)
        self.learnings = TaskLearnings(self.store)
        self.pool = WarmPool(self.settings)  # one load per version, reused by every execution
        self.selector = LocalModelSelector(
            self.catalog.list_versions, ProfileCache(self.store), self.learnings, is_warm=self.pool.is_warm,
        )
        self._recorder = Recorder(self.store, flush_s=self.settings.calls_flush_s)
        self._recorder.start()

    def __enter__(self) -> ArbiterModelManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Unload every model and write every row."""
        self.pool.close()
        self._recorder.close()

    # --- tasks -------------------------------------------------------------------------------

    def execute_task(self, request: GenerationRequest | str, criteria: Criteria) -> TaskExecution:
        """Answer ``request`` (a prompt, or a full request) for ``criteria.task``."""
        if isinstance(request, str):
            request = GenerationRequest(messages=({"role": "user", "content": request},))
        record, reason = self._choose(criteria)
        with self.pool.lease(record) as instance:  # one request at a time per llama.cpp instance
            call = measured_call(instance.provider, record, request, source="manager", route=criteria.task,
                                 task=criteria.task)
        self._recorder.add("calls", call.row)
        if call.generation is None:
            raise ProviderError(f"{record.ref} failed task {criteria.task!r}: {call.row['error']}")
        return TaskExecution(
            output=call.generation.text, version=record.ref, figures={k: call.row[k] for k in _FIGURES},
            swapped=reason is not None, swap_reason=reason,
        )

    def _choose(self, criteria: Criteria) -> tuple[VersionRecord, str | None]:
        """The champion when it meets the criteria; else the selector's pick, and why."""
        try:
            champion = self.routes.champion(criteria.task)
        except NotFoundError:
            champion = None
        selection = self.selector.select(self.learnings.enhance(criteria))
        if champion is None:
            return selection.primary.record, f"route {criteria.task!r} has no champion; the selector chose"
        if any(c.ref == champion.ref for c in selection.candidates):
            return champion, None
        why = next((e.reasons for e in selection.excluded if e.ref == champion.ref), ("not eligible",))
        return selection.primary.record, f"champion {champion.ref} excluded: {'; '.join(why)}"

    # --- routes ----------------------------------------------------------------------------

    def force_swap(self, task: str, ref: str) -> dict[str, Any]:
        """Make ``ref`` the task's champion now, without a benchmark gate (the old one is previous)."""
        record = self.catalog.get_ref(ref)
        return self.routes.promote(task, record.name, record.version, force=True).as_json()

    def rollback(self, task: str) -> dict[str, Any]:
        return self.routes.rollback(task).as_json()

    def task_summary(self, task: str) -> dict[str, Any]:
        """The route, its calls per version (every source), and the task's learnings."""
        self._recorder.flush()  # this process's own executions count too
        by_version = self.store.query(
            """
            select model || '/' || version as version, count(*) as calls, avg(ok::int) as success_rate,
                   median(wall_ms) filter (where ok) as p50_ms, avg(quality) as quality
            from calls where route = $1 or (route is null and task = $1)
            group by model, version order by calls desc
            """,
            [task],
        )
        return {"route": self.routes.show(task).as_json(), "versions": by_version,
                "learnings": self.learnings.get(task).as_json()}

    def statistics(self) -> dict[str, Any]:
        """Swaps and rollbacks by kind, and calls per task."""
        self._recorder.flush()
        events = self.store.query(
            "select kind, count(*) as n from events where kind in ('promote', 'rollback', 'alias.external') "
            "or kind like 'rollout.%' or kind like 'autoswap.%' group by kind order by kind"
        )
        calls = self.store.query(
            "select coalesce(route, task) as task, count(*) as calls, avg(ok::int) as success_rate "
            "from calls group by 1 order by 1"
        )
        swaps = {e["kind"]: e["n"] for e in events}
        return {"swaps": swaps, "total_swaps": sum(n for k, n in swaps.items() if k in ("promote", "rollback",
                                                                                        "autoswap.swap", "autoswap.rollback")),
                "tasks": calls}
