"""Gateway overhead: chat through ``arbiter serve`` with the ollama client, against llama.cpp in-process.

The same requests go through a real gateway with the real ``ollama`` client, and to llama.cpp called
in this process with the same settings.

What a client pays for going through the gateway instead of embedding llama.cpp: HTTP, JSON,
routing, the pool's lease, the stream's thread hop per fragment, the calls row and metrics.

* **Gateway** (candidate): a real ``arbiter serve`` subprocess on loopback, route ``qa`` → SmolLM2
  Q4_1, asked with ``ollama.Client.chat`` (whole and ``stream=True``). A subprocess, not uvicorn in
  a thread: the client's parsing and the server's event loop must not take turns on one GIL, which
  would charge the client's own cost to the gateway (and is not how anyone runs it).
* **Direct** (baseline): ``LlamaCppProvider`` on the same file, in this process, with the same
  ``n_threads``, ``n_ctx`` and seed as the gateway (``ARBITER_N_THREADS`` is passed to both), asked
  with the same ``GenerationRequest`` the gateway builds (messages, temperature 0, ``num_predict``).
* **Pairs**: for every pair and mode (whole, stream) both paths answer the same prompt, one after the
  other, never at once (on 2 cores two generating models would measure each other); which goes
  first alternates every pair, so drift on a shared machine lands on both. Pair 0 is a warm-up and
  is discarded. Differences are taken within a pair, then the median over pairs.
* **Prompt cache**: each pair and mode has its own prompt, so no instance ever sees a prompt twice,
  and the provider calls ``reset()`` before every request anyway. At temperature 0 with one seed
  both paths must produce the same text: ``texts_match`` checks that they did the same work.
* **Clocks**: ``time.perf_counter`` around the client call; time to first token is measured from the
  call start to the first non-empty fragment on both sides. The decode rate comes from the process
  that ran the model: ``eval_count`` / ``eval_duration`` for the gateway, as any Ollama client reads
  it (the gateway states ``eval_duration`` as the time of ``eval_count`` tokens at its measured decode
  rate), and ``Generation.tokens_per_s`` for the direct path: the same measurement on both sides.
* **Header**: ``x-arbiter-overhead-ms`` is read from the very requests being timed, through an httpx
  response hook handed to ``ollama.Client`` (it passes extra arguments to its httpx client) — no
  second set of requests. The gateway's own ``calls`` rows (``overhead_ms``, which for a stream
  covers the whole stream, unlike the header) are read from Parquet after it stops.

A measurement, not a test: exits 0 when a goal is missed and says so in the JSON.

    .venv/bin/python benchmarks/gateway_overhead.py --pairs 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import harness

DEFAULT_OUT = harness.RESULTS_DIR / "gateway_overhead.json"
MODES = ("whole", "stream")
GOALS = {
    "decode_tok_s_ratio": (">=", 0.98),
    "added_latency_ms_p50": ("<=", 3.0),
    "added_ttft_ms_p50": ("<=", 2.0),
    "overhead_header_ms_p50": ("<=", 1.0),
}
TOPICS = (
    "the moon", "bread baking", "volcanoes", "the river Nile", "chess openings", "honey bees", "lighthouses",
    "the violin", "glaciers", "paper making", "the printing press", "coral reefs", "windmills", "owls",
    "the Roman roads", "tea ceremonies", "comets", "sourdough", "the compass", "deserts", "octopuses",
    "bicycles", "thunderstorms", "maple syrup",
)
TEMPLATES = (
    "Write a short paragraph about {topic}.",
    "Explain {topic} to a curious child in a few sentences.",
    "Give three interesting facts about {topic}.",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from registry.settings import default_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="measured pairs per mode, after one warm-up pair (default 20)")
    parser.add_argument("--max-tokens", type=int, default=32, help="num_predict of every request (default 32)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="llama.cpp threads for both paths (default: cores - 1, as arbiter's own default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON output (default {DEFAULT_OUT.relative_to(harness.REPO)})")
    parser.add_argument("--home", type=Path, default=None, help="ARBITER_HOME to use and keep (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.max_tokens < 2 or args.threads < 1:
        parser.error("--pairs and --threads must be at least 1, --max-tokens at least 2")
    return args


def prompts(count: int) -> list[list[dict[str, str]]]:
    """``count`` distinct one-message chats (a number is added once the combinations run out)."""
    chats = []
    for index in range(count):
        template = TEMPLATES[(index // len(TOPICS)) % len(TEMPLATES)]
        text = template.format(topic=TOPICS[index % len(TOPICS)])
        if index >= len(TOPICS) * len(TEMPLATES):
            text += f" (variation {index})"
        chats.append([{"role": "user", "content": text}])
    return chats


@dataclass(frozen=True)
class Sample:
    """One request on one path, as the client saw it plus what the model's process measured."""

    path: str  # gateway | direct
    mode: str  # whole | stream
    pair: int
    wall_ms: float  # call start to the last byte (stream) or the return (whole)
    ttft_ms: float | None  # call start to the first non-empty fragment (stream mode only)
    completion_tokens: int
    decode_steps: int
    decode_ms: float | None  # measured in the process that ran the model
    header_ms: float | None  # x-arbiter-overhead-ms (gateway only)
    text: str

    @property
    def decode_tok_s(self) -> float | None:
        if not self.decode_ms or self.decode_steps == 0:
            return None
        return self.decode_steps / (self.decode_ms / 1000)

    @property
    def e2e_tok_s(self) -> float:
        return self.completion_tokens / (self.wall_ms / 1000)


