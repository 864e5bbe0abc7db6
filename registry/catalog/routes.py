"""Routes: a task (``qa``, ``extract``…) whose MLflow aliases say which model version serves it.

A route is the registered model ``route.<task>``; its versions are copies of catalog versions
(``copy_model_version``), so the MLflow UI shows each candidate with its lineage, and its
aliases ``champion`` / ``previous`` are the routing table. Aliases are read live from MLflow, so
a champion a person sets by hand in the MLflow UI is what ``routes show`` reports.

Every alias change is written as an intent first (the route's ``arbiter.pending`` tag), then
applied, then cleared; any later call finishes an intent a killed process left behind, so a
promotion or rollback interrupted at any step converges when anything runs again.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from typing import Any

from registry.catalog.mlflow_client import registered_model_or_none, retry_locked
from registry.catalog.versions import Catalog
from registry.errors import NotFoundError, PromotionError, UserError
from registry.machine.hardware import fingerprint
from registry.results.store import new_id, now_utc
from registry.spec import NAME_PATTERN, ROUTE_PREFIX, VersionRecord

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
ROUTE_ALIASES = (CHAMPION, PREVIOUS, CHALLENGER)
TAG_PENDING = "arbiter.pending"
TAG_CATALOG_MODEL = "arbiter.catalog_model"
TAG_CATALOG_VERSION = "arbiter.catalog_version"
# The gradual rollout's state (registry/rollout/promotion.py) lives on the route too; defined here so that a
# hand-made promotion or rollback can refuse to cut across one.
TAG_ROLLOUT = "arbiter.rollout"
TAG_SHARE = "arbiter.challenger_share"
TAG_ABORT = "arbiter.rollout_abort"
TERMINAL = ("done", "rolled_back", "refused")
MIN_QUALITY_RATIO = 0.9


@dataclass(frozen=True)
class RouteTarget:
    """One alias of a route: the catalog version it points at, and the route's copy of it."""

    model: str
    version: int
    route_version: int

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "route_version": self.route_version}


@dataclass(frozen=True)
class RouteState:
    route: str
    champion: RouteTarget | None
    previous: RouteTarget | None
    challenger: RouteTarget | None

    def as_json(self) -> dict[str, Any]:
        """The JSON contract of ``arbiter routes show --json``."""
        return {
            "route": self.route,
            "champion": self.champion.as_json() if self.champion else None,
            "previous": self.previous.as_json() if self.previous else None,
            "challenger": self.challenger.as_json() if self.challenger else None,
        }


def route_model_name(route: str) -> str:
    if not NAME_PATTERN.match(route):
        raise UserError(f"invalid route name {route!r}: use a lowercase task name such as 'qa' or 'extract'")
    return ROUTE_PREFIX + route


