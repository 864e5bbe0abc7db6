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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.errors import NotFoundError, ProviderError, UnavailableError, UserError
from registry.evaluation.benchmark import benchmark_and_record
from registry.evaluation.tasks import TaskCatalog, TaskVersion
from registry.providers import GenerationRequest
from registry.results.feedback import CallRef, FeedbackBook, RecentCalls
from registry.results.frames import ModelFilter, answers_frame, leaderboard_frame, runs_frame
from registry.results.recorder import Recorder
from registry.selection.contract import TaskContract
from registry.selection.criteria import Criteria
from registry.selection.learnings import TaskLearnings
from registry.selection.profiles import ProfileCache
from registry.selection.selector import LocalModelSelector
from registry.serving.calls import measured_call
from registry.serving.pool import WarmPool
from registry.settings import Settings, get_settings
from registry.spec import VersionRecord, parse_ref

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class TaskExecution:
    """One executed task: the answer, the version that gave it, its measured figures."""

    output: str
    version: str
    figures: dict[str, Any]
    swapped: bool
    swap_reason: str | None = None
    call_id: str | None = None  # its ``calls`` row: what :meth:`ArbiterModelManager.feedback` names

    def as_json(self) -> dict[str, Any]:
        return {"output": self.output, "version": self.version, "figures": self.figures,
                "swapped": self.swapped, "swap_reason": self.swap_reason, "call_id": self.call_id}


_FIGURES = ("wall_ms", "ttft_ms", "tokens_per_s", "prompt_tokens", "completion_tokens", "cpu_ms", "peak_rss_mb")


