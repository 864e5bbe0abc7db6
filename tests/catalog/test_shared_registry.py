"""Two machines, one registry: ``ARBITER_MLFLOW_TRACKING_URI`` points arbiter at a real MLflow
server (the scale-out path in docs/deploy.md), so what one machine registers and promotes the other
sees — versions, spec artifacts uploaded through the server, routes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import assert_clean_error, mlflow_server, run

from registry.settings import get_settings

pytestmark = pytest.mark.e2e


def test_two_homes_share_one_registry_through_an_mlflow_server(
    tmp_path: Path, empty_mlflow_db: Path, smollm2, monkeypatch: pytest.MonkeyPatch
) -> None:
    central = tmp_path / "central"
    central.mkdir()
    shutil.copy(empty_mlflow_db, central / "mlflow.db")
    machine_a, machine_b = tmp_path / "machine-a", tmp_path / "machine-b"
    with mlflow_server(f"sqlite:///{central / 'mlflow.db'}", artifacts=central / "artifacts") as url:
        monkeypatch.setenv("ARBITER_MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("ARBITER_HOME", str(machine_a))
        code, out, _ = run("models", "register", str(smollm2.path), "--name", "smollm2-135m", "--capability", "chat",
                           "--json")
        assert code == 0
        registered = json.loads(out)  # only the JSON: MLflow's "View run … at" line is kept off stdout
        assert registered["version"] == 1
        assert run("routes", "promote", "qa", "--model", "smollm2-135m", "--version", "1", "--force")[0] == 0

        monkeypatch.setenv("ARBITER_HOME", str(machine_b))
        shown = json.loads(run("routes", "show", "qa", "--json")[1])
        assert (shown["champion"]["model"], shown["champion"]["version"]) == ("smollm2-135m", 1)
        listed = json.loads(run("models", "list", "--json")[1])
        assert [(m["name"], m["version"], m["sha256"]) for m in listed] == [("smollm2-135m", 1, registered["sha256"])]

    assert not (machine_a / "mlruns").exists() and not (machine_b / "mlruns").exists()  # nothing kept locally
    assert list((central / "artifacts").rglob("spec.json"))  # the spec went through the server
    assert get_settings(home=machine_b, mlflow_tracking_uri=url).tracking_uri == url


def test_a_malformed_registry_uri_is_one_clean_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_MLFLOW_TRACKING_URI", "localhost:5000")
    code, _, err = run("models", "list")
    assert_clean_error(code, err, "ARBITER_MLFLOW_TRACKING_URI='localhost:5000'", exit_code=2)
    assert "http://host:5000" in err
