"""Auto-swap: a route whose champion degrades on live traffic is rolled back, or swapped to the
selector's best alternative, by itself — and never flaps.

The trigger (the seeds' rule, on the gateway's ``calls`` rows of the current champion since it
became champion, within the last ``window_s``):

- at least ``min_samples`` calls, and
- the success rate under ``success_threshold`` (0.8), or — for each live quality signal with at
  least ``min_samples`` scored calls (the task's live scorers, applications' feedback) — the mean
  quality under ``quality_factor`` (0.9) × the route's quality threshold (the task learning
  ``quality_threshold``; no threshold, no quality trigger), each judged by the same anytime-valid
  test a rollout uses: "under" means the whole confidence interval lies under the floor.

A degraded champion is acted on only outside the ``cooldown_s`` after the route's last auto-swap
and once it has served for ``min_dwell_s`` (so two models cannot swap back and forth), and never
during a gradual rollout (the rollout judges the challenger itself). The action: roll back to
``previous`` when there is one and its own recent calls are not degraded; otherwise promote the
selector's best other version for the task; otherwise hold and say why. Every decision, holds
included (once per champion and reason), is an ``autoswap.*`` event carrying its figures.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from registry.catalog.route_model import RouteModel
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.errors import ConflictError, SelectionError
from registry.evaluation.tasks import TaskCatalog
from registry.quality.sequential import against_floor, split_alpha
from registry.quality.signals import Evidence, evidence
from registry.results.events import event_row
from registry.results.store import iso_utc
from registry.rollout.live import live_figures
from registry.rollout.locks import route_lock
from registry.selection.criteria import Criteria
from registry.selection.learnings import TaskLearnings
from registry.selection.profiles import ProfileCache
from registry.selection.selector import LocalModelSelector

_log = logging.getLogger(__name__)
_ALIAS_EVENTS = "('promote', 'rollback', 'alias.external', 'rollout.done')"


class AutoSwapPolicy(BaseModel):
    """Thresholds and timings of auto-swap (``ARBITER_AUTO_SWAP_*`` settings)."""

    model_config = ConfigDict(frozen=True)

    cooldown_s: float = Field(default=300.0, ge=0)
    min_samples: int = Field(default=10, ge=1)
    success_threshold: float = Field(default=0.8, gt=0, le=1)
    quality_factor: float = Field(default=0.9, gt=0, le=1)
    min_dwell_s: float = Field(default=600.0, ge=0)
    window_s: float = Field(default=300.0, gt=0)
    false_alarm_rate: float = Field(default=0.05, gt=0, lt=0.5, description="Chance of acting on a healthy champion.")


@dataclass(frozen=True)
class Decision:
    """What auto-swap did (or why it held) for one route."""

    route: str
    action: str  # "rollback" | "swap" | "held"
    reasons: list[str]
    figures: dict[str, Any]
    to: str | None = None


def degradation(
    policy: AutoSwapPolicy, evidence: Evidence | None, quality_threshold: float | None,
    gating: tuple[str, ...] = ("scorer", "feedback"),
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Why ``evidence`` counts as degraded (no reasons: healthy, or too few calls to say), and each
    signal's test. A signal is degraded only when its anytime-valid interval lies wholly under its
    floor (registry/quality/sequential.py): success under ``success_threshold``; each quality signal
    under ``quality_factor`` × the route's threshold (no threshold, no quality test). The chance of
    acting on a healthy champion is at most ``false_alarm_rate``, split over the signals tested."""
    if evidence is None or evidence.n < policy.min_samples:
        return [], {}
    tested = [("success", evidence.success, policy.success_threshold)]
    if quality_threshold is not None:
        floor = policy.quality_factor * quality_threshold
        tested += [(f"quality:{signal}", list(evidence.quality.get(signal, {}).values()), floor) for signal in gating]
    tested = [(name, values, floor) for name, values, floor in tested if len(values) >= policy.min_samples]
    alpha = split_alpha(policy.false_alarm_rate, len(tested))
    tests = {name: against_floor(values, floor=floor, alpha=alpha, signal=name) for name, values, floor in tested}
    reasons = []
    for name, test in tests.items():
        if test.decision == "regression":
            what = "success rate" if name == "success" else f"{name} (floor: {policy.quality_factor} × the route's " \
                                                             f"threshold {quality_threshold})"
            reasons.append(f"{what}: {test.reason}")
    return reasons, {name: test.as_json() for name, test in tests.items()}