class HeaderHook:
    """An httpx response hook: keeps the overhead header of the last response this client received."""

    def __init__(self) -> None:
        self.last: str | None = None

    def __call__(self, response: Any) -> None:
        self.last = response.headers.get("x-arbiter-overhead-ms")

    def take(self) -> float | None:
        value, self.last = self.last, None
        return None if value is None else float(value)


def ask_gateway(client: Any, hook: HeaderHook, messages: list[dict[str, str]], max_tokens: int, mode: str,
                pair: int) -> Sample:
    options = {"num_predict": max_tokens, "temperature": 0}
    first_at: float | None = None
    parts: list[str] = []
    started = time.perf_counter()
    if mode == "stream":
        final = None
        for chunk in client.chat(model=harness.ROUTE, messages=messages, options=options, stream=True):
            if chunk.done:
                final = chunk
            elif chunk.message.content:
                if first_at is None:
                    first_at = time.perf_counter()
                parts.append(chunk.message.content)
    else:
        final = client.chat(model=harness.ROUTE, messages=messages, options=options)
        parts.append(final.message.content or "")
    ended = time.perf_counter()
    if final is None or not final.eval_count:
        raise harness.BenchmarkError(f"the gateway's {mode} answer had no final figures: {final!r}")
    return Sample(
        path="gateway", mode=mode, pair=pair, wall_ms=(ended - started) * 1000,
        ttft_ms=None if first_at is None else (first_at - started) * 1000,
        completion_tokens=final.eval_count, decode_steps=final.eval_count,
        decode_ms=(final.eval_duration or 0) / 1e6 or None, header_ms=hook.take(), text="".join(parts),
    )


def ask_direct(provider: Any, messages: list[dict[str, str]], max_tokens: int, mode: str, pair: int) -> Sample:
    from registry.providers import GenerationRequest

    request = GenerationRequest(messages=tuple(messages), max_tokens=max_tokens, temperature=0.0)
    first_at: float | None = None
    started = time.perf_counter()
    if mode == "stream":
        stream = provider.stream(request)
        while True:
            try:
                next(stream)
            except StopIteration as done:
                generation = done.value
                break
            if first_at is None:
                first_at = time.perf_counter()
    else:
        generation = provider.generate(request)
    ended = time.perf_counter()
    return Sample(
        path="direct", mode=mode, pair=pair, wall_ms=(ended - started) * 1000,
        ttft_ms=None if first_at is None else (first_at - started) * 1000,
        completion_tokens=generation.completion_tokens, decode_steps=generation.decode_steps,
        decode_ms=generation.decode_ms, header_ms=None, text=generation.text,
    )


