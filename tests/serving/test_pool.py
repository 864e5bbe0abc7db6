"""The warm pool on the real SmolLM2 files: replicas, bounded queues, keep-alive, memory budget, breakers.

Time that the pool reads (keep-alive, last use, breakers) comes from an injected clock the tests
move by hand; waits between threads are real and bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from support import Clock

from registry.catalog.versions import Catalog
from registry.errors import CapacityError, UnavailableError
from registry.providers import GenerationRequest
from registry.serving.breaker import BreakerState
from registry.serving.pool import Instance, InstanceState, WarmPool
from registry.settings import get_settings
from registry.spec import VersionRecord

pytestmark = pytest.mark.integration

PROMPT = GenerationRequest(prompt="The capital of France is", max_tokens=4)


class Events(list):
    """What the pool reported through ``on_event``, as ``(kind, ref, detail)``."""

    def __call__(self, kind: str, record: VersionRecord, detail: dict[str, Any]) -> None:
        self.append((kind, record.ref, detail))

    def of(self, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [e for e in self if e[0] == kind]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def make_pool(home, clock: Clock, events: Events) -> Iterator[Callable[..., WarmPool]]:
    """``make_pool(queue_depth=1, …)``: a pool on this test's home with the given settings, closed after."""
    pools: list[WarmPool] = []

    def make(**overrides: Any) -> WarmPool:
        settings = get_settings(home=home, **({"n_ctx": 512} | overrides))
        pool = WarmPool(settings, clock=clock, on_event=events)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def record(catalog: Catalog, smollm2) -> VersionRecord:
    return catalog.register(smollm2.path, name=smollm2.name)[0]


@pytest.fixture
def record_q4_0(catalog: Catalog, shipped, record: VersionRecord) -> VersionRecord:
    """The derived Q4_0 SmolLM2: version 2 of the same model."""
    derived = catalog.register(shipped[1].path, name=shipped[1].name)[0]
    assert derived.ref != record.ref
    return derived


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


class Holder:
    """A lease taken in another thread, held until ``release()``."""

    def __init__(self, pool: WarmPool, record: VersionRecord, **kwargs: Any) -> None:
        self.entered = threading.Event()
        self.finished = threading.Event()
        self._release = threading.Event()
        self.instance: Instance | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(pool, record, kwargs), daemon=True)
        self._thread.start()

    def _run(self, pool: WarmPool, record: VersionRecord, kwargs: dict[str, Any]) -> None:
        try:
            with pool.lease(record, **kwargs) as instance:
                self.instance = instance
                self.entered.set()
                self._release.wait(timeout=30)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc
        finally:
            self.finished.set()

    def release(self) -> None:
        self._release.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the lease holder did not finish"


@contextmanager
def held(pool: WarmPool, record: VersionRecord, **kwargs: Any) -> Iterator[Holder]:
    """A lease held in another thread for the duration of the block (entered before the block runs)."""
    holder = Holder(pool, record, **kwargs)
    try:
        assert holder.entered.wait(timeout=60), "the lease was not granted"
        assert holder.error is None, holder.error
        yield holder
    finally:
        holder.release()


def idle_everywhere(pool: WarmPool) -> bool:
    return all(row["in_flight"] == 0 and row["waiting"] == 0 for row in pool.snapshot())


# --- warm, replicas, serialisation -----------------------------------------------------------


def test_warm_loads_and_health_checks_every_replica(make_pool, record: VersionRecord, events: Events) -> None:
    pool = make_pool()
    pool.set_replicas(record, 2)
    assert not pool.is_warm(record)
    pool.warm(record)
    instances = pool.instances_of(record)
    assert [i.replica for i in instances] == [0, 1]
    for instance in instances:
        assert instance.state is InstanceState.READY and instance.provider.loaded
        assert instance.provider.health().ok
        assert instance.memory_mb >= record.spec.hardware.min_memory_mb
    assert instances[0].provider is not instances[1].provider
    assert sorted(e[2]["replica"] for e in events.of("pool.load")) == [0, 1]
    assert pool.is_warm(record)
    pool.warm(record)  # already warm: nothing loads again
    assert len(events.of("pool.load")) == 2


