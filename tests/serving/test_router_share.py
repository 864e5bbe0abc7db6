"""The router's rollout split on a real catalog and pool: exactly the share, counted over
generations only, and only once the challenger is warm."""

from __future__ import annotations

import time

import pytest

from registry.catalog.route_model import TAG_SHARE, RouteModel
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.serving.pool import WarmPool
from registry.serving.router import Router
from registry.settings import Settings

pytestmark = pytest.mark.integration


def test_the_challenger_gets_exactly_its_share_of_generations(settings: Settings, catalog: Catalog, smollm2) -> None:
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-twin", capabilities=list(smollm2.capabilities))
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    route = RouteModel(catalog, "qa")
    route.offer_challenger(route.copy_of(catalog.get("smollm2-twin", 1)), share=25)

    with WarmPool(settings) as pool:
        router = Router(catalog, pool)
        router.start(follow=False)
        cold = [router.resolve("qa", turn=True).record.name for _ in range(20)]
        assert set(cold) == {"smollm2-135m"}  # not warm yet: the champion takes everything
        deadline = time.monotonic() + 60
        while router.entries()["qa"].share != 25:
            assert time.monotonic() < deadline, "the challenger never became servable"
            time.sleep(0.1)
            router.refresh()

        picks = []
        for _ in range(200):
            picks.append(router.resolve("qa", turn=True))
            router.resolve("qa")  # a listing or /api/show in between: no turn taken
        names = [p.record.name for p in picks]

        assert names.count("smollm2-twin") == 50  # exactly 25 of every 100
        assert all(names[i:i + 4].count("smollm2-twin") == 1 for i in range(0, 200, 4))  # spread evenly
        challenger = next(p for p in picks if p.record.name == "smollm2-twin")
        assert [f.name for f in challenger.fallbacks] == ["smollm2-135m"]  # the champion backs it up
        assert router.resolve("qa@challenger").record.name == "smollm2-twin"
        assert "smollm2-twin" in {i["model"] for i in pool.snapshot() if i["pinned"]}  # kept loaded meanwhile

        catalog.client.set_registered_model_tag("route.qa", TAG_SHARE, "0")  # by hand, as in the MLflow UI
        router.refresh()
        assert {router.resolve("qa", turn=True).record.name for _ in range(20)} == {"smollm2-135m"}
