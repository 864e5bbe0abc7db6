"""Shadow copies on the real SmolLM2 files: the champion (Q4_1) answers, the challenger (its Q4_0)
answers a copy no user sees; rows go through a real Recorder into a real results store.

Order is asserted through what happened (rows, counters, the sequence of callbacks), never through
durations; each wait below is a bound against a hang, not a figure under test.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from registry.catalog.route_model import CHALLENGER, CHAMPION
from registry.catalog.versions import Catalog
from registry.providers import Generation, GenerationRequest
from registry.results.recorder import Recorder
from registry.results.store import ResultsStore
from registry.serving.dispatcher import AnsweredCall, Dispatcher
from registry.serving.pool import WarmPool
from registry.serving.router import Resolution, RouteEntry
from registry.serving.shadow import ShadowAnswer, ShadowMirror
from registry.settings import Settings
from registry.spec import VersionRecord

pytestmark = pytest.mark.integration

REQUEST = GenerationRequest(prompt="The capital of France is", max_tokens=6)
# A copy long enough in prompt for a test to arrive while it runs (still 8 tokens of output).
LONG_REQUEST = GenerationRequest(prompt="Describe the city of Paris, its river, its bridges, its museums and "
                                        "its old streets, in the words of a travel guide. " * 6, max_tokens=8)


def wait_until(check: Callable[[], bool], what: str, *, bound_s: float = 120.0, tick_s: float = 0.01) -> None:
    deadline = time.monotonic() + bound_s
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(tick_s)


@pytest.fixture
def pair(catalog: Catalog, shipped) -> tuple[VersionRecord, VersionRecord]:
    """The champion (SmolLM2 Q4_1, version 1) and the challenger (its Q4_0, version 2)."""
    champion, challenger = (
        catalog.register(m.path, name=m.name, capabilities=list(m.capabilities))[0] for m in shipped[:2]
    )
    return champion, challenger


@pytest.fixture
def pool(session_pool: WarmPool, pair: tuple[VersionRecord, VersionRecord]) -> WarmPool:
    for record in pair:
        session_pool.warm(record)
    return session_pool


@pytest.fixture
def store(settings: Settings) -> ResultsStore:
    return ResultsStore(settings.results_dir)


@pytest.fixture
def recorder(store: ResultsStore) -> Iterator[Recorder]:
    recorder = Recorder(store, flush_s=0.1)
    recorder.start()
    yield recorder
    recorder.close()


@pytest.fixture
def make_mirror(recorder: Recorder) -> Iterator[Callable[..., ShadowMirror]]:
    """``make_mirror(pool, entries, …)``: a started mirror, stopped after the test."""
    mirrors: list[ShadowMirror] = []

    def make(pool: WarmPool, entries: dict[str, RouteEntry], *, start: bool = True, **options: Any) -> ShadowMirror:
        mirror = ShadowMirror(pool, recorder, lambda: entries, **options)
        mirrors.append(mirror)
        if start:
            mirror.start()
        return mirror

    yield make
    for mirror in mirrors:
        mirror.stop()


def shadowed(champion: VersionRecord, challenger: VersionRecord, *, shadow: bool = True) -> dict[str, RouteEntry]:
    return {"qa": RouteEntry("qa", {CHAMPION: champion, CHALLENGER: challenger}, shadow=shadow)}


def answered_by(pool: WarmPool, champion: VersionRecord, request: GenerationRequest = REQUEST,
                *, resolution: Resolution | None = None, call_id: str = "user-call-1") -> AnsweredCall:
    """The champion's real answer to ``request``, as the dispatcher hands it to its watchers."""
    with pool.lease(champion) as instance:
        generation = instance.provider.generate(request)
    return AnsweredCall(call_id, resolution or Resolution("qa", champion, route="qa"), request, champion, generation)


def shadow_rows(recorder: Recorder, store: ResultsStore) -> list[dict[str, Any]]:
    recorder.flush()
    return store.query("select call_id, source, api, requested, model, version, route, task, shadow_of, ok, error, "
                       "completion_tokens from calls where source = 'shadow' order by ts")