class Routes:
    """Show, promote and roll back routes.

    Example::

        routes = Routes(catalog)
        routes.promote("qa", "smollm2-135m", 1)
        routes.show("qa").champion          # RouteTarget(model='smollm2-135m', version=1, …)
        routes.rollback("qa")
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.store = catalog.store

    @property
    def _client(self):
        return self.catalog.client

    def list(self) -> list[str]:
        models = self._client.search_registered_models(max_results=1000)
        return sorted(m.name.removeprefix(ROUTE_PREFIX) for m in models if m.name.startswith(ROUTE_PREFIX))

    def show(self, route: str) -> RouteState:
        """The route's aliases as MLflow holds them now; a champion moved outside arbiter (by hand
        in the MLflow UI) is recorded in ``events`` as ``alias.external`` the first time it is seen."""
        model = self._route_model(route)
        self._finish_pending(model)
        aliases = self._client.get_registered_model(model.name).aliases
        state = RouteState(
            route=route,
            **{alias: self.target(model.name, aliases.get(alias)) for alias in ROUTE_ALIASES},
        )
        self._record_external_change(state)
        return state

    def champion(self, route: str) -> VersionRecord:
        """The catalog version serving ``route`` now."""
        state = self.show(route)
        if state.champion is None:
            raise NotFoundError(f"route {route!r} has no champion; promote one with `arbiter routes promote {route} --model NAME --version N`")
        return self.catalog.get(state.champion.model, state.champion.version)

    def promote(
        self, route: str, model: str, version: int, *, force: bool = False, rollout_id: str | None = None
    ) -> RouteState:
        """Make ``model/version`` the champion of ``route``; the old champion becomes ``previous``.

        Refused (unless ``force``) when the candidate has no benchmark on the route's task, or its
        quality is under 0.9 × the champion's. Promoting the current champion changes nothing.
        Refused while a gradual rollout runs on the route, unless this is that rollout's own last
        step (``rollout_id``).
        """
        name = route_model_name(route)
        candidate = self.catalog.get(model, version)
        self._refuse_during_rollout(route, name, rollout_id)
        current = self._existing_state(route, name)
        if current is not None and current.champion and (current.champion.model, current.champion.version) == (model, version):
            return current
        self._check_quality(route, candidate, current.champion if current else None, force)
        self._ensure_route_model(route, name)
        route_version = self.route_copy(name, candidate)
        aliases = {CHAMPION: route_version}
        if current is not None and current.champion is not None:
            aliases[PREVIOUS] = current.champion.route_version
        self._apply(name, _intent("promote", route, aliases, candidate, current.champion if current else None, force))
        return self.show(route)

    def rollback(self, route: str) -> RouteState:
        """Swap ``champion`` and ``previous``: instant, and a second rollback rolls forward again."""
        model = self._route_model(route)
        self._refuse_during_rollout(route, model.name, None)
        finished = self._finish_pending(model)
        if finished is not None and finished["kind"] == "rollback":  # a killed rollback, now done: not twice
            return self.show(route)
        current = self.show(route)
        if current.previous is None or current.champion is None:
            raise PromotionError(f"route {route!r} has no previous version to roll back to; promote a version first")
        aliases = {CHAMPION: current.previous.route_version, PREVIOUS: current.champion.route_version}
        restored = self.catalog.get(current.previous.model, current.previous.version)
        self._apply(model.name, _intent("rollback", route, aliases, restored, current.champion, False))
        return self.show(route)

    # --- helpers ------------------------------------------------------------------------

    def _refuse_during_rollout(self, route: str, name: str, rollout_id: str | None) -> None:
        model = registered_model_or_none(self._client, name)
        text = model.tags.get(TAG_ROLLOUT) if model is not None else None
        if not text:
            return
        rollout = json.loads(text)
        if rollout["phase"] in TERMINAL or rollout["id"] == rollout_id:
            return
        raise PromotionError(
            f"route {route!r} is rolling out {rollout['candidate']} (phase {rollout['phase']}, step {rollout['step']}); "
            f"stop it first with `arbiter routes abort {route}`"
        )

    def _record_external_change(self, state: RouteState) -> None:
        """Keep the alias history whole: compare the champion with the last one arbiter recorded."""
        if state.champion is None:
            return
        last = self.store.query(
            "select model, version from events where route = $1 and kind in ('promote', 'rollback', 'alias.external') "
            "order by ts desc limit 1",
            [state.route],
        )
        seen = (state.champion.model, state.champion.version)
        if last and (last[0]["model"], last[0]["version"]) == seen:
            return
        detail = {"from": f"{last[0]['model']}/{last[0]['version']}" if last else None,
                  "to": f"{seen[0]}/{seen[1]}", "route_version": state.champion.route_version}
        self.store.append(
            "events",
            [{"event_id": new_id(), "ts": now_utc(), "kind": "alias.external", "route": state.route,
              "model": seen[0], "version": seen[1], "detail": json.dumps(detail)}],
        )

    def _existing_state(self, route: str, name: str) -> RouteState | None:
        if registered_model_or_none(self._client, name) is None:
            return None
        return self.show(route)

    def _route_model(self, route: str):
        model = registered_model_or_none(self._client, route_model_name(route))
        if model is None:
            known = ", ".join(self.list()) or "none yet"
            raise NotFoundError(
                f"unknown route {route!r} (routes: {known}); create it with "
                f"`arbiter routes promote {route} --model NAME --version N`"
            )
        return model

    def _check_quality(self, route: str, candidate: VersionRecord, champion: RouteTarget | None, force: bool) -> None:
        if force:
            return
        hardware = fingerprint().hardware_id
        run = self.store.latest_run(route, candidate.name, candidate.version, hardware)
        if run is None:
            raise PromotionError(
                f"{candidate.ref} has no benchmark on task {route!r}; run "
                f"`arbiter benchmark --model {candidate.ref} --task {route}` first, or pass --force"
            )
        if champion is None:
            return
        champion_run = self.store.latest_run(route, champion.model, champion.version, hardware)
        if champion_run is not None and run["quality"] < MIN_QUALITY_RATIO * champion_run["quality"]:
            raise PromotionError(
                f"{candidate.ref} scores {run['quality']:.3f} on {route!r}, under {MIN_QUALITY_RATIO} × the champion "
                f"{champion.model}/{champion.version}'s {champion_run['quality']:.3f}; pass --force to promote anyway"
            )

    def _ensure_route_model(self, route: str, name: str) -> None:
        if registered_model_or_none(self._client, name) is None:
            retry_locked(
                lambda: self._client.create_registered_model(
                    name, tags={"arbiter.role": "route", "arbiter.task": route},
                    description=f"Route for task '{route}': aliases champion / previous / challenger pick the serving version.",
                )
            )

    def route_copy(self, name: str, record: VersionRecord) -> int:
        """The route's copy of a catalog version, made once (so repeated promotions reuse it)."""
        source = f"models:/{record.name}/{record.version}"
        for mv in self._client.search_model_versions(f"name = '{name}'", max_results=10000):
            # the source matches even when a kill came between the copy and its tags
            if mv.source == source:
                return int(mv.version)
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "Copied version …" itself
            copied = retry_locked(lambda: self._client.copy_model_version(source, name))
        for key, value in ((TAG_CATALOG_MODEL, record.name), (TAG_CATALOG_VERSION, str(record.version))):
            retry_locked(lambda k=key, v=value: self._client.set_model_version_tag(name, copied.version, k, v))
        return int(copied.version)

    def _apply(self, name: str, intent: dict[str, Any]) -> None:
        """Record the intent, move the aliases, record the event, then clear the intent.

        The event's id is the intent's, so a change finished twice (a kill just before the intent
        was cleared) is one event with two rows of the same ``event_id``, never two changes.
        """
        client = self._client
        retry_locked(lambda: client.set_registered_model_tag(name, TAG_PENDING, json.dumps(intent)))
        aliases = intent["aliases"]
        for alias in (PREVIOUS, CHAMPION):  # previous first: a half-done change never loses the old champion
            if alias in aliases:
                retry_locked(lambda a=alias: client.set_registered_model_alias(name, a, str(aliases[a])))
        self.store.append("events", [{**intent["event"], "ts": now_utc()}])
        retry_locked(lambda: client.delete_registered_model_tag(name, TAG_PENDING))

    def _finish_pending(self, model: Any) -> dict[str, Any] | None:
        """Complete a change a killed process left half done; returns its intent, if any."""
        pending = model.tags.get(TAG_PENDING)
        if not pending:
            return None
        intent = json.loads(pending)
        self._apply(model.name, intent)
        return intent

    def target(self, name: str, route_version: str | int | None) -> RouteTarget | None:
        if route_version is None:
            return None
        mv = self._client.get_model_version(name, str(route_version))
        model = mv.tags.get(TAG_CATALOG_MODEL)
        version = mv.tags.get(TAG_CATALOG_VERSION)
        if model is None or version is None:  # a copy made outside arbiter: its source names the lineage
            model, _, version = mv.source.removeprefix("models:/").partition("/")
        if not version.isdigit() or not mv.source.startswith("models:/"):
            raise NotFoundError(
                f"{name} version {mv.version} (source {mv.source}) is not a copy of a catalog version; "
                f"point the alias at a version made by `arbiter routes promote`"
            )
        return RouteTarget(model=model, version=int(version), route_version=int(mv.version))



def _intent(
    kind: str, route: str, aliases: dict[str, int], to: VersionRecord, previous: RouteTarget | None, forced: bool
) -> dict[str, Any]:
    """A change to apply: the aliases to set and the event that records it."""
    detail = {"from": f"{previous.model}/{previous.version}" if previous else None, "to": to.ref, "forced": forced}
    event = {"event_id": new_id(), "kind": kind, "route": route, "model": to.name, "version": to.version,
             "detail": json.dumps(detail)}
    return {"kind": kind, "aliases": aliases, "event": event}
