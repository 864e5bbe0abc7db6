"""One route's registered model ``route.<task>``: the only code that reads or writes its aliases
and its ``arbiter.*`` tags.

A route's state is spread over MLflow objects several processes touch at once (the CLI, a
promotion flow, the gateway's auto-swap, a person in the MLflow UI), so the tag names, the
formats of their values and the retry of sqlite's ``database is locked`` live here once; promotion
(``routes.py``), the gradual rollout, auto-swap and the router go through this class. The names and
formats are a contract: a running gateway and every existing home read them.

The route's versions are copies of catalog versions (source ``models:/name/N``), each tagged with
the catalog version it copies, so the MLflow UI shows a candidate with its lineage; each links to a
run of its own that holds its latest figures (``candidates.py``), so the UI's Compare shows them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from registry.catalog.mlflow_client import registered_model_or_none, retry_locked
from registry.catalog.tracking import candidate_run
from registry.catalog.versions import Catalog
from registry.errors import NotFoundError, UserError
from registry.spec import NAME_PATTERN, ROUTE_PREFIX, VersionRecord

T = TypeVar("T")

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
ROUTE_ALIASES = (CHAMPION, PREVIOUS, CHALLENGER)
TAG_ROLE = "arbiter.role"  # "route" on a route model ("catalog" on a catalog model)
TAG_TASK = "arbiter.task"
TAG_PENDING = "arbiter.pending"  # an alias change being applied (JSON): finished by whoever reads it next
TAG_ROLLOUT = "arbiter.rollout"  # the gradual rollout's whole state (JSON, registry/rollout/promotion.py)
TAG_SHARE = "arbiter.challenger_share"  # per cent of the route's generations sent to the challenger
TAG_SHADOW = "arbiter.challenger_shadow"  # "1": copies of the route's requests go to the challenger, unseen
TAG_ABORT = "arbiter.rollout_abort"  # the reason a person asked to stop the rollout
TAG_REPLICAS = "arbiter.replicas"  # instances per champion, set by hand; overrides ARBITER_REPLICAS
# On each of the route's versions: the catalog version it is a copy of.
TAG_CATALOG_MODEL = "arbiter.catalog_model"
TAG_CATALOG_VERSION = "arbiter.catalog_version"
TAG_CANDIDATE_RUN = "arbiter.candidate_run"  # the version's own run (its run_id), whose metrics are its figures
TERMINAL = ("done", "rolled_back", "refused")  # rollout phases after which nothing more happens


def route_model_name(route: str) -> str:
    if not NAME_PATTERN.match(route):
        raise UserError(f"invalid route name {route!r}: use a lowercase task name such as 'qa' or 'extract'")
    return ROUTE_PREFIX + route


@dataclass(frozen=True)
class RouteTarget:
    """One alias of a route: the catalog version it points at, and the route's copy of it."""

    model: str
    version: int
    route_version: int

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "route_version": self.route_version}


@dataclass(frozen=True)
class RouteView:
    """One read of a route model: its aliases (alias → route version) and tags at that moment."""

    route: str
    aliases: dict[str, str]
    tags: dict[str, str]

    @property
    def pending(self) -> dict[str, Any] | None:
        """The alias change a process recorded and may not have finished."""
        text = self.tags.get(TAG_PENDING)
        return json.loads(text) if text else None

    @property
    def rollout(self) -> dict[str, Any] | None:
        """The gradual rollout's state as the rollout wrote it (``RolloutState`` reads it back)."""
        text = self.tags.get(TAG_ROLLOUT)
        return json.loads(text) if text else None

    @property
    def rollout_running(self) -> bool:
        rollout = self.rollout
        return rollout is not None and rollout["phase"] not in TERMINAL

    @property
    def share(self) -> int:
        """The challenger's share in per cent; 0 when unset or not a number (a hand edit)."""
        text = self.tags.get(TAG_SHARE, "")
        return int(text) if text.isdigit() else 0

    @property
    def shadow(self) -> bool:
        """True while the challenger gets shadow copies of the route's requests (users never see its answers)."""
        return self.tags.get(TAG_SHADOW) == "1"

    @property
    def replicas(self) -> int | None:
        """The route's replica count when its tag holds one."""
        text = self.tags.get(TAG_REPLICAS, "")
        return int(text) if text.isdigit() else None

    @property
    def abort(self) -> str | None:
        """Why a person asked to stop the rollout, while that request stands."""
        return self.tags.get(TAG_ABORT)


