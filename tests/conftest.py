"""Shared fixtures: every test gets its own ARBITER_HOME; real models are prepared once per session.

The MLflow store is real sqlite. Creating one runs MLflow's migrations (seconds), so a migrated
empty store is made once per session and copied into each test's home.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports Prefect or MLflow: state and telemetry stay out of the user's home.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="arbiter-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import pytest  # noqa: E402

from registry.catalog.shipped import ShippedModel, prepare_shipped_models  # noqa: E402
from registry.catalog.versions import Catalog  # noqa: E402
from registry.serving.pool import WarmPool  # noqa: E402
from registry.settings import Settings, get_settings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def empty_mlflow_db() -> Path:
    home = _SESSION_DIR / "template"
    Catalog(get_settings(home=home)).client.search_registered_models()  # runs the migrations
    return home / "mlruns" / "mlflow.db"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """A fresh ARBITER_HOME per test (with a migrated empty MLflow store when the test needs one)."""
    monkeypatch.setenv("ARBITER_HOME", str(tmp_path))
    if "unit" not in request.keywords:
        db = request.getfixturevalue("empty_mlflow_db")
        (tmp_path / "mlruns").mkdir()
        shutil.copy(db, tmp_path / "mlruns" / "mlflow.db")
    return tmp_path


@pytest.fixture
def settings(home: Path) -> Settings:
    return get_settings()


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    return Catalog(settings)


@pytest.fixture(scope="session")
def shipped() -> list[ShippedModel]:
    """The four demo versions (two shipped, two derived with llama.cpp's quantizer), made once."""
    return prepare_shipped_models(_SESSION_DIR / "models", n_threads=get_settings().n_threads)


@pytest.fixture(scope="session")
def smollm2(shipped: list[ShippedModel]) -> ShippedModel:
    return shipped[0]


@pytest.fixture
def registered(catalog: Catalog, shipped: list[ShippedModel]):
    """All four versions registered in this test's catalog."""
    return [
        catalog.register(m.path, name=m.name, capabilities=list(m.capabilities), chat_format=m.chat_format)[0]
        for m in shipped
    ]


@pytest.fixture(scope="session")
def session_pool() -> Iterator[WarmPool]:
    """Loaded models shared across tests (each version loads once per session)."""
    with WarmPool(get_settings(home=_SESSION_DIR / "pool")) as pool:
        yield pool


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
