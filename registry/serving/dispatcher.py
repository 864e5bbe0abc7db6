"""Serve one request: lease an instance, generate (whole or streamed) or embed, fail over, measure,
and write the ``calls`` row of every attempt.

Failover order: another healthy replica of the same version, then the route's ``previous``
version. A request is answered by one of them or ends in ``UnavailableError`` (the gateway's
503) — never lost, never hung. Every attempt is a ``calls`` row written here, by the one piece
that saw it: the answer (when the stream ends), each failed or cut attempt, and the attempt a
client walked away from. The HTTP layer above keeps only its own metrics.

A stream that fails *after* text was sent resumes on the fallback: the fallback generates the
same request again and the text already sent is skipped. At temperature 0 a replica of the same
version reproduces it exactly; when the fallback's text does not start with what the client
already has, the stream ends with a clear error instead of splicing two different answers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from registry.errors import ArbiterError, CapacityError, ProviderError, UnavailableError, UserError
from registry.machine.costs import Cost, measure
from registry.providers import Generation, GenerationRequest
from registry.providers.base import Embedded, Embedder, run_to_end
from registry.results.recorder import Recorder
from registry.results.schemas import new_id
from registry.serving.calls import call_row
from registry.serving.pool import Instance, WarmPool
from registry.serving.router import Resolution
from registry.spec import VersionRecord

T = TypeVar("T")
_HUNG_UP = "client disconnected"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a request went, whatever it asked for: which version answered, after how many
    attempts, and the figures of its ``calls`` row."""

    record: VersionRecord
    resolution: Resolution
    cost: Cost
    queue_ms: float
    attempts: int
    failed_ms: float  # time in attempts that failed before this one answered
    model_ms: float  # time inside the model (failed attempts included) plus the waits for it
    overhead_ms: float  # arrival to answer, less ``model_ms``: what the gateway itself cost
    call_id: str  # the answering attempt's ``calls`` row: what feedback on this answer names

    @property
    def failed_over(self) -> bool:
        return self.attempts > 1 or self.record.ref != self.resolution.record.ref


@dataclass(frozen=True)
class Answer:
    """A finished generation and how it was served."""

    generation: Generation
    outcome: Outcome
    resumed_after_chars: int = 0  # > 0 when a stream failed mid-way and another instance finished it


@dataclass(frozen=True)
class AnsweredCall:
    """A generation that answered a user, handed to whoever watches answers (live scoring, shadow
    copies) after its row is queued: off the request's critical work, never able to fail it."""

    call_id: str
    resolution: Resolution
    request: GenerationRequest
    record: VersionRecord
    generation: Generation


AnswerWatcher = Callable[[AnsweredCall], None]


@dataclass(frozen=True)
class Embedding:
    """One vector per input text and how they were served."""

    vectors: list[list[float]]
    prompt_tokens: int  # the tokens the embedder read, all texts together
    outcome: Outcome


