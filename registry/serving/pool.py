"""Warm model instances: replicas per version, a bounded queue each, keep-alive and eviction.

Loading a model takes seconds and a llama.cpp instance serves one request at a time (it is not
thread-safe), so the pool keeps versions loaded and hands out *leases*: a request waits for its
instance's slot in a bounded queue (full → ``CapacityError``, the gateway's 429 with
``Retry-After``; never an unbounded wait), replicas of a version give parallelism, and a circuit
breaker per instance keeps a failing backend out of rotation. Idle instances unload after their
keep-alive unless pinned (a route's champion), and loading past the memory budget evicts the
least recently used idle instance first. A maintenance thread runs health checks that never load
a cold model.

Benchmarks use the same pool through :meth:`WarmPool.get`: one instance per version, loaded once.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psutil

from registry.errors import ArbiterError, CapacityError, ProviderError, UnavailableError, UserError
from registry.providers import Provider, provider_for
from registry.serving.breaker import BreakerState, CircuitBreaker
from registry.settings import Settings
from registry.spec import VersionRecord

_MB = 1024 * 1024
_MAINTENANCE_TICK_S = 0.5
_CANCEL_POLL_S = 0.1  # how soon a queued request notices that its client hung up


class InstanceState(StrEnum):
    COLD = "cold"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(eq=False)
class Instance:
    """One loaded (or loadable) copy of a version."""

    record: VersionRecord
    replica: int
    provider: Provider
    breaker: CircuitBreaker
    state: InstanceState = InstanceState.COLD
    memory_mb: float = 0.0
    last_used: float = 0.0
    in_flight: int = 0
    waiting: int = 0
    background: int = 0  # of ``in_flight + waiting``: leases no user waits for (shadow copies)
    served: int = 0
    busy_ms: float = 0.0
    error: str | None = None
    capacity: int = 1  # requests at once: 1 for llama.cpp (not thread-safe); a remote server takes several
    loaded: threading.Event = field(default_factory=threading.Event)
    # Every load and every mark-cold moves the epoch; an unload runs only if no load began since its
    # mark, and load/unload of the provider never overlap (the transition lock).
    epoch: int = 0
    transition: threading.Lock = field(default_factory=threading.Lock)
    slot: FairSlot = field(init=False)

    def __post_init__(self) -> None:
        self.slot = FairSlot(self.capacity)

    @property
    def key(self) -> str:
        return f"{self.record.ref}#{self.replica}"

    @property
    def queued(self) -> int:
        return self.in_flight + self.waiting

    def mean_request_ms(self) -> float:
        return self.busy_ms / self.served if self.served else 1000.0

    def as_json(self) -> dict[str, Any]:
        return {
            "instance": self.key,
            "model": self.record.name,
            "version": self.record.version,
            "replica": self.replica,
            "state": self.state.value,
            "breaker": self.breaker.state.value,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "background": self.background,
            "served": self.served,
            "memory_mb": round(self.memory_mb, 1),
            "error": self.error,
        }


def _backend_fault(exc: ArbiterError) -> ArbiterError:
    """A version that cannot load (its file gone or changed) is the server's fault, not the
    caller's: serving turns it into a ``ProviderError`` so the route fails over (or answers 503)
    instead of telling the client its request was bad."""
    return ProviderError(str(exc)) if isinstance(exc, UserError) else exc


class FairSlot:
    """A counting semaphore that serves waiters first come, first served.

    ``threading.Semaphore`` lets a request that just arrived take a slot that was released for a
    request already waiting, which then waits again: tail latency grew to twice the typical wait
    under load. Here a released slot is handed to the oldest waiter directly.
    """

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._waiters: deque[threading.Event] = deque()
        self._lock = threading.Lock()

    def acquire(self, timeout: float, cancelled: threading.Event | None = None) -> bool:
        """True once the slot is this caller's; False after ``timeout``, or as soon as
        ``cancelled`` is set (a client that hung up gives its place in the queue back)."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        deadline = time.monotonic() + timeout
        while not turn.wait(max(0.0, min(deadline - time.monotonic(), _CANCEL_POLL_S))):
            if time.monotonic() >= deadline or (cancelled is not None and cancelled.is_set()):
                break
        else:
            return True
        with self._lock:
            if turn.is_set():  # handed over just as the wait ran out: keep it
                return True
            self._waiters.remove(turn)
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()  # the slot passes on without ever being free
            else:
                self._free += 1


