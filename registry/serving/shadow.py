"""Shadow copies: the challenger answers copies of the champion's live requests, and no user sees them.

A rollout's shadow step (issue 16 §3, docs/rollout.md) measures a challenger on real traffic before
it answers anyone: each request the champion answered is copied to the challenger, whose answer is
recorded (a ``calls`` row with ``source = 'shadow'`` and ``shadow_of`` = the user's call) and handed
to ``on_answer`` beside the champion's answer, so the route's signals score both side by side.

The copies must cost the users nothing (the goal: the champion's p50/p95 with shadow on within
1.10× of off), and on a machine whose cores the champion and challenger share, that means a copy
runs only while nobody waits:

- the dispatcher's thread only *offers* a copy: into a bounded queue, dropped (counted) when full;
- one worker runs copies one at a time, each *starting* only once no user request is in flight or
  queued on the route's champion or challenger (:meth:`WarmPool.user_load`); a copy that finds no
  such moment within ``max_wait_s`` of its offer is ``stale`` (the traffic it mirrored has moved on);
- its lease is a background one: it takes a free slot or none, never a place in a user's queue;
- between fragments, a user arriving on the *challenger* closes the copy (``preempted``: no row,
  since it is not the challenger's failure). A user of the champion does not: the copy then shares
  the machine's cores with that request, each llama.cpp instance on its own threads, rather than be
  thrown away — under steady traffic whose gaps are shorter than one answer, a copy preempted by
  every champion request would never finish, and the shadow step would never have evidence. What
  that sharing costs the champion is measured by ``make bench-quality-gate`` (docs/rollout.md).
What a copy cannot give back at once is the step it is in: llama.cpp evaluates the prompt before
the first fragment, so a user arriving then waits for the end of that evaluation (milliseconds for
the prompts of a small model, and it shares cores rather than a slot when it is the champion's).

A copy that fails on the challenger is a row with ``ok = false``: that failure is the challenger's
and counts against it, as a user's failed call would.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from registry.errors import ArbiterError, CapacityError, ProviderError
from registry.machine.costs import Cost, measure
from registry.providers import Generation, GenerationRequest
from registry.results.recorder import Recorder
from registry.results.schemas import new_id
from registry.serving.calls import call_row
from registry.serving.dispatcher import AnsweredCall
from registry.serving.pool import Instance, WarmPool
from registry.serving.router import RouteEntry
from registry.spec import VersionRecord

_log = logging.getLogger(__name__)
_IDLE_TICK_S = 0.5  # how often an idle worker looks at its stop flag
COUNTERS = ("offered", "queued", "dropped", "stale", "preempted", "answered", "failed")


@dataclass(frozen=True)
class ShadowAnswer:
    """The challenger's answer to a copy, with the champion's answer to the same request."""

    call_id: str  # the copy's ``calls`` row
    shadow_of: str  # the user's call, answered by the champion
    route: str
    record: VersionRecord  # the challenger
    request: GenerationRequest
    generation: Generation  # the challenger's answer (never sent to anyone)
    champion: Generation  # the answer the user got


@dataclass(frozen=True)
class _Copy:
    answered: AnsweredCall
    route: str
    offered_at: float


class ShadowMirror:
    """An answer watcher for the dispatcher that mirrors the champion's answered requests to the
    route's shadow challenger.

    Example::

        mirror = ShadowMirror(pool, recorder, router.entries, on_answer=scorers.shadow_answered)
        dispatcher = Dispatcher(pool, recorder, watchers=(mirror,))
        mirror.start()
        ...
        mirror.stop()                       # joins the worker; copies not run yet count as stale
        mirror.counters()                   # {"offered": …, "dropped": …, "answered": …, …}

    Counters (since start, each a plain count): ``offered`` answers that qualified for a copy,
    ``queued`` of them taken into the queue, ``dropped`` not (the queue was full), ``stale`` queued
    but never run (no idle moment within ``max_wait_s``, the route stopped shadowing that
    challenger, or the mirror stopped), ``preempted`` closed mid-way for a user, ``answered`` and
    ``failed`` finished on the challenger (each a ``calls`` row); ``pending`` is the queue's length.
    """

    def __init__(
        self,
        pool: WarmPool,
        recorder: Recorder,
        entries: Callable[[], dict[str, RouteEntry]],
        *,
        on_answer: Callable[[ShadowAnswer], None] | None = None,
        max_queue: int = 8,
        max_wait_s: float = 30.0,
        poll_s: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._recorder = recorder
        self._entries = entries
        self._on_answer = on_answer
        self._max_wait_s = max_wait_s
        self._poll_s = poll_s
        self._clock = clock
        self._queue: queue.Queue[_Copy] = queue.Queue(maxsize=max(1, max_queue))
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._counts_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the request's side: never blocks, never raises ------------------------------------------

    def __call__(self, answered: AnsweredCall) -> None:
        """Offer a copy of a request the route's champion answered (its own turn, not a failover)."""
        if answered.resolution.route is None:
            return
        entry = self._entries().get(answered.resolution.route)
        if entry is None or entry.champion is None or entry.shadow_challenger is None:
            return
        champion = entry.champion.ref
        if answered.record.ref != champion or answered.resolution.record.ref != champion:
            return  # the challenger's own turn, or a fallback's answer: nothing to compare
        self._count("offered")
        try:
            self._queue.put_nowait(_Copy(answered, answered.resolution.route, self._clock()))
        except queue.Full:
            self._count("dropped")
            return
        self._count("queued")

    def counters(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts) | {"pending": self._queue.qsize()}

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="arbiter-shadow", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Close a running copy at its next fragment, join the worker, count what was left as stale."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._drain()

    # --- the worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                copy = self._queue.get(timeout=_IDLE_TICK_S)
            except queue.Empty:
                continue
            try:
                self._serve(copy)
            except Exception:  # noqa: BLE001 — a bug in one copy must not end the mirror
                _log.exception("shadow copy of call %s failed", copy.answered.call_id)

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
            self._count("stale")

    def _serve(self, copy: _Copy) -> None:
        """Wait for a moment no user waits, then run the copy on the challenger."""
        entry = self._entries().get(copy.route)
        champion = entry.champion if entry else None
        challenger = entry.shadow_challenger if entry else None
        if champion is None or challenger is None or champion.ref != copy.answered.record.ref:
            self._count("stale")  # the step ended (or the champion moved) while the copy was queued
            return
        while True:
            if self._idle(champion, challenger) and self._try(copy, champion, challenger):
                return
            if self._stop.is_set() or self._clock() - copy.offered_at >= self._max_wait_s:
                self._count("stale")
                return
            self._stop.wait(self._poll_s)

    def _try(self, copy: _Copy, champion: VersionRecord, challenger: VersionRecord) -> bool:
        """Lease the challenger and run the copy; False when a user took its slot first."""
        with contextlib.ExitStack() as held:
            try:
                instance = held.enter_context(self._pool.lease(challenger, background=True))
            except CapacityError:
                return False  # a user came between the look and the lease: wait again
            except ArbiterError as exc:  # an open breaker, a load that failed: the challenger's failure
                self._finish(copy, challenger, None, Cost(), str(exc))
                return True
            self._run(copy, instance)
            return True

    def _run(self, copy: _Copy, instance: Instance) -> None:
        """Stream the copy, looking between fragments for a user who arrived on the challenger."""
        challenger = instance.record
        generation: Generation | None = None
        error: str | None = None
        backend_fault = False  # a caller's kind of error (a prompt over its context) spares the breaker
        with measure() as cost:
            stream = instance.provider.stream(copy.answered.request)
            try:
                while True:
                    try:
                        next(stream)
                    except StopIteration as done:
                        generation = done.value
                        break
                    if self._stop.is_set() or self._pool.user_load(challenger) > 0:
                        self._count("preempted")
                        return
            except ArbiterError as exc:
                error, backend_fault = str(exc), isinstance(exc, ProviderError)
            except Exception as exc:  # noqa: BLE001 — a provider bug is a backend fault, as in the dispatcher
                error, backend_fault = f"{instance.key}: {type(exc).__name__}: {exc}", True
            finally:
                stream.close()  # a preempted copy stops generating here
        if generation is not None:
            instance.breaker.record_success()
        elif backend_fault:
            instance.breaker.record_failure()
        self._finish(copy, challenger, generation, cost, error)

    def _finish(
        self, copy: _Copy, challenger: VersionRecord, generation: Generation | None, cost: Cost, error: str | None
    ) -> None:
        call_id = new_id()
        answered = copy.answered
        self._recorder.add("calls", call_row(
            challenger, generation, cost, error=error, source="shadow", call_id=call_id, api="shadow",
            requested=answered.resolution.requested, route=copy.route, task=copy.route, shadow_of=answered.call_id,
        ))
        if generation is None:
            self._count("failed")
            return
        self._count("answered")
        if self._on_answer is None:
            return
        try:
            self._on_answer(ShadowAnswer(call_id, answered.call_id, copy.route, challenger, answered.request,
                                         generation, answered.generation))
        except Exception:  # noqa: BLE001 — a scorer's bug must not stop the copies
            _log.exception("on_answer failed for shadow call %s", call_id)

    def _idle(self, champion: VersionRecord, challenger: VersionRecord) -> bool:
        return self._pool.user_load(champion) == 0 and self._pool.user_load(challenger) == 0

    def _count(self, name: str) -> None:
        with self._counts_lock:
            self._counts[name] += 1
