"""Live answers scored off the request path: the task's reference-free scorers and the judge.

A route named after a task whose file has a ``live:`` section (docs/tasks.md#live-scoring) has
each of its answers scored after it is sent: the live scorers (the same ``TaskScoring`` engine as
benchmarks, given ``{"prompt", "system"}`` since a live call has no item) and, when the section
names criteria and a judge is promoted, the ``judgment`` route's judge. Each gives one ``feedback``
row per call (``signal`` ``scorer`` or ``judge``, ``source`` ``arbiter:scorer`` or
``arbiter:judge:NAME/VERSION``); the rollout reads them beside applications' feedback
(registry/quality/signals.py).

Why a bounded queue and one thread: scoring must never slow an answer or grow without bound under
load. ``offer`` puts the call on a queue of ``max_queue`` and returns at once; a full queue drops
the call and counts it, so under overload fewer calls are scored, not later ones. One daemon
thread scores in order; a judgement takes seconds on a small model, so a route with a judge is
sampled by the queue's drops rather than queued behind itself.

Never a silent pass: a scorer that raises, or returns something outside [0, 1], and a judge that
fails or outlives ``judge_timeout_s`` per criterion each give a row with ``score`` NULL and ``detail``
``{"error": …}`` (the rollout counts it as a failure), and a counter. A judgement that timed out
cannot be stopped (it is a generation in the pool); until it ends, later calls' judge rows are
NULL rows saying so, rather than judgements piling up behind it.
"""

from __future__ import annotations

import json
import logging
import queue
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from registry.errors import NotFoundError
from registry.results.feedback import feedback_id
from registry.results.schemas import now_utc

if TYPE_CHECKING:
    from registry.evaluation.judge import Judgement
    from registry.evaluation.tasks import TaskCatalog, TaskVersion
    from registry.providers.base import GenerationRequest
    from registry.quality.judge_gate import JudgeGate
    from registry.spec import VersionRecord

log = logging.getLogger(__name__)

SCORER_SOURCE = "arbiter:scorer"
JUDGE_SOURCE = "arbiter:judge:"  # + NAME/VERSION of the judge
COUNTERS = ("offered", "dropped", "skipped", "discarded", "scored", "failed", "judged", "judge_failed")
RECHECK_S = 30.0  # how long a route's task (or its absence) is trusted before it is looked up again


class JudgeHandle(Protocol):
    """What live scoring needs of a judge: ``ModelBasedJudge`` is one."""

    def judge_version(self) -> VersionRecord: ...

    def evaluate(self, task: str, output: str, criteria: Sequence[str]) -> Sequence[Judgement]: ...


@dataclass(frozen=True)
class LiveCall:
    """One answered call, as live scoring sees it: where it was served, what was asked, the answer."""

    call_id: str
    route: str
    model: str
    version: int
    prompt: str  # the last user message, or a completion's prompt
    system: str  # the system message(s), or ""
    answer: str
    judged: bool = True  # False: the task's live scorers only (the gateway judges only while evidence is wanted)

    @classmethod
    def of(cls, call_id: str, route: str, model: str, version: int, request: GenerationRequest,
           answer: str, *, judged: bool = True) -> LiveCall:
        """From the request as the gateway received it (chat messages or a completion prompt)."""
        if request.prompt is not None:
            return cls(call_id, route, model, version, request.prompt, "", answer, judged)
        users = [_text(m.get("content")) for m in request.messages if m.get("role") == "user"]
        system = "\n\n".join(_text(m.get("content")) for m in request.messages if m.get("role") == "system")
        return cls(call_id, route, model, version, users[-1] if users else "", system, answer, judged)


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