class Dispatcher:
    """Example::

        dispatcher = Dispatcher(pool, recorder)
        answer = dispatcher.generate(router.resolve("qa"), request, api="ollama")   # its row is queued
        answer.outcome.record.ref, answer.outcome.overhead_ms
    """

    def __init__(self, pool: WarmPool, recorder: Recorder, *, watchers: tuple[AnswerWatcher, ...] = ()) -> None:
        self._pool = pool
        self._recorder = recorder
        self._watchers = watchers

    def generate(
        self, resolution: Resolution, request: GenerationRequest, *, api: str, arrived: float | None = None,
        call_id: str | None = None,
    ) -> Answer:
        return run_to_end(self.stream(resolution, request, api=api, arrived=arrived, call_id=call_id))

    def stream(
        self, resolution: Resolution, request: GenerationRequest, *, api: str, arrived: float | None = None,
        cancelled: threading.Event | None = None, call_id: str | None = None,
    ) -> Generator[str, None, Answer]:
        """Yield text fragments; return the ``Answer`` once its row is queued. ``arrived`` is the
        request's ``time.perf_counter()`` stamp (default: now), the start of its overhead;
        ``call_id`` the id the answer's row gets (the gateway sends it before the stream starts).
        Raises ``UnavailableError`` when every candidate failed (or ``cancelled`` was set: the
        client hung up), ``CapacityError`` when the first candidate's queues are full."""
        arrived = time.perf_counter() if arrived is None else arrived
        rows = _Rows(self._recorder, resolution, api, call_id or new_id())
        progress = _Progress()

        def attempt(instance: Instance) -> Generator[str, None, tuple[Generation, Cost]]:
            return _generate_on(instance, request, progress, rows)

        served = yield from self._serve(resolution, rows, progress, attempt, cancelled)
        generation = served.result
        outcome = served.outcome(arrived, rows.call_id, model_ms=generation.generation_ms)
        rows.answered(outcome, generation)
        self._tell(AnsweredCall(outcome.call_id, resolution, request, outcome.record, generation))
        return Answer(generation, outcome, served.resumed_after_chars)

    def _tell(self, answered: AnsweredCall) -> None:
        for watcher in self._watchers:
            try:
                watcher(answered)
            except Exception:  # noqa: BLE001 — a watcher's bug must never fail an answer already given
                _log.exception("answer watcher %r failed on call %s", watcher, answered.call_id)

    def embed(
        self, resolution: Resolution, texts: list[str], *, api: str, arrived: float | None = None,
        truncate: bool = False,
    ) -> Embedding:
        """One vector per text, with the same failover, breaker feedback and ``calls`` row as a
        generation (its token figures stay null: an embedding generates none). A text longer than
        the provider embeds is refused (``ContextOverflowError``: no row, no breaker), or with
        ``truncate`` cut to its first tokens, as Ollama's ``/api/embed`` does by default."""
        arrived = time.perf_counter() if arrived is None else arrived
        rows = _Rows(self._recorder, resolution, api, new_id())
        progress = _Progress()

        def attempt(instance: Instance) -> Generator[str, None, tuple[Embedded, Cost]]:
            return _embed_on(instance, texts, progress, truncate)

        served = run_to_end(self._serve(resolution, rows, progress, attempt, None))
        outcome = served.outcome(arrived, rows.call_id, model_ms=served.cost.wall_ms)
        rows.answered(outcome, None)
        return Embedding(served.result.vectors, served.result.prompt_tokens, outcome)

    def _serve(
        self, resolution: Resolution, rows: _Rows, progress: _Progress,
        attempt: Callable[[Instance], Generator[str, None, tuple[T, Cost]]], cancelled: threading.Event | None,
    ) -> Generator[str, None, _Served[T]]:
        """The failover loop both kinds of request share: each candidate's replicas in turn, one
        lease per attempt, a row for each attempt that did not answer."""
        errors: list[str] = []
        attempts = 0
        for record in [resolution.record, *resolution.fallbacks]:
            excluded: set[str] = set()
            while True:
                if cancelled is not None and cancelled.is_set():
                    raise UnavailableError(f"{resolution.requested}: the client hung up; nothing more is tried")
                attempts += 1
                with contextlib.ExitStack() as held:
                    queued_at = time.perf_counter()
                    try:
                        instance = held.enter_context(
                            self._pool.lease(record, exclude=frozenset(excluded), cancelled=cancelled))
                    except CapacityError:
                        if attempts == 1:
                            raise  # the client should back off, not be moved to an older model
                        errors.append(f"{record.ref}: queue full")  # a failover that finds it full moves on
                        break
                    except (UnavailableError, ProviderError) as exc:
                        errors.append(str(exc))
                        # A row even without an instance: an open breaker must still count against the
                        # version, or a rollout would never see enough of a dead challenger's calls.
                        if not excluded:  # (each replica that failed this request has its row already)
                            hung_up = cancelled is not None and cancelled.is_set()
                            rows.failed(record, _HUNG_UP if hung_up else str(exc))
                        break
                    queue_ms = (time.perf_counter() - queued_at) * 1000
                    resumed_after = len(progress.sent)
                    try:
                        result, cost = yield from attempt(instance)
                    except ProviderError as exc:
                        instance.breaker.record_failure()
                        excluded.add(instance.key)
                        errors.append(str(exc))
                        progress.failed_ms += progress.cost.wall_ms + queue_ms
                        rows.failed(instance.record, str(exc), progress.cost)
                        continue
                    except GeneratorExit:  # the client hung up: the attempt is a row too
                        rows.failed(instance.record, _HUNG_UP, progress.cost)
                        raise
                instance.breaker.record_success()
                return _Served(result, record, resolution, cost, queue_ms, attempts, resumed_after, progress.failed_ms)
        raise UnavailableError(
            f"{resolution.requested}: no instance could answer ({len(errors)} attempt(s)): " + " | ".join(errors)
        )


def _generate_on(
    instance: Instance, request: GenerationRequest, progress: _Progress, rows: _Rows
) -> Generator[str, None, tuple[Generation, Cost]]:
    """One instance's stream. A resumed stream that diverges from what the client has is the
    request's end (the client must retry), and the attempt's row."""
    try:
        return (yield from _resume_on(instance, request, progress))
    except _Diverged as exc:
        rows.failed(instance.record, str(exc), progress.cost)
        raise UnavailableError(str(exc)) from None


