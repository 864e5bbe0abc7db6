"""Routes: a task (``qa``, ``extract``…) whose MLflow aliases say which model version serves it.

A route is the registered model ``route.<task>``; its versions are copies of catalog versions
(every version benchmarked on the task is offered there with its figures: ``candidates.py``), so
the MLflow UI shows each candidate with its lineage, and its aliases ``champion`` / ``previous``
are the routing table. Aliases are read live from MLflow, so a champion a person sets by hand in
the MLflow UI is what ``routes show`` reports, and the old champion becomes ``previous``.

Every alias change is written as an intent first (the route's ``arbiter.pending`` tag), then
applied, then cleared; any later call finishes an intent a killed process left behind, so a
promotion or rollback interrupted at any step converges when anything runs again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from registry.catalog.candidates import Candidates, figures_of, latest_figures
from registry.catalog.route_model import (
    CHAMPION,
    PREVIOUS,
    ROUTE_ALIASES,
    RouteModel,
    RouteTarget,
    RouteView,
    read_alias_table,
)
from registry.catalog.versions import Catalog
from registry.errors import NotFoundError, PromotionError
from registry.machine.hardware import fingerprint
from registry.results.events import event_row
from registry.results.store import new_id
from registry.selection.contract import TaskContract
from registry.spec import VersionRecord

MIN_QUALITY_RATIO = 0.9


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

    def list(self) -> list[str]:
        return sorted(read_alias_table(self.catalog).routes)

    def show(self, route: str) -> RouteState:
        """The route's aliases as MLflow holds them now. A champion moved outside arbiter (by hand
        in the MLflow UI) is taken up the first time it is seen: the champion arbiter last recorded
        becomes ``previous`` (so ``rollback`` goes back) and an ``alias.external`` event records the
        move with both versions' figures (``_take_up_external_move``)."""
        model = RouteModel(self.catalog, route)
        view = self._finish_pending(model, self._existing(model))
        state = RouteState(route=route, **{alias: model.target(view.aliases.get(alias)) for alias in ROUTE_ALIASES})
        return self._take_up_external_move(model, view, state)

    def champion(self, route: str) -> VersionRecord:
        """The catalog version serving ``route`` now."""
        state = self.show(route)
        if state.champion is None:
            raise NotFoundError(f"route {route!r} has no champion; promote one with `arbiter routes promote {route} --model NAME --version N`")
        return self.catalog.get(state.champion.model, state.champion.version)

    def promote(
        self, route: str, model: str, version: int, *, force: bool = False, rollout_id: str | None = None,
        contract: TaskContract | None = None,
    ) -> RouteState:
        """Make ``model/version`` the champion of ``route``; the old champion becomes ``previous``.

        Refused (unless ``force``) when the candidate has no benchmark on the route's task, or its
        quality is under 0.9 × the champion's. Refused, even with ``force``, when it cannot serve
        the route's task by ``contract`` (the task's, ``TaskCatalog.contract``: the catalog cannot
        read tasks, so the caller passes it): a text classifier on a route that is not a
        classification task with its labels would answer no request. Promoting the current
        champion changes nothing. Refused while a gradual rollout runs on the route, unless this is
        that rollout's own last step (``rollout_id``).
        """
        route_model = RouteModel(self.catalog, route)
        candidate = self.catalog.get(model, version)
        refused = contract.cannot_serve(candidate) if contract is not None else None
        if refused:
            raise PromotionError(f"{refused}; promote a version that can serve route {route!r}")
        view = route_model.read()
        _refuse_during_rollout(view, rollout_id)
        current = self.show(route) if view is not None else None
        if current is not None and current.champion and (current.champion.model, current.champion.version) == (model, version):
            return current
        self._check_quality(route, candidate, current.champion if current else None, force)
        created = route_model.create()
        aliases = {CHAMPION: route_model.copy_of(candidate)}
        if current is not None and current.champion is not None:
            aliases[PREVIOUS] = current.champion.route_version
        self._apply(route_model, _intent("promote", route, aliases, candidate, current.champion if current else None, force))
        if created:  # the versions benchmarked before the route existed: offered beside the champion
            Candidates(self.catalog, route).publish_all()
        return self.show(route)

    def rollback(self, route: str) -> RouteState:
        """Swap ``champion`` and ``previous``: instant, and a second rollback rolls forward again."""
        model = RouteModel(self.catalog, route)
        view = self._existing(model)
        _refuse_during_rollout(view, None)
        pending = view.pending
        self._finish_pending(model, view)
        if pending is not None and pending["kind"] == "rollback":  # a killed rollback, now done: not twice
            return self.show(route)
        current = self.show(route)
        if current.previous is None or current.champion is None:
            raise PromotionError(f"route {route!r} has no previous version to roll back to; promote a version first")
        aliases = {CHAMPION: current.previous.route_version, PREVIOUS: current.champion.route_version}
        restored = self.catalog.get(current.previous.model, current.previous.version)
        self._apply(model, _intent("rollback", route, aliases, restored, current.champion, False))
        return self.show(route)

    # --- helpers ------------------------------------------------------------------------

    def _existing(self, model: RouteModel) -> RouteView:
        view = model.read()
        if view is None:
            known = ", ".join(self.list()) or "none yet"
            raise NotFoundError(
                f"unknown route {model.route!r} (routes: {known}); create it with "
                f"`arbiter routes promote {model.route} --model NAME --version N`"
            )
        return view

    def _take_up_external_move(self, model: RouteModel, view: RouteView, state: RouteState) -> RouteState:
        """Compare the champion with the last one arbiter recorded; a new one was moved by hand.

        The old champion becomes ``previous`` through the same intent → apply → clear path as a
        promotion, so a kill converges. The event's id comes from the event it follows and the new
        champion, so two processes seeing the same move at once (the CLI and a gateway) record one
        move. During a gradual rollout the rollout owns ``previous``: the event says it was left.
        """
        if state.champion is None:
            return state
        last = self.store.query(
            "select event_id, model, version from events where route = $1 "
            "and kind in ('promote', 'rollback', 'alias.external') order by ts desc limit 1",
            [state.route],
        )
        seen = (state.champion.model, state.champion.version)
        if last and (last[0]["model"], last[0]["version"]) == seen:
            return state
        was = (last[0]["model"], last[0]["version"]) if last else None
        detail: dict[str, Any] = {
            "from": f"{was[0]}/{was[1]}" if was else None, "to": f"{seen[0]}/{seen[1]}",
            "route_version": state.champion.route_version, "figures": self._figures(state.route, was, seen),
        }
        previous = None
        if was is None:
            detail["previous"] = "not set: no champion recorded before this one"
        elif view.rollout_running:
            detail["previous"] = f"not set: rollout {view.rollout['id']} of {view.rollout['candidate']} is running"
        else:
            try:
                previous = model.copy_of(self.catalog.get(*was))
                detail["previous"] = f"{was[0]}/{was[1]}"
            except NotFoundError as exc:
                detail["previous"] = f"not set: {exc}"
        event = {"event_id": _move_id(state.route, last[0]["event_id"] if last else "", state.champion.route_version),
                 "kind": "alias.external", "route": state.route, "model": seen[0], "version": seen[1],
                 "detail": json.dumps(detail)}
        if previous is None:
            self.store.append("events", [event_row(
                "alias.external", route=state.route, model=seen[0], version=seen[1], detail=detail,
                event_id=event["event_id"],
            )])
            return state
        self._apply(model, {"kind": "alias.external", "aliases": {PREVIOUS: previous}, "event": event})
        return replace(state, previous=model.target(previous))

    def _figures(self, route: str, was: tuple[str, int] | None, seen: tuple[str, int]) -> dict[str, Any]:
        """Both versions' latest figures on this hardware, the old one's on the task version the new
        one was measured on (figures from two versions of a task are not comparable)."""
        hardware = fingerprint().hardware_id
        to = latest_figures(self.store, route, hardware, model=seen[0], version=seen[1])
        before = [] if was is None else latest_figures(
            self.store, route, hardware, model=was[0], version=was[1], task_version=to[0]["task_version"] if to else None)
        return {"from": figures_of(before[0] if before else None), "to": figures_of(to[0] if to else None)}

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
        # The champion's figure on the same version of the task, or none: two versions are not comparable.
        champion_run = self.store.latest_run(route, champion.model, champion.version, hardware, run.get("task_version"))
        if champion_run is not None and run["quality"] < MIN_QUALITY_RATIO * champion_run["quality"]:
            raise PromotionError(
                f"{candidate.ref} scores {run['quality']:.3f} on {route!r}, under {MIN_QUALITY_RATIO} × the champion "
                f"{champion.model}/{champion.version}'s {champion_run['quality']:.3f}; pass --force to promote anyway"
            )

    def _apply(self, model: RouteModel, intent: dict[str, Any]) -> None:
        """Record the intent, move the aliases, record the event, then clear the intent.

        The event's id is the intent's, so a change finished twice (a kill just before the intent
        was cleared) is one event with two rows of the same ``event_id``, never two changes.
        """
        model.set_pending(intent)
        aliases = intent["aliases"]
        for alias in (PREVIOUS, CHAMPION):  # previous first: a half-done change never loses the old champion
            if alias in aliases:
                model.set_alias(alias, aliases[alias])
        event = intent["event"]
        self.store.append("events", [event_row(
            event["kind"], route=event["route"], model=event["model"], version=event["version"],
            detail=json.loads(event["detail"]), event_id=event["event_id"],
        )])
        model.clear_pending()

    def _finish_pending(self, model: RouteModel, view: RouteView) -> RouteView:
        """Complete a change a killed process left half done; returns the route as it is after."""
        if view.pending is None:
            return view
        self._apply(model, view.pending)
        return self._existing(model)