PoolEvent = Callable[[str, VersionRecord, dict[str, Any]], None]


class WarmPool:
    """Warm instances keyed by version, handed out as leases.

    Example::

        with WarmPool(settings) as pool:
            pool.warm(record)                         # load + health-check every replica
            with pool.lease(record) as instance:      # waits in the bounded queue
                instance.provider.generate(request)
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_event: PoolEvent | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._on_event = on_event
        self._instances: dict[str, list[Instance]] = {}
        self._replicas: dict[str, int] = {}
        self._pinned: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._maintenance: threading.Thread | None = None

    # --- the benchmark path -----------------------------------------------------------------

    def get(self, record: VersionRecord) -> Provider:
        """The loaded provider of the version's first replica (loads it the first time)."""
        instance = self._instances_of(record)[0]
        self._load(instance)
        return instance.provider

    def is_warm(self, record: VersionRecord) -> bool:
        instances = self._instances.get(record.ref, [])
        return any(i.state is InstanceState.READY for i in instances)

    # --- the serving path -------------------------------------------------------------------

    def set_replicas(self, record: VersionRecord, replicas: int) -> None:
        """How many instances ``record`` gets (a route's setting); applied at the next lease or warm."""
        with self._lock:
            self._replicas[record.ref] = max(1, replicas)

    def pin(self, refs: Iterable[str]) -> None:
        """Versions kept loaded whatever their idle time (the champions being served)."""
        with self._lock:
            self._pinned = set(refs)

    def warm(self, record: VersionRecord) -> None:
        """Load every replica and check its health; raises ``ProviderError`` if none is ready."""
        instances = self._instances_of(record)
        errors = []
        for instance in instances:
            try:
                self._load(instance)
                health = instance.provider.health()
                if not health.ok:
                    raise ProviderError(f"{instance.key}: health check failed after load: {health.detail}")
            except (ProviderError, ArbiterError) as exc:
                errors.append(str(exc))
        if len(errors) == len(instances):
            raise ProviderError(f"{record.ref} could not be warmed: {'; '.join(errors)}")

    @contextlib.contextmanager
    def lease(
        self, record: VersionRecord, *, exclude: frozenset[str] = frozenset(), cancelled: threading.Event | None = None,
        background: bool = False,
    ) -> Iterator[Instance]:
        """Hold one instance of ``record`` for one request.

        Picks the least busy ready replica whose breaker allows traffic (loading a cold one when
        none is loaded), waits for its slot at most ``queue_timeout_s`` (less if ``cancelled`` is set
        meanwhile: the client hung up). ``exclude`` lists
        instance keys that already failed this request (failover moves on to the others).
        Raises ``CapacityError`` when every candidate's queue is full, ``UnavailableError`` when
        no candidate is healthy or the wait ran out.

        ``background``: work no user waits for (a shadow copy). It never queues: it takes a free
        slot at once or raises ``CapacityError``, so it can never stand in a queue ahead of a user;
        and :meth:`user_load` does not count it, so its holder can tell when a user arrives.
        """
        instance = self._admit(record, exclude, background=background)
        timeout = 0.0 if background else self._settings.queue_timeout_s
        acquired = instance.slot.acquire(timeout=timeout, cancelled=cancelled)
        with self._lock:
            instance.waiting -= 1
            if acquired:
                instance.in_flight += 1
            elif background:
                instance.background -= 1
        if not acquired and background:
            raise CapacityError(f"{instance.key} is busy; background work waits for a free slot", retry_after_s=1)
        if not acquired and cancelled is not None and cancelled.is_set():
            raise UnavailableError(f"the client hung up while queued for {instance.key}")
        if not acquired:
            raise UnavailableError(
                f"{instance.key} stayed busy for {self._settings.queue_timeout_s:g} s; retry later or add replicas"
            )
        admission = instance.breaker.admit()
        try:
            if admission is None:  # it opened while this request waited
                raise UnavailableError(f"{instance.key} is out of rotation (circuit breaker open)")
            if instance.state is not InstanceState.READY:  # unloaded or evicted while this request waited
                self._load(instance)
        except ArbiterError as exc:
            self._end_probe(instance, admission)
            self._release(instance, served=False, background=background)
            raise _backend_fault(exc) from exc
        started = self._clock()  # service time only: the Retry-After estimate must not count queueing
        try:
            yield instance
        finally:
            self._end_probe(instance, admission)
            self._release(instance, served=True, busy_ms=(self._clock() - started) * 1000, background=background)

    def user_load(self, record: VersionRecord) -> int:
        """Users' requests in flight or queued on ``record``'s instances, background leases left out:
        what a shadow copy checks before it starts and between its fragments (cheap: counters read
        under the pool's lock, no instance made or loaded)."""
        with self._lock:
            return sum(i.queued - i.background for i in self._instances.get(record.ref, ()))

    @staticmethod
    def _end_probe(instance: Instance, admission: str | None) -> None:
        """A probe that ended with no verdict (a caller's error, a client that hung up) must let the
        next request probe; a request that was not the probe leaves the probe alone."""
        if admission == "probe":
            instance.breaker.release_probe()

    def _release(self, instance: Instance, *, served: bool, busy_ms: float = 0.0, background: bool = False) -> None:
        with self._lock:
            instance.in_flight -= 1
            if background:
                instance.background -= 1
            if served:
                instance.served += 1
                instance.busy_ms += busy_ms
                instance.last_used = self._clock()
        instance.slot.release()

    def instances_of(self, record: VersionRecord) -> list[Instance]:
        with self._lock:
            return list(self._instances.get(record.ref, []))

    def snapshot(self) -> list[dict[str, Any]]:
        """Every instance's state, for ``/api/ps``, the admin API and metrics."""
        with self._lock:
            instances = [i for group in self._instances.values() for i in group]
        return [i.as_json() | {"pinned": i.record.ref in self._pinned} for i in instances]

    def expires_in_s(self, instance: Instance) -> float | None:
        """Seconds until an idle instance's keep-alive runs out; None for a pinned one (never)."""
        if instance.record.ref in self._pinned:
            return None
        idle_s = 0.0 if instance.queued else self._clock() - instance.last_used
        return max(0.0, self._settings.keep_alive_s - idle_s)

    def loaded(self) -> list[Instance]:
        with self._lock:
            return [i for group in self._instances.values() for i in group if i.state is InstanceState.READY]

    def unload(self, ref: str) -> int:
        """Unload every instance of ``ref`` (``name/version``); returns how many were loaded."""
        with self._lock:
            instances = self._instances.pop(ref, [])
            loaded = sum(1 for i in instances if i.state is InstanceState.READY)
        for instance in instances:
            self._unload(instance, reason="admin")
        return loaded

    # --- maintenance --------------------------------------------------------------------------

    def start_maintenance(self) -> None:
        """Health checks every ``health_interval_s`` and keep-alive expiry, in one daemon thread."""
        if self._maintenance is None:
            self._maintenance = threading.Thread(target=self._maintain, name="arbiter-pool", daemon=True)
            self._maintenance.start()

    def expire_idle(self) -> list[str]:
        """Unload unpinned instances idle longer than ``keep_alive_s``, and idle replicas past a
        version's (lowered) replica count; returns their keys."""
        now = self._clock()
        expired = []
        with self._lock:
            for ref, group in self._instances.items():
                wanted = self._replicas.get(ref, 1)
                for instance in group:
                    idle = instance.state is InstanceState.READY and instance.queued == 0
                    surplus = instance.replica >= wanted
                    expired_alive = ref not in self._pinned and now - instance.last_used > self._settings.keep_alive_s
                    if idle and (surplus or expired_alive):
                        # marked under the lock that saw it idle: no request slips in
                        expired.append((instance, self._mark_cold(instance)))
        for instance, epoch in expired:
            self._unload(instance, reason="keep_alive", epoch=epoch)
        return [i.key for i, _ in expired]

    def check_health(self) -> None:
        """Ask every loaded instance ``health()`` (never loads a cold one); failures feed its breaker."""
        for instance in self.loaded():
            if instance.queued:
                continue  # busy means alive; a health call would only wait behind the request
            health = instance.provider.health()
            if not health.ok:
                instance.breaker.record_failure()
            elif instance.breaker.state is BreakerState.HALF_OPEN and instance.breaker.allow():
                instance.breaker.record_success()  # the health check was the probe

    def close(self) -> None:
        self._stop.set()
        if self._maintenance is not None:
            self._maintenance.join(timeout=5)
        with self._lock:
            instances = [i for group in self._instances.values() for i in group]
            self._instances.clear()
        for instance in instances:
            instance.provider.unload()

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------

    def _instances_of(self, record: VersionRecord) -> list[Instance]:
        with self._lock:
            group = self._instances.setdefault(record.ref, [])
            wanted = self._replicas.get(record.ref, 1)
            while len(group) < wanted:
                group.append(self._new_instance(record, len(group)))
            return group[:wanted]  # replicas past a lowered count take no new requests and unload when idle

    def _new_instance(self, record: VersionRecord, replica: int) -> Instance:
        settings = self._settings
        provider = provider_for(record.spec, n_threads=settings.n_threads, n_ctx=settings.n_ctx, seed=settings.seed,
                                n_gpu_layers=settings.n_gpu_layers)

        def breaker_moved(old: BreakerState, new: BreakerState) -> None:
            self._emit(f"breaker.{new.value}", record, {"replica": replica, "from": old.value})

        breaker = CircuitBreaker(
            failures=settings.breaker_failures, open_s=settings.breaker_open_s, clock=self._clock,
            on_change=breaker_moved,
        )
        capacity = 1 if record.spec.kind == "gguf" else settings.remote_concurrency
        return Instance(record=record, replica=replica, provider=provider, breaker=breaker, last_used=self._clock(),
                        capacity=capacity)

    def _admit(self, record: VersionRecord, exclude: frozenset[str], *, background: bool = False) -> Instance:
        instances = [i for i in self._instances_of(record) if i.key not in exclude]
        if not instances:
            raise UnavailableError(f"every instance of {record.ref} failed this request")
        spare = self._replica_to_load(instances)
        if spare is not None:
            try:
                self._load(spare)
            except ArbiterError as exc:
                if not any(i.state is InstanceState.READY for i in instances):
                    raise _backend_fault(exc) from exc  # nothing else can answer; else queue on a loaded one
        with self._lock:
            ready = [i for i in instances if i.state is InstanceState.READY and i.breaker.would_allow()]
            if not ready:
                states = ", ".join(f"{i.key} {i.state.value}/{i.breaker.state.value}" for i in instances)
                raise UnavailableError(f"no healthy instance of {record.ref} ({states})")
            instance = min(ready, key=lambda i: (i.queued, i.last_used))
            if instance.queued >= instance.capacity + self._settings.queue_depth:
                retry_after = math.ceil(instance.queued * instance.mean_request_ms() / 1000)
                raise CapacityError(
                    f"{record.ref}: all {len(ready)} instance(s) busy with full queues "
                    f"({self._settings.queue_depth} waiting each); retry later",
                    retry_after_s=max(1, retry_after),
                )
            instance.waiting += 1
            if background:
                instance.background += 1  # under the same lock: user_load never sees it as a user
            return instance

    def _replica_to_load(self, instances: list[Instance]) -> Instance | None:
        """A cold replica worth loading now: when none is loaded, or every loaded one is busy (a
        replica added by a route's ``arbiter.replicas`` tag starts serving at the first queue)."""
        with self._lock:
            ready = [i for i in instances if i.state is InstanceState.READY and i.breaker.would_allow()]
            if any(i.queued < i.capacity for i in ready):
                return None
            cold = [i for i in instances if i.state is InstanceState.COLD]
            if ready:
                return cold[0] if cold else None
            # nothing loaded: wait for a load in progress, else load a cold one, else retry a failed one
            order = (InstanceState.LOADING, InstanceState.COLD, InstanceState.FAILED)
            return next((i for state in order for i in instances if i.state is state), None)

    def _load(self, instance: Instance) -> None:
        """Load ``instance`` once; concurrent callers wait for the first one's result."""
        with self._lock:
            if instance.state is InstanceState.READY:
                return
            loader = instance.state is not InstanceState.LOADING
            if loader:
                instance.state = InstanceState.LOADING
                instance.epoch += 1
                instance.loaded.clear()
        if not loader:
            instance.loaded.wait(timeout=self._settings.queue_timeout_s)
            if instance.state is not InstanceState.READY:
                raise ProviderError(f"{instance.key} failed to load: {instance.error}")
            return
        try:
            self._make_room(instance)
            with instance.transition:  # an unload of this instance still running finishes first
                rss_before = psutil.Process().memory_info().rss
                instance.provider.load()
                grown_mb = (psutil.Process().memory_info().rss - rss_before) / _MB
        except Exception as exc:  # any failure: never leave the instance LOADING for ever
            with self._lock:
                instance.state = InstanceState.FAILED
                instance.error = str(exc) or type(exc).__name__
                instance.memory_mb = 0.0
            instance.loaded.set()
            self._emit("pool.load_failed", instance.record, {"replica": instance.replica, "error": instance.error})
            if isinstance(exc, ArbiterError):
                raise
            raise ProviderError(f"{instance.key} could not load: {instance.error}") from exc
        with self._lock:
            instance.memory_mb = max(float(instance.record.spec.hardware.min_memory_mb), grown_mb)
            instance.state = InstanceState.READY
            instance.error = None
            instance.last_used = self._clock()
        instance.loaded.set()
        self._emit("pool.load", instance.record, {"replica": instance.replica, "load_ms": instance.provider.load_ms})

    def _make_room(self, instance: Instance) -> None:
        """Evict least recently used idle, unpinned instances until ``record`` fits the budget."""
        record = instance.record
        need = record.spec.hardware.min_memory_mb
        budget = self._settings.memory_budget_mb
        while True:
            with self._lock:
                holding = [i for group in self._instances.values() for i in group
                           if i.state in (InstanceState.READY, InstanceState.LOADING) and i is not instance]
                used = sum(i.memory_mb for i in holding)
                if used + need <= budget:
                    instance.memory_mb = float(need)  # reserved now: a load running beside this one counts it
                    return
                idle = [i for i in holding
                        if i.state is InstanceState.READY and i.queued == 0 and i.record.ref not in self._pinned]
                victim = min(idle, key=lambda i: i.last_used, default=None)
                if victim is not None:
                    victim_epoch = self._mark_cold(victim)
            if victim is None:
                raise CapacityError(
                    f"{record.ref} needs {need} MB but {used:.0f} of the {budget} MB memory budget is held by "
                    "busy or pinned instances; raise ARBITER_MEMORY_BUDGET_MB or unload a version",
                    retry_after_s=5,
                )
            self._unload(victim, reason="memory_budget", epoch=victim_epoch)

    @staticmethod
    def _mark_cold(instance: Instance) -> int:
        """Cold first (call with the pool lock held), so no new request is admitted while it
        unloads; returns the epoch the unload must still find."""
        instance.state = InstanceState.COLD
        instance.memory_mb = 0.0
        instance.epoch += 1
        return instance.epoch

    def _unload(self, instance: Instance, *, reason: str, epoch: int | None = None) -> None:
        if epoch is None:
            with self._lock:
                epoch = self._mark_cold(instance)
        with instance.transition:
            if instance.epoch != epoch:
                return  # a request loaded it again after the mark: it stays
            instance.provider.unload()  # waits for a generation already running on it
        self._emit("pool.unload", instance.record, {"replica": instance.replica, "reason": reason})

    def _emit(self, kind: str, record: VersionRecord, detail: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(kind, record, detail)

    def _maintain(self) -> None:
        next_health = self._clock() + self._settings.health_interval_s
        while not self._stop.wait(_MAINTENANCE_TICK_S):
            self.expire_idle()
            if self._clock() >= next_health:
                self.check_health()
                next_health = self._clock() + self._settings.health_interval_s