def test_two_concurrent_leases_get_different_replicas(make_pool, record: VersionRecord) -> None:
    pool = make_pool()
    pool.set_replicas(record, 2)
    pool.warm(record)
    with held(pool, record) as first:
        with pool.lease(record) as second:
            assert second is not first.instance
            assert second.provider is not first.instance.provider
            assert second.provider.generate(PROMPT).completion_tokens > 0
            # the other thread's instance answers at the same time (its own lock, its own llama.cpp)
            assert first.instance.provider.generate(PROMPT).completion_tokens > 0
    assert idle_everywhere(pool)


def test_an_instance_serialises_its_own_requests(make_pool, record: VersionRecord) -> None:
    pool = make_pool()
    pool.warm(record)
    (instance,) = pool.instances_of(record)
    with held(pool, record) as first:
        assert first.instance is instance and instance.in_flight == 1
        second = Holder(pool, record)
        wait_until(lambda: instance.waiting == 1, "the second request waits")
        assert not second.entered.wait(timeout=0.3)  # it stays queued while the first holds the instance
        assert (instance.in_flight, instance.waiting) == (1, 1)
    assert second.entered.wait(timeout=10) and second.error is None
    assert second.instance is instance
    assert (instance.in_flight, instance.waiting) == (1, 0)
    second.release()
    assert (instance.in_flight, instance.waiting, instance.served) == (0, 0, 2)


# --- the bounded queue ------------------------------------------------------------------------


def test_a_full_queue_answers_capacity_error_and_counts_return_to_zero(make_pool, record: VersionRecord) -> None:
    pool = make_pool(queue_depth=1)
    pool.warm(record)
    (instance,) = pool.instances_of(record)
    with held(pool, record):
        waiter = Holder(pool, record)
        wait_until(lambda: instance.waiting == 1, "the second request waits")
        with pytest.raises(CapacityError, match=r"smollm2-135m/1: .*busy with full queues.*retry later") as refused:
            with pool.lease(record):
                pytest.fail("a third request was admitted past queue_depth=1")
        assert refused.value.retry_after_s >= 1
        assert (instance.in_flight, instance.waiting) == (1, 1)  # the refused one left no trace
    assert waiter.entered.wait(timeout=10) and waiter.error is None
    waiter.release()
    assert idle_everywhere(pool)
    assert (instance.in_flight, instance.waiting, instance.served) == (0, 0, 2)
    with pool.lease(record) as again:  # and the queue takes requests again
        assert again is instance


def test_a_waiter_gives_up_after_queue_timeout_instead_of_hanging(make_pool, record: VersionRecord) -> None:
    pool = make_pool(queue_timeout_s=0.5)
    pool.warm(record)
    (instance,) = pool.instances_of(record)
    with held(pool, record):
        started = time.monotonic()
        with pytest.raises(UnavailableError, match=r"smollm2-135m/1#0 stayed busy.*retry later or add replicas"):
            with pool.lease(record):
                pytest.fail("granted a lease on a busy instance")
        assert 0.4 <= time.monotonic() - started < 5
        assert (instance.in_flight, instance.waiting) == (1, 0)
    assert idle_everywhere(pool)


def test_the_queue_timeout_message_states_the_real_timeout(make_pool, record: VersionRecord) -> None:
    pool = make_pool(queue_timeout_s=0.5)
    pool.warm(record)
    with held(pool, record):
        with pytest.raises(UnavailableError, match=r"stayed busy for 0\.5 s"):
            with pool.lease(record):
                pass


def test_a_breaker_that_opens_while_a_request_waits_turns_it_away(make_pool, record: VersionRecord) -> None:
    pool = make_pool()
    pool.warm(record)
    (instance,) = pool.instances_of(record)
    with held(pool, record):
        waiter = Holder(pool, record)
        wait_until(lambda: instance.waiting == 1, "the second request waits")
        for _ in range(3):  # breaker_failures defaults to 3
            instance.breaker.record_failure()
    assert waiter.finished.wait(timeout=10)
    assert isinstance(waiter.error, UnavailableError)
    assert "out of rotation (circuit breaker open)" in str(waiter.error)
    waiter.release()
    assert idle_everywhere(pool)


