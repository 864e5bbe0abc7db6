"""FairSlot: a released slot goes to the oldest waiter, never to a request that just arrived."""

from __future__ import annotations

import threading
import time

import pytest

from registry.serving.pool import FairSlot

pytestmark = pytest.mark.unit


def _queued(slot: FairSlot, n: int) -> None:
    deadline = time.monotonic() + 5
    while len(slot._waiters) < n:  # noqa: SLF001 — the queue is what this test is about
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_waiters_are_served_in_arrival_order_and_a_newcomer_waits_its_turn() -> None:
    slot = FairSlot(1)
    assert slot.acquire(timeout=1)
    served: list[int] = []
    gate = threading.Event()

    def waiter(n: int) -> None:
        assert slot.acquire(timeout=5)
        served.append(n)
        gate.wait(5)
        slot.release()

    threads = []
    for n in range(4):
        threads.append(threading.Thread(target=waiter, args=(n,)))
        threads[-1].start()
        _queued(slot, n + 1)
    slot.release()  # handed to waiter 0, never free
    assert slot.acquire(timeout=0.01) is False  # a newcomer does not jump the queue
    gate.set()
    for thread in threads:
        thread.join(timeout=5)
    assert served == [0, 1, 2, 3]
    assert slot.acquire(timeout=0)  # the last release made it free again


def test_a_timed_out_waiter_leaves_the_queue_and_capacity_is_kept() -> None:
    slot = FairSlot(2)
    assert slot.acquire(timeout=1) and slot.acquire(timeout=1)
    started = time.monotonic()
    assert slot.acquire(timeout=0.05) is False
    assert time.monotonic() - started >= 0.05 and not slot._waiters  # noqa: SLF001
    slot.release()
    assert slot.acquire(timeout=0)
    assert not slot.acquire(timeout=0)
