"""A promotion with a shadow step, as a user runs it: `routes promote --candidate … --shadow`, killed
with SIGKILL while the challenger answers shadow copies, then run again. The evidence lives in the
results tables, so the rerun resumes the same rollout with the copies already answered counted.

A gateway in this process serves route ``qa`` to one client with think time between requests (a copy
runs only while nobody waits); the promotion runs as its own process (the real CLI and Prefect flow).
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

PROMOTE = ["routes", "promote", "qa", "--candidate", "smollm2-twin/1", "--shadow", "--ramp", "50,100",
           "--step-seconds", "3", "--min-samples", "3", "--check-every", "0.3", "--benchmark-limit", "2",
           "--speed-ratio", "0.5", "--json"]


@pytest.fixture
def served(shipped, home: Path) -> Iterator[Catalog]:
    settings = get_settings(port=free_port(), alias_poll_s=0.2, calls_flush_s=0.2, keep_alive_s=600)
    catalog = Catalog(settings)
    smollm2 = shipped[0]
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-twin", capabilities=list(smollm2.capabilities))
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    with gateway_in_background(settings) as (url, _gateway), steady_load(url, "qa", num_predict=6, gap_s=0.4):
        yield catalog


@pytest.fixture(autouse=True)
def shared_prefect(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)


def start_promotion(home: Path) -> subprocess.Popen:
    return subprocess.Popen([ARBITER, *PROMOTE], env={**os.environ, "ARBITER_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rollout_state(catalog: Catalog) -> dict | None:
    text = catalog.client.get_registered_model("route.qa").tags.get(TAG_ROLLOUT)
    return json.loads(text) if text else None


def shadow_copies(catalog: Catalog) -> int:
    return catalog.store.query("select count(*) as n from calls where source = 'shadow' and ok")[0]["n"]


def test_a_promotion_killed_in_its_shadow_step_resumes_with_the_copies_it_had(served: Catalog, home: Path) -> None:
    first = start_promotion(home)
    deadline = time.monotonic() + 300
    while True:  # in the shadow step, once copies have been answered and scored
        state = rollout_state(served)
        if state and state["phase"] == "shadow" and shadow_copies(served) >= 2:
            break
        assert first.poll() is None, f"the promotion ended first: {first.communicate()}"
        assert time.monotonic() < deadline, f"no shadow copies answered: {state}"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    had = shadow_copies(served)
    tags = served.client.get_registered_model("route.qa").tags
    assert tags["arbiter.challenger_shadow"] == "1" and tags["arbiter.challenger_share"] == "0"  # users unaffected
    assert_none_left(home)

    rerun = start_promotion(home)
    out, err = rerun.communicate(timeout=300)

    assert rerun.returncode == 0, err
    rollout = json.loads(out)["rollout"]
    assert rollout["id"] == state["id"] and rollout["phase"] == "done", (rollout["outcome"], rollout["last_check"])
    kinds = [e["kind"] for e in served.store.query(
        "select distinct event_id, kind from events where kind like 'rollout.%' order by kind")]
    assert kinds.count("rollout.shadow") == 1 and kinds.count("rollout.step") == 2 and kinds.count("rollout.done") == 1
    checks = served.store.query(
        "select detail from events where kind = 'check.rollout' and json_extract_string(detail, '$.phase') = 'shadow' "
        "order by ts")
    last_shadow = json.loads(checks[-1]["detail"])
    assert last_shadow["figures"]["paired"] is True
    assert last_shadow["figures"]["signals"]["success"]["n_challenger"] >= had  # the killed run's copies counted
    shadow_rows = served.store.query(
        "select count(*) as n, count(shadow_of) as mirrored from calls where source = 'shadow'")[0]
    assert shadow_rows["n"] == shadow_rows["mirrored"] >= had
    tags = served.client.get_registered_model("route.qa").tags
    assert tags["arbiter.challenger_shadow"] == "0" and tags["arbiter.challenger_share"] == "0"
    assert_none_left(home)