def run_pairs(args: argparse.Namespace, ask: dict[str, Callable[..., Sample]]) -> list[Sample]:
    """Pair 0 warms both paths and is dropped; then ABAB…, the first path alternating every pair."""
    chats = prompts((args.pairs + 1) * len(MODES))
    samples = []
    for pair in range(args.pairs + 1):
        for position, mode in enumerate(MODES):
            messages = chats[pair * len(MODES) + position]
            order = ("gateway", "direct") if (pair + position) % 2 == 0 else ("direct", "gateway")
            for path in order:
                samples.append(ask[path](messages, args.max_tokens, mode, pair))
    return samples


def paired(samples: list[Sample], mode: str) -> list[tuple[Sample, Sample]]:
    by_key = {(s.path, s.pair): s for s in samples if s.mode == mode and s.pair > 0}
    pairs = sorted({pair for _, pair in by_key})
    return [(by_key["gateway", p], by_key["direct", p]) for p in pairs]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def summarize_mode(samples: list[Sample], mode: str, rows: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    pairs = paired(samples, mode)
    calls_overhead_ms = [rows[(mode, g.pair)]["overhead_ms"] for g, _ in pairs if (mode, g.pair) in rows]
    gateway = [g for g, _ in pairs]
    direct = [d for _, d in pairs]
    added = [g.wall_ms - d.wall_ms for g, d in pairs]
    summary: dict[str, Any] = {
        "pairs": len(pairs),
        "decode_tok_s_ratio": _median([_ratio(g.decode_tok_s, d.decode_tok_s) for g, d in pairs]),
        "decode_tok_s_gateway_p50": _median([g.decode_tok_s for g in gateway]),
        "decode_tok_s_direct_p50": _median([d.decode_tok_s for d in direct]),
        "e2e_tok_s_ratio": _median([_ratio(g.e2e_tok_s, d.e2e_tok_s) for g, d in pairs]),
        "e2e_tok_s_gateway_p50": _median([g.e2e_tok_s for g in gateway]),
        "e2e_tok_s_direct_p50": _median([d.e2e_tok_s for d in direct]),
        "added_latency_ms_p50": _median(added),
        "added_latency_ms_p90": harness.percentile(added, 90),
        "wall_ms_gateway_p50": _median([g.wall_ms for g in gateway]),
        "wall_ms_direct_p50": _median([d.wall_ms for d in direct]),
        "added_ttft_ms_p50": None,
        "overhead_header_ms_p50": _median([g.header_ms for g in gateway]),
        "overhead_calls_row_ms_p50": _median(calls_overhead_ms) if calls_overhead_ms else None,
        "completion_tokens_p50": _median([g.completion_tokens for g in gateway]),
        "texts_match": sum(g.text == d.text for g, d in pairs),
    }
    if mode == "stream":
        summary |= {
            "added_ttft_ms_p50": _median([_difference(g.ttft_ms, d.ttft_ms) for g, d in pairs]),
            "ttft_ms_gateway_p50": _median([g.ttft_ms for g in gateway]),
            "ttft_ms_direct_p50": _median([d.ttft_ms for d in direct]),
            # the model's own first token inside the gateway vs direct: how much of added_ttft is the
            # model running slower in the gateway's process, not the gateway's path
            "model_ttft_delta_ms_p50": _median([_difference(rows[(mode, g.pair)]["ttft_ms"], d.ttft_ms)
                                                for g, d in pairs if (mode, g.pair) in rows]) if rows else None,
        }
    summary = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}
    summary["goals"] = {name: _goal(summary[name], *goal) for name, goal in GOALS.items() if summary[name] is not None}
    return summary


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _goal(value: float, op: str, target: float) -> dict[str, Any]:
    met = value >= target if op == ">=" else value <= target
    return {"goal": f"{op} {target}", "met": met}


