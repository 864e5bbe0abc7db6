"""Swap under load: move route ``qa``'s champion in MLflow while clients keep asking.

How soon does every new request land on the new version, what fails, and what does latency do meanwhile?

What a person does: the gateway serves ``qa`` → SmolLM2 Q4_1 (version 1) to busy clients, and
someone moves the ``champion`` alias to the Q4_0 copy (version 2, derived by llama.cpp's quantizer
exactly as ``registry.catalog.shipped`` derives it) through MLflow's REST API — the call the MLflow UI
makes. Nothing tells the gateway: it notices by polling (``ARBITER_ALIAS_POLL_S``, default 1 s),
warms version 2, then switches.

* **Real parts**: a lean ``mlflow server`` on the same sqlite store, ``arbiter serve --no-webhook``
  as a subprocess, ``--clients`` threads each with its own ``ollama.Client``, asking back to back.
  Set-up promotes version 2 then version 1 (so both route copies exist, champion = 1), and the
  run moves the alias with ``POST /api/2.0/mlflow/registered-models/alias`` to version 2's copy.
* **Which version answered**: every client alternates streamed and whole requests. A whole answer
  carries ``x-arbiter-model`` (read by an httpx response hook on the same request); a stream has no
  such header, so its text tells: before the servers start, both versions answer every prompt once
  in this process with the gateway's settings (temperature 0, same seed and threads), and only
  prompts whose two answers differ are used. The text is also checked against the header on every
  whole answer (``identification.text_agrees_with_header``), which is what makes the text method
  trustworthy for streams.
* **Swap time** (goal ≤ 2 s): the start of the last request served by the old version among those
  that *started after* the REST call began, relative to that moment (0 when none did). Requests
  already in flight may still finish on the old version — that is correct, not late. A client
  starts a request only when its last one ends, so the moment of the switch is sampled: it lies
  between ``swap_s`` and ``switch_seen_by_s`` (the next request that reached the new version), and
  the gateway's own ``swap.done`` event, read from its ``events`` table afterwards, should too.
* **Failures** (goal 0): any exception or HTTP error a client saw, whole run.
* **Latency** (goal p99 in the swap window ≤ 1.5× steady): client wall time per request. Steady =
  started after ``--settle-s`` (the clients' first simultaneous burst) and finished before the move;
  swap window = in flight at any moment between the move and the end of the last old-version request
  (or the swap time, if later); after = started once the window closed (the new version alone).

A measurement, not a test: exits 0 when a goal is missed and says so in the JSON.

    .venv/bin/python benchmarks/swap_under_load.py --steady-s 8 --after-s 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import harness

DEFAULT_OUT = harness.RESULTS_DIR / "swap_under_load.json"
GOAL_SWAP_S = 2.0
GOAL_FAILED = 0
GOAL_P99_RATIO = 1.5
CANDIDATE_PROMPTS = (
    "Name a fruit that is yellow.",
    "What is the capital of France?",
    "Say something kind about cats.",
    "Give me a word that rhymes with blue.",
)
Q4_0_FILE = "SmolLM2-135M-Instruct.Q4_0.gguf"  # the name registry.catalog.shipped.prepare_shipped_models gives it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from registry.settings import default_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--steady-s", type=float, default=20.0, help="load before the alias moves (default 20)")
    parser.add_argument("--after-s", type=float, default=15.0, help="load after the alias moves (default 15)")
    parser.add_argument("--settle-s", type=float, default=2.0,
                        help="first seconds left out of the steady figures: every client starts at once (default 2)")
    parser.add_argument("--max-tokens", type=int, default=16, help="num_predict of every request (default 16)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="llama.cpp threads per instance (default: cores - 1, as arbiter's own default)")
    parser.add_argument("--alias-poll-s", type=float, default=None,
                        help="ARBITER_ALIAS_POLL_S for the gateway (default: its own, 1.0)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON output (default {DEFAULT_OUT.relative_to(harness.REPO)})")
    parser.add_argument("--home", type=Path, default=None, help="ARBITER_HOME to use and keep (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.threads < 1 or args.max_tokens < 1:
        parser.error("--clients, --threads and --max-tokens must be at least 1")
    if args.steady_s <= args.settle_s or args.after_s <= 0:
        parser.error("--steady-s must be longer than --settle-s, and --after-s positive")
    return args


# --- set-up ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    old: str  # catalog refs, as x-arbiter-model names them
    new: str
    new_route_version: int
    prompts: list[str]  # prompts the two versions answer differently
    answers: dict[str, dict[str, str]]  # prompt -> text -> version ref


def prepare(home: Path, threads: int, max_tokens: int) -> Setup:
    """Two versions, route ``qa`` with champion = 1 and a copy of 2, and each version's answers."""
    from registry.catalog.shipped import derive_q4_0, smollm2_path
    from registry.settings import get_settings

    settings = get_settings(home=home, n_threads=threads)
    q4_1 = smollm2_path()
    q4_0 = derive_q4_0(q4_1, settings.models_dir / Q4_0_FILE, threads)
    old = harness.register(home, q4_1)
    new = harness.register(home, q4_0, provenance={"derived": "llama.cpp llama_model_quantize -> Q4_0"})
    harness.promote(home, new.version)
    state = harness.promote(home, old.version)  # champion: old; previous: the new version's route copy
    if state.champion is None or state.champion.version != old.version or state.previous is None:
        raise harness.BenchmarkError(f"route set-up went wrong: {state.as_json()}")
    texts = {record.ref: answer_all(record, settings, max_tokens) for record in (old, new)}
    prompts = [p for p in CANDIDATE_PROMPTS if texts[old.ref][p] != texts[new.ref][p]]
    if not prompts:
        raise harness.BenchmarkError(
            f"{old.ref} and {new.ref} answer every prompt identically in {max_tokens} tokens: the text cannot tell "
            "them apart; raise --max-tokens"
        )
    answers = {p: {texts[old.ref][p]: old.ref, texts[new.ref][p]: new.ref} for p in prompts}
    return Setup(old.ref, new.ref, state.previous.route_version, prompts, answers)