# --- keep-alive -------------------------------------------------------------------------------


def test_keep_alive_unloads_an_idle_unpinned_instance(
    make_pool, record: VersionRecord, clock: Clock, events: Events
) -> None:
    pool = make_pool(keep_alive_s=60)
    with pool.lease(record) as instance:
        assert instance.provider.generate(PROMPT).completion_tokens > 0
    clock.advance(59)
    assert pool.expire_idle() == []
    clock.advance(2)
    assert pool.expire_idle() == [instance.key]
    assert instance.state is InstanceState.COLD and not instance.provider.loaded
    assert instance.memory_mb == 0
    assert events.of("pool.unload") == [("pool.unload", record.ref, {"replica": 0, "reason": "keep_alive"})]
    assert pool.expire_idle() == []  # a cold instance is not unloaded twice
    with pool.lease(record) as again:  # the next request loads it again
        assert again is instance and instance.state is InstanceState.READY
        assert again.provider.generate(PROMPT).completion_tokens > 0


def test_keep_alive_never_unloads_a_pinned_instance(make_pool, record: VersionRecord, clock: Clock) -> None:
    pool = make_pool(keep_alive_s=60)
    pool.pin([record.ref])
    pool.warm(record)
    (instance,) = pool.instances_of(record)
    clock.advance(3600)
    assert pool.expire_idle() == []
    assert instance.state is InstanceState.READY and instance.provider.loaded
    assert pool.snapshot()[0]["pinned"] is True
    pool.pin([])  # no longer a champion: the keep-alive applies again
    assert pool.expire_idle() == [instance.key]


def test_keep_alive_never_unloads_an_instance_with_a_lease_in_flight(
    make_pool, record: VersionRecord, clock: Clock
) -> None:
    pool = make_pool(keep_alive_s=60)
    with pool.lease(record) as instance:
        clock.advance(3600)  # a very long request
        assert pool.expire_idle() == []
        assert instance.state is InstanceState.READY
        assert instance.provider.generate(PROMPT).completion_tokens > 0
    assert pool.expire_idle() == []  # its last use is now, when the lease ended
    clock.advance(61)
    assert pool.expire_idle() == [instance.key]


# --- the memory budget ------------------------------------------------------------------------


def test_loading_past_the_budget_evicts_the_idle_unpinned_instance(
    make_pool, record: VersionRecord, record_q4_0: VersionRecord, events: Events
) -> None:
    need_1, need_2 = record.spec.hardware.min_memory_mb, record_q4_0.spec.hardware.min_memory_mb
    budget = need_1 + need_2 - 1  # room for either, not for both
    pool = make_pool(memory_budget_mb=budget)
    with pool.lease(record) as first:
        pass
    assert first.memory_mb >= need_1  # measured, never below what the spec says it needs
    assert first.memory_mb + need_2 > budget
    with pool.lease(record_q4_0) as second:
        assert second.provider.generate(PROMPT).completion_tokens > 0
    assert first.state is InstanceState.COLD and not first.provider.loaded
    assert second.state is InstanceState.READY
    assert events.of("pool.unload") == [("pool.unload", record.ref, {"replica": 0, "reason": "memory_budget"})]
    assert [i.key for i in pool.loaded()] == [second.key]
    assert sum(i.memory_mb for i in pool.loaded()) <= budget


def test_eviction_takes_the_least_recently_used_instance(
    make_pool, record: VersionRecord, record_q4_0: VersionRecord, clock: Clock, events: Events
) -> None:
    need_1, need_2 = record.spec.hardware.min_memory_mb, record_q4_0.spec.hardware.min_memory_mb
    pool = make_pool(memory_budget_mb=2 * need_1 + need_2 - 1)  # two replicas of version 1, not a third
    pool.set_replicas(record, 2)
    pool.warm(record)
    replica_0, replica_1 = pool.instances_of(record)
    assert replica_0.memory_mb + replica_1.memory_mb + need_2 > 2 * need_1 + need_2 - 1
    clock.advance(10)
    with pool.lease(record, exclude=frozenset({replica_0.key})) as used:  # replica 1 is used; 0 is now LRU
        assert used is replica_1
    clock.advance(10)
    with pool.lease(record_q4_0):
        pass
    assert replica_0.state is InstanceState.COLD
    assert replica_1.state is InstanceState.READY
    assert events.of("pool.unload") == [("pool.unload", record.ref, {"replica": 0, "reason": "memory_budget"})]