def calls_figures(home: Path, samples: list[Sample]) -> tuple[dict[tuple[str, int], dict[str, Any]], dict[str, Any]]:
    """The gateway's own ``calls`` row of each measured request, keyed by (mode, pair): its
    ``overhead_ms`` and the model's own time to first token inside the gateway (``ttft_ms``).

    Requests were sent one at a time, so the rows in time order are the gateway samples in order;
    a count or token mismatch (a row missing or extra) gives nothing rather than a wrong match.
    """
    from registry.results.store import ResultsStore
    from registry.settings import get_settings

    rows = ResultsStore(get_settings(home=home).results_dir).query(
        "select overhead_ms, ttft_ms, completion_tokens from calls where source = 'gateway' and ok order by ts"
    )
    sent = [s for s in samples if s.path == "gateway"]
    matched = len(rows) == len(sent) and all(
        r["completion_tokens"] == s.completion_tokens for r, s in zip(rows, sent, strict=True)
    )
    info = {"found": len(rows), "expected": len(sent), "matched": matched}
    if not matched:
        return {}, info
    return {(s.mode, s.pair): r for r, s in zip(rows, sent, strict=True) if s.pair > 0}, info


def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    import ollama

    from registry.catalog.shipped import smollm2_path
    from registry.providers.llamacpp import LlamaCppProvider
    from registry.settings import get_settings

    machine = harness.machine_facts()
    record = harness.register(home, smollm2_path())
    harness.promote(home, record.version)
    settings = get_settings(home=home, n_threads=args.threads)
    provider = LlamaCppProvider(record.spec, n_threads=settings.n_threads, n_ctx=settings.n_ctx, seed=settings.seed)
    provider.load()
    try:
        with harness.gateway(home, args.threads) as served:
            hook = HeaderHook()
            with ollama.Client(host=served.url, timeout=120, event_hooks={"response": [hook]}) as client:
                samples = run_pairs(args, {
                    "gateway": lambda m, n, mode, p: ask_gateway(client, hook, m, n, mode, p),
                    "direct": lambda m, n, mode, p: ask_direct(provider, m, n, mode, p),
                })
    finally:
        provider.unload()
    rows, calls_rows = calls_figures(home, samples)  # the gateway flushed its rows when it stopped
    resolution = measure_resolution(home)
    return {
        "benchmark": "gateway_overhead",
        **{k: v for k, v in machine.items() if k in ("ts", "hardware")},
        "machine": {k: v for k, v in machine.items() if k not in ("ts", "hardware")}
        | {"load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "model": record.ref,
        "route": harness.ROUTE,
        "client": "ollama.Client.chat (ollama-python), header read by an httpx response hook on the same requests",
        "gateway": "arbiter serve subprocess on 127.0.0.1 (--no-webhook)",
        "settings": {"threads": settings.n_threads, "n_ctx": settings.n_ctx, "seed": settings.seed,
                     "max_tokens": args.max_tokens, "temperature": 0, "pairs": args.pairs, "warmup_pairs": 1},
        "modes": {mode: summarize_mode(samples, mode, rows) for mode in MODES},
        "calls_rows": calls_rows,
        "resolution_us": resolution,
        "samples": [asdict(s) | {"decode_tok_s": s.decode_tok_s, "e2e_tok_s": s.e2e_tok_s} for s in samples],
        "notes": NOTES,
    }


def measure_resolution(home: Path, rounds: int = 20_000) -> dict[str, Any]:
    """Name → version as the gateway does it per request (``Router.resolve``, from memory), timed
    call by call for a route, a route alias and a pinned version. Goal: p95 ≤ 1 ms (1,000 µs)."""
    from registry.catalog.versions import Catalog
    from registry.serving.pool import WarmPool
    from registry.serving.router import Router
    from registry.settings import get_settings

    settings = get_settings(home=home)
    with WarmPool(settings) as pool:
        router = Router(Catalog(settings), pool)
        router.start(follow=False)  # reads MLflow once and warms the champion, as `serve` does
        names = ["qa", "qa@champion", "smollm2-135m/1"]
        timings = []
        for n in range(rounds):
            name = names[n % len(names)]
            started = time.perf_counter()
            router.resolve(name)
            timings.append((time.perf_counter() - started) * 1e6)
    return {"names": names, "n": rounds, "p50": round(statistics.median(timings), 2),
            "p95": round(harness.percentile(timings, 95), 2), "max": round(max(timings), 2)}


NOTES = [
    "pairs: gateway and direct answer the same prompt one after the other (never at once); the first path "
    "alternates every pair; pair 0 is a warm-up and is not in any figure; medians are over paired figures",
    "decode_tok_s: the decode rate measured in the process that ran the model. Gateway: eval_count / "
    "eval_duration, as an Ollama client computes it (the gateway states eval_duration as the time of "
    "eval_count tokens at its measured rate); direct: Generation.tokens_per_s",
    "in stream mode the gateway generates in one producer thread while the event loop sends, so "
    "decode_tok_s_ratio there is the decode cost of streaming through the gateway",
    "e2e_tok_s: completion tokens / client wall time (prompt processing and HTTP included)",
    "added_latency_ms: gateway client wall - direct wall, per pair",
    "added_ttft_ms (stream): client-observed first non-empty fragment - direct's first fragment, both from "
    "the call start",
    "overhead_header_ms: x-arbiter-overhead-ms of the same requests. Whole: arrival to response ready minus "
    "model and queue time. Stream: arrival to the headers, sent before the model starts, so it leaves out the "
    "stream itself; overhead_calls_row_ms is the gateway's calls-row figure, whole stream included",
    "texts_match counts pairs whose two texts are identical (same settings, temperature 0): both paths did "
    "the same work only if it equals pairs",
    "on 2 cores llama.cpp slows badly when another process takes a core: read the figures only with a quiet "
    "load_avg_before (machine_busy false)",
]


def _figure(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def summary_line(result: dict[str, Any], out: Path) -> str:
    whole, stream = result["modes"]["whole"], result["modes"]["stream"]
    return (
        f"gateway_overhead: whole tok/s {_figure(whole['decode_tok_s_ratio'], '.3f')}x (goal >= 0.98), "
        f"{_figure(whole['added_latency_ms_p50'], '+.2f')} ms p50 (goal <= 3), "
        f"header {_figure(whole['overhead_header_ms_p50'], '.2f')} ms (goal <= 1); "
        f"stream tok/s {_figure(stream['decode_tok_s_ratio'], '.3f')}x, "
        f"{_figure(stream['added_latency_ms_p50'], '+.2f')} ms, "
        f"TTFT {_figure(stream['added_ttft_ms_p50'], '+.2f')} ms (goal <= 2), "
        f"header {_figure(stream['overhead_header_ms_p50'], '.2f')} ms; "
        f"{result['settings']['pairs']} pairs, {result['settings']['threads']} thread(s), "
        f"texts match {whole['texts_match'] + stream['texts_match']}/{whole['pairs'] + stream['pairs']}, "
        f"name resolution p95 {result['resolution_us']['p95']:.1f} us (goal <= 1000) "
        f"-> {harness.shown(out)}" + harness.busy_warning(result)
    )


def main(argv: list[str] | None = None) -> int:
    return harness.run_main("gateway_overhead", parse_args(argv), measure, summary_line)


if __name__ == "__main__":
    sys.exit(main())