def answer_all(record: Any, settings: Any, max_tokens: int) -> dict[str, str]:
    """Each candidate prompt answered by ``record`` as the gateway would (same provider and settings)."""
    from registry.providers import GenerationRequest
    from registry.providers.llamacpp import LlamaCppProvider

    provider = LlamaCppProvider(record.spec, n_threads=settings.n_threads, n_ctx=settings.n_ctx, seed=settings.seed)
    provider.load()
    try:
        return {
            prompt: provider.generate(GenerationRequest(
                messages=({"role": "user", "content": prompt},), max_tokens=max_tokens, temperature=0.0
            )).text
            for prompt in CANDIDATE_PROMPTS
        }
    finally:
        provider.unload()


# --- the load -------------------------------------------------------------------------------------


@dataclass
class Request:
    client: int
    mode: str  # stream | whole
    prompt: int
    start: float  # perf_counter
    end: float
    ok: bool
    error: str | None
    header_version: str | None  # x-arbiter-model (whole answers only)
    queue_ms: float | None  # x-arbiter-queue-ms: the wait for the instance (whole answers only)
    text_version: str | None  # from the answer's text (None: no text, or a text neither version gives)

    @property
    def version(self) -> str | None:
        return self.header_version or self.text_version

    @property
    def latency_s(self) -> float:
        return self.end - self.start


