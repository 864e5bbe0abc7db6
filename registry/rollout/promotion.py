"""Gradual promotion: a candidate is benchmarked, checked against the champion, then given a
growing share of the route's live traffic, and promoted or rolled back on live figures.

The state machine's state lives where a person can see it: the route's MLflow tags
(``arbiter.rollout``: the whole state as JSON; ``arbiter.challenger_share``: the share the
gateway sends to the ``challenger`` alias) and the ``events`` table. Phases::

    benchmark → compatibility → [shadow] → ramp(step 0 … n-1) → promoting → done
                      └──────→ refused    └──────────┴──────→ rolled_back

``shadow`` (``--shadow``) is a step 0 before the ramp: the challenger takes no share, but the
gateway sends it copies of the route's requests while nobody waits, and its answers are scored
beside the champion's on the same requests (registry/serving/shadow.py). Each step is judged by
registry/rollout/policy.py on the signals of registry/quality/signals.py.

Every transition writes the new state first, then applies its effects (aliases, share), then
records its event under an id made of the rollout id, phase and step. Effects only *set* things
(an alias, a tag), so re-applying them is harmless; an event already recorded is not recorded
again. A process killed at any point therefore converges when the same promotion is run again:
it re-reads the state, re-applies the current phase's effects and goes on from there.

One promotion per route at a time: the runner holds the route's file lock (registry/rollout/locks.py)
for its whole life; a second one gets a ``ConflictError``. ``abort`` works beside a running
promotion: it cuts the share to 0 at once and leaves a request the runner acts on at its next
check.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from registry.catalog.route_model import TAG_ROLLOUT, TERMINAL, RouteModel, RouteView
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.errors import ConflictError, NotFoundError, PromotionError
from registry.evaluation.benchmark import benchmark_and_record
from registry.evaluation.judge import route_judge
from registry.evaluation.tasks import TaskCatalog
from registry.machine.hardware import fingerprint
from registry.quality.judge_gate import JudgeGate
from registry.quality.signals import evidence
from registry.results.events import event_row
from registry.results.store import ResultsStore, iso_utc, new_id
from registry.rollout.compatibility import check_compatibility, keeps_champion_capabilities
from registry.rollout.live import live_figures
from registry.rollout.locks import is_locked, route_lock
from registry.rollout.policy import RolloutPolicy
from registry.rollout.policy import judge as judge_step
from registry.selection.contract import TaskContract
from registry.selection.profiles import ProfileCache
from registry.serving.pool import WarmPool
from registry.spec import Status, VersionRecord

CHECK_EVENT_EVERY_S = 30.0
_EVENT_KIND = {
    "benchmark": "rollout.start",
    "compatibility": "rollout.benchmarked",
    "shadow": "rollout.shadow",
    "ramp": "rollout.step",
    "promoting": "rollout.promoting",
    "done": "rollout.done",
    "rolled_back": "rollout.rollback",
    "refused": "rollout.refused",
}


class Compatible(Protocol):
    can_replace: bool
    reasons: list[str]
    warnings: list[str]

    def as_json(self) -> dict[str, Any]: ...


Benchmark = Callable[[VersionRecord, str, int | None], object]  # what it returns is not used
CompatibilityCheck = Callable[[str, VersionRecord, VersionRecord], Compatible]


@dataclass(frozen=True)
class RolloutState:
    """What the route's ``arbiter.rollout`` tag holds."""

    id: str
    route: str
    candidate: str
    champion: str
    phase: str
    policy: dict[str, Any]
    started_at: float
    step: int = 0
    step_started_at: float | None = None
    last_check: dict[str, Any] | None = None
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    @property
    def judged(self) -> bool:
        """A step whose live evidence is judged: the shadow step or a ramp step."""
        return self.phase in ("shadow", "ramp")

    @property
    def share(self) -> int:
        """The challenger's share of traffic in this phase."""
        if self.phase == "ramp":
            return int(self.policy["ramp"][self.step])
        return 100 if self.phase == "promoting" else 0

    def to_tag(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["share"] = self.share
        data["started_at"] = iso_utc(self.started_at)
        data["step_started_at"] = iso_utc(self.step_started_at)
        if self.judged and self.step_started_at is not None:
            data["step_ends_at"] = iso_utc(self.step_started_at + float(self.policy["step_seconds"]))
        return data


class Rollout:
    """Example::

        rollout = Rollout(catalog)
        state = rollout.promote("qa", "smollm2-135m/3", RolloutPolicy(ramp=(10, 50, 100), step_seconds=600))
        state.phase                            # 'done' or 'rolled_back' or 'refused'
        rollout.status("qa")                   # champion, challenger, share, step, last check
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        benchmark: Benchmark | None = None,
        compatibility: CompatibilityCheck | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_phase: Callable[[RolloutState], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.routes = Routes(catalog)
        self.store: ResultsStore = catalog.store
        self._benchmark = benchmark or partial(benchmark_alone, catalog)
        self._compatibility = compatibility or _default_compatibility(catalog)
        self._clock = clock
        self._sleep = sleep
        self._on_phase = on_phase
        self._hardware_id = fingerprint().hardware_id
        self._checks_recorded: dict[tuple[str, str, int], float] = {}

    # --- public -------------------------------------------------------------------------------

    def promote(
        self, route: str, candidate_ref: str, policy: RolloutPolicy | None = None, *, lock_held: bool = False
    ) -> RolloutState:
        """Run (or resume) the promotion of ``candidate_ref`` on ``route`` to its end.

        Refused before anything changes: an unknown or deprecated candidate, the champion itself,
        a candidate that cannot serve the route's task (a classifier on a route that is not a
        classification task with its labels) or, on a route that is not a classification task,
        lacks one of the champion's capabilities, an unfinished rollout of another candidate, a
        promotion of this route already running (``ConflictError``). ``lock_held``:
        the caller holds the route's lock already (the CLI takes it before Prefect starts).
        """
        policy = policy or RolloutPolicy()
        if lock_held:
            return self._run(self._begin(route, candidate_ref, policy))
        with route_lock(self.catalog.settings.home, route, purpose=f"promotion of {candidate_ref}"):
            return self._run(self._begin(route, candidate_ref, policy))

    def status(self, route: str) -> dict[str, Any]:
        """The JSON contract of ``arbiter routes status ROUTE --json``."""
        shown = self.routes.show(route).as_json()
        view = self._view(route)
        state = _state_of(view)
        return {
            **shown,
            "share": view.share,
            "rollout": state.as_json() if state else None,
            "running": is_locked(self.catalog.settings.home, route),
            "abort_requested": view.abort,
        }

    def abort(self, route: str, reason: str = "aborted by hand") -> dict[str, Any]:
        """Stop a rollout now: the share drops to 0 and the challenger alias goes at once; a running
        promotion records the rollback at its next check, otherwise this does it."""
        state = _state_of(self._view(route))
        if state is not None and state.terminal:
            self._converge(state)  # a kill inside its last transition: finish that first
        if state is None or state.terminal:
            raise PromotionError(f"route {route!r} has no rollout in progress; `arbiter routes status {route}` shows its state")
        if state.phase == "promoting":
            raise PromotionError(
                f"route {route!r} is promoting {state.candidate} already (it passed every step); when it is done, "
                f"go back with `arbiter routes rollback {route}`"
            )
        model = RouteModel(self.catalog, route)
        model.request_abort(reason)
        model.withdraw_challenger()
        try:
            with route_lock(self.catalog.settings.home, route, purpose="abort"):
                self._enter(state, "rolled_back", outcome={"reasons": [reason], "by": "abort"})
        except ConflictError:
            pass  # a live runner holds the route: it sees the request at its next check
        return self.status(route)

    # --- the state machine ---------------------------------------------------------------------

    def check_request(self, route: str, candidate_ref: str) -> RolloutState | None:
        """Refuse a promotion that cannot start, changing nothing (the CLI calls this before Prefect
        starts). Returns the unfinished rollout of this candidate that a run would resume, if any."""
        state = _state_of(self._view(route))
        if state is not None and state.phase == "done" and state.candidate == candidate_ref:
            champion = self.routes.show(route).champion
            if champion is not None and f"{champion.model}/{champion.version}" == candidate_ref:
                return state  # run again after it finished (or was killed finishing): nothing left to do
        if state is not None and not state.terminal:
            if state.candidate != candidate_ref:
                raise ConflictError(
                    f"route {route!r} has an unfinished rollout of {state.candidate} (phase {state.phase}, "
                    f"step {state.step}); resume it with `arbiter routes promote {route} --candidate {state.candidate}` "
                    f"or stop it with `arbiter routes abort {route}`"
                )
            return state
        candidate = self.catalog.get_ref(candidate_ref)
        current = self.routes.show(route)
        if current.champion is None:
            raise PromotionError(
                f"route {route!r} has no champion to compare with; make one with "
                f"`arbiter routes promote {route} --model {candidate.name} --version {candidate.version}`"
            )
        champion = self.catalog.get(current.champion.model, current.champion.version)
        _check_candidate(route, candidate, champion, TaskCatalog(self.catalog.settings).contract(route))
        return None

    def _begin(self, route: str, candidate_ref: str, policy: RolloutPolicy) -> RolloutState:
        last = _state_of(self._view(route))
        if last is not None and last.terminal:
            self._converge(last)  # a kill inside its last transition: finish that first
        unfinished = self.check_request(route, candidate_ref)
        if unfinished is not None:
            self._converge(unfinished)  # resume: whatever a killed run left half done is finished
            return unfinished
        candidate = self.catalog.get_ref(candidate_ref)
        champion = self.routes.champion(route)
        if self._view(route).abort is not None:  # left over from an earlier rollout
            RouteModel(self.catalog, route).clear_abort()
        state = RolloutState(
            id=new_id()[:12], route=route, candidate=candidate.ref, champion=champion.ref, phase="benchmark",
            policy=policy.model_dump(mode="json"), started_at=self._clock(),
        )
        return self._enter(state, "benchmark")

    def _run(self, state: RolloutState) -> RolloutState:
        while not state.terminal:
            view = self._view(state.route)
            if view.abort is not None and state.phase != "promoting":  # past every step: it finishes
                state = self._enter(state, "rolled_back", outcome={"reasons": [view.abort], "by": "abort"})
                break
            state = _state_of(view) or state
            if state.terminal:
                break
            state = self._step(state)
        return state

    def _step(self, state: RolloutState) -> RolloutState:
        policy = RolloutPolicy(**state.policy)
        candidate = self.catalog.get_ref(state.candidate)
        champion = self.catalog.get_ref(state.champion)
        if state.phase == "benchmark":
            # The candidate is warmed up and benchmarked by this rollout (a rerun after a kill keeps a
            # run it already made); the champion only when it has no run on this hardware.
            for record, since in ((candidate, state.started_at), (champion, None)):
                if not self._has_run(state.route, record, since):
                    self._benchmark(record, state.route, policy.benchmark_limit)
            return self._enter(state, "compatibility")
        if state.phase == "compatibility":
            verdict = self._compatibility(state.route, champion, candidate)
            outcome = {"compatibility": verdict.as_json()}
            if verdict.can_replace or policy.force:
                first = "shadow" if policy.shadow else "ramp"
                return self._enter(state, first, step=0, step_started_at=self._clock(), outcome=outcome)
            return self._enter(state, "refused", outcome={**outcome, "reasons": verdict.reasons})
        if state.judged:
            return self._check(state, policy)
        if state.phase == "promoting":
            return self._enter(state, "done")
        raise PromotionError(f"route {state.route!r}: unknown rollout phase {state.phase!r} in its {TAG_ROLLOUT} tag")

    def _has_run(self, task: str, record: VersionRecord, since: float | None) -> bool:
        """A run on this hardware (made since ``since``), on the task's current version when the route is a task."""
        found = TaskCatalog(self.catalog.settings).find(task)
        current = found.version if found is not None else None
        run = self.store.latest_run(task, record.name, record.version, self._hardware_id, current)
        if run is None or run["hardware_id"] != self._hardware_id:
            return False
        return since is None or run["ts"].timestamp() >= since

    def _warm_failures(self, state: RolloutState) -> list[str]:
        """The gateway's reports that the challenger could not be loaded during this step."""
        model, _, version = state.candidate.partition("/")
        rows = self.store.query(
            "select detail from events where kind = 'challenger.failed' and route = $1 and model = $2 "
            "and version = $3 and ts >= $4 order by ts",
            [state.route, model, int(version), datetime.fromtimestamp(state.step_started_at or state.started_at, UTC)],
        )
        return [json.loads(row["detail"]).get("error", "unknown error") for row in rows]

    def _check(self, state: RolloutState, policy: RolloutPolicy) -> RolloutState:
        now = self._clock()
        reading = time.perf_counter()
        assert state.step_started_at is not None
        failures = self._warm_failures(state)
        if failures:  # it takes no share while it cannot load: waiting for samples would wait forever
            reasons = [f"the gateway could not load {state.candidate}: {failures[-1]}"]
            return self._enter(state, "rolled_back", outcome={"reasons": reasons})
        # One test over the whole rollout: every step adds to the evidence, so a regression too small
        # to show in one step still shows by the last, and a step's end is never a fresh coin toss.
        so_far = evidence(self.store, state.route, since=state.started_at)
        figures = live_figures(self.store, state.route, since=state.step_started_at)
        champion, champion_figures = so_far.get(state.champion), figures.get(state.champion)
        if champion is None or champion.n < policy.min_samples:  # a rollout that began at 100 %: none since
            since = state.started_at - policy.step_seconds
            champion = evidence(self.store, state.route, since=since).get(state.champion)
        if champion_figures is None or champion_figures.n < policy.min_samples:  # at 100 % it gets no calls in the step
            champion_figures = live_figures(self.store, state.route, since=state.started_at).get(state.champion)
        gating, diagnostic, judge = self._quality_signals(state.route)
        challenger_figures = figures.get(state.candidate)
        summary = {"champion": champion_figures.as_json() if champion_figures else None,
                   "challenger": challenger_figures.as_json() if challenger_figures else None, "judge": judge}
        check = judge_step(policy, champion, so_far.get(state.candidate), now - state.step_started_at,
                           gating=gating, diagnostic=diagnostic, paired=state.phase == "shadow", summary=summary)
        state = self._save(replace(state, last_check={"at": iso_utc(now), "step": state.step, "phase": state.phase,
                                                      **check.as_json()}))
        self._record_check(state, check.action, now)
        if check.action == "rollback":
            return self._enter(state, "rolled_back", outcome={"reasons": check.reasons, "check": check.as_json()})
        if check.action == "advance":
            if state.phase == "shadow":
                return self._enter(state, "ramp", step=0, step_started_at=now)
            if state.step + 1 < len(policy.ramp):
                return self._enter(state, "ramp", step=state.step + 1, step_started_at=now)
            return self._enter(state, "promoting")
        # A long rollout has much evidence to read (about 1 s for 150,000 calls here): the checks
        # take at most a third of a core, however long it runs.
        self._sleep(max(policy.check_every_s, 2 * (time.perf_counter() - reading)))
        return state

    def _quality_signals(self, route: str) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, Any] | None]:
        """The quality signals that gate this route, those only shown, and the judge's standing:
        feedback always; the scorer when the route's task declares live scorers; the judge when it
        declares live judging — gating only while the judge's calibration meets the floor."""
        task = TaskCatalog(self.catalog.settings).find(route)
        live = task.spec.live if task is not None else None
        gating: list[str] = ["feedback"]
        if live is not None and live.scorers:
            gating.insert(0, "scorer")
        if live is None or not live.judge:
            return tuple(gating), (), None
        try:
            judge = route_judge(self.catalog)
        except (NotFoundError, PromotionError) as exc:
            return tuple(gating), ("judge",), {"allowed": False, "reason": str(exc)}
        standing = JudgeGate.from_settings(self.catalog.settings, self.store).standing(judge.name, judge.version)
        if standing.allowed:
            return (*gating, "judge"), (), standing.as_json()
        return tuple(gating), ("judge",), standing.as_json()

    def _record_check(self, state: RolloutState, action: str, now: float) -> None:
        """A check's verdict as a ``check.rollout`` event (``rollout.*`` are the phases) — the evidence over time that
        notebooks/rollout.ipynb plots: each decision, and a hold at most every ``CHECK_EVENT_EVERY_S``
        (a rollout of hours checked every 5 s would otherwise write thousands of rows)."""
        key = (state.id, state.phase, state.step)
        if action == "hold" and now - self._checks_recorded.get(key, -math.inf) < CHECK_EVENT_EVERY_S:
            return
        self._checks_recorded = {key: now}  # only the current step's: bounded whatever the rollout's length
        model, _, version = state.candidate.partition("/")
        detail = {"rollout": state.id, "phase": state.phase, "step": state.step, "share": state.share,
                  **(state.last_check or {})}
        self.store.append("events", [event_row("check.rollout", route=state.route, model=model, version=int(version),
                                               detail=detail)])

    def _enter(self, state: RolloutState, phase: str, **changes: Any) -> RolloutState:
        """Write the new state, apply its effects, record its event — in that order. A rollback
        withdraws the challenger first: withdrawing is always safe, and a kill right after the
        state is written must not leave a judged-bad candidate taking traffic."""
        if phase in ("rolled_back", "refused"):
            RouteModel(self.catalog, state.route).withdraw_challenger()
        new = self._save(replace(state, phase=phase, **changes))
        self._converge(new)
        if self._on_phase is not None:
            self._on_phase(new)
        return new

    def _converge(self, state: RolloutState) -> None:
        """Apply the effects of ``state``'s phase and record its event (both idempotent)."""
        model = RouteModel(self.catalog, state.route)
        if state.phase in ("benchmark", "compatibility", "shadow", "ramp"):
            if self._view(state.route).abort is not None:
                return  # an abort landed meanwhile: never hand the challenger its share back
            candidate = self.catalog.get_ref(state.candidate)
            model.offer_challenger(model.copy_of(candidate), state.share, shadow=state.phase == "shadow")
        elif state.phase in ("promoting", "done"):  # the share is still 100 until the alias has moved
            candidate = self.catalog.get_ref(state.candidate)
            self.routes.promote(state.route, candidate.name, candidate.version, force=True, rollout_id=state.id)
            model.withdraw_challenger()
        else:  # rolled_back, refused
            model.withdraw_challenger()
        if state.terminal and self._view(state.route).abort is not None:
            model.clear_abort()
        self._record_event(state)

    def _record_event(self, state: RolloutState) -> None:
        event_id = f"{state.id}:{state.phase}:{state.step}"
        if self.store.query("select 1 from events where event_id = $1 limit 1", [event_id]):
            return
        model, _, version = state.candidate.partition("/")
        detail = {"rollout": state.id, "candidate": state.candidate, "champion": state.champion,
                  "step": state.step, "share": state.share, **state.outcome}
        if state.judged and (state.step > 0 or state.phase == "ramp") and state.last_check is not None:
            detail["last_check"] = state.last_check
        self.store.append("events", [event_row(_EVENT_KIND[state.phase], route=state.route, model=model,
                                               version=int(version), detail=detail, event_id=event_id)])

    def _save(self, state: RolloutState) -> RolloutState:
        RouteModel(self.catalog, state.route).save_rollout(state.to_tag())
        return state

    def _view(self, route: str) -> RouteView:
        view = RouteModel(self.catalog, route).read()
        if view is None:
            known = ", ".join(self.routes.list()) or "none yet"
            raise NotFoundError(f"unknown route {route!r} (routes: {known}); create it with `arbiter routes promote {route} --model NAME --version N`")
        return view