@dataclass(frozen=True)
class AliasTable:
    """Every alias in the registry at one moment: each route's view, and each catalog model's own
    aliases (``smollm2-135m@stable``)."""

    routes: dict[str, RouteView]
    models: dict[str, dict[str, str]]


def read_alias_table(catalog: Catalog) -> AliasTable:
    """The whole table in one MLflow call. Not retried on a locked store: the gateway polls this
    every second and keeps serving its last table meanwhile, so its next poll is the retry."""
    models = catalog.client.search_registered_models(max_results=1000)
    routes: dict[str, RouteView] = {}
    others: dict[str, dict[str, str]] = {}
    for model in models:
        aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
        if model.name.startswith(ROUTE_PREFIX):
            route = model.name.removeprefix(ROUTE_PREFIX)
            routes[route] = RouteView(route, aliases, dict(model.tags or {}))
        elif aliases:
            others[model.name] = aliases
    return AliasTable(routes, others)


class RouteModel:
    """Read and write one route's registered model.

    Example::

        model = RouteModel(catalog, "qa")
        model.read().aliases                 # {'champion': '2', 'previous': '1'}
        model.offer_challenger(3, share=10)
        model.withdraw_challenger()
    """

    def __init__(self, catalog: Catalog, route: str) -> None:
        self.route = route
        self.name = route_model_name(route)
        self._catalog = catalog

    # --- reading ------------------------------------------------------------------------------

    def read(self) -> RouteView | None:
        """The route's aliases and tags now; None when the route does not exist yet."""
        model = self._mlflow(lambda client: registered_model_or_none(client, self.name))
        if model is None:
            return None
        aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
        return RouteView(self.route, aliases, dict(model.tags or {}))

    def target(self, route_version: str | int | None) -> RouteTarget | None:
        """The catalog version a route version copies (None for no version). A route version is
        never edited, so a caller may keep the answer."""
        if route_version is None:
            return None
        mv = self._mlflow(lambda client: client.get_model_version(self.name, str(route_version)))
        model = mv.tags.get(TAG_CATALOG_MODEL)
        version = mv.tags.get(TAG_CATALOG_VERSION)
        if model is None or version is None:  # a copy made outside arbiter: its source names the lineage
            model, _, version = mv.source.removeprefix("models:/").partition("/")
        if not version.isdigit() or not mv.source.startswith("models:/"):
            raise NotFoundError(
                f"{self.name} version {mv.version} (source {mv.source}) is not a copy of a catalog version; "
                f"point the alias at a version made by `arbiter routes promote`"
            )
        return RouteTarget(model=model, version=int(version), route_version=int(mv.version))

    # --- writing ------------------------------------------------------------------------------

    def create(self) -> bool:
        """Make the route's registered model, once; True when this call made it."""
        if self.read() is not None:
            return False
        self._mlflow(lambda client: client.create_registered_model(
            self.name, tags={TAG_ROLE: "route", TAG_TASK: self.route},
            description=f"Route for task '{self.route}': aliases champion / previous / challenger pick the serving version.",
        ))
        return True

    def copy_of(self, record: VersionRecord) -> int:
        """The route's copy of a catalog version, made once (so repeated promotions reuse it).

        The copy carries the catalog version's tags, description and source (``models:/name/N``:
        the UI's lineage), as ``copy_model_version`` would make it, but links to a run of its own
        (``tracking.candidate_run``) so the UI's Compare can show its figures; made in one call with
        its tags, so no kill leaves an untagged copy."""
        from mlflow.exceptions import MlflowException

        source = f"models:/{record.name}/{record.version}"
        for mv in self.versions():  # the source matches even for a copy made outside this method
            if mv.source == source:
                return int(mv.version)
        original = self._mlflow(lambda client: client.get_model_version(record.name, str(record.version)))
        run_id = candidate_run(self._catalog, route=self.route, model_version=record.ref,
                               registration_run=original.run_id)
        tags = {**original.tags, TAG_CATALOG_MODEL: record.name, TAG_CATALOG_VERSION: str(record.version),
                TAG_CANDIDATE_RUN: run_id}
        try:
            copied = self._mlflow(lambda client: client.create_model_version(
                self.name, source, run_id=run_id, tags=tags, description=original.description,
                model_id=original.model_id,
            ))
        except MlflowException as exc:
            if exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            # An MLflow *server* insists that a ``models:/`` copy keep its source's run: the copy links
            # to the registration run, and its figures live in its tags, description and candidate run.
            copied = self._mlflow(lambda client: client.create_model_version(
                self.name, source, run_id=original.run_id, tags=tags, description=original.description,
                model_id=original.model_id,
            ))
        return int(copied.version)

    def versions(self) -> list[Any]:
        """Every version of the route model (MLflow ``ModelVersion``s, tags included), in one call."""
        return self._mlflow(lambda client: client.search_model_versions(f"name = '{self.name}'", max_results=10000))

    def version(self, route_version: int) -> Any:
        """One version of the route model (an MLflow ``ModelVersion``)."""
        return self._mlflow(lambda client: client.get_model_version(self.name, str(route_version)))

    def update_version(self, mv: Any, tags: dict[str, str | None], description: str | None = None) -> bool:
        """Bring a version's tags (None: remove) and description to these values, writing only what
        differs (each write is one MLflow call); True when anything changed."""
        changed = False
        for key, value in tags.items():
            if mv.tags.get(key) == value:
                continue
            if value is None:
                self._mlflow(lambda client, k=key: client.delete_model_version_tag(self.name, mv.version, k))
            else:
                self._mlflow(lambda client, k=key, v=value: client.set_model_version_tag(self.name, mv.version, k, v))
            changed = True
        if description is not None and mv.description != description:
            self._mlflow(lambda client: client.update_model_version(self.name, mv.version, description=description))
            changed = True
        return changed

    def set_alias(self, alias: str, route_version: int) -> None:
        self._mlflow(lambda client: client.set_registered_model_alias(self.name, alias, str(route_version)))

    def set_pending(self, intent: dict[str, Any]) -> None:
        self._mlflow(lambda client: client.set_registered_model_tag(self.name, TAG_PENDING, json.dumps(intent)))

    def clear_pending(self) -> None:
        self._mlflow(lambda client: client.delete_registered_model_tag(self.name, TAG_PENDING))

    def save_rollout(self, state: str) -> None:
        """Write the rollout's state (its JSON, as ``RolloutState.to_tag`` makes it)."""
        self._mlflow(lambda client: client.set_registered_model_tag(self.name, TAG_ROLLOUT, state))

    def offer_challenger(self, route_version: int, share: int, *, shadow: bool = False) -> None:
        """Point ``challenger`` at a route version, then give it ``share`` per cent of the traffic
        and, with ``shadow``, copies of the rest (its answers to them are scored, never sent)."""
        self.set_alias(CHALLENGER, route_version)
        self._mlflow(lambda client: client.set_registered_model_tag(self.name, TAG_SHADOW, "1" if shadow else "0"))
        self._mlflow(lambda client: client.set_registered_model_tag(self.name, TAG_SHARE, str(share)))

    def withdraw_challenger(self) -> None:
        """Share and shadow first (the gateway stops sending), then the alias; harmless when there is none."""
        self._mlflow(lambda client: client.set_registered_model_tag(self.name, TAG_SHARE, "0"))
        self._mlflow(lambda client: client.set_registered_model_tag(self.name, TAG_SHADOW, "0"))
        view = self.read()
        if view is not None and CHALLENGER in view.aliases:
            self._mlflow(lambda client: client.delete_registered_model_alias(self.name, CHALLENGER))

    def request_abort(self, reason: str) -> None:
        self._mlflow(lambda client: client.set_registered_model_tag(self.name, TAG_ABORT, reason))

    def clear_abort(self) -> None:
        self._mlflow(lambda client: client.delete_registered_model_tag(self.name, TAG_ABORT))

    def _mlflow(self, call: Callable[[Any], T]) -> T:
        """Every MLflow call on the route, retried while another process holds the sqlite store."""
        client = self._catalog.client
        return retry_locked(lambda: call(client))
