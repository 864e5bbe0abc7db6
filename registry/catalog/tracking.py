"""What the other wings record in MLflow besides versions and routes: tracking runs (a benchmark's,
a judge calibration's, a route candidate's), the data they read, tags on them, and the gateway's webhook.

The wings ask for these by name and never hold MLflow's client, so its construction, its lazy
import and the retry of sqlite's ``database is locked`` stay inside the catalog.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.catalog.mlflow_client import experiment_id, retry_locked
from registry.catalog.versions import Catalog

CANDIDATE_EXPERIMENT = "arbiter-candidates"
"""Where each route version's own run lies (``candidate_run``): the figures the UI's Compare shows."""


@dataclass(frozen=True)
class DataInput:
    """Data a run read, as MLflow's UI shows it (the run's Datasets): by name and digest, with where
    it lies, its columns and its row count. All of it is known to the caller already, so logging it
    reads no data: a large set costs what a small one does.

    ``digest`` is cut to the 36 characters MLflow keeps (``MAX_DATASET_DIGEST_SIZE``); put the whole
    one in ``tags`` when it matters. ``columns`` are MLflow colspecs (``{"name", "type", "required"}``).
    """

    name: str
    digest: str
    path: Path
    context: str
    n_rows: int
    columns: tuple[dict[str, Any], ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


def log_run(
    catalog: Catalog, experiment: str, *, run_name: str, tags: Mapping[str, str], metrics: Mapping[str, float],
    inputs: Sequence[DataInput] = (),
) -> str:
    """One finished MLflow run in ``experiment`` (made on first use), its metrics stamped now and
    the data it read logged as its dataset inputs; returns its run id."""
    from mlflow.entities import Metric  # deferred: mlflow is slow to import (see mlflow_client.make_client)

    client = catalog.client
    exp = experiment_id(client, catalog.settings, experiment)
    run = retry_locked(lambda: client.create_run(exp, run_name=run_name, tags=dict(tags)))
    stamp = int(time.time() * 1000)
    batch = [Metric(key, float(value), stamp, 0) for key, value in metrics.items()]
    if batch:
        retry_locked(lambda: client.log_batch(run.info.run_id, metrics=batch))
    if inputs:
        datasets = [_dataset_input(data) for data in inputs]
        retry_locked(lambda: client.log_inputs(run.info.run_id, datasets=datasets))
    retry_locked(lambda: client.set_terminated(run.info.run_id))
    return run.info.run_id


def _dataset_input(data: DataInput):  # -> mlflow.entities.DatasetInput
    """MLflow's own shape for a local file (what ``mlflow.data`` writes for one: source type
    ``local``, source ``{"uri": ...}``, schema ``{"mlflow_colspec": [...]}``, profile ``num_rows``),
    built from what ``data`` says rather than by profiling a DataFrame."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
    from mlflow.utils.validation import MAX_DATASET_DIGEST_SIZE

    dataset = Dataset(
        name=data.name, digest=data.digest[:MAX_DATASET_DIGEST_SIZE], source_type="local",
        source=json.dumps({"uri": data.path.resolve().as_uri()}),
        schema=json.dumps({"mlflow_colspec": list(data.columns)}) if data.columns else None,
        profile=json.dumps({"num_rows": data.n_rows}),
    )
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, data.context), *(InputTag(k, v) for k, v in data.tags.items())]
    return DatasetInput(dataset, tags)


def candidate_run(catalog: Catalog, *, route: str, model_version: str, registration_run: str | None) -> str:
    """The tracking run a route's copy of ``model_version`` links to, found again or made once.

    A model version's ``run_id`` is set when the version is made and never again, and the MLflow UI's
    Compare (a route model's versions side by side) shows the metrics of each version's run. So the
    copy links to a run of its own, whose metrics ``log_figures`` moves to each newer benchmark's
    figures; a kill between making the run and making the copy leaves a run the next try reuses.
    """
    client = catalog.client
    exp = experiment_id(client, catalog.settings, CANDIDATE_EXPERIMENT)
    tags = {"arbiter.route": route, "arbiter.model_version": model_version}
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    found = retry_locked(lambda: client.search_runs([exp], filter_string=query, max_results=1))
    if found:
        return found[0].info.run_id
    if registration_run:
        tags["arbiter.registration_run"] = registration_run
    return log_run(catalog, CANDIDATE_EXPERIMENT, run_name=f"{route}:{model_version}", tags=tags, metrics={})


def log_figures(catalog: Catalog, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
    """Metrics and tags on a run that exists already, in one call; a metric's newest value is the
    one the UI shows, its earlier values stay as the metric's history."""
    from mlflow.entities import Metric, RunTag

    stamp = int(time.time() * 1000)
    batch = [Metric(key, float(value), stamp, 0) for key, value in metrics.items()]
    run_tags = [RunTag(key, value) for key, value in tags.items()]
    retry_locked(lambda: catalog.client.log_batch(run_id, metrics=batch, tags=run_tags))


def tag_run(catalog: Catalog, run_id: str, tags: Mapping[str, str]) -> None:
    """Add ``tags`` to an MLflow run that exists already."""
    client = catalog.client
    for key, value in tags.items():
        retry_locked(lambda k=key, v=value: client.set_tag(run_id, k, v))


def replace_webhook(
    catalog: Catalog, *, name: str, url: str, secret: str, events: list[str], description: str
) -> str:
    """Register the webhook ``name``, deleting any earlier one of that name first (a gateway that
    died left it behind); returns its id. MLflow's errors propagate: the caller says why."""
    client = catalog.client
    for hook in client.list_webhooks():
        if hook.name == name:
            client.delete_webhook(hook.webhook_id)
    return client.create_webhook(name=name, url=url, secret=secret, events=events, description=description).webhook_id


def delete_webhook(catalog: Catalog, webhook_id: str) -> None:
    catalog.client.delete_webhook(webhook_id)
