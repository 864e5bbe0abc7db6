"""Shared fixtures: every test gets its own ARBITER_HOME; real models are prepared once per run.

The MLflow store is real sqlite. Creating one runs MLflow's migrations (seconds), so a migrated
empty store is made once per run and copied into each test's home.

`make test` runs the suite in pytest-xdist workers (one process each). What is expensive and only
read — the derived models, the migrated empty store — is made once per run in ``_RUN_DIR``, which
every worker shares; what a process changes (Prefect's state, the warm pool) stays in its own
``_SESSION_DIR``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# xdist's workers inherit the environment of the process that starts them, so the first process
# (the only one without xdist) names the run's directory and the workers find it there.
_RUN_VAR = "ARBITER_TESTS_RUN_DIR"
_OWNS_RUN_DIR = _RUN_VAR not in os.environ
if _OWNS_RUN_DIR:
    os.environ[_RUN_VAR] = tempfile.mkdtemp(prefix="arbiter-tests-run-")
_RUN_DIR = Path(os.environ[_RUN_VAR])

# Before anything imports Prefect or MLflow: state and telemetry stay out of the user's home.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="arbiter-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import pytest  # noqa: E402

from flows.workers import prefect_server  # noqa: E402
from registry.catalog.shipped import ShippedModel, prepare_shipped_models  # noqa: E402
from registry.catalog.versions import Catalog  # noqa: E402
from registry.cli.prefect_server import drain_prefect_workers  # noqa: E402
from registry.gateway.background import free_loopback_port  # noqa: E402
from registry.serving.pool import WarmPool  # noqa: E402
from registry.settings import Settings, get_settings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def _run_lock(name: str) -> Iterator[None]:
    """Held while one process makes what the run's other workers will reuse; the kernel drops an
    flock when its holder dies, so a crashed worker cannot leave the others waiting."""
    with (_RUN_DIR / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def empty_mlflow_db() -> Path:
    """Built aside and renamed into place, so a worker never copies a store half migrated."""
    template = _RUN_DIR / "template"
    with _run_lock("template"):
        if not template.exists():
            building = _RUN_DIR / "template.partial"
            shutil.rmtree(building, ignore_errors=True)
            Catalog(get_settings(home=building)).client.search_registered_models()  # runs the migrations
            building.rename(template)
    return template / "mlruns" / "mlflow.db"


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
    """The four demo versions (two shipped, two derived with llama.cpp's quantizer), made once per
    run: the first worker derives them, the others wait on the lock and find the files."""
    with _run_lock("models"):
        return prepare_shipped_models(_RUN_DIR / "models", n_threads=get_settings().n_threads)


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


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One real Prefect server (``prefect server start``, its own PREFECT_HOME) for this process's
    flow runs, in-process or in a command it starts. A command without PREFECT_API_URL starts a
    temporary server of its own, 15–40 s on 2 cores; with one already up its flow costs ~2 s.
    Tests of Prefect's own start and of a command's temporary server do not use it."""
    home = _SESSION_DIR / "prefect-server"
    home.mkdir()
    with prefect_server(free_loopback_port(), {**os.environ, "PREFECT_HOME": str(home)},
                        log=home / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def prefect_harness(prefect_api: str) -> Iterator[None]:
    """Flows run in this process report to the session's server (not a temporary one per module)."""
    # Deferred: importing Prefect takes seconds, and the unit and data tiers never need it.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        yield
        drain_prefect_workers()  # while the server is up, as a command's own server block does


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
    if _OWNS_RUN_DIR:  # xdist's controller ends after its workers
        shutil.rmtree(_RUN_DIR, ignore_errors=True)


from processes import SUITE_MARK, SuiteLeavesNoProcess  # noqa: E402 — the hook below is this file's last part


def pytest_configure(config: pytest.Config) -> None:
    """Mark every process the suite starts (each inherits the environment) and fail the run if one
    is still alive at its end (tests/processes.py says why it fails rather than warns)."""
    os.environ.setdefault(SUITE_MARK, str(os.getpid()))  # xdist workers keep their controller's mark
    config.pluginmanager.register(SuiteLeavesNoProcess(), "suite-leaves-no-process")