def _resume_on(
    instance: Instance, request: GenerationRequest, progress: _Progress
) -> Generator[str, None, tuple[Generation, Cost]]:
    """One instance's stream; skips what the client already has when resuming after a failover."""
    already_sent = progress.sent
    with measure() as cost:
        progress.cost = cost
        produced = ""
        stream = instance.provider.stream(request)
        try:
            while True:
                try:
                    fragment = next(stream)
                except StopIteration as done:
                    generation: Generation = done.value
                    break
                except ArbiterError:
                    raise
                except Exception as exc:  # a provider bug or a server's malformed answer: a backend fault
                    raise ProviderError(f"{instance.key}: {type(exc).__name__}: {exc}") from exc
                produced += fragment
                if len(produced) <= len(already_sent):
                    if not already_sent.startswith(produced):
                        raise _Diverged(instance, already_sent)
                    continue
                if not produced.startswith(already_sent):
                    raise _Diverged(instance, already_sent)
                new_text = produced[len(progress.sent):]
                progress.sent = produced
                yield new_text
        finally:
            stream.close()
    if not generation.text.startswith(already_sent):
        raise _Diverged(instance, already_sent)
    return generation, cost


def _embed_on(
    instance: Instance, texts: list[str], progress: _Progress, truncate: bool
) -> Generator[str, None, tuple[Embedded, Cost]]:
    """One instance's embedding, measured like a generation; it sends no text."""
    provider = instance.provider
    if not isinstance(provider, Embedder):
        raise UserError(f"{instance.record.ref}: the {instance.record.spec.kind} provider cannot embed")
    with measure() as cost:
        progress.cost = cost
        try:
            embedded = provider.embed(texts, truncate=truncate)
        except ArbiterError:
            raise
        except Exception as exc:  # a provider bug: a backend fault, as in a generation
            raise ProviderError(f"{instance.key}: {type(exc).__name__}: {exc}") from exc
    yield from ()  # nothing to stream: the failover loop drives a generation and an embedding alike
    return embedded, cost


@dataclass(frozen=True)
class _Served(Generic[T]):
    """What the failover loop hands back: the answering attempt's result and figures."""

    result: T
    record: VersionRecord
    resolution: Resolution
    cost: Cost
    queue_ms: float
    attempts: int
    resumed_after_chars: int
    failed_ms: float

    def outcome(self, arrived: float, call_id: str, *, model_ms: float) -> Outcome:
        waited_ms = model_ms + self.queue_ms + self.failed_ms
        overhead_ms = max(0.0, (time.perf_counter() - arrived) * 1000 - waited_ms)
        return Outcome(self.record, self.resolution, self.cost, self.queue_ms, self.attempts, self.failed_ms,
                       waited_ms, overhead_ms, call_id)


class _Rows:
    """The ``calls`` rows of one request's attempts, all with the same request columns."""

    def __init__(self, recorder: Recorder, resolution: Resolution, api: str, call_id: str) -> None:
        self._recorder = recorder
        self.call_id = call_id  # the answering attempt's; each failed attempt's row gets an id of its own
        # A gateway call's task is its route: queries by task (the cost profile, rollouts) see them.
        self._context: dict[str, Any] = {"source": "gateway", "api": api, "requested": resolution.requested,
                                         "route": resolution.route, "task": resolution.route}

    def answered(self, outcome: Outcome, generation: Generation | None) -> None:
        """The answering attempt's row, queued (written off the request path)."""
        self._recorder.add("calls", call_row(outcome.record, generation, outcome.cost, error=None,
                                             call_id=self.call_id, queue_ms=outcome.queue_ms, overhead_ms=outcome.overhead_ms,
                                             **self._context))

    def failed(self, record: VersionRecord, error: str, cost: Cost | None = None) -> None:
        """An attempt that did not answer; ``cost`` is None when no instance was ever held."""
        self._recorder.add("calls", call_row(record, None, cost or Cost(), error=error, **self._context))


@dataclass
class _Progress:
    """Across failover attempts: the text the client already has, the current attempt's cost
    (filled when its measurement ends), and the time the failed attempts took."""

    sent: str = ""
    cost: Cost = field(default_factory=Cost)
    failed_ms: float = 0.0


class _Diverged(Exception):
    def __init__(self, instance: Instance, sent: str) -> None:
        super().__init__(
            f"{instance.key} took over a stream that failed after {len(sent)} characters but generated a different "
            f"answer; the client must retry the request"
        )