def test_a_pinned_instance_is_never_evicted_and_the_error_says_what_to_do(
    make_pool, record: VersionRecord, record_q4_0: VersionRecord, events: Events
) -> None:
    need_1, need_2 = record.spec.hardware.min_memory_mb, record_q4_0.spec.hardware.min_memory_mb
    budget = need_1 + need_2 - 1
    pool = make_pool(memory_budget_mb=budget)
    pool.pin([record.ref])
    pool.warm(record)
    (first,) = pool.instances_of(record)
    message = rf"smollm2-135m/2 needs {need_2} MB.*{budget} MB memory budget.*raise ARBITER_MEMORY_BUDGET_MB"
    with pytest.raises(CapacityError, match=message) as refused:
        pool.get(record_q4_0)
    assert refused.value.retry_after_s >= 1
    assert first.state is InstanceState.READY and first.provider.loaded
    (second,) = pool.instances_of(record_q4_0)
    assert second.state is InstanceState.FAILED and not second.provider.loaded
    assert [e[1] for e in events.of("pool.load_failed")] == [record_q4_0.ref]
    assert events.of("pool.unload") == []


def test_a_busy_instance_is_never_evicted(make_pool, record: VersionRecord, record_q4_0: VersionRecord) -> None:
    budget = record.spec.hardware.min_memory_mb + record_q4_0.spec.hardware.min_memory_mb - 1
    pool = make_pool(memory_budget_mb=budget)
    pool.warm(record)
    (first,) = pool.instances_of(record)
    with held(pool, record):
        with pytest.raises(CapacityError, match="held by busy or pinned instances"):
            pool.get(record_q4_0)
        assert first.state is InstanceState.READY
    # idle again: the failed load is not sticky, the next one evicts
    assert pool.get(record_q4_0).loaded
    assert first.state is InstanceState.COLD


def test_concurrent_loads_of_two_versions_stay_within_the_budget(
    make_pool, record: VersionRecord, record_q4_0: VersionRecord
) -> None:
    budget = record.spec.hardware.min_memory_mb + record_q4_0.spec.hardware.min_memory_mb - 1
    pool = make_pool(memory_budget_mb=budget)
    loader = threading.Thread(target=pool.get, args=(record,), daemon=True)
    loader.start()
    wait_until(lambda: any(i.state is InstanceState.LOADING for i in pool.instances_of(record)), "version 1 loads")
    try:
        pool.get(record_q4_0)  # meanwhile, a second version
    except CapacityError:
        pass  # refusing is one correct answer
    loader.join(timeout=60)
    assert sum(i.memory_mb for i in pool.loaded()) <= budget


# --- health checks and breakers ---------------------------------------------------------------


def test_check_health_never_loads_a_cold_instance(make_pool, record: VersionRecord, events: Events) -> None:
    pool = make_pool()
    pool.set_replicas(record, 2)
    with pool.lease(record) as leased:  # loads one replica only
        pass
    cold = next(i for i in pool.instances_of(record) if i is not leased)
    assert cold.state is InstanceState.COLD
    pool.check_health()
    pool.check_health()
    assert cold.state is InstanceState.COLD and not cold.provider.loaded
    assert len(events.of("pool.load")) == 1
    # the loaded llama.cpp instance reports healthy, and stays in rotation
    assert leased.provider.health().ok
    assert leased.breaker.state is BreakerState.CLOSED
    assert [row["state"] for row in pool.snapshot()] == ["ready", "cold"]


