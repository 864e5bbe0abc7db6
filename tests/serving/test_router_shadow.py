"""The router and a shadow challenger, on a real catalog and pool: read from the route's tag, warmed
before its copies start, kept loaded while shadowed, and never given a user's request at share 0."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from registry.catalog.route_model import CHALLENGER, CHAMPION, TAG_SHADOW, RouteModel
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.serving.pool import WarmPool
from registry.serving.router import RouteEntry, Router
from registry.settings import Settings
from registry.spec import VersionRecord

pytestmark = pytest.mark.integration


class Events(list):
    def __call__(self, kind: str, route: str | None, record: VersionRecord | None, detail: dict[str, Any]) -> None:
        self.append((kind, record.ref if record else None, detail))


def shadow_only(catalog: Catalog, challenger: VersionRecord) -> None:
    """``smollm2-135m/1`` champion of ``qa``; ``challenger`` gets copies and no share (a shadow step)."""
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    route = RouteModel(catalog, "qa")
    route.offer_challenger(route.copy_of(challenger), share=0, shadow=True)


def served_once_warm(router: Router) -> RouteEntry:
    deadline = time.monotonic() + 120  # a bound against a hang, not a figure under test
    while not router.entries()["qa"].shadow:
        assert time.monotonic() < deadline, "the shadow challenger never became servable"
        time.sleep(0.05)
        router.refresh()
    return router.entries()["qa"]


def test_a_shadow_challenger_is_warmed_first_pinned_and_given_no_request(
    settings: Settings, catalog: Catalog, shipped
) -> None:
    champion, challenger = (
        catalog.register(m.path, name=m.name, capabilities=list(m.capabilities))[0] for m in shipped[:2]
    )
    shadow_only(catalog, challenger)
    events = Events()

    with WarmPool(settings) as pool:
        router = Router(catalog, pool, on_event=events)
        router.start(follow=False)
        cold = router.entries()["qa"]
        assert (cold.shadow, cold.shadow_challenger) == (False, None)  # no copies before it is warm

        entry = served_once_warm(router)
        assert entry.shadow_challenger is not None and entry.shadow_challenger.ref == challenger.ref
        assert (entry.challenger, entry.share) == (None, 0)  # copies only: no share of the users' requests
        assert ("challenger.ready", challenger.ref, {"share": 0, "shadow": True}) in events
        assert pool.is_warm(challenger)
        assert challenger.ref in {f"{i['model']}/{i['version']}" for i in pool.snapshot() if i["pinned"]}
        assert {router.resolve("qa", turn=True).record.ref for _ in range(200)} == {champion.ref}

        catalog.client.set_registered_model_tag("route.qa", TAG_SHADOW, "0")  # by hand, as in the MLflow UI
        router.refresh()
        entry = router.entries()["qa"]
        assert (entry.shadow, entry.shadow_challenger) == (False, None)
        assert challenger.ref not in {f"{i['model']}/{i['version']}" for i in pool.snapshot() if i["pinned"]}


def test_a_shadow_challenger_that_cannot_load_is_an_event_and_gets_no_copies(
    settings: Settings, catalog: Catalog, shipped, home: Path
) -> None:
    catalog.register(shipped[0].path, name="smollm2-135m", capabilities=list(shipped[0].capabilities))
    copied = home / "gone.gguf"
    shutil.copy(shipped[1].path, copied)
    broken = catalog.register(copied, name="smollm2-gone", capabilities=list(shipped[1].capabilities))[0]
    copied.unlink()
    shadow_only(catalog, broken)
    events = Events()

    with WarmPool(settings) as pool:
        router = Router(catalog, pool, on_event=events)
        router.start(follow=False)
        deadline = time.monotonic() + 120
        while not any(kind == "challenger.failed" for kind, _, _ in events):
            assert time.monotonic() < deadline, "the failed warm-up was never reported"
            time.sleep(0.05)
        router.refresh()

        entry = router.entries()["qa"]
        assert (entry.shadow, entry.shadow_challenger) == (False, None)
        assert [ref for kind, ref, _ in events if kind == "challenger.failed"] == [broken.ref]


def test_a_challenger_that_is_the_champion_gets_no_copies(catalog: Catalog, shipped) -> None:
    champion = catalog.register(shipped[0].path, name="smollm2-135m", capabilities=list(shipped[0].capabilities))[0]
    entry = RouteEntry("qa", {CHAMPION: champion, CHALLENGER: champion}, share=10, shadow=True)
    assert (entry.challenger, entry.shadow_challenger, entry.contender) == (None, None, None)