class LiveScorer:
    """Example::

        scorer = LiveScorer(TaskCatalog(settings), lambda row: recorder.add("feedback", row),
                            judge=lambda: judge_if_promoted)
        scorer.start()
        scorer.offer(LiveCall.of(call_id, "extract", "smollm2-135m", 1, request, answer_text))  # never blocks
        scorer.counters()   # {'offered': 1, 'dropped': 0, 'skipped': 0, 'discarded': 0, 'scored': 1, …}
        scorer.stop()

    ``write`` takes one ``feedback`` row; ``judge`` returns the judgment route's judge now, or None
    (no judge: no judge rows). ``gate``, when given, adds whether the judge could gate at the time
    to its rows' ``detail`` (the rollout reads the gate itself when it decides).
    """

    def __init__(self, tasks: TaskCatalog, write: Callable[[dict[str, Any]], None], *,
                 judge: Callable[[], JudgeHandle | None] | None = None, max_queue: int = 256,
                 judge_timeout_s: float = 30.0, gate: JudgeGate | None = None, recheck_s: float = RECHECK_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tasks = tasks
        self._write = write
        self._judge = judge
        self._judge_timeout_s = judge_timeout_s
        self._gate = gate
        self._recheck_s = recheck_s
        self._clock = clock
        self._queue: queue.Queue[LiveCall | None] = queue.Queue(maxsize=max_queue)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._counts_lock = threading.Lock()
        self._routes: dict[str, tuple[TaskVersion | None, float]] = {}  # route → its task with live scoring, when looked up
        self._allowed: dict[str, tuple[bool, float]] = {}  # judge ref → whether it could gate, when read
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._judging: threading.Thread | None = None  # a judgement that outlived its timeout

    # ------------------------------------------------------------------ the caller's side

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="arbiter-live-scorer", daemon=True)
            self._thread.start()

    def offer(self, call: LiveCall) -> bool:
        """Queue ``call`` for scoring; False when it is not: the queue is full (counted as dropped),
        scoring has stopped, or its route is known to have no live scoring (skipped). Never blocks."""
        self._count("offered")
        if self._stopping.is_set():
            self._count("dropped")
            return False
        known = self._routes.get(call.route)
        if known is not None and known[0] is None and self._clock() - known[1] < self._recheck_s:
            self._count("skipped")
            return False
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            self._count("dropped")
            return False
        return True

    def stop(self, *, drain: bool = False, timeout_s: float = 10.0) -> None:
        """Stop taking calls; score what is queued first (``drain``) or discard it (counted). Waits
        up to ``timeout_s`` for the call being scored (a judgement may take seconds)."""
        self._stopping.set()
        if not drain or self._thread is None:
            while True:
                try:
                    if self._queue.get_nowait() is not None:
                        self._count("discarded")
                except queue.Empty:
                    break
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:
                log.warning("live scoring did not take its stop within %.0f s; left to end with the process", timeout_s)
            self._thread.join(timeout_s)

    def counters(self) -> dict[str, int]:
        """``offered`` calls; of those ``dropped`` (queue full or stopped), ``skipped`` (no live
        scoring on the route), ``discarded`` (queued at a stop without drain); scorer rows
        ``scored`` and ``failed`` (NULL); judge rows ``judged`` and ``judge_failed`` (NULL)."""
        with self._counts_lock:
            return dict(self._counts)

    def _count(self, name: str) -> None:
        with self._counts_lock:
            self._counts[name] += 1

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        while (call := self._queue.get()) is not None:
            try:
                self._score_call(call)
            except Exception:  # anything at all: the worker outlives it, the call goes unscored
                log.exception("live scoring of call %s on route %s failed", call.call_id, call.route)

    def _score_call(self, call: LiveCall) -> None:
        task = self._task(call.route)
        if task is None:
            self._count("skipped")
            return
        if task.live is not None:
            self._scorers(call, task)
        if call.judged and task.spec.live is not None and task.spec.live.judge:
            self._judge_call(call, task.spec.live.judge)

    def _task(self, route: str) -> TaskVersion | None:
        """The route's task when it has live scoring; looked up again after ``recheck_s`` (a new
        task version is picked up; each version's scoring is compiled once, by the catalog)."""
        cached = self._routes.get(route)
        now = self._clock()
        if cached is not None and now - cached[1] < self._recheck_s:
            return cached[0]
        try:
            task = self._tasks.find(route)
        except Exception as exc:  # a broken task file: that route goes unscored until it is fixed
            log.warning("live scoring: route %s's task cannot be read (%s); its calls go unscored", route, exc)
            task = None
        found = task if task is not None and task.spec.live is not None else None
        self._routes[route] = (found, now)
        return found

    def _scorers(self, call: LiveCall, task: TaskVersion) -> None:
        assert task.live is not None
        detail: dict[str, Any] = {"task": task.ref}
        try:
            result = task.live.score({"prompt": call.prompt, "system": call.system}, call.prompt, call.answer)
            score, detail["scores"] = result.quality, result.scores
            if result.quality is None:
                detail["error"] = "; ".join(result.problems)
        except Exception as exc:  # a scorer's own bug: counted as a failed scoring, never a pass
            score, detail["error"] = None, f"{type(exc).__name__}: {exc}"
        self._count("scored" if score is not None else "failed")
        self._emit(call, "scorer", SCORER_SOURCE, score, detail)

    def _judge_call(self, call: LiveCall, criteria: tuple[str, ...]) -> None:
        handle = self._judge() if self._judge is not None else None
        if handle is None:
            return
        try:
            ref = handle.judge_version().ref
        except NotFoundError:
            return  # route judgment has no champion now: no judge, no rows
        detail: dict[str, Any] = {"criteria": list(criteria)}
        if self._gate is not None:
            detail["gate_allowed"] = self._may_gate(ref)
        score: float | None = None
        if not call.answer.strip():
            score, detail["empty_answer"] = 0.0, True  # as a benchmark scores it: nothing to judge
        elif self._judging is not None and self._judging.is_alive():
            detail["error"] = "not judged: the judge is still on a judgement that timed out"
        else:
            judgements, error = self._judgements(handle, call, criteria)
            if judgements is not None:
                score = statistics.fmean(j.score for j in judgements)
                detail["scores"] = {j.criterion: j.score for j in judgements}
                detail["wall_ms"] = sum(j.figures.get("wall_ms") or 0.0 for j in judgements)
                detail["truncated"] = any(j.truncated for j in judgements)
                detail["injection_suspected"] = any(j.injection_suspected for j in judgements)
            else:
                detail["error"] = error
        self._count("judged" if score is not None else "judge_failed")
        self._emit(call, "judge", JUDGE_SOURCE + ref, score, detail)

    def _judgements(self, handle: JudgeHandle, call: LiveCall, criteria: tuple[str, ...]
                    ) -> tuple[Sequence[Judgement] | None, str | None]:
        """The judge's judgements, on a thread of their own so a stuck judge costs this worker at
        most ``judge_timeout_s`` per criterion (a judgement is one generation per criterion: 4 s
        each on an idle 2-core machine, 10 s under load); (None, why) when it failed or timed out."""
        box: dict[str, Any] = {}
        timeout_s = self._judge_timeout_s * len(criteria)

        def judge() -> None:
            try:
                box["judgements"] = handle.evaluate(call.prompt, call.answer, criteria)
            except Exception as exc:  # JudgeError, a bad prompt, a provider failure: a failed judgement
                box["error"] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=judge, name="arbiter-live-judge", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            self._judging = thread
            return None, f"the judge timed out after {timeout_s:g} s ({self._judge_timeout_s:g} s per criterion)"
        return box.get("judgements"), box.get("error")

    def _may_gate(self, ref: str) -> bool | None:
        """Whether the judge could gate, read at most every ``recheck_s``; None when it cannot be read."""
        cached = self._allowed.get(ref)
        now = self._clock()
        if cached is None or now - cached[1] >= self._recheck_s:
            assert self._gate is not None
            name, _, version = ref.rpartition("/")
            try:
                cached = (self._gate.standing(name, int(version)).allowed, now)
            except Exception as exc:  # the store unreadable a moment: the row says so rather than guess
                log.warning("live scoring: judge %s's calibration cannot be read (%s)", ref, exc)
                return None
            self._allowed[ref] = cached
        return cached[0]

    def _emit(self, call: LiveCall, signal: str, source: str, score: float | None, detail: dict[str, Any]) -> None:
        row = {"feedback_id": feedback_id(call.call_id, source), "ts": now_utc(), "call_id": call.call_id,
               "route": call.route, "model": call.model, "version": call.version, "signal": signal,
               "source": source, "score": score, "comment": None, "detail": json.dumps(detail)}
        try:
            self._write(row)
        except Exception:  # the store or recorder failing: logged; the next call tries again
            log.exception("live scoring: the %s row of call %s could not be written", signal, call.call_id)