def test_an_open_breaker_takes_its_instance_out_of_rotation(
    make_pool, record: VersionRecord, clock: Clock, events: Events
) -> None:
    pool = make_pool(breaker_failures=3, breaker_open_s=5)
    pool.set_replicas(record, 2)
    pool.warm(record)
    replica_0, replica_1 = pool.instances_of(record)
    for _ in range(3):
        replica_0.breaker.record_failure()
    assert replica_0.breaker.state is BreakerState.OPEN
    assert ("breaker.open", record.ref, {"replica": 0, "from": "closed"}) in events
    for _ in range(3):  # replica 1 every time, though it is now the more recently used one
        clock.advance(1)
        with pool.lease(record) as instance:
            assert instance is replica_1
    for _ in range(3):
        replica_1.breaker.record_failure()
    states = r"smollm2-135m/1#0 ready/open, smollm2-135m/1#1 ready/open"
    with pytest.raises(UnavailableError, match=rf"no healthy instance of smollm2-135m/1 \({states}\)"):
        with pool.lease(record):
            pytest.fail("leased an instance whose breaker is open")
    assert idle_everywhere(pool)
    # the pool's clock drives its breakers: after breaker_open_s replica 0 gets its probe
    clock.advance(5 - 3)
    with pool.lease(record) as probe:
        assert probe is replica_0 and probe.breaker.state is BreakerState.HALF_OPEN
        assert probe.provider.generate(PROMPT).completion_tokens > 0
        probe.breaker.record_success()
    assert replica_0.breaker.state is BreakerState.CLOSED


# --- unload and the benchmark path ------------------------------------------------------------


def test_unload_returns_the_loaded_count_and_the_next_lease_reloads(
    make_pool, record: VersionRecord, events: Events
) -> None:
    pool = make_pool()
    pool.set_replicas(record, 2)
    pool.warm(record)
    old = pool.instances_of(record)
    assert pool.unload(record.ref) == 2
    assert pool.instances_of(record) == [] and pool.loaded() == []
    assert all(not i.provider.loaded for i in old)
    assert sorted((e[2]["replica"], e[2]["reason"]) for e in events.of("pool.unload")) == [(0, "admin"), (1, "admin")]
    assert pool.unload(record.ref) == 0
    assert pool.unload("no-such-model/1") == 0
    with pool.lease(record) as instance:
        assert instance.state is InstanceState.READY
        assert instance not in old
        assert instance.provider.generate(PROMPT).completion_tokens > 0
    assert pool.unload(record.ref) == 1  # the lease loaded one replica of the two


def test_a_request_queued_on_an_unloaded_instance_never_gets_it_cold(make_pool, record: VersionRecord) -> None:
    pool = make_pool()
    pool.warm(record)
    (instance,) = pool.instances_of(record)
    with held(pool, record):
        waiter = Holder(pool, record)
        wait_until(lambda: instance.waiting == 1, "the second request waits")
        assert pool.unload(record.ref) == 1
    wait_until(lambda: waiter.entered.is_set() or waiter.finished.is_set(), "the waiter is answered")
    try:
        if waiter.error is None:  # granted: it must be usable
            assert waiter.instance.state is InstanceState.READY and waiter.instance.provider.loaded
        else:  # or refused with an error that says so
            assert isinstance(waiter.error, UnavailableError)
    finally:
        waiter.release()


def test_get_returns_the_same_loaded_provider_and_loads_once(
    make_pool, record: VersionRecord, events: Events
) -> None:
    pool = make_pool()
    provider = pool.get(record)
    assert provider.loaded
    assert pool.get(record) is provider
    assert len(events.of("pool.load")) == 1
    assert provider.generate(PROMPT).completion_tokens > 0
    assert pool.is_warm(record)


def test_a_passing_health_check_probes_a_half_open_breaker_but_never_cuts_an_open_period_short(
    make_pool, record: VersionRecord, clock: Clock
) -> None:
    pool = make_pool(breaker_open_s=60)
    pool.warm(record)
    instance = pool.instances_of(record)[0]
    for _ in range(3):
        instance.breaker.record_failure()
    pool.check_health()
    assert instance.breaker.state is BreakerState.OPEN  # healthy, but its open period is not over
    clock.advance(61)
    pool.check_health()
    assert instance.breaker.state is BreakerState.CLOSED  # half-open: the health check was the probe
