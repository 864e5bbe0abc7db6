"""Quality-gated swaps, measured through the real gateway (issue 16, "Measure it"): does a rollout
roll back a challenger that answers as fast but worse, promote an identical twin, leave the
champion's latency alone while a shadow challenger answers copies, and keep an uncalibrated judge
from gating?

One ARBITER_HOME, one ``arbiter serve`` subprocess (``--no-webhook``: it follows MLflow by polling)
and this process as the applications and the person running rollouts. The shipped models: route
``extract``'s champion is SmolLM2 135M Q4_1 (``smollm2-135m/1``); ``smollm2-135m/2`` is its Q4_0
derived with llama.cpp's quantizer (as ``make demo`` does: 0.64 vs 0.83 quality on ``extract`` in
the demo's benchmark, about the same speed); ``smollm2-twin/1`` is the Q4_1 file registered under
another name. Clients send the ``extract`` task's validation items rendered with its prompt
template (the few-shot example included), read each answer's ``x-arbiter-call-id`` and post the
task's *reference* score of that answer (an application that knows the right answer) to
``POST /arbiter/feedback`` with ``source = "reference-app"``; the gateway's live scorer adds its
reference-free ``scorer`` row to every answer by itself.

Scenarios (``--scenarios``, default all four, run in this order):

* **regression** — ``Rollout.promote("extract", "smollm2-135m/2", force=True)`` (the compatibility
  check refuses it on its benchmark quality; ``force`` is what a hurried person does) under
  ``--clients`` clients asking back to back. Figures: the outcome and its reasons, challenger
  answers (its ``calls`` rows from the ramp's start to the rollback) and the feedback it had at the
  decision, seconds from the ramp's start to the rollback, client requests that failed (goal 0).
* **twin** — ``--twin-runs`` rollouts of an identical file, alternating: the twin over the Q4_1
  champion, then the Q4_1 back over the twin (each a full rollout to ``done``), short steps (the
  twin advances on time when the evidence is undecided). Figures: runs promoted (goal: all), each
  run's phase durations, the reasons of any rollback.
* **shadow** — off/on/off/on phases (``--shadow-phases``) of ``--shadow-requests`` user requests each
  from ``--shadow-clients`` clients that wait ``--think-s`` (a seeded uniform range) between
  requests; "on" is route ``extract`` with the Q4_0 as a shadow challenger (share 0, copies only:
  ``RouteModel.offer_challenger(..., 0, shadow=True)``, what a rollout's shadow step applies),
  "off" has no challenger. Figures: the champion's client-side p50/p95 latency on and off and their
  ratio (goal ≤ 1.10×), the copies offered/answered/dropped/stale/preempted (from ``/health``) and
  the share not answered.
* **judge** — route ``summarize`` (judged on faithfulness, relevance, minimality) with the ``judgment``
  route's champion SmolLM2 as its judge, never calibrated in this home: a rollout of the Q4_0 on
  ``summarize`` with a few client requests until a check shows the judge's standing and its live
  scores (or ``--judge-deadline-s``), then ``abort``. Figures: whether the judge gated, its standing,
  its scores' counts, and the signals that did gate.

A measurement, not a test: exits 0 whatever the figures, 1 when a set-up step fails.

    .venv/bin/python benchmarks/quality_gate.py --scenarios regression,shadow
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import harness

DEFAULT_OUT = harness.RESULTS_DIR / "quality_gate.json"
SCENARIOS = ("regression", "shadow", "twin", "judge")
EXTRACT, SUMMARIZE, JUDGMENT = "extract", "summarize", "judgment"
CHAMPION_NAME, TWIN_NAME = harness.MODEL_NAME, "smollm2-twin"
FEEDBACK_SOURCE = "reference-app"
GOAL_CLIENT_FAILURES = 0
GOAL_SHADOW_RATIO = 1.10
SEED = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, run in this order: {', '.join(SCENARIOS)} (default all)")
    parser.add_argument("--clients", type=int, default=2, help="clients asking back to back in regression and twin (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per instance (default 1)")
    parser.add_argument("--ramp", default="50,100", help="challenger shares of the rollouts, per cent (default 50,100)")
    parser.add_argument("--check-every-s", type=float, default=1.0, help="check_every_s of every rollout (default 1)")
    parser.add_argument("--benchmark-limit", type=int, default=2,
                        help="validation items the rollout benchmarks the candidate on (default 2: the live gate is "
                             "measured here, not the offline check)")
    parser.add_argument("--regression-step-s", type=float, default=600.0,
                        help="step_seconds of the regression rollout (default 600: the 50 %% step must last until the "
                             "test has ~100 scored calls a side; at 100 %% the champion's evidence stops growing)")
    parser.add_argument("--regression-min-samples", type=int, default=10, help="min_samples of the regression rollout (default 10)")
    parser.add_argument("--twin-runs", type=int, default=10, help="identical-twin rollouts (default 10)")
    parser.add_argument("--twin-step-s", type=float, default=10.0, help="step_seconds of each twin rollout (default 10)")
    parser.add_argument("--twin-min-samples", type=int, default=5, help="min_samples of each twin rollout (default 5)")
    parser.add_argument("--shadow-requests", type=int, default=20, help="user requests per shadow phase (default 20)")
    parser.add_argument("--shadow-phases", default="off,on,off,on", help="the shadow phases in order (default off,on,off,on)")
    parser.add_argument("--shadow-clients", type=int, default=1, help="clients in the shadow phases (default 1)")
    parser.add_argument("--think-s", default="0.5,1.0", help="think time between a shadow client's requests, "
                                                             "uniform MIN,MAX seconds (default 0.5,1.0)")
    parser.add_argument("--judge-min-samples", type=int, default=3, help="min_samples of the judge rollout (default 3)")
    parser.add_argument("--judge-deadline-s", type=float, default=150.0,
                        help="the judge rollout is aborted this long after its ramp began at the latest (default 150)")
    parser.add_argument("--deadline-s", type=float, default=900.0,
                        help="any rollout still running this long after it was called is aborted (default 900)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON output (default {DEFAULT_OUT.relative_to(harness.REPO)})")
    parser.add_argument("--home", type=Path, default=None, help="ARBITER_HOME to use and keep (default: a temporary one)")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown or not args.scenarios:
        parser.error(f"--scenarios: {', '.join(unknown) or 'none given'}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = [s for s in SCENARIOS if s in args.scenarios]
    if min(args.clients, args.threads, args.shadow_clients, args.shadow_requests, args.twin_runs) < 1:
        parser.error("--clients, --threads, --shadow-clients, --shadow-requests and --twin-runs must be at least 1")
    args.shadow_phases = [p.strip() for p in args.shadow_phases.split(",") if p.strip()]
    if set(args.shadow_phases) != {"on", "off"}:
        parser.error("--shadow-phases: a sequence of on and off with both in it, e.g. off,on,off,on")
    try:
        low, high = (float(x) for x in args.think_s.split(","))
    except ValueError:
        parser.error("--think-s: MIN,MAX seconds, e.g. 0.5,1.0")
    if not 0 <= low <= high:
        parser.error("--think-s: 0 <= MIN <= MAX")
    args.think = (low, high)
    from registry.errors import PromotionError
    from registry.rollout.policy import RolloutPolicy

    try:
        common = {"ramp": args.ramp, "check_every_s": args.check_every_s, "benchmark_limit": args.benchmark_limit}
        args.regression_policy = RolloutPolicy.parse(**common, step_seconds=args.regression_step_s,
                                                     min_samples=args.regression_min_samples, force=True)
        args.twin_policy = RolloutPolicy.parse(**common, step_seconds=args.twin_step_s, min_samples=args.twin_min_samples)
        args.judge_policy = RolloutPolicy.parse(ramp=args.ramp, check_every_s=args.check_every_s, benchmark_limit=1,
                                                step_seconds=max(args.judge_deadline_s * 4, 600.0),
                                                min_samples=args.judge_min_samples, force=True)
    except PromotionError as exc:
        parser.error(str(exc))
    return args


# --- set-up ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cast:
    """The versions: the Q4_1 champion, its Q4_0 and the twin (the Q4_1 under another name)."""

    champion: Any
    q4_0: Any
    twin: Any


def set_up(settings: Any, scenarios: list[str]) -> Cast:
    """Register the three versions and make the champion the champion of every route used (and the
    judge); benchmark it once on each route's task before any load, as a rollout would when it
    finds no run (its tokens/s is the speed test's scale). Idempotent over a kept ``--home``."""
    from registry.catalog.routes import Routes
    from registry.catalog.shipped import derive_q4_0, smollm2_path
    from registry.catalog.versions import Catalog

    catalog = Catalog(settings)
    q4_1 = smollm2_path()
    q4_0 = derive_q4_0(q4_1, settings.models_dir / "SmolLM2-135M-Instruct.Q4_0.gguf", settings.n_threads)
    derived = {"derived": "llama.cpp llama_model_quantize → Q4_0, token embedding Q4_0"}
    champion, _ = catalog.register(q4_1, name=CHAMPION_NAME, capabilities=harness.CAPABILITIES)
    weaker, _ = catalog.register(q4_0, name=CHAMPION_NAME, capabilities=harness.CAPABILITIES, provenance=derived)
    twin, _ = catalog.register(q4_1, name=TWIN_NAME, capabilities=harness.CAPABILITIES,
                               provenance={"twin_of": champion.ref})
    routes = Routes(catalog)
    used = [EXTRACT] if set(scenarios) - {"judge"} else []
    if "judge" in scenarios:
        used += [JUDGMENT, SUMMARIZE]
    for route in used:
        current = routes.show(route).champion if route in routes.list() else None
        if current is None or (current.model, current.version) != (champion.name, champion.version):
            routes.promote(route, champion.name, champion.version, force=True)
    benchmark_once(catalog, champion, [r for r in used if r != JUDGMENT])
    return Cast(champion, weaker, twin)


def benchmark_once(catalog: Any, record: Any, tasks: list[str]) -> None:
    from registry.evaluation.benchmark import benchmark_and_record
    from registry.evaluation.tasks import TaskCatalog
    from registry.machine.hardware import fingerprint
    from registry.serving.pool import WarmPool

    hardware = fingerprint().hardware_id
    todo = [t for t in tasks if catalog.store.latest_run(t, record.name, record.version, hardware) is None]
    if not todo:
        return
    with WarmPool(catalog.settings) as pool:
        for task in todo:
            limit = 1 if task == SUMMARIZE else 5  # a judged item costs three judge generations
            benchmark_and_record(catalog, pool, record, TaskCatalog(catalog.settings).get(task), limit=limit)


# --- the applications ---------------------------------------------------------------------------


@dataclass
class Request:
    client: int
    item: str
    start: float  # wall clock: the gateway's rows use it too
    end: float
    status: int | None
    error: str | None
    model: str | None  # x-arbiter-model: the version that answered
    call_id: str | None
    reference_score: float | None = None
    feedback_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def latency_s(self) -> float:
        return self.end - self.start


class App:
    """An application on one route: sends the task's items rendered with its template, and posts the
    reference scorer's score of each answer as feedback (``feedback`` False: it only asks)."""

    def __init__(self, url: str, task: Any, *, feedback: bool = True) -> None:
        self.url = url
        self.task = task
        self.feedback = feedback
        generation = task.spec.generation
        self.options: dict[str, Any] = {"num_predict": generation.max_tokens, "temperature": generation.temperature}
        if generation.stop:
            self.options["stop"] = list(generation.stop)

    def ask(self, client: Any, index: int, item: Any) -> Request:
        messages = self.task.messages(item)
        body = {"model": self.task.name, "stream": False, "options": self.options, "messages": list(messages)}
        started = time.time()
        status, error, model, call_id, answer = None, None, None, None, ""
        try:
            response = client.post("/api/chat", json=body)
            status = response.status_code
            if status == 200:
                model = response.headers.get("x-arbiter-model")
                call_id = response.headers.get("x-arbiter-call-id")
                answer = response.json()["message"]["content"]
            else:
                error = f"HTTP {status}: {response.text[:200]}"
        except Exception as exc:  # noqa: BLE001 — any failure is a result to count, not a crash
            error = f"{type(exc).__name__}: {exc}"
        request = Request(index, item.id, started, time.time(), status, error, model, call_id)
        if request.ok and self.feedback and call_id:
            request.reference_score = self.task.score(item, messages, answer).quality
            if request.reference_score is not None:
                posted = client.post("/arbiter/feedback", json={
                    "call_id": call_id, "score": request.reference_score, "source": FEEDBACK_SOURCE})
                request.feedback_status = posted.status_code
        return request

    def loop(self, index: int, stop: threading.Event, out: list[Request], *, count: int | None = None,
             think: tuple[float, float] = (0.0, 0.0)) -> None:
        """Ask until ``stop`` (or ``count`` requests), items in a seeded order, ``think`` seconds apart."""
        import httpx

        rng = random.Random(SEED * 100 + index)
        items = list(self.task.items)
        with httpx.Client(base_url=self.url, timeout=180, trust_env=False) as client:
            sent = 0
            while not stop.is_set() and (count is None or sent < count):
                if sent % len(items) == 0:
                    rng.shuffle(items)
                request = self.ask(client, index, items[sent % len(items)])
                out.append(request)
                sent += 1
                pause = rng.uniform(*think) if think[1] > 0 else (0.2 if not request.ok else 0.0)
                if pause:
                    stop.wait(pause)


@contextlib.contextmanager
def load(app: App, clients: int, **loop: Any):
    """``clients`` threads asking until the block ends; yields their requests (filled as they go)."""
    stop = threading.Event()
    out: list[Request] = []
    threads = [threading.Thread(target=app.loop, args=(i, stop, out), kwargs=loop, name=f"client-{i}", daemon=True)
               for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield out, threads
    finally:
        stop.set()
        deadline = time.monotonic() + 120
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


# --- rollouts -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One rollout as this process saw it, wall clock."""

    candidate: str
    phases: list[dict[str, Any]] = field(default_factory=list)
    state: Any = None
    called_at: float = 0.0
    returned_at: float = 0.0

    def at(self, phase: str, step: int | None = None) -> float | None:
        return next((p["at"] for p in self.phases if p["phase"] == phase and (step is None or p["step"] == step)), None)


def rollout(settings: Any, route: str, candidate: str, policy: Any, deadline_s: float,
            watch: Any = None) -> Run:
    """``Rollout.promote`` here, as ``arbiter routes promote --candidate`` runs it; aborted past the
    deadline, or when ``watch(rollout, run)`` (called every second in a thread) returns a reason."""
    from registry.catalog.versions import Catalog
    from registry.rollout.promotion import Rollout

    run = Run(candidate)
    done = threading.Event()

    def on_phase(state: Any) -> None:
        check = state.last_check or {}
        run.phases.append({"phase": state.phase, "step": state.step, "share": state.share, "at": time.time(),
                           "after_check": check.get("reasons") if check.get("action") == "advance" else None})

    def guard() -> None:
        runner = Rollout(Catalog(settings))
        while not done.wait(1.0):
            reason = watch(runner, run) if watch is not None else None
            if reason is None and time.time() - run.called_at > deadline_s:
                reason = f"benchmark deadline ({deadline_s:g} s) passed"
            if reason is not None:
                with contextlib.suppress(Exception):
                    runner.abort(route, reason)
                return

    run.called_at = time.time()
    watcher = threading.Thread(target=guard, name="rollout-guard", daemon=True)
    watcher.start()
    try:
        run.state = Rollout(Catalog(settings), on_phase=on_phase).promote(route, candidate, policy)
    finally:
        done.set()
        run.returned_at = time.time()
        watcher.join(timeout=30)
    return run


def durations(run: Run) -> dict[str, float]:
    """Seconds spent in each phase (a ramp step by its share), from the phase callbacks."""
    out: dict[str, float] = {}
    marks = run.phases + [{"phase": "end", "step": 0, "share": 0, "at": run.returned_at}]
    for here, after in zip(marks, marks[1:], strict=False):
        if here["phase"] in ("done", "rolled_back", "refused"):
            break
        name = f"ramp_{here['share']}" if here["phase"] == "ramp" else here["phase"]
        out[name] = round(out.get(name, 0.0) + after["at"] - here["at"], 2)
    return out


# --- scenarios ------------------------------------------------------------------------------------


def regression(settings: Any, cast: Cast, url: str, args: argparse.Namespace) -> dict[str, Any]:
    from registry.evaluation.tasks import TaskCatalog

    restore(settings, cast.champion)
    app = App(url, TaskCatalog(settings).get(EXTRACT))
    with load(app, args.clients) as (requests, _):
        time.sleep(3.0)  # the clients' first answers before the rollout starts
        run = rollout(settings, EXTRACT, cast.q4_0.ref, args.regression_policy, args.deadline_s)
        time.sleep(2.0)
    return {"run": run, "requests": list(requests)}


def twin(settings: Any, cast: Cast, url: str, args: argparse.Namespace) -> dict[str, Any]:
    from registry.evaluation.tasks import TaskCatalog

    restore(settings, cast.champion)
    app = App(url, TaskCatalog(settings).get(EXTRACT))
    runs: list[Run] = []
    with load(app, args.clients) as (requests, _):
        time.sleep(2.0)
        for _ in range(args.twin_runs):
            # the twin over the Q4_1, then the Q4_1 back over the twin: each a full rollout of an identical file
            candidate = cast.twin if champion_of(settings) == cast.champion.ref else cast.champion
            runs.append(rollout(settings, EXTRACT, candidate.ref, args.twin_policy, args.deadline_s))
        time.sleep(1.0)
    restore(settings, cast.champion)  # leave the Q4_1 champion for the scenarios after this one
    return {"runs": runs, "requests": list(requests)}


def champion_of(settings: Any) -> str | None:
    from registry.catalog.routes import Routes
    from registry.catalog.versions import Catalog

    current = Routes(Catalog(settings)).show(EXTRACT).champion
    return None if current is None else f"{current.model}/{current.version}"


def restore(settings: Any, champion: Any) -> None:
    """Route ``extract`` back on the Q4_1 champion (an earlier scenario may have promoted another)."""
    from registry.catalog.routes import Routes
    from registry.catalog.versions import Catalog

    if champion_of(settings) != champion.ref:
        Routes(Catalog(settings)).promote(EXTRACT, champion.name, champion.version, force=True)
        time.sleep(2.0)  # the gateway polls the alias every second


def shadow(settings: Any, cast: Cast, url: str, args: argparse.Namespace) -> dict[str, Any]:
    from registry.catalog.route_model import RouteModel
    from registry.catalog.versions import Catalog
    from registry.evaluation.tasks import TaskCatalog

    restore(settings, cast.champion)
    model = RouteModel(Catalog(settings), EXTRACT)
    app = App(url, TaskCatalog(settings).get(EXTRACT))
    phases: list[dict[str, Any]] = []
    model.withdraw_challenger()
    app.loop(-1, threading.Event(), [], count=3, think=args.think)  # warm-up, left out: the first phase starts warm
    try:
        for index, phase in enumerate(args.shadow_phases):
            if phase == "on":
                model.offer_challenger(model.copy_of(cast.q4_0), 0, shadow=True)
                warm_s = wait_for_shadow(url, app)
            else:
                model.withdraw_challenger()
                time.sleep(3.0)  # the gateway polls the route's tags every second
                warm_s = None
            before = health(url)["shadow"]
            stop = threading.Event()
            out: list[Request] = []
            per_client = -(-args.shadow_requests // args.shadow_clients)
            threads = [threading.Thread(target=app.loop, args=(index * 10 + c, stop, out),
                                        kwargs={"count": per_client, "think": args.think}, daemon=True)
                       for c in range(args.shadow_clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            time.sleep(max(args.think))  # a copy offered by the last answer gets its idle moment
            after = health(url)["shadow"]
            phases.append({"phase": phase, "requests": out, "warm_s": warm_s,
                           "copies": {k: after.get(k, 0) - before.get(k, 0) for k in after}})
    finally:
        with contextlib.suppress(Exception):
            model.withdraw_challenger()
    time.sleep(2.0)  # the gateway drops the shadow challenger before the next scenario
    return {"phases": phases}


def health(url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(url + "/health", timeout=10, trust_env=False).json()


def wait_for_shadow(url: str, app: App, timeout_s: float = 120.0) -> float:
    """Until the shadow challenger has answered a copy (it is warmed first, then pinned): a few
    requests with pauses, left out of the figures. Returns how long it took."""
    import httpx

    began = time.time()
    first = health(url)["shadow"].get("answered", 0)
    with httpx.Client(base_url=url, timeout=180, trust_env=False) as client:
        for n in range(1000):
            if health(url)["shadow"].get("answered", 0) > first:
                return round(time.time() - began, 1)
            if time.time() - began > timeout_s:
                raise harness.BenchmarkError(f"the shadow challenger answered no copy within {timeout_s:g} s; "
                                             f"/health: {health(url)}")
            app.ask(client, -1, app.task.items[n % len(app.task.items)])
            time.sleep(2.0)
    return round(time.time() - began, 1)


def judge(settings: Any, cast: Cast, url: str, args: argparse.Namespace) -> dict[str, Any]:
    from registry.evaluation.tasks import TaskCatalog

    # Summaries have no reference: the application only asks; the judge and the rollout do the rest.
    app = App(url, TaskCatalog(settings).get(SUMMARIZE), feedback=False)
    seen: list[dict[str, Any]] = []

    def watch(runner: Any, run: Run) -> str | None:
        state = (runner.status(SUMMARIZE).get("rollout") or {})
        check = state.get("last_check") or {}
        judged = (check.get("figures") or {}).get("signals", {}).get("quality:judge")
        if judged is not None:
            seen.append({"at": time.time(), "judge": check["figures"].get("judge"), "test": judged})
            both = (judged.get("n_champion") or 0) > 0 and (judged.get("n_challenger") or 0) > 0
            if both or judged.get("failed_champion") or judged.get("failed_challenger"):
                return "benchmark: the judge's standing and live scores are shown; stopped here"
        ramp_at = run.at("ramp")
        if ramp_at is not None and time.time() - ramp_at > args.judge_deadline_s:
            return f"benchmark: judge deadline ({args.judge_deadline_s:g} s into the ramp) passed"
        return None

    with load(app, 1, think=(1.0, 1.0)) as (requests, _):
        run = rollout(settings, SUMMARIZE, cast.q4_0.ref, args.judge_policy, args.deadline_s, watch=watch)
    return {"run": run, "requests": list(requests), "checks_seen": len(seen), "health": health(url)}


# --- figures --------------------------------------------------------------------------------------


def calls_of(store: Any, route: str, ref: str, start: float, end: float | None, source: str = "gateway") -> dict[str, int]:
    from datetime import UTC, datetime

    rows = store.query(
        "select ok from calls where source = $1 and route = $2 and model || '/' || version = $3 and ts >= $4 "
        "and ts <= $5", [source, route, ref, datetime.fromtimestamp(start, UTC),
                         datetime.fromtimestamp(end if end is not None else time.time() + 3600, UTC)])
    return {"n": len(rows), "ok": sum(1 for r in rows if r["ok"])}


def client_figures(requests: list[Request]) -> dict[str, Any]:
    failed = [r for r in requests if not r.ok]
    posted = [r for r in requests if r.feedback_status is not None]
    return {"requests": len(requests), "failed": len(failed), "first_failures": [r.error for r in failed[:5]],
            "feedback_posted": len(posted), "feedback_refused": sum(1 for r in posted if r.feedback_status != 200)}


def reference_quality(requests: list[Request]) -> dict[str, Any]:
    """Mean reference score per answering version, as the application saw it."""
    by: dict[str, list[float]] = {}
    for r in requests:
        if r.reference_score is not None and r.model:
            by.setdefault(r.model, []).append(r.reference_score)
    return {ref: {"n": len(v), "mean": round(sum(v) / len(v), 3)} for ref, v in sorted(by.items())}


def regression_figures(store: Any, cast: Cast, data: dict[str, Any]) -> dict[str, Any]:
    run: Run = data["run"]
    state = run.state
    ramp_at, end_at = run.at("ramp", 0), run.at(state.phase)
    check = (state.outcome.get("check") or {}) if state.phase == "rolled_back" else (state.last_check or {})
    signals = (check.get("figures") or {}).get("signals", {})
    reasons = state.outcome.get("reasons") or []
    return {
        "champion": cast.champion.ref, "candidate": cast.q4_0.ref,
        "outcome": {"phase": state.phase, "by": state.outcome.get("by"), "reasons": reasons,
                    "on_quality": any(r.startswith("quality:") for r in reasons)},
        "compatibility": (state.outcome.get("compatibility") or {}).get("reasons") or _compatibility(run, store),
        "ramp_to_decision_s": round(end_at - ramp_at, 1) if ramp_at and end_at else None,
        "challenger_calls_in_ramp": calls_of(store, EXTRACT, cast.q4_0.ref, ramp_at, end_at) if ramp_at else None,
        "champion_calls_in_ramp": calls_of(store, EXTRACT, cast.champion.ref, ramp_at, end_at) if ramp_at else None,
        "at_decision": {name: {k: test.get(k) for k in ("decision", "reason", "n_champion", "n_challenger", "estimate",
                                                        "interval", "failed_challenger") if k in test}
                        for name, test in signals.items()},
        "reference_quality_seen_by_clients": reference_quality(data["requests"]),
        "clients": client_figures(data["requests"]),
        "phase_s": durations(run),
    }


def _compatibility(run: Run, store: Any) -> list[str] | None:
    rows = store.query("select detail from events where kind in ('rollout.step', 'rollout.shadow', 'rollout.refused') "
                       "order by ts desc limit 50")
    for row in rows:
        detail = json.loads(row["detail"] or "{}")
        if detail.get("candidate") == run.candidate and "compatibility" in detail:
            return detail["compatibility"].get("reasons")
    return None


def twin_figures(data: dict[str, Any]) -> dict[str, Any]:
    runs: list[Run] = data["runs"]
    return {
        "runs": len(runs), "promoted": sum(1 for r in runs if r.state.phase == "done"),
        "rolled_back": [{"run": i, "candidate": r.candidate, "phase": r.state.phase, "reasons": r.state.outcome.get("reasons")}
                        for i, r in enumerate(runs) if r.state.phase != "done"],
        "each": [{"candidate": r.candidate, "phase": r.state.phase, "wall_s": round(r.returned_at - r.called_at, 1),
                  "phase_s": durations(r), "advanced_by": _advances(r)} for r in runs],
        "clients": client_figures(data["requests"]),
    }


def _advances(run: Run) -> list[str]:
    """Why each judged step advanced: early on the evidence, or on time with no regression found."""
    return [str(p["after_check"][0])[:90] for p in run.phases
            if p["phase"] in ("ramp", "promoting") and p.get("after_check")]


def shadow_figures(data: dict[str, Any]) -> dict[str, Any]:
    phases = data["phases"]
    side: dict[str, list[float]] = {"off": [], "on": []}
    copies: dict[str, int] = {}
    for phase in phases:
        side[phase["phase"]] += [r.latency_s for r in phase["requests"] if r.ok]
        if phase["phase"] == "on":
            for key, value in phase["copies"].items():
                copies[key] = copies.get(key, 0) + value
    figures = {name: {"n": len(v), "p50_s": harness.rounded(harness.percentile(v, 50), 4),
                      "p95_s": harness.rounded(harness.percentile(v, 95), 4)} for name, v in side.items()}

    def ratio(q: str) -> float | None:
        on, off = figures["on"][q], figures["off"][q]
        return round(on / off, 3) if on and off else None

    offered = copies.get("offered", 0)
    lost = sum(copies.get(k, 0) for k in ("dropped", "stale", "preempted"))
    requests = [r for p in phases for r in p["requests"]]
    return {
        "latency": figures, "ratio_p50": ratio("p50_s"), "ratio_p95": ratio("p95_s"),
        "copies": copies, "copies_lost_share": round(lost / offered, 3) if offered else None,
        "copies_answered_share": round(copies.get("answered", 0) / offered, 3) if offered else None,
        "copies_offered_while_off": sum(p["copies"].get("offered", 0) for p in phases if p["phase"] == "off"),
        "phases": [{"phase": p["phase"], "requests": len(p["requests"]), "warm_s": p["warm_s"], "copies": p["copies"],
                    "p50_s": harness.rounded(harness.percentile([r.latency_s for r in p["requests"] if r.ok], 50), 4)}
                   for p in phases],
        "answered_by": sorted({r.model for r in requests if r.model}),
        "clients": client_figures(requests),
    }


def judge_figures(data: dict[str, Any]) -> dict[str, Any]:
    run: Run = data["run"]
    state = run.state
    check = (state.outcome.get("check") or {}) if state.outcome.get("check") else (state.last_check or {})
    figures = check.get("figures") or {}
    signals = figures.get("signals", {})
    return {
        "outcome": {"phase": state.phase, "by": state.outcome.get("by"), "reasons": state.outcome.get("reasons")},
        "judge": figures.get("judge"),
        "judge_gating": (signals.get("quality:judge") or {}).get("gating"),
        "judge_test": signals.get("quality:judge"),
        "gating_signals": sorted(name for name, t in signals.items() if t.get("gating")),
        "signals": {name: {"decision": t.get("decision"), "gating": t.get("gating"), "n_champion": t.get("n_champion"),
                           "n_challenger": t.get("n_challenger")} for name, t in signals.items()},
        "last_check_reasons": check.get("reasons"),
        "checks_seen_with_judge": data["checks_seen"],
        "live_scoring": data["health"].get("live_scoring"),
        "clients": client_figures(data["requests"]),
        "phase_s": durations(run),
    }


# --- the run --------------------------------------------------------------------------------------

_RUNNERS = {"regression": regression, "twin": twin, "shadow": shadow, "judge": judge}


def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from registry.results.store import ResultsStore
    from registry.settings import get_settings

    machine = harness.machine_facts()
    began = time.time()
    settings = get_settings(home=home, n_threads=args.threads)
    cast = set_up(settings, args.scenarios)
    setup_s = time.time() - began
    raw: dict[str, Any] = {}
    walls: dict[str, float] = {}
    with harness.gateway(home, args.threads) as gateway:
        for name in args.scenarios:
            started = time.time()
            try:
                raw[name] = _RUNNERS[name](settings, cast, gateway.url, args)
            except harness.BenchmarkError:
                raise
            except Exception as exc:  # noqa: BLE001 — one scenario's failure is its result; the others still run
                raw[name] = {"error": f"{type(exc).__name__}: {exc}"}
            walls[name] = round(time.time() - started, 1)
    store = ResultsStore(settings.results_dir)  # read after the gateway stopped and flushed its rows
    figures = {"regression": partial(regression_figures, store, cast), "twin": twin_figures,
               "shadow": shadow_figures, "judge": judge_figures}
    scenarios = {name: data if "error" in data else figures[name](data) for name, data in raw.items()}
    for name, wall in walls.items():
        scenarios[name]["wall_s"] = wall
    return {
        "benchmark": "quality_gate",
        "ts": machine["ts"],
        "hardware": machine["hardware"],
        "machine": {k: v for k, v in machine.items() if k not in ("ts", "hardware")}
        | {"load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {
            "clients": args.clients, "threads": args.threads, "seed": SEED, "feedback_source": FEEDBACK_SOURCE,
            "policies": {"regression": args.regression_policy.model_dump(mode="json"),
                         "twin": args.twin_policy.model_dump(mode="json"),
                         "judge": args.judge_policy.model_dump(mode="json")},
            "twin_runs": args.twin_runs, "shadow": {"phases": args.shadow_phases, "requests": args.shadow_requests,
                                                    "clients": args.shadow_clients, "think_s": list(args.think)},
            "judge_deadline_s": args.judge_deadline_s, "deadline_s": args.deadline_s,
        },
        "goals": goals(scenarios),
        "scenarios": scenarios,
        "setup_s": round(setup_s, 1),
        "wall_s": round(time.time() - began, 1),
        "notes": NOTES,
    }


def goals(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {name: {"goal": "the scenario runs", "met": False, "error": r["error"]}
                                      for name, r in s.items() if "error" in r}
    s = {name: r for name, r in s.items() if "error" not in r}
    if "regression" in s:
        r = s["regression"]
        out["regression_rolled_back_on_quality"] = {"goal": "rolled back, a quality signal among the reasons",
                                                    "met": r["outcome"]["phase"] == "rolled_back" and r["outcome"]["on_quality"]}
        out["regression_client_failures"] = {"goal": f"== {GOAL_CLIENT_FAILURES}",
                                             "met": r["clients"]["failed"] == GOAL_CLIENT_FAILURES}
    if "twin" in s:
        out["twin_promoted"] = {"goal": "every run promoted", "met": s["twin"]["promoted"] == s["twin"]["runs"]}
    if "shadow" in s:
        worst = max((x for x in (s["shadow"]["ratio_p50"], s["shadow"]["ratio_p95"]) if x is not None), default=None)
        out["shadow_latency_ratio"] = {"goal": f"p50 and p95 on/off <= {GOAL_SHADOW_RATIO}",
                                       "met": worst is not None and worst <= GOAL_SHADOW_RATIO}
    if "judge" in s:
        out["judge_diagnostic"] = {"goal": "an uncalibrated judge does not gate",
                                   "met": s["judge"]["judge_gating"] is False}
    return out


NOTES = [
    "one ARBITER_HOME and one arbiter serve (--no-webhook, alias poll 1 s, calls flushed every 1 s) for every scenario; "
    "the rollouts run in this process (Rollout.promote, what `arbiter routes promote --candidate` runs)",
    "clients send the task's validation items rendered with its prompt template through /api/chat with the task's "
    "max_tokens and temperature; feedback = the task's reference scorer on the answer, source reference-app",
    "the rollout benchmarks the candidate itself (benchmark_limit items) before the ramp; the champion was benchmarked "
    "once before any load (5 extract items, 1 summarize item)",
    "regression: force=True ramps the Q4_0 past the compatibility check (its reasons are shown); challenger_calls_in_ramp "
    "= its gateway calls rows from the ramp's start to the rollback",
    "twin: runs alternate the twin over the Q4_1 and the Q4_1 back over the twin (identical files both ways)",
    "shadow: 'on' = share 0 with the Q4_0 as shadow challenger (RouteModel.offer_challenger(..., 0, shadow=True)); "
    "latency = client wall time of each user request; copies from /health's shadow counters, deltas over the phase",
    "judge: the judgment route's champion (SmolLM2 Q4_1) judges summarize's live answers while the route has a "
    "challenger; never calibrated in this home, so the standing says so; the rollout is aborted once a check shows "
    "judge scores on both versions (or at --judge-deadline-s)",
    "a shared 2-core machine: timings vary with anything else running (machine.load_avg_before/after)",
]


def summary_line(result: dict[str, Any], out: Path) -> str:
    parts = [f"{name} FAILED ({r['error'][:100]})" for name, r in result["scenarios"].items() if "error" in r]
    s = {name: r for name, r in result["scenarios"].items() if "error" not in r}
    if "regression" in s:
        r = s["regression"]
        calls = r["challenger_calls_in_ramp"] or {}
        verdict = "rolled back" if r["outcome"]["phase"] == "rolled_back" else f"NOT rolled back ({r['outcome']['phase']})"
        parts.append(f"regression {verdict} ({'; '.join(r['outcome']['reasons'] or [])[:140]}) after "
                     f"{calls.get('n', 'n/a')} challenger answers, {r['ramp_to_decision_s']} s from ramp start, "
                     f"{r['clients']['failed']} failed client requests of {r['clients']['requests']}")
    if "twin" in s:
        t = s["twin"]
        parts.append(f"twin promoted {t['promoted']}/{t['runs']}")
    if "shadow" in s:
        h = s["shadow"]
        parts.append(f"shadow p50 x{h['ratio_p50']} p95 x{h['ratio_p95']} (goal <= {GOAL_SHADOW_RATIO}), "
                     f"{h['copies'].get('answered', 0)}/{h['copies'].get('offered', 0)} copies answered, "
                     f"{h['copies_lost_share']} lost")
    if "judge" in s:
        j = s["judge"]
        standing = (j["judge"] or {}).get("reason")
        test = j["judge_test"] or {}
        parts.append(f"judge gating={j['judge_gating']} ({str(standing)[:70]}; "
                     f"{test.get('n_champion', test.get('pairs'))}/{test.get('n_challenger')} judged), "
                     f"gating on {','.join(j['gating_signals'])}")
    return f"quality_gate: {'; '.join(parts)} -> {harness.shown(out)}" + harness.busy_warning(result)


def main(argv: list[str] | None = None) -> int:
    return harness.run_main("quality_gate", parse_args(argv), measure, summary_line)


if __name__ == "__main__":
    sys.exit(main())
