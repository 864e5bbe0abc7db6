"""What the other wings record in MLflow besides versions and routes: tracking runs (a benchmark's,
a judge calibration's), tags on them, and the gateway's webhook.

The wings ask for these by name and never hold MLflow's client, so its construction, its lazy
import and the retry of sqlite's ``database is locked`` stay inside the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from registry.catalog.mlflow_client import experiment_id, retry_locked
from registry.catalog.versions import Catalog


def log_run(
    catalog: Catalog, experiment: str, *, run_name: str, tags: Mapping[str, str], metrics: Mapping[str, float]
) -> str:
    """One finished MLflow run in ``experiment`` (made on first use), its metrics stamped now;
    returns its run id."""
    from mlflow.entities import Metric  # deferred: mlflow is slow to import (see mlflow_client.make_client)

    client = catalog.client
    exp = experiment_id(client, catalog.settings, experiment)
    run = retry_locked(lambda: client.create_run(exp, run_name=run_name, tags=dict(tags)))
    stamp = int(time.time() * 1000)
    batch = [Metric(key, float(value), stamp, 0) for key, value in metrics.items()]
    retry_locked(lambda: client.log_batch(run.info.run_id, metrics=batch))
    retry_locked(lambda: client.set_terminated(run.info.run_id))
    return run.info.run_id


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
