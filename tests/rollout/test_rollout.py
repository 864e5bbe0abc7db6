"""Gradual promotion on a real gateway under real load: a twin of the champion ramps to 100 %,
a slower model is rolled back by itself, an incompatible one is refused, bad input changes nothing.

Each test serves route ``qa`` from a gateway in this process (real llama.cpp, real MLflow), sends
it steady traffic from a thread, and runs the rollout with short steps (time is real; steps last
a second, so a whole ramp takes seconds).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support import free_port, steady_load

from registry.catalog.route_model import TAG_ROLLOUT, TAG_SHARE, RouteModel
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.errors import ConflictError, NotFoundError, PromotionError
from registry.gateway.background import gateway_in_background
from registry.rollout.locks import route_lock
from registry.rollout.policy import RolloutPolicy
from registry.rollout.promotion import Rollout
from registry.settings import get_settings

pytestmark = pytest.mark.integration

FAST = {"step_seconds": 1.0, "min_samples": 3, "check_every_s": 0.3, "benchmark_limit": 2}


@dataclass
class Served:
    url: str
    catalog: Catalog
    rollout: Rollout

    def events(self, kind_prefix: str = "rollout.") -> list[dict]:
        return self.catalog.store.query(
            "select kind, detail, ts from events where kind like $1 order by ts", [kind_prefix + "%"]
        )

    def served_by(self, model: str) -> int:
        rows = self.catalog.store.query(
            "select count(*) as n from calls where source = 'gateway' and route = 'qa' and model = $1 and ok", [model]
        )
        return rows[0]["n"]


@pytest.fixture
def served(shipped) -> Iterator[Served]:
    settings = get_settings(port=free_port(), alias_poll_s=0.2, calls_flush_s=0.2, keep_alive_s=600)
    catalog = Catalog(settings)
    smollm2, gemma = shipped[0], shipped[2]
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-twin", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-plain", capabilities=["text-generation"])
    catalog.register(gemma.path, name="gemma3-270m", capabilities=list(gemma.capabilities), chat_format=gemma.chat_format)
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    with gateway_in_background(settings) as (url, _gateway):
        yield Served(url, catalog, Rollout(catalog))


def wait_for_calls(served: Served, model: str, n: int) -> None:
    deadline = time.monotonic() + 120
    while served.served_by(model) < n:
        assert time.monotonic() < deadline, f"fewer than {n} calls of {model}"
        time.sleep(0.2)


@pytest.fixture
def load(served: Served) -> Iterator[threading.Event]:
    """Steady traffic on route qa until the test ends."""
    with steady_load(served.url, "qa") as stop:
        yield stop


def test_a_twin_of_the_champion_ramps_to_100_and_is_promoted(served: Served, load: threading.Event) -> None:
    # Default ramp 10,25,50,100. The twin decodes as fast as the champion; a speed floor of 0.5 keeps
    # a busy machine's noise over three samples from reading as a regression.
    state = served.rollout.promote("qa", "smollm2-twin/1", RolloutPolicy(**FAST, speed_ratio=0.5))

    assert state.phase == "done", (state.outcome, state.last_check)
    status = served.rollout.status("qa")
    assert (status["champion"]["model"], status["previous"]["model"]) == ("smollm2-twin", "smollm2-135m")
    assert status["challenger"] is None and status["share"] == 0 and status["rollout"]["phase"] == "done"
    kinds = [e["kind"] for e in served.events()]
    assert kinds == ["rollout.start", "rollout.benchmarked"] + ["rollout.step"] * 4 + ["rollout.promoting", "rollout.done"]
    shares = [json.loads(e["detail"])["share"] for e in served.events("rollout.step")]
    assert shares == [10, 25, 50, 100]
    # It really took traffic: the evidence (and its min-samples floor) runs over the whole rollout, not per step.
    assert served.served_by("smollm2-twin") >= FAST["min_samples"]
    promotions = served.catalog.store.query("select model from events where kind = 'promote' order by ts")
    assert [p["model"] for p in promotions] == ["smollm2-135m", "smollm2-twin"]  # the fixture's, then the rollout's


def test_a_slower_candidate_is_rolled_back_by_itself(served: Served, load: threading.Event) -> None:
    # force: past its low quality. Gemma decodes at about half SmolLM2's rate; the sequential test needs
    # tens of calls a side to tell that from a shared machine's noise (docs/rollout.md), so the first step
    # is half the traffic, both models under the same load, and long enough never to end before it.
    policy = RolloutPolicy(**{**FAST, "ramp": (50, 100), "step_seconds": 600.0, "force": True})

    wait_for_calls(served, "smollm2-135m", 10)  # the live speed the rollout measures against, before it begins
    state = served.rollout.promote("qa", "gemma3-270m/1", policy)

    assert state.phase == "rolled_back", (state.phase, state.last_check)
    assert any(reason.startswith("speed: ") for reason in state.outcome["reasons"]), state.outcome
    status = served.rollout.status("qa")
    assert status["champion"]["model"] == "smollm2-135m" and status["challenger"] is None and status["share"] == 0
    rolled_back_at = served.events("rollout.rollback")[0]["ts"]
    time.sleep(2.0)  # the gateway follows within its 0.2 s alias poll; allow slack for a busy machine
    late = served.catalog.store.query(
        "select count(*) as n from calls where model = 'gemma3-270m' and ts > $1 + interval 1 second", [rolled_back_at]
    )
    assert late[0]["n"] == 0


def test_an_incompatible_candidate_is_refused_after_its_benchmark(served: Served) -> None:
    state = served.rollout.promote("qa", "gemma3-270m/1", RolloutPolicy(**FAST))

    assert state.phase == "refused"
    assert any("quality" in reason for reason in state.outcome["reasons"])
    assert served.rollout.status("qa")["champion"]["model"] == "smollm2-135m"
    assert [e["kind"] for e in served.events()] == ["rollout.start", "rollout.benchmarked", "rollout.refused"]


@pytest.mark.parametrize(
    ("candidate", "error", "message"),
    [
        ("nothing/1", NotFoundError, "nothing"),
        ("smollm2-135m/1", PromotionError, "already the champion"),
        ("smollm2-plain/1", PromotionError, "lacks the route's capabilities"),
    ],
)
def test_bad_candidates_are_refused_and_change_nothing(served: Served, candidate: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        served.rollout.promote("qa", candidate, RolloutPolicy(**FAST))
    model = served.catalog.client.get_registered_model("route.qa")
    assert TAG_ROLLOUT not in model.tags and TAG_SHARE not in model.tags and "challenger" not in model.aliases
    assert served.events() == []


def test_a_second_promotion_of_the_same_route_gets_a_conflict(served: Served) -> None:
    with route_lock(served.catalog.settings.home, "qa", purpose="promotion of smollm2-twin/1"):
        with pytest.raises(ConflictError, match="promotion of smollm2-twin/1 by pid"):
            served.rollout.promote("qa", "smollm2-twin/1", RolloutPolicy(**FAST))
    assert served.events() == []


def test_abort_stops_a_running_rollout_at_once(served: Served, load: threading.Event) -> None:
    result: dict = {}
    policy = RolloutPolicy(**{**FAST, "step_seconds": 600.0})
    runner = threading.Thread(target=lambda: result.update(state=served.rollout.promote("qa", "smollm2-twin/1", policy)))
    runner.start()
    deadline = time.monotonic() + 120
    while served.rollout.status("qa")["share"] != 10:
        assert time.monotonic() < deadline and runner.is_alive(), "the rollout never reached its first step"
        time.sleep(0.2)

    with pytest.raises(PromotionError, match="abort"):  # a hand-made rollback must not cut across it
        Routes(served.catalog).rollback("qa")
    status = Rollout(served.catalog).abort("qa", "operator saw bad answers")
    aborted_at = time.time()

    assert status["share"] == 0 and status["challenger"] is None  # at once, before the runner's next check
    runner.join(timeout=30)
    time.sleep(2.0)
    late = served.catalog.store.query(
        "select count(*) as n from calls where model = 'smollm2-twin' and epoch(ts) > $1", [aborted_at + 1.0])
    assert late[0]["n"] == 0  # the gateway followed the abort within its alias poll
    assert result["state"].phase == "rolled_back"
    assert result["state"].outcome["reasons"] == ["operator saw bad answers"]
    assert served.rollout.status("qa")["champion"]["model"] == "smollm2-135m"


def test_a_challenger_the_gateway_cannot_load_is_rolled_back(served: Served, load: threading.Event, shipped, tmp_path) -> None:
    doomed = tmp_path / "doomed.gguf"
    doomed.write_bytes(shipped[0].path.read_bytes())
    served.catalog.register(doomed, name="smollm2-doomed", capabilities=list(shipped[0].capabilities))

    def lose_the_file(state) -> None:  # benchmarked fine; gone before the gateway warms it for its share
        if state.phase == "compatibility":
            doomed.unlink()

    rollout = Rollout(served.catalog, on_phase=lose_the_file)
    state = rollout.promote("qa", "smollm2-doomed/1", RolloutPolicy(**{**FAST, "step_seconds": 60.0}))

    assert state.phase == "rolled_back"
    assert "the gateway could not load smollm2-doomed/1" in state.outcome["reasons"][0]
    assert served.rollout.status("qa")["champion"]["model"] == "smollm2-135m"


def leave_state(catalog: Catalog, phase: str, candidate: str = "smollm2-twin/1") -> None:
    """What a SIGKILL right after a terminal state was written leaves: the state, not its effects."""
    state = {"id": "killedrollout", "route": "qa", "candidate": candidate, "champion": "smollm2-135m/1",
             "phase": phase, "policy": RolloutPolicy(**FAST).model_dump(mode="json"), "started_at": time.time() - 60,
             "step": 2, "step_started_at": time.time() - 5, "last_check": None, "outcome": {"reasons": ["killed"]}}
    catalog.client.set_registered_model_tag("route.qa", TAG_ROLLOUT, json.dumps(state))


def test_a_kill_inside_a_rollback_is_finished_by_the_next_command(served: Served) -> None:
    route = RouteModel(served.catalog, "qa")
    route.offer_challenger(route.copy_of(served.catalog.get("smollm2-twin", 1)), share=50)
    leave_state(served.catalog, "rolled_back")

    with pytest.raises(PromotionError, match="no rollout in progress"):
        served.rollout.abort("qa")

    status = served.rollout.status("qa")
    assert status["share"] == 0 and status["challenger"] is None  # the judged-bad candidate takes no traffic
    assert [e["kind"] for e in served.events()] == ["rollout.rollback"]


def test_a_kill_inside_the_final_promotion_reruns_to_done_without_an_error(served: Served) -> None:
    Routes(served.catalog).promote("qa", "smollm2-twin", 1, force=True)  # what `promoting` had done
    leave_state(served.catalog, "done")

    for _ in range(2):
        state = served.rollout.promote("qa", "smollm2-twin/1", RolloutPolicy(**FAST))
        assert state.phase == "done" and state.id == "killedrollout"
    assert [e["kind"] for e in served.events()] == ["rollout.done"]  # recorded once, by the first rerun