class ArbiterModelManager:
    """Example::

        with ArbiterModelManager() as manager:
            result = manager.execute_task("What is the capital of France?", Criteria(task="qa"))
            result.output, result.version, result.figures["wall_ms"], result.swapped
            manager.force_swap("qa", "smollm2-135m/2")
            manager.rollback("qa")
            manager.task_summary("qa"), manager.statistics()

    A data scientist's own task, in a notebook (notebooks/own-task.ipynb)::

            manager.add_task_frame(frame, {"name": "capitals", ...})
            manager.benchmark(["smollm2-135m/1", "smollm2-135m/2"], "capitals")  # a DataFrame of runs
            manager.answers("capitals").pivot(index="item_id", columns="ref", values="answer")
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.catalog = Catalog(self.settings)
        self.store = self.catalog.store
        self.routes = Routes(self.catalog)
        self.tasks = TaskCatalog(self.settings)
        self.learnings = TaskLearnings(self.store)
        self.pool = WarmPool(self.settings)  # one load per version, reused by every execution
        self.selector = LocalModelSelector(
            self.catalog.list_versions, ProfileCache(self.store), self.learnings, is_warm=self.pool.is_warm,
        )
        self._recorder = Recorder(self.store, flush_s=self.settings.calls_flush_s)
        self._recorder.start()
        self._recent = RecentCalls(capacity=10_000)  # feedback on an answer whose row is not flushed yet
        self._feedback = FeedbackBook(self.store, recent=self._recent)

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
        (record, reason), fallback = self._choose(self.tasks.criteria_for(criteria), self.tasks.contract(criteria.task))
        errors = []
        for attempt, why in ((record, reason), *([fallback] if fallback else [])):
            try:
                with self.pool.lease(attempt) as instance:  # one request at a time per llama.cpp instance
                    call = measured_call(instance.provider, attempt, request, source="manager", route=criteria.task,
                                         task=criteria.task)
            except (ProviderError, UnavailableError) as exc:  # it would not load: the next one may
                errors.append(f"{attempt.ref}: {exc}")
                continue
            self._recorder.add("calls", call.row)  # a failed attempt is a row too: auto-swap reads them
            if call.generation is not None:
                self._recent.add(CallRef(call.row["call_id"], criteria.task, attempt.name, attempt.version))
                return TaskExecution(
                    output=call.generation.text, version=attempt.ref, figures={k: call.row[k] for k in _FIGURES},
                    swapped=why is not None, swap_reason=why, call_id=call.row["call_id"],
                )
            errors.append(f"{attempt.ref}: {call.row['error']}")
        raise ProviderError(f"task {criteria.task!r} failed on every version tried: {' | '.join(errors)}")

    def feedback(self, call_id: str, *, score: float | None = None, thumbs: str | None = None,
                 source: str = "user", comment: str | None = None) -> dict[str, Any]:
        """Score an answer :meth:`execute_task` gave (its ``call_id``) or the gateway gave: the same
        ``feedback`` row as ``POST /arbiter/feedback``; a rollout of the task counts it."""
        return self._feedback.record(call_id, score=score, thumbs=thumbs, source=source, comment=comment)

    def _choose(
        self, criteria: Criteria, contract: TaskContract | None
    ) -> tuple[tuple[VersionRecord, str | None], tuple[VersionRecord, str] | None]:
        """The version to run and why it is not the champion (None: it is), and the one to fall
        back to if it fails: the champion when it meets the criteria and the task's ``contract``
        (a classifier serves only a classification task with its labels), else the selector's pick."""
        try:
            champion = self.routes.champion(criteria.task)
        except NotFoundError:
            champion = None
        selection = self.selector.select(self.learnings.enhance(criteria), contract)
        if champion is not None and any(c.ref == champion.ref for c in selection.candidates):
            chosen, reason = champion, None
        elif champion is None:
            chosen, reason = selection.primary.record, f"route {criteria.task!r} has no champion; the selector chose"
        else:
            why = next((e.reasons for e in selection.excluded if e.ref == champion.ref), ("not eligible",))
            chosen, reason = selection.primary.record, f"champion {champion.ref} excluded: {'; '.join(why)}"
        backup = next((c.record for c in selection.candidates if c.ref != chosen.ref), None)
        return (chosen, reason), ((backup, f"{chosen.ref} failed; the selector's next choice answered") if backup else None)

    # --- routes ----------------------------------------------------------------------------

    def force_swap(self, task: str, ref: str) -> dict[str, Any]:
        """Make ``ref`` the task's champion now, without a benchmark gate (the old one is previous);
        a version that cannot serve the task (its contract) is refused all the same."""
        record = self.catalog.get_ref(ref)
        return self.routes.promote(task, record.name, record.version, force=True,
                                   contract=self.tasks.contract(task)).as_json()

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
        events = self.store.query(  # distinct ids: an alias change finished after a kill can be two rows
            "select kind, count(distinct event_id) as n from events where kind in ('promote', 'rollback', "
            "'alias.external') or kind like 'rollout.%' or kind like 'autoswap.%' group by kind order by kind"
        )
        calls = self.store.query(
            "select coalesce(route, task) as task, count(*) as calls, avg(ok::int) as success_rate "
            "from calls group by 1 order by 1"
        )
        swaps = {e["kind"]: e["n"] for e in events}
        # An auto-swap or a finished rollout moves aliases through a promote/rollback, so those two
        # count every alias move once; the others say who or what decided.
        return {"swaps": swaps, "total_swaps": swaps.get("promote", 0) + swaps.get("rollback", 0), "tasks": calls}

    # --- own tasks and results as DataFrames (for notebooks) --------------------------------

    def add_task(self, path: str | Path, *, new_version: bool = False) -> TaskVersion:
        """Validate and record a task file, as ``arbiter tasks add`` does; the same content again
        is the same version, and a name taken by other content needs ``new_version``."""
        return self.tasks.add(Path(path), new_version=new_version)[0]

    def add_task_frame(self, frame: pd.DataFrame, spec: dict[str, Any], *, new_version: bool = False) -> TaskVersion:
        """A task from a DataFrame (one row per item) and a spec dict written as a task file would be
        (``data.path`` left out); validated and versioned exactly as a file is."""
        return self.tasks.add_frame(frame, spec, new_version=new_version)[0]

    def benchmark(self, models: str | Sequence[str], task: str, *, limit: int | None = None) -> pd.DataFrame:
        """Benchmark each ``NAME/VERSION`` on ``task`` (``NAME`` or ``NAME/VERSION``) in this process and
        record it as ``arbiter benchmark`` does (a judged task is judged by route ``judgment``); returns
        the runs, one row per version. Prefect is for scheduled and fanned-out runs; a notebook needs
        none. Every name is resolved first, so a typo fails before anything runs."""
        measured = self.tasks.get(task)
        records = [self.catalog.get_ref(ref) for ref in ([models] if isinstance(models, str) else models)]
        for record in records:  # a version that cannot run the task is refused before any other runs
            refused = measured.cannot_serve(record)
            if refused:
                raise UserError(f"{refused}; leave it out" + ("" if record.spec.is_classifier else
                                                              ", or register a version with those capabilities"))
        run_ids = [benchmark_and_record(self.catalog, self.pool, record, measured, limit=limit)["run_id"]
                   for record in records]
        return runs_frame(self.store, run_ids=run_ids)

    def leaderboard(self, task: str | None = None) -> pd.DataFrame:
        """The latest run of each version per task version and machine, best quality first, as
        ``arbiter results leaderboard`` ranks them; ``task`` may name a version (``NAME/2``)."""
        name, version = parse_ref(task) if task else (None, None)
        return leaderboard_frame(self.store, name, version)

    def runs(self, task: str | None = None, model: str | None = None) -> pd.DataFrame:
        """Every benchmark run, oldest first; ``task`` as ``NAME[/VERSION]``, ``model`` as ``NAME[/VERSION]``."""
        name, version = parse_ref(task) if task else (None, None)
        return runs_frame(self.store, task=name, task_version=version, models=_model_filters(model))

    def answers(self, task: str, *, run_ids: Sequence[str] | None = None,
                models: str | Sequence[str] | None = None) -> pd.DataFrame:
        """One row per benchmarked item: answer, quality, each scorer's score (``score_<label>``), wall
        time, energy and tokens. Without ``run_ids``: the latest run of each version (of ``models``, when
        given) on the newest version of the task measured. Pivot it to compare versions item by item."""
        name, version = parse_ref(task)
        return answers_frame(self.store, task=name, task_version=version, models=_model_filters(models),
                             run_ids=run_ids)


def _model_filters(models: str | Sequence[str] | None) -> list[ModelFilter]:
    """``"NAME"`` or ``"NAME/VERSION"``, one or several, as (name, version or None)."""
    refs = [models] if isinstance(models, str) else list(models or ())
    return [parse_ref(ref) for ref in refs]