class ServedBy:
    """httpx response hook: ``x-arbiter-model`` and ``x-arbiter-queue-ms`` of this client's last response."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.queue_ms: float | None = None

    def __call__(self, response: Any) -> None:
        self.model = response.headers.get("x-arbiter-model")
        queue = response.headers.get("x-arbiter-queue-ms")
        self.queue_ms = None if queue is None else float(queue)

    def clear(self) -> None:
        self.model = self.queue_ms = None


def client_loop(index: int, url: str, setup: Setup, max_tokens: int, stop: threading.Event,
                out: list[Request]) -> None:
    """Ask back to back until ``stop``, alternating streamed and whole requests."""
    import ollama

    served_by = ServedBy()
    options = {"num_predict": max_tokens, "temperature": 0}
    with ollama.Client(host=url, timeout=180, event_hooks={"response": [served_by]}) as client:
        sent = 0
        while not stop.is_set():
            prompt = (index + sent) % len(setup.prompts)
            mode = "stream" if (index + sent) % 2 == 0 else "whole"
            served_by.clear()
            messages = [{"role": "user", "content": setup.prompts[prompt]}]
            started = time.perf_counter()
            text, error = None, None
            try:
                if mode == "stream":
                    chunks = client.chat(model=harness.ROUTE, messages=messages, options=options, stream=True)
                    text = "".join(chunk.message.content or "" for chunk in chunks)
                else:
                    text = client.chat(model=harness.ROUTE, messages=messages, options=options).message.content
            except Exception as exc:  # noqa: BLE001 — any failure is a result to count, not a crash
                error = f"{type(exc).__name__}: {exc}"[:300]
            ended = time.perf_counter()
            version = setup.answers[setup.prompts[prompt]].get(text) if text is not None else None
            out.append(Request(index, mode, prompt, started, ended, error is None, error, served_by.model,
                               served_by.queue_ms, version))
            sent += 1
            if error is not None:
                stop.wait(0.2)  # a dead gateway must not become a hot loop of failures


@dataclass(frozen=True)
class Move:
    at: float  # perf_counter when the REST call began
    wall: float  # time.time() at the same moment (the gateway's events are in wall-clock time)
    call_ms: float
    route_version: int


def move_alias(mlflow_url: str, route_version: int) -> Move:
    import httpx

    body = {"name": f"route.{harness.ROUTE}", "alias": "champion", "version": str(route_version)}
    wall, at = time.time(), time.perf_counter()
    answer = httpx.post(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias", json=body, timeout=60,
                        trust_env=False)
    call_ms = (time.perf_counter() - at) * 1000
    if answer.status_code != 200:
        raise harness.BenchmarkError(f"MLflow refused the alias move ({answer.status_code}): {answer.text[:500]}")
    return Move(at, wall, call_ms, route_version)


def drive(url: str, mlflow_url: str, setup: Setup, args: argparse.Namespace) -> tuple[list[Request], Move, float]:
    """Clients for ``steady_s``, the alias move, clients for ``after_s``; returns requests, move, load start."""
    stop = threading.Event()
    per_client: list[list[Request]] = [[] for _ in range(args.clients)]
    threads = [threading.Thread(target=client_loop, args=(i, url, setup, args.max_tokens, stop, per_client[i]),
                                name=f"client-{i}", daemon=True) for i in range(args.clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        time.sleep(args.steady_s)
        move = move_alias(mlflow_url, setup.new_route_version)
        time.sleep(max(0.0, args.after_s - (time.perf_counter() - move.at)))
    finally:
        stop.set()  # each client finishes the request it is in; a hung gateway costs at most a minute here
        deadline = time.monotonic() + 60
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return sorted((r for rs in per_client for r in rs), key=lambda r: r.start), move, began


# --- figures --------------------------------------------------------------------------------------


def swap_figures(requests: list[Request], move: Move, setup: Setup) -> dict[str, Any]:
    after = [r for r in requests if r.start >= move.at]
    old_after = [r for r in after if r.version == setup.old]
    new_any = [r for r in requests if r.version == setup.new]
    old_any = [r for r in requests if r.version == setup.old]
    swap_s = max((r.start - move.at for r in old_after), default=0.0)
    new_later = [r.start - move.at for r in after if r.version == setup.new and r.start - move.at >= swap_s]
    return {
        "swap_s": swap_s,
        # the first request after that one which reached the new version: the switch lies in between
        "switch_seen_by_s": min(new_later, default=None),
        "requests_started_after_move": len(after),
        "old_version_requests_started_after_move": len(old_after),
        "unidentified_started_after_move": sum(1 for r in after if r.ok and r.version is None),
        "first_new_version_start_s": min((r.start - move.at for r in new_any), default=None),
        "first_new_version_end_s": min((r.end - move.at for r in new_any), default=None),
        "last_old_version_end_s": max((r.end - move.at for r in old_any), default=None),
        "rest_call_ms": move.call_ms,
    }


def latency_windows(requests: list[Request], move: Move, swap: dict[str, Any], began: float,
                    settle_s: float) -> dict[str, dict[str, Any]]:
    closed = move.at + max(swap["swap_s"], swap["last_old_version_end_s"] or 0.0)
    ok = [r for r in requests if r.ok]
    windows = {
        "steady": [r for r in ok if r.start >= began + settle_s and r.end < move.at],
        "swap": [r for r in ok if r.start < closed and r.end > move.at],
        "after": [r for r in ok if r.start >= closed],
    }
    figures = {name: _latency(rs) for name, rs in windows.items()}
    figures["swap"]["window_s"] = [0.0, round(closed - move.at, 4)]
    return figures


def _latency(requests: list[Request]) -> dict[str, Any]:
    values = [r.latency_s for r in requests]
    return {
        "n": len(values),
        "p50_s": harness.rounded(harness.percentile(values, 50), 4),
        "p99_s": harness.rounded(harness.percentile(values, 99), 4),
        "max_s": harness.rounded(max(values, default=None), 4),
    }


def identification(requests: list[Request], setup: Setup) -> dict[str, Any]:
    whole = [r for r in requests if r.ok and r.header_version is not None]
    by_version: dict[str, int] = {}
    for r in requests:
        if r.ok:
            key = r.version or "unidentified"
            by_version[key] = by_version.get(key, 0) + 1
    return {
        "by_header": len(whole),
        "by_text": sum(1 for r in requests if r.ok and r.header_version is None and r.text_version is not None),
        "unidentified": by_version.get("unidentified", 0),
        "text_agrees_with_header": f"{sum(r.text_version == r.header_version for r in whole)}/{len(whole)}",
        "answers_by_version": by_version,
        "prompts_used": setup.prompts,
    }


def gateway_events(home: Path, move: Move) -> list[dict[str, Any]]:
    """The gateway's swap events (written when it stopped), timed from the alias move."""
    from registry.results.store import ResultsStore
    from registry.settings import get_settings

    rows = ResultsStore(get_settings(home=home).results_dir).query(
        "select kind, epoch_us(ts) as us, model, version, detail from events where kind like 'swap.%' order by ts"
    )
    return [{"kind": r["kind"], "at_s": round(r["us"] / 1e6 - move.wall, 4), "to": f"{r['model']}/{r['version']}",
             "detail": json.loads(r["detail"] or "{}")} for r in rows]


