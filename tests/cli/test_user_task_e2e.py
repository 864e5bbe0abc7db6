"""A user's own task, written only from docs/tasks.md (its example folder, docs/examples/support/), goes
through the whole loop with no code change: `tasks add`, `benchmark --task`, `routes promote`, a gradual
rollout of another version under live traffic, and the route served through the gateway to the stock
``openai`` client.

Real everything on a fresh ARBITER_HOME: the CLI (click's runner, in this process), MLflow sqlite, the
session's Prefect server, llama.cpp on the shipped SmolLM2 and its derived Q4_0 version. The limits are
the smallest that still judge each step, so the whole loop costs about two minutes on 2 cores.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import openai
import pytest
from support import free_port, run, steady_load

from registry.catalog.versions import Catalog
from registry.gateway.background import gateway_in_background
from registry.settings import get_settings

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "support"
LIMIT = 3
# A short ramp judged on a few live calls per step (the rollout's own tests use the same figures).
# --force: the Q4_0 version is faster but may score under 0.95 x the champion on three items, and this
# test is about a user's task flowing through every step, not about the compatibility rule.
ROLLOUT = ("--ramp", "50,100", "--step-seconds", "1", "--min-samples", "3", "--check-every", "0.3",
           "--benchmark-limit", "2", "--speed-ratio", "0.5", "--force", "--json")


def ok(*args: str) -> dict | list:
    code, out, err = run(*args)
    assert code == 0, f"arbiter {' '.join(args)} exited {code}: {err}"
    return json.loads(out)


def test_a_task_written_from_the_docs_benchmarks_promotes_rolls_out_and_is_served(
    home: Path, tmp_path: Path, catalog: Catalog, shipped, prefect_harness
) -> None:
    folder = shutil.copytree(EXAMPLE, tmp_path / "my-tasks" / "support")  # the user's copy, not the repo's
    for model in shipped[:2]:  # smollm2-135m/1 (Q4_1, shipped) and /2 (Q4_0, derived)
        capabilities = [flag for c in model.capabilities for flag in ("--capability", c)]
        ok("models", "register", str(model.path), "--name", model.name, *capabilities, "--json")

    added = ok("tasks", "add", str(folder / "support.yaml"), "--json")
    assert (added["ref"], added["created"], added["n_items"]) == ("support/1", True, 12)
    assert added["reference_free_scorers"] == ["brevity"]  # the custom scorer beside the task file
    assert (home / "tasks" / "support" / "1" / "brevity.py").is_file()  # part of the snapshot and its sha256

    runs = ok("benchmark", "--task", "support", "--model", "smollm2-135m/1", "--model", "smollm2-135m/2",
              "--limit", str(LIMIT), "--json")
    assert sorted((r["model"], r["version"], r["task"], r["task_version"], r["n"], r["n_ok"], r["n_unscored"])
                  for r in runs) == [("smollm2-135m", v, "support", 1, LIMIT, LIMIT, 0) for v in (1, 2)]
    assert {r["task_sha256"] for r in runs} == {added["sha256"]}
    assert all(0.0 <= r["quality"] <= 1.0 for r in runs)

    promoted = ok("routes", "promote", "support", "--model", "smollm2-135m", "--version", "1", "--json")
    assert (promoted["champion"]["model"], promoted["champion"]["version"]) == ("smollm2-135m", 1)

    settings = get_settings(port=free_port(), alias_poll_s=0.2, calls_flush_s=0.2, keep_alive_s=600)
    with gateway_in_background(settings) as (url, gateway):
        with steady_load(url, "support"):  # live traffic on the route, which the rollout judges
            status = ok("routes", "promote", "support", "--candidate", "smollm2-135m/2", *ROLLOUT)
        rollout = status["rollout"]
        assert rollout["phase"] == "done", (rollout.get("outcome"), rollout.get("last_check"))
        assert (status["champion"]["version"], status["previous"]["version"], status["challenger"]) == (2, 1, None)

        deadline = time.monotonic() + 10  # the gateway follows the alias within its 0.2 s poll
        while gateway.router.entries()["support"].champion.ref != "smollm2-135m/2":
            assert time.monotonic() < deadline, "the gateway did not follow the promotion"
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="support", max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "Which team should handle this support ticket? Reply with one word: "
                                                  "billing, technical or account.\n\nTicket: I was charged twice."}],
        )
        assert raw.headers["x-arbiter-model"] == "smollm2-135m/2"  # the route's champion answered
        assert raw.parse().choices[0].message.content.strip()
        gateway.recorder.flush()

    recorded = catalog.store.query(
        "select model, version, task_version, task_sha256, n from runs where task = 'support' order by ts")
    assert {(r["task_version"], r["task_sha256"]) for r in recorded} == {(1, added["sha256"])}
    assert [(r["model"], r["version"], r["n"]) for r in recorded][-1] == ("smollm2-135m", 2, 2)  # the rollout's benchmark
    served = catalog.store.query(
        "select version, count(*) as n from calls where source = 'gateway' and route = 'support' and ok "
        "group by version order by version")
    assert [r["version"] for r in served] == [1, 2] and all(r["n"] >= 3 for r in served)  # both took live traffic
    kinds = [e["kind"] for e in catalog.store.query(
        "select kind from events where route = 'support' and kind like 'rollout.%' order by ts")]
    assert kinds[0] == "rollout.start" and kinds[-1] == "rollout.done"