def _check_candidate(route: str, candidate: VersionRecord, champion: VersionRecord, contract: TaskContract | None) -> None:
    """Refuse what no benchmark could make right; ``contract`` is the route's task's (None: no task)."""
    if candidate.ref == champion.ref:
        raise PromotionError(f"{candidate.ref} is already the champion of route {route!r}")
    if candidate.status == Status.DEPRECATED:
        raise PromotionError(f"{candidate.ref} is deprecated; activate it first with `arbiter models activate {candidate.ref}`")
    missing = sorted(set(champion.spec.capabilities) - set(candidate.spec.capabilities))
    if missing and keeps_champion_capabilities(champion, candidate, contract):
        raise PromotionError(
            f"{candidate.ref} lacks the route's capabilities {missing} (the champion {champion.ref} has "
            f"{list(champion.spec.capabilities)}); pick a candidate that has them"
        )
    refused = contract.cannot_serve(candidate) if contract is not None else None
    if refused:
        raise PromotionError(f"{refused}; pick a candidate that can serve route {route!r}")


def _state_of(view: RouteView) -> RolloutState | None:
    rollout = view.rollout
    return RolloutState(**rollout) if rollout is not None else None


def benchmark_alone(catalog: Catalog, record: VersionRecord, task: str, limit: int | None) -> dict[str, Any]:
    """Benchmark one version on the route's task in a pool of its own and record it: a promotion
    runs outside the gateway, so the model is loaded for this and unloaded when it ends. The
    promote flow runs this as its Prefect task; without Prefect the rollout calls it directly."""
    task_version = TaskCatalog(catalog.settings).get(task)
    with WarmPool(catalog.settings) as pool:
        return benchmark_and_record(catalog, pool, record, task_version, limit=limit)


def _default_compatibility(catalog: Catalog) -> CompatibilityCheck:
    def check(task: str, current: VersionRecord, candidate: VersionRecord) -> Compatible:
        profiles = ProfileCache(catalog.store, max_age_s=0.0)
        contract = TaskCatalog(catalog.settings).contract(task)
        return check_compatibility(task, current, candidate, profiles, fingerprint().hardware_id, contract=contract)

    return check
