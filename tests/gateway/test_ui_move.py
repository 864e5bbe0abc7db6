"""A person moves ``champion`` in the MLflow UI while the gateway serves: the gateway hot-swaps to it
and, without any CLI call, the old champion becomes ``previous`` with one ``alias.external`` event —
so ``routes rollback`` has something to go back to. Real server, real MLflow, real llama.cpp."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from support import free_port

from registry.catalog.route_model import RouteModel
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway.background import gateway_in_background
from registry.settings import get_settings

pytestmark = pytest.mark.e2e


def test_a_champion_moved_in_the_ui_is_served_and_the_old_one_becomes_previous(
    tmp_path: Path, empty_mlflow_db: Path, shipped
) -> None:
    home = tmp_path / "ui-home"
    (home / "mlruns").mkdir(parents=True)
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, port=free_port(), alias_poll_s=0.2, calls_flush_s=0.2)
    catalog = Catalog(settings)
    q4_1, q4_0 = shipped[0], shipped[1]
    catalog.register(q4_1.path, name="smollm2-135m", capabilities=list(q4_1.capabilities))
    catalog.register(q4_0.path, name="smollm2-135m", capabilities=list(q4_0.capabilities))
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)  # the only promotion arbiter makes
    candidate = RouteModel(catalog, "qa").copy_of(catalog.get("smollm2-135m", 2))  # a candidate version

    with gateway_in_background(settings) as (url, _gateway):
        catalog.client.set_registered_model_alias("route.qa", "champion", str(candidate))  # what the UI does
        deadline = time.monotonic() + 60
        while True:
            answer = httpx.post(f"{url}/api/generate", json={"model": "qa", "prompt": "Hi", "stream": False,
                                                             "options": {"num_predict": 2}}, timeout=60)
            view = RouteModel(catalog, "qa").read()
            if answer.headers["x-arbiter-model"] == "smollm2-135m/2" and "previous" in view.aliases:
                break
            assert time.monotonic() < deadline, (answer.headers, view.aliases)
            time.sleep(0.2)

    state = Routes(catalog).show("qa")
    assert (state.champion.version, state.previous.version) == (2, 1)
    moves = catalog.store.query("select detail from events where kind = 'alias.external'")
    assert len(moves) == 1
    detail = json.loads(moves[0]["detail"])
    assert (detail["from"], detail["to"], detail["previous"]) == ("smollm2-135m/1", "smollm2-135m/2", "smollm2-135m/1")
    assert Routes(catalog).rollback("qa").champion.version == 1  # back to where the person moved it from
