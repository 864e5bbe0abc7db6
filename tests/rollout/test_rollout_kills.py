"""`arbiter routes promote --candidate` as a user runs it, killed with SIGKILL mid-way and run
again; and two promotions of one route started at once.

A gateway in this process serves route ``qa`` under steady load; the promotion runs as its own
process (the real CLI, the real Prefect flow). The test watches the route's ``arbiter.rollout``
tag in MLflow and kills the process when the rollout reaches the phase under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import assert_none_left
from support import ARBITER, free_port, steady_load

from registry.catalog.route_model import TAG_ROLLOUT
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway.background import gateway_in_background
from registry.settings import get_settings

pytestmark = pytest.mark.e2e

# The twin decodes as fast as the champion; a speed floor of 0.5 keeps a busy machine's noise over
# three samples from reading as a regression (this test is about kills, not the speed rule).
PROMOTE = ["routes", "promote", "qa", "--candidate", "smollm2-twin/1", "--ramp", "20,50,100", "--step-seconds", "1.5",
           "--min-samples", "3", "--check-every", "0.3", "--benchmark-limit", "2", "--speed-ratio", "0.5", "--json"]


@pytest.fixture
def served(shipped, home: Path) -> Iterator[Catalog]:
    settings = get_settings(port=free_port(), alias_poll_s=0.2, calls_flush_s=0.2, keep_alive_s=600)
    catalog = Catalog(settings)
    smollm2 = shipped[0]
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-twin", capabilities=list(smollm2.capabilities))
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    with gateway_in_background(settings) as (url, _gateway), steady_load(url, "qa"):
        yield catalog


@pytest.fixture(autouse=True)
def shared_prefect(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each promotion's flow reports to the session's Prefect server instead of starting a temporary
    one of its own (15–40 s per command on 2 cores); the kills still hit the command itself."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)


def start_promotion(home: Path) -> subprocess.Popen:
    return subprocess.Popen([ARBITER, *PROMOTE], env={**os.environ, "ARBITER_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rollout_state(catalog: Catalog) -> dict | None:
    text = catalog.client.get_registered_model("route.qa").tags.get(TAG_ROLLOUT)
    return json.loads(text) if text else None


def assert_promoted_once(catalog: Catalog, rollout_id: str) -> None:
    routes = Routes(catalog).show("qa")
    assert (routes.champion.model, routes.previous.model, routes.challenger) == ("smollm2-twin", "smollm2-135m", None)
    state = rollout_state(catalog)
    assert state["id"] == rollout_id and state["phase"] == "done"  # the same rollout, resumed, not a new one
    events = catalog.store.query("select distinct event_id, kind from events where kind like 'rollout.%'")
    kinds = sorted(e["kind"] for e in events)
    assert kinds.count("rollout.done") == 1 and kinds.count("rollout.start") == 1
    assert kinds.count("rollout.step") == 3
    tags = catalog.client.get_registered_model("route.qa").tags
    assert tags["arbiter.challenger_share"] == "0"


def kill_when(catalog: Catalog, process: subprocess.Popen, phase: str, step: int) -> dict:
    """SIGKILL ``process`` as soon as the rollout's tag says ``phase``/``step``; returns that state."""
    deadline = time.monotonic() + 300
    while True:
        state = rollout_state(catalog)
        if state and (state["phase"], state["step"]) == (phase, step):
            break
        assert process.poll() is None, f"the promotion ended before {phase}/{step}: {process.communicate()}"
        assert time.monotonic() < deadline, f"never reached {phase}/{step}: {state}"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return rollout_state(catalog)


def test_a_promotion_killed_at_each_step_converges_when_run_again(served: Catalog, home: Path) -> None:
    """Killed while benchmarking, in the first ramp step and in the second; each rerun resumes the
    same rollout, and the last one finishes it with every event recorded once. No kill leaves a
    process behind (Prefect's server used to outlive each killed promotion)."""
    seen = []
    for phase, step in [("benchmark", 0), ("ramp", 0), ("ramp", 1)]:
        killed_in = kill_when(served, start_promotion(home), phase, step)
        assert killed_in["phase"] not in ("done", "rolled_back", "refused"), killed_in
        assert_none_left(home)
        seen.append(killed_in["id"])

    rerun = start_promotion(home)
    out, err = rerun.communicate(timeout=300)

    assert rerun.returncode == 0, err
    rollout = json.loads(out)["rollout"]
    assert rollout["phase"] == "done", (rollout["outcome"], rollout["last_check"])
    assert len(set(seen)) == 1
    assert_promoted_once(served, seen[0])
    assert_none_left(home)


def test_two_promotions_at_once_one_wins_the_other_gets_a_conflict(served: Catalog, home: Path) -> None:
    first, second = start_promotion(home), start_promotion(home)
    results = [p.communicate(timeout=300) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))

    assert codes == [0, 4], results
    loser = results[[first.returncode, second.returncode].index(4)]
    assert loser[1].startswith("error: route 'qa' is busy: promotion of smollm2-twin/1 by pid"), loser[1]
    assert "Traceback" not in loser[1]
    assert_promoted_once(served, rollout_state(served)["id"])
    assert_none_left(home)
