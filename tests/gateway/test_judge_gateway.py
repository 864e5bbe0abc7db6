"""``POST /arbiter/judge`` on a real gateway: judgements from the warm pool, no model load per
judgement, and bad input answered with a clear status."""

from __future__ import annotations

import httpx
import pytest
from support import free_port

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.evaluation.rubrics import SCALE
from registry.gateway.background import gateway_in_background
from registry.settings import get_settings

pytestmark = pytest.mark.e2e
TASK = "Summarize: Lisbon is the capital of Portugal. It lies where the Tagus meets the Atlantic."


def test_judgements_come_from_the_warm_pool_and_bad_input_is_refused(smollm2) -> None:
    settings = get_settings(port=free_port())
    catalog = Catalog(settings)
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    Routes(catalog).promote("judgment", "smollm2-135m", 1, force=True)

    with gateway_in_background(settings) as (url, gateway), httpx.Client(base_url=url, timeout=120) as client:
        loaded_before = [(i["instance"], i["served"]) for i in gateway.pool.snapshot()]
        answers = [client.post("/arbiter/judge", json={"task": TASK, "output": output, "criteria": ["relevance"]})
                   for output in ("Lisbon is Portugal's capital, on the Tagus.", "I like turtles.")]
        after = gateway.pool.snapshot()

        assert [a.status_code for a in answers] == [200, 200]
        for answer in answers:
            (judgement,) = answer.json()["judgements"]
            assert judgement["score"] in SCALE and judgement["judge"] == "smollm2-135m/1" and judgement["reason"]
        assert len(loaded_before) == len(after) == 1  # the champion loaded at start, and no other load
        assert after[0]["served"] == loaded_before[0][1] + 2

        bad = {
            "criterion": client.post("/arbiter/judge", json={"task": TASK, "output": "x", "criteria": ["honesty"]}),
            "empty": client.post("/arbiter/judge", json={"task": TASK, "output": ""}),
            "judge": client.post("/arbiter/judge", json={"task": TASK, "output": "x", "judge": "nothing/1"}),
        }
        assert bad["criterion"].status_code == 400 and "honesty" in bad["criterion"].json()["error"]
        assert bad["empty"].status_code == 400 and "output" in bad["empty"].json()["error"]
        assert bad["judge"].status_code == 404