def failures(requests: list[Request]) -> dict[str, Any]:
    failed = [r for r in requests if not r.ok]
    kinds: dict[str, int] = {}
    for r in failed:
        kind = (r.error or "").split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"count": len(failed), "by_kind": kinds, "first": [r.error for r in failed[:10]]}


def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from registry.settings import get_settings

    machine = harness.machine_facts()
    setup = prepare(home, args.threads, args.max_tokens)
    settings = get_settings(home=home)
    extra_env = {} if args.alias_poll_s is None else {"ARBITER_ALIAS_POLL_S": str(args.alias_poll_s)}
    with contextlib.ExitStack() as servers:
        mlflow = servers.enter_context(harness.mlflow_server(settings.tracking_uri, home))
        served = servers.enter_context(harness.gateway(home, args.threads, **extra_env))
        requests, move, began = drive(served.url, mlflow.url, setup, args)
        refresh_failures = served.log_tail(100_000).count("alias refresh failed")
    swap = swap_figures(requests, move, setup)
    windows = latency_windows(requests, move, swap, began, args.settle_s)
    failed = failures(requests)
    ratio = _ratio(windows["swap"]["p99_s"], windows["steady"]["p99_s"])
    return {
        "benchmark": "swap_under_load",
        "ts": machine["ts"],
        "hardware": machine["hardware"],
        "machine": {k: v for k, v in machine.items() if k not in ("ts", "hardware")}
        | {"load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"clients": args.clients, "steady_s": args.steady_s, "after_s": args.after_s,
                     "settle_s": args.settle_s, "max_tokens": args.max_tokens, "threads": args.threads,
                     "alias_poll_s": args.alias_poll_s or get_settings(home=home).alias_poll_s,
                     "webhook": False, "replicas": 1},
        "old": setup.old,
        "new": setup.new,
        "new_route_version": setup.new_route_version,
        "swap": {k: harness.rounded(v, 4) if isinstance(v, float) else v for k, v in swap.items()},
        "failed": failed,
        "latency": windows,
        "p99_ratio_swap_vs_steady": harness.rounded(ratio, 4),
        "goals": {
            "swap_s": {"goal": f"<= {GOAL_SWAP_S}", "met": swap["swap_s"] <= GOAL_SWAP_S},
            "failed": {"goal": f"== {GOAL_FAILED}", "met": failed["count"] == GOAL_FAILED},
            "p99_ratio_swap_vs_steady": {"goal": f"<= {GOAL_P99_RATIO}",
                                         "met": ratio is not None and ratio <= GOAL_P99_RATIO},
        },
        "identification": identification(requests, setup),
        "gateway_events": gateway_events(home, move),
        "gateway_alias_refresh_failures": refresh_failures,
        "requests": [_row(r, move) for r in requests],
        "notes": NOTES,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _row(request: Request, move: Move) -> dict[str, Any]:
    row = asdict(request) | {"version": request.version}
    row["start"] = round(request.start - move.at, 4)
    row["end"] = round(request.end - move.at, 4)
    return row


NOTES = [
    "times are seconds from the moment the REST call that moved the alias began (negative: before it); "
    "requests[].start/end likewise",
    "swap.swap_s: start of the last request served by the old version among those started after the move "
    "(0.0 when none was); it includes the gateway's poll delay (up to alias_poll_s) and the new version's load. "
    "Requests start only when a client's previous one ends, so it is sampled: the gateway switched between "
    "swap_s and switch_seen_by_s (the first later request on the new version), and swap.done in gateway_events "
    "should fall in that interval",
    "gateway_events: the gateway's own swap.start / swap.done (detail.warm_ms) on the same clock (wall time)",
    "queue_ms (whole answers): the gateway's x-arbiter-queue-ms, the wait for the instance; a request that "
    "waited much longer than the others queued with it was overtaken",
    "identification: whole answers by their x-arbiter-model header, streamed ones by their text (each prompt's "
    "answer from each version, computed before the run with the gateway's settings); text_agrees_with_header "
    "checks the text method on every whole answer",
    "latency windows, client wall time of successful requests: steady = started after settle_s and finished "
    "before the move; swap = in flight at any moment of [move, window end], window end = the later of swap_s "
    "and the last old-version request's end; after = started after the window",
    "p99 over a few dozen requests is close to the maximum: compare p50 too, and repeat runs before trusting a ratio",
    "one instance per version (replicas 1): clients queue behind each other, so latency is mostly queueing; "
    "during the swap the old instance drains its queue while the new one serves, both on the same cores",
    "gateway_alias_refresh_failures counts 'alias refresh failed' lines in the gateway log (sqlite locked "
    "while MLflow's server wrote, for instance); the gateway keeps serving its last table meanwhile",
]


def summary_line(result: dict[str, Any], out: Path) -> str:
    swap, latency = result["swap"], result["latency"]
    done = next((e for e in result["gateway_events"] if e["kind"] == "swap.done"), None)
    gateway = (f"gateway swap.done at {done['at_s']:.2f} s, warm {done['detail'].get('warm_ms', 0):.0f} ms"
               if done else "no swap.done event")
    seen_by = swap["switch_seen_by_s"]
    bracket = f"switched by {seen_by:.2f} s, " if seen_by is not None else ""
    ratio = result["p99_ratio_swap_vs_steady"]
    return (
        f"swap_under_load: all new requests on {result['new']} {swap['swap_s']:.2f} s after the alias move "
        f"(goal <= {GOAL_SWAP_S:g} s; {bracket}{gateway}), {result['failed']['count']} failed of {len(result['requests'])} "
        f"(goal {GOAL_FAILED}), p99 {_s(latency['swap']['p99_s'])} in the swap window vs {_s(latency['steady']['p99_s'])} "
        f"steady = {'n/a' if ratio is None else f'{ratio:.2f}x'} (goal <= {GOAL_P99_RATIO}x); "
        f"{result['settings']['clients']} clients, poll {result['settings']['alias_poll_s']:g} s "
        f"-> {harness.shown(out)}" + harness.busy_warning(result)
    )


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def main(argv: list[str] | None = None) -> int:
    return harness.run_main("swap_under_load", parse_args(argv), measure, summary_line)


if __name__ == "__main__":
    sys.exit(main())