class AutoSwapper:
    """Example::

        swapper = AutoSwapper(catalog, AutoSwapPolicy(cooldown_s=300))
        swapper.check("qa")                  # Decision, or None when the champion is healthy
        swapper.start(lambda: ["qa"], every_s=5, on_change=router.refresh_soon)
    """

    def __init__(
        self,
        catalog: Catalog,
        policy: AutoSwapPolicy,
        *,
        pick_alternative: Callable[[str, set[str]], str | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.policy = policy
        self.routes = Routes(catalog)
        self.store = catalog.store
        self.learnings = TaskLearnings(catalog.store)
        self._pick_alternative = pick_alternative or self._selector_pick
        self._clock = clock
        self._held: set[tuple[str, str, str]] = set()  # (route, champion, reason) already recorded
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one check --------------------------------------------------------------------------

    def check(self, route: str) -> Decision | None:
        """Judge the route's champion and act; ``None`` when there is nothing to act on. The route's
        lock is held while deciding, so a promotion starting meanwhile cannot be cut across."""
        try:
            with route_lock(self.catalog.settings.home, route, purpose="auto-swap check", wait_s=0.0):
                return self._check(route)
        except ConflictError:
            return None  # a promotion holds the route: it judges the challenger itself

    def _check(self, route: str) -> Decision | None:
        view = RouteModel(self.catalog, route).read()
        if view is None or view.rollout_running:
            return None
        state = self.routes.show(route)
        if state.champion is None:
            return None
        champion = f"{state.champion.model}/{state.champion.version}"
        now = self._clock()
        since_change = self._last_change(route)
        since = max(now - self.policy.window_s, since_change or 0.0)
        found = evidence(self.store, route, since=since)
        threshold = self.learnings.get(route).quality_threshold
        reasons, tests = degradation(self.policy, found.get(champion), threshold)
        if not reasons:
            return None
        figures = live_figures(self.store, route, since=since)
        report = {"champion": figures[champion].as_json(), "window_from": iso_utc(since), "quality_threshold": threshold,
                  "signals": tests}
        last_swap = self._last_autoswap(route)
        if last_swap is not None and now - last_swap < self.policy.cooldown_s:
            return self._hold(route, champion, f"cooldown: last auto-swap {now - last_swap:.0f} s ago "
                                               f"(< {self.policy.cooldown_s:.0f} s)", reasons, report)
        if since_change is not None and now - since_change < self.policy.min_dwell_s:
            return self._hold(route, champion, f"dwell: champion for {now - since_change:.0f} s "
                                               f"(< {self.policy.min_dwell_s:.0f} s)", reasons, report)
        if state.previous is not None:
            previous = f"{state.previous.model}/{state.previous.version}"
            previous_reasons, _ = degradation(self.policy, found.get(previous), threshold)
            if not previous_reasons:
                self.routes.rollback(route)
                return self._record(Decision(route, "rollback", reasons, report, to=previous))
            report["previous"] = {"ref": previous, "reasons": previous_reasons}
        avoid = {champion} | ({previous} if state.previous is not None else set())
        alternative = self._pick_alternative(route, avoid)
        if alternative is None:
            return self._hold(route, champion, "no healthy alternative", reasons, report)
        model_name, _, version = alternative.partition("/")
        self.routes.promote(route, model_name, int(version), force=True)
        return self._record(Decision(route, "swap", reasons, report, to=alternative))

    # --- running in the gateway ---------------------------------------------------------------

    def start(self, routes: Callable[[], list[str]], *, every_s: float, on_change: Callable[[], None]) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                for route in routes():
                    try:
                        decision = self.check(route)
                    except Exception as exc:  # noqa: BLE001 — MLflow locked or down: this round only, never the thread
                        _log.warning("auto-swap check of %s failed: %s", route, exc)
                        continue
                    if decision is not None and decision.action != "held":
                        on_change()

        self._thread = threading.Thread(target=loop, name="arbiter-autoswap", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- helpers ------------------------------------------------------------------------------

    def _hold(self, route: str, champion: str, why: str, reasons: list[str], report: dict[str, Any]) -> Decision:
        decision = Decision(route, "held", [why, *reasons], report)
        key = (route, champion, why.split(":")[0])
        if key not in self._held:
            self._held.add(key)
            self._record(decision)
        return decision

    def _record(self, decision: Decision) -> Decision:
        model, _, version = (decision.to or "").partition("/")
        self.store.append("events", [event_row(
            f"autoswap.{decision.action}", route=decision.route, model=model or None,
            version=int(version) if version else None,
            detail={"reasons": decision.reasons, "to": decision.to, **decision.figures},
        )])
        return decision

    def _last_change(self, route: str) -> float | None:
        rows = self.store.query(f"select max(ts) as ts from events where route = $1 and kind in {_ALIAS_EVENTS}", [route])
        return rows[0]["ts"].timestamp() if rows and rows[0]["ts"] is not None else None

    def _last_autoswap(self, route: str) -> float | None:
        rows = self.store.query(
            "select max(ts) as ts from events where route = $1 and kind in ('autoswap.rollback', 'autoswap.swap')", [route]
        )
        return rows[0]["ts"].timestamp() if rows and rows[0]["ts"] is not None else None

    def _selector_pick(self, route: str, avoid: set[str]) -> str | None:
        """The selector's best version for the task, other than the degraded champion and a
        ``previous`` that is degraded too (so two bad versions never take turns). It must serve the
        route's task (its contract) and, where they bind, have the champion's capabilities: not on a
        classification route or when a classifier serves, where the task's contract alone decides
        (a chat model may replace a classifier there, and a classifier never takes a chat route)."""
        current = self.routes.champion(route)
        contract = TaskCatalog(self.catalog.settings).contract(route)
        binding = contract is None or not (contract.is_classification or current.spec.is_classifier)
        selector = LocalModelSelector(
            lambda: [r for r in self.catalog.list_versions() if r.ref not in avoid],
            ProfileCache(self.store, max_age_s=0.0), self.learnings,
        )
        try:
            criteria = Criteria(task=route, capabilities=tuple(current.spec.capabilities) if binding else ())
            selection = selector.select(criteria, contract)
        except SelectionError:
            return None
        return selection.primary.ref
