"""Serve one request: lease an instance, generate (whole or streamed), fail over, measure.

Failover order: another healthy replica of the same version, then the route's ``previous``
version. A request is answered by one of them or ends in ``UnavailableError`` (the gateway's
503) — never lost, never hung. Every attempt, failed ones included, is a ``calls`` row.

A stream that fails *after* text was sent resumes on the fallback: the fallback generates the
same request again and the text already sent is skipped. At temperature 0 a replica of the same
version reproduces it exactly; when the fallback's text does not start with what the client
already has, the stream ends with a clear error instead of splicing two different answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from registry.errors import ArbiterError, CapacityError, ProviderError, UnavailableError
from registry.machine.costs import Cost, measure
from registry.providers import Generation, GenerationRequest
from registry.providers.base import run_to_end
from registry.results.recorder import Recorder
from registry.serving.calls import call_row
from registry.serving.pool import Instance, WarmPool
from registry.serving.router import Resolution
from registry.spec import VersionRecord


@dataclass
class Answer:
    """A finished request: what was generated, by which version, and the figures for its row."""

    generation: Generation
    record: VersionRecord
    resolution: Resolution
    cost: Cost
    queue_ms: float
    attempts: int
    resumed_after_chars: int = 0  # > 0 when a stream failed mid-way and another instance finished it
    failed_ms: float = 0.0  # time in attempts that failed before this one answered
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_over(self) -> bool:
        return self.attempts > 1 or self.record.ref != self.resolution.record.ref

    @property
    def model_ms(self) -> float:
        """Time inside the model (failed attempts included) plus the waits for it: what the
        gateway's overhead leaves out."""
        return self.generation.generation_ms + self.queue_ms + self.failed_ms


class Dispatcher:
    """Example::

        dispatcher = Dispatcher(pool, recorder)
        answer = dispatcher.generate(router.resolve("qa"), request, api="ollama")
        dispatcher.record(answer, overhead_ms=0.4)
    """

    def __init__(self, pool: WarmPool, recorder: Recorder) -> None:
        self._pool = pool
        self._recorder = recorder

    def generate(self, resolution: Resolution, request: GenerationRequest, *, api: str) -> Answer:
        return run_to_end(self.stream(resolution, request, api=api))

    def stream(
        self, resolution: Resolution, request: GenerationRequest, *, api: str, cancelled: threading.Event | None = None
    ) -> Generator[str, None, Answer]:
        """Yield text fragments; return the ``Answer``. Raises ``UnavailableError`` when every
        candidate failed (or ``cancelled`` was set: the client hung up), ``CapacityError`` when
        the first candidate's queues are full."""
        progress = _Progress()
        errors: list[str] = []
        attempts = 0
        for record in self._candidates(resolution):
            excluded: set[str] = set()
            while True:
                if cancelled is not None and cancelled.is_set():
                    raise UnavailableError(f"{resolution.requested}: the client hung up; nothing more is tried")
                attempts += 1
                try:
                    lease = self._pool.lease(record, exclude=frozenset(excluded), cancelled=cancelled)
                    queued_at = time.perf_counter()
                    instance = lease.__enter__()
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
                        error = "client disconnected" if hung_up else str(exc)
                        self._recorder.add("calls", self._unavailable_row(record, resolution, api, error))
                    break
                queue_ms = (time.perf_counter() - queued_at) * 1000
                try:
                    resumed_after = len(progress.sent)
                    generation, cost = yield from self._attempt(instance, request, progress)
                except ProviderError as exc:
                    instance.breaker.record_failure()
                    excluded.add(instance.key)
                    errors.append(str(exc))
                    progress.failed_ms += progress.cost.wall_ms + queue_ms
                    self._recorder.add("calls", self._failed_row(instance, resolution, api, str(exc), progress.cost))
                    continue
                except _Diverged as exc:
                    raise UnavailableError(str(exc)) from None
                except GeneratorExit:  # the client hung up: the attempt is a row too
                    self._recorder.add("calls", self._failed_row(
                        instance, resolution, api, "client disconnected", progress.cost))
                    raise
                finally:
                    lease.__exit__(None, None, None)
                instance.breaker.record_success()
                return Answer(generation, record, resolution, cost, queue_ms, attempts, resumed_after,
                              failed_ms=progress.failed_ms,
                              context={"api": api, "requested": resolution.requested, "route": resolution.route,
                                       "task": resolution.route})
        raise UnavailableError(
            f"{resolution.requested}: no instance could answer ({len(errors)} attempt(s)): " + " | ".join(errors)
        )

    def record(self, answer: Answer, *, overhead_ms: float | None) -> None:
        """Queue the answer's ``calls`` row (written off the request path)."""
        row = call_row(answer.record, answer.generation, answer.cost, error=None, source="gateway",
                       queue_ms=answer.queue_ms, overhead_ms=overhead_ms, **answer.context)
        self._recorder.add("calls", row)

    def _candidates(self, resolution: Resolution) -> Iterator[VersionRecord]:
        yield resolution.record
        yield from resolution.fallbacks

    def _attempt(
        self, instance: Instance, request: GenerationRequest, progress: _Progress
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

    def _unavailable_row(self, record: VersionRecord, resolution: Resolution, api: str, error: str) -> dict[str, Any]:
        return call_row(record, None, Cost(), error=error, source="gateway", api=api,
                        requested=resolution.requested, route=resolution.route, task=resolution.route)

    def _failed_row(
        self, instance: Instance, resolution: Resolution, api: str, error: str, cost: Cost
    ) -> dict[str, Any]:
        return call_row(instance.record, None, cost, error=error, source="gateway", api=api,
                        requested=resolution.requested, route=resolution.route, task=resolution.route)


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
