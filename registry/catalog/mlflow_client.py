"""The one place that builds an MLflow client, and maps MLflow's errors into ours.

Several processes share one sqlite store (a flow registering, a person in the UI, the CLI), so a
write can meet ``database is locked``; it is retried with backoff here, at the boundary.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from registry.errors import StoreError
from registry.settings import Settings

T = TypeVar("T")
_LOCK_RETRIES = 6
_log = logging.getLogger(__name__)


def make_client(settings: Settings):  # -> mlflow.MlflowClient (imported lazily: mlflow is slow to import)
    """A client on the settings' registry: the sqlite store under ``home`` (its folders created on
    first use) or the shared one ``ARBITER_MLFLOW_TRACKING_URI`` names."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Against an MLflow server, ending a run prints "View run … at: URL" on stdout: that would
    # break every `--json` answer (and costs a get_run per run).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no INFO lines about creating tables
    if settings.local_registry:
        settings.mlruns_dir.mkdir(parents=True, exist_ok=True)
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def experiment_id(client, settings: Settings, name: str) -> str:
    """Id of the named experiment, created with its artifacts under ``mlruns/artifacts/`` — or, on
    a shared registry, where its server keeps artifacts (a local path would exist on one machine only)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = (settings.artifacts_dir / name).as_uri() if settings.local_registry else None
    return retry_locked(lambda: client.create_experiment(name, artifact_location=location))


def registered_model_or_none(client, name: str):  # -> mlflow RegisteredModel | None
    """The registered model ``name``, or None when it does not exist (any other error propagates)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise


def retry_locked(call: Callable[[], T]) -> T:
    """Run an MLflow call, retrying with backoff while sqlite says the database is locked."""
    from mlflow.exceptions import MlflowException

    delay = 0.05
    for attempt in range(_LOCK_RETRIES):
        try:
            return call()
        except MlflowException as exc:
            if "database is locked" not in str(exc):
                raise
            locked = exc
        if attempt < _LOCK_RETRIES - 1:
            # said, because each locked attempt has already waited out sqlite's busy timeout (20 s in MLflow)
            _log.info("the MLflow store is locked by another process; attempt %d of %d in %.2f s",
                      attempt + 2, _LOCK_RETRIES, delay)
            time.sleep(delay)
            delay *= 2
    raise StoreError(
        "the MLflow store stayed locked by another process; retry, or move to an MLflow "
        "server on a SQL database (see ARCHITECTURE.md, scale-out)"
    ) from locked