def _refuse_during_rollout(view: RouteView | None, rollout_id: str | None) -> None:
    """A hand-made promotion or rollback must not cut across a gradual rollout (its own last step may)."""
    rollout = view.rollout if view is not None else None
    if rollout is None or not view.rollout_running or rollout["id"] == rollout_id:
        return
    raise PromotionError(
        f"route {view.route!r} is rolling out {rollout['candidate']} (phase {rollout['phase']}, step {rollout['step']}); "
        f"stop it first with `arbiter routes abort {view.route}`"
    )


def _move_id(route: str, after_event: str, route_version: int) -> str:
    """The one id of an external move: the route, the event it follows, the version it moved to."""
    return hashlib.sha256(f"{route}\0{after_event}\0{route_version}".encode()).hexdigest()[:32]


def _intent(
    kind: str, route: str, aliases: dict[str, int], to: VersionRecord, previous: RouteTarget | None, forced: bool
) -> dict[str, Any]:
    """A change to apply: the aliases to set and the event that records it (the ``arbiter.pending``
    tag's format: the event's ``detail`` already JSON text, as in the ``events`` table)."""
    detail = {"from": f"{previous.model}/{previous.version}" if previous else None, "to": to.ref, "forced": forced}
    event = {"event_id": new_id(), "kind": kind, "route": route, "model": to.name, "version": to.version,
             "detail": json.dumps(detail)}
    return {"kind": kind, "aliases": aliases, "event": event}
