"""A person moves the champion alias in the MLflow UI: `routes show` and `generate` follow it.

The UI sets aliases through the ajax API of a real ``mlflow server``; this test starts one on the
test's own store (loopback, a free port) and calls that endpoint as the UI's JavaScript does.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from registry.catalog.routes import Routes
from registry.cli.main import cli

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_ui(home: Path, settings) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", settings.tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health within 120 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_champion_moved_in_the_ui_is_what_arbiter_serves(mlflow_ui: str, catalog, registered) -> None:
    routes = Routes(catalog)
    routes.promote("qa", "smollm2-135m", 1, force=True)
    routes.promote("qa", "smollm2-135m", 2, force=True)
    assert routes.show("qa").champion.version == 2

    answer = httpx.post(
        f"{mlflow_ui}/ajax-api/2.0/mlflow/registered-models/alias",
        json={"name": "route.qa", "alias": "champion", "version": "1"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text

    shown = json.loads(CliRunner().invoke(cli, ["routes", "show", "qa", "--json"]).stdout)
    assert (shown["champion"]["model"], shown["champion"]["version"]) == ("smollm2-135m", 1)
    served = json.loads(
        CliRunner().invoke(cli, ["generate", "--route", "qa", "--max-tokens", "4", "--json", "Hi"]).stdout
    )
    assert (served["model"], served["version"]) == ("smollm2-135m", 1)
    history = catalog.store.query("select kind, model, version from events where route = 'qa' order by ts")
    assert [(e["kind"], e["version"]) for e in history] == [("promote", 1), ("promote", 2), ("alias.external", 1)]