def test_a_copy_of_the_champions_answer_is_a_shadow_row_naming_the_users_call(
    pool: WarmPool, pair, recorder: Recorder, store: ResultsStore, make_mirror
) -> None:
    champion, challenger = pair
    answers: list[ShadowAnswer] = []
    mirror = make_mirror(pool, shadowed(champion, challenger), on_answer=answers.append)
    dispatcher = Dispatcher(pool, recorder, watchers=(mirror,))

    answer = dispatcher.generate(Resolution("qa", champion, route="qa"), REQUEST, api="openai")
    wait_until(lambda: mirror.counters()["answered"] == 1, "the copy answered")

    assert answer.outcome.record.ref == champion.ref  # the caller got the champion's answer, not the challenger's
    [row] = shadow_rows(recorder, store)
    assert row["shadow_of"] == answer.outcome.call_id and row["call_id"] != answer.outcome.call_id
    assert (row["model"], row["version"], row["ok"]) == (challenger.name, challenger.version, True)
    assert (row["source"], row["api"], row["route"], row["task"], row["requested"]) == ("shadow", "shadow", "qa", "qa", "qa")
    assert row["completion_tokens"] >= 1
    [user] = store.query("select call_id, version, shadow_of from calls where source = 'gateway'")
    assert (user["call_id"], user["version"], user["shadow_of"]) == (answer.outcome.call_id, champion.version, None)

    [shadow] = answers  # scored side by side: the challenger's answer beside the one the user got
    assert (shadow.call_id, shadow.shadow_of, shadow.route) == (row["call_id"], answer.outcome.call_id, "qa")
    assert shadow.record.ref == challenger.ref and shadow.request == REQUEST
    assert shadow.champion == answer.generation and isinstance(shadow.generation, Generation)
    assert mirror.counters() == {"offered": 1, "queued": 1, "dropped": 0, "stale": 0, "preempted": 0,
                                 "answered": 1, "failed": 0, "pending": 0}


def test_only_the_champions_own_answers_on_a_shadowed_route_are_copied(pool: WarmPool, pair, make_mirror) -> None:
    champion, challenger = pair
    entries = shadowed(champion, challenger) | {"plain": RouteEntry("plain", {CHAMPION: champion})}
    mirror = make_mirror(pool, entries, start=False)  # nothing runs: what was offered stays in the queue
    answer = answered_by(pool, champion)

    mirror(answer)  # offered
    mirror(AnsweredCall("c2", Resolution("qa", challenger, route="qa", fallbacks=(champion,)), REQUEST, champion,
                        answer.generation))  # the challenger's turn that failed over to the champion
    mirror(AnsweredCall("c3", Resolution("qa", challenger, route="qa"), REQUEST, challenger, answer.generation))
    mirror(AnsweredCall("c4", Resolution("plain", champion, route="plain"), REQUEST, champion, answer.generation))
    mirror(AnsweredCall("c5", Resolution(champion.ref, champion), REQUEST, champion, answer.generation))  # no route

    assert mirror.counters()["offered"] == 1 and mirror.counters()["pending"] == 1


@pytest.mark.parametrize("busy", ["champion", "challenger"])
def test_a_copy_waits_while_a_user_request_is_in_flight(
    busy: str, pool: WarmPool, pair, recorder: Recorder, store: ResultsStore, make_mirror
) -> None:
    champion, challenger = pair
    happened: list[str] = []
    mirror = make_mirror(pool, shadowed(champion, challenger), on_answer=lambda _: happened.append("copy answered"))
    answer = answered_by(pool, champion)

    with pool.lease(champion if busy == "champion" else challenger) as instance:  # a user's request
        mirror(answer)
        wait_until(lambda: mirror.counters()["pending"] == 0, "the worker took the copy")
        instance.provider.generate(REQUEST)  # the user's generation runs; the copy must not start meanwhile
        assert pool.user_load(challenger if busy == "champion" else champion) == 0
        happened.append("user done")
    wait_until(lambda: mirror.counters()["answered"] == 1, "the copy answered once the user was done")

    assert happened == ["user done", "copy answered"]
    assert [r["shadow_of"] for r in shadow_rows(recorder, store)] == [answer.call_id]


def test_a_user_of_the_champion_arriving_mid_copy_shares_the_machine_and_both_finish(
    pool: WarmPool, pair, recorder: Recorder, store: ResultsStore, make_mirror
) -> None:
    """A copy that has started is not thrown away for a champion request (under steady traffic no copy
    would ever finish): the user is served on the champion's own instance meanwhile."""
    champion, challenger = pair
    mirror = make_mirror(pool, shadowed(champion, challenger))
    answer = answered_by(pool, champion, LONG_REQUEST)
    copy_instance = pool.instances_of(challenger)[0]
    mirror(answer)
    wait_until(lambda: copy_instance.background == 1 and copy_instance.in_flight == 1
               or mirror.counters()["answered"] == 1, "the copy started", tick_s=0.001)
    user = answered_by(pool, champion, LONG_REQUEST)  # while the copy runs, on the champion
    wait_until(lambda: mirror.counters()["answered"] == 1, "the copy finished")
    counters = mirror.counters()
    assert counters["preempted"] == 0 and user.generation.text
    assert [r["shadow_of"] for r in shadow_rows(recorder, store)] == [answer.call_id]


