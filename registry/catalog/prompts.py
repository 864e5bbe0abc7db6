"""Prompts in MLflow's prompt registry, where a person sees which prompt a figure was measured with.

MLflow (3.x, on our sqlite store as on a server) keeps a prompt as a registered model tagged
``mlflow.prompt.is_prompt`` and each of its versions as a model version. ``search_registered_models``
leaves prompts out, so a prompt never appears in ``arbiter models list`` or ``routes list``, which
both read that search; MLflow's UI shows them on its own Prompts page.

A version is found again by one of its tags (``identity``, e.g. a task's sha256), so registering the
same content twice returns the version there is, in this process or another. Two processes that
register the same content at once both create a version; each then keeps the lowest version with
that identity and the later one deletes its own, so both name the same version.

A run is linked to a prompt version through MLflow's own run tag ``mlflow.linkedPrompts`` (the run
page lists the prompt), written when the run is created (``linked_prompts_tags``). MLflow's
``MlflowClient.link_prompt_version_to_run`` is not used: it looks the run up in the process-wide
tracking store (``mlflow.get_tracking_uri()``) rather than the client's, so against our store it
fails with "Run ... not found" and leaves an ``mlflow.db`` in the working directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from registry.catalog.mlflow_client import retry_locked
from registry.catalog.versions import Catalog
from registry.errors import UserError


@dataclass(frozen=True)
class PromptRef:
    """One prompt version: ``prompts:/NAME/VERSION`` is how MLflow (``load_prompt``) names it."""

    name: str
    version: int

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"


def register_prompt(
    catalog: Catalog, name: str, template: list[dict[str, str]], *, identity: tuple[str, str],
    description: str, tags: Mapping[str, str], response_format: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
) -> PromptRef:
    """The version of prompt ``name`` whose tag ``identity[0]`` is ``identity[1]``, registered (with
    ``template``, a chat template, and ``tags``) when there is none yet. Raises ``UserError`` when a
    registered model that is not a prompt holds ``name``."""
    client = catalog.client
    exists = client.get_prompt(name) is not None
    found = _find(client, name, identity) if exists else None
    if found is not None:
        return found
    if not exists:
        _create_prompt(client, name, description)
    key, value = identity
    created = retry_locked(lambda: client.create_prompt_version(
        name, template, description=description, tags={**tags, key: value},
        response_format=response_format, model_config=model_config,
    ))
    # another process may have registered the same content meanwhile: the lowest version stands
    first = _find(client, name, identity) or PromptRef(name, int(created.version))
    if first.version != int(created.version):
        retry_locked(lambda: client.delete_prompt_version(name, str(created.version)))
    return first


def linked_prompts_tags(prompts: Iterable[PromptRef]) -> dict[str, str]:
    """The run tag through which MLflow links a run to prompt versions (a JSON list of name and version)."""
    from mlflow.tracing.constant import TraceTagKey  # deferred: mlflow is slow to import

    return {TraceTagKey.LINKED_PROMPTS: json.dumps([{"name": p.name, "version": str(p.version)} for p in prompts])}


def _find(client: Any, name: str, identity: tuple[str, str]) -> PromptRef | None:
    """The lowest version of the existing prompt ``name`` tagged ``identity`` (None: there is none)."""
    key, value = identity
    versions: list[int] = []
    token = None
    while True:
        page = client.search_prompt_versions(name, max_results=1000, page_token=token)
        versions += [int(v.version) for v in page if v.tags.get(key) == value]
        token = page.token
        if not token:
            break
    return PromptRef(name, min(versions)) if versions else None


def _create_prompt(client: Any, name: str, description: str) -> None:
    """Create the prompt; another process creating it first is no error, a model of that name is."""
    from mlflow.exceptions import MlflowException

    try:
        retry_locked(lambda: client.create_prompt(name, description=description))
    except MlflowException:
        if client.get_prompt(name) is None:  # the name is taken by a model, not a prompt
            raise UserError(
                f"the MLflow registry holds a model named {name!r}, the name arbiter keeps a prompt under; "
                "rename or delete that model (MLflow does not let a model and a prompt share a name)"
            ) from None