@pytest.mark.parametrize("arrives_on", ["challenger"])
def test_a_user_arriving_mid_copy_preempts_it_and_leaves_no_row(
    arrives_on: str, pool: WarmPool, pair, recorder: Recorder, store: ResultsStore, make_mirror
) -> None:
    """A user of the challenger (a pinned request, ``qa@challenger``) is let in as soon as the copy
    holds it; a copy that finished before the user got there (a slow scheduler) is tried again."""
    champion, challenger = pair
    mirror = make_mirror(pool, shadowed(champion, challenger))
    answer = answered_by(pool, champion, LONG_REQUEST)
    copy_instance = pool.instances_of(challenger)[0]
    served: list[str] = []

    def user(finished: int) -> None:
        """A user request that lasts until the copy has ended, one way or the other."""
        with pool.lease(champion if arrives_on == "champion" else challenger) as instance:
            served.append(instance.key)
            wait_until(lambda: mirror.counters()["preempted"] or mirror.counters()["answered"] > finished,
                       "the copy ended")

    for _ in range(20):
        finished = mirror.counters()["answered"]
        mirror(answer)
        wait_until(lambda finished=finished: copy_instance.background == 1 and copy_instance.in_flight == 1
                   or mirror.counters()["answered"] > finished, "the copy started", tick_s=0.001)
        if mirror.counters()["answered"] > finished:
            continue
        thread = threading.Thread(target=user, args=(finished,))
        thread.start()
        thread.join(timeout=120)
        if mirror.counters()["preempted"]:
            break
    counters = mirror.counters()

    assert counters["preempted"] == 1 and served  # the user was served; the copy gave way
    wait_until(lambda: copy_instance.in_flight == 0, "the copy let go of the challenger")
    assert len(shadow_rows(recorder, store)) == counters["answered"]  # a preempted copy is no row, no failure
    assert counters["failed"] == 0 and copy_instance.breaker.state.value == "closed"


def test_a_full_queue_drops_copies_and_stop_joins_the_worker(pool: WarmPool, pair, make_mirror) -> None:
    champion, challenger = pair
    mirror = make_mirror(pool, shadowed(champion, challenger), max_queue=2)
    answer = answered_by(pool, champion)

    with pool.lease(champion):  # a user keeps the route busy: the worker holds one copy, the queue fills
        mirror(answer)
        wait_until(lambda: mirror.counters()["pending"] == 0, "the worker took the first copy")
        for _ in range(4):
            mirror(answer)
        assert mirror.counters() == {"offered": 5, "queued": 3, "dropped": 2, "stale": 0, "preempted": 0,
                                     "answered": 0, "failed": 0, "pending": 2}
        mirror.stop()  # while its worker waits for the user

    assert not any(t.name == "arbiter-shadow" for t in threading.enumerate())
    assert mirror.counters()["stale"] == 3 and mirror.counters()["pending"] == 0  # never run, counted


def test_a_copy_that_finds_no_idle_moment_in_time_is_stale(
    pool: WarmPool, pair, recorder: Recorder, store: ResultsStore, make_mirror
) -> None:
    champion, challenger = pair
    mirror = make_mirror(pool, shadowed(champion, challenger), max_wait_s=0.2)
    answer = answered_by(pool, champion)

    with pool.lease(champion):
        mirror(answer)
        wait_until(lambda: mirror.counters()["stale"] == 1, "the copy gave up")

    assert shadow_rows(recorder, store) == []
    assert mirror.counters()["answered"] == 0


def test_a_challenger_that_cannot_answer_is_a_failed_shadow_row(
    settings: Settings, catalog: Catalog, shipped, home, recorder: Recorder, store: ResultsStore, make_mirror,
    session_pool: WarmPool,
) -> None:
    """A real fault: the challenger's file is gone when the copy needs it loaded."""
    champion = catalog.register(shipped[0].path, name="smollm2-135m", capabilities=list(shipped[0].capabilities))[0]
    copied = home / "gone.gguf"
    shutil.copy(shipped[1].path, copied)
    broken = catalog.register(copied, name="smollm2-gone", capabilities=list(shipped[1].capabilities))[0]
    copied.unlink()
    session_pool.warm(champion)
    answers: list[ShadowAnswer] = []
    with WarmPool(settings) as pool:  # its own pool: the broken version fails to load only here
        mirror = make_mirror(pool, shadowed(champion, broken), on_answer=answers.append)
        mirror(answered_by(session_pool, champion))
        wait_until(lambda: mirror.counters()["failed"] == 1, "the copy failed")

    [row] = shadow_rows(recorder, store)
    assert (row["model"], row["ok"], row["shadow_of"]) == ("smollm2-gone", False, "user-call-1")
    assert "gone.gguf" in row["error"]
    assert answers == []  # nothing to score: the failure counts through the row
