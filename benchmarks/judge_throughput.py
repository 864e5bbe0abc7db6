"""Judge throughput: judgements per second through ``ModelBasedJudge``, and its overhead per call
against llama.cpp called directly with the same prompt.

What a caller pays for asking the judge instead of running the judge model by hand: the champion
lookup of route ``judgment`` (read live, every ``evaluate``), ``neutralize`` and the clip, the
prompt, the pool's lease, ``measured_call`` (costs, the ``calls`` row), the provider's streamed
decode, and parsing.

* **Judge** (candidate): SmolLM2 135M Q4_1 (the shipped file) promoted as champion of route
  ``judgment`` (``Routes.promote(..., force=True)``); ``ModelBasedJudge(catalog, pool)`` over a
  ``WarmPool`` warmed first (``pool.warm``: load + health check). One ``evaluate(task, output,
  [criterion])`` per item.
* **Direct** (baseline): the same file loaded with ``llama_cpp.Llama`` in this process with the
  provider's settings (``n_ctx`` capped by the model's window, ``n_threads`` = ``n_threads_batch``,
  seed, chat format), asked ``create_chat_completion`` with the very messages the judge sends
  (``registry.evaluation.judge.prompt`` over the neutralized, clipped texts, built before the clock starts),
  the grammar from ``registry.evaluation.judge.SCHEMA`` (built once, as the provider caches it), temperature 0,
  the judge's ``max_tokens`` and seed 0 (the judge's first attempt); ``reset()`` first, as the provider
  does, so neither path gets llama.cpp's prompt cache. Parsed with ``registry.evaluation.judge.parse``.
* **Pairs**: per item both paths answer one after the other, never at once; which goes first
  alternates (ABAB), so drift on a shared machine lands on both. Pair 0 (an item of its own, judge
  first) is the cold pair: the judge's first judgement after warm-up and llama.cpp's first direct
  call; it is reported apart and left out of every other figure.
* **Same work**: both must give the same score (and reason, and token counts); mismatches are listed.

A measurement, not a test: exits 0 when the goal is missed and says so in the JSON.

    .venv/bin/python benchmarks/judge_throughput.py --items 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import harness

DEFAULT_OUT = harness.RESULTS_DIR / "judge_throughput.json"
# The issue's aim per judgement, and the seeds' budget (10-15 ms: its upper end).
GOALS = {"overhead_ms_p50": ("<=", 2.0), "overhead_ms_p50_seed_budget": ("<=", 15.0)}
LONG_TEXT = ("The river rises in the highlands and flows north for several thousand kilometres before it "
             "reaches the sea, watering farms and towns along its banks. ") * 80  # ~12,000 characters


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from registry.settings import default_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20,
                        help="measured pairs: calibration items, one criterion each, after one cold pair (default 20)")
    parser.add_argument("--max-tokens", type=int, default=96, help="the judge's max_tokens (default 96, its own)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="llama.cpp threads for both paths (default: cores - 1, as arbiter's own default)")
    parser.add_argument("--lookups", type=int, default=30,
                        help="champion lookups (judge_version) timed apart, for the breakdown (default 30)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON output (default {DEFAULT_OUT.relative_to(harness.REPO)})")
    parser.add_argument("--home", type=Path, default=None, help="ARBITER_HOME to use and keep (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.items < 1 or args.max_tokens < 8 or args.threads < 1 or args.lookups < 1:
        parser.error("--items, --threads and --lookups must be at least 1, --max-tokens at least 8")
    return args


def pick_items(items: Sequence[Any], count: int) -> list[Any]:
    """``count`` items taken in turn from each criterion (file order within one), so all four
    rubrics are in the sample (the file's injection items come late in each criterion: a default
    run has none)."""
    by_criterion: dict[str, list[Any]] = {}
    for item in items:
        by_criterion.setdefault(item.criterion, []).append(item)
    picked: list[Any] = []
    depth = 0
    while len(picked) < count and any(depth < len(group) for group in by_criterion.values()):
        picked += [group[depth] for group in by_criterion.values() if depth < len(group)]
        depth += 1
    if len(picked) < count:
        raise harness.BenchmarkError(f"the calibration set has {len(picked)} items, {count} asked (--items + 1)")
    return picked[:count]


def judged_messages(criterion: str, task: str, output: str) -> list[dict[str, str]]:
    """The messages ``ModelBasedJudge.evaluate`` sends for this item (keep in step with it)."""
    from registry.evaluation.judge import _clip, neutralize, prompt

    output, _ = neutralize(output)
    return prompt(criterion, _clip(task)[0], _clip(output)[0])


@dataclass(frozen=True)
class Pair:
    """One item through both paths."""

    pair: int
    item: str
    criterion: str
    injection: bool
    first: str  # judge | direct
    judge_ms: float  # evaluate() wall, as its caller sees it
    judge_model_ms: float | None  # the calls row's wall_ms: provider.generate inside measured_call
    judge_score: float | None
    judge_reason: str | None
    judge_attempts: int | None
    judge_prompt_tokens: int | None
    judge_completion_tokens: int | None
    judge_error: str | None
    direct_ms: float
    direct_score: float | None
    direct_reason: str | None
    direct_prompt_tokens: int
    direct_completion_tokens: int
    direct_error: str | None
    # llama.cpp's own prompt-eval + decode time of the call (llama_perf_context), both sides: a gap
    # here is the model computing slower (a core taken), not code around it
    judge_compute_ms: float | None
    direct_compute_ms: float

    @property
    def overhead_ms(self) -> float:
        return self.judge_ms - self.direct_ms

    @property
    def same_score(self) -> bool:
        return self.judge_score is not None and self.judge_score == self.direct_score

    @property
    def same_work(self) -> bool:
        """One attempt on the judge's side, and the same tokens in and out on both."""
        return (self.judge_attempts == 1 and self.judge_prompt_tokens == self.direct_prompt_tokens
                and self.judge_completion_tokens == self.direct_completion_tokens)


class Direct:
    """llama.cpp on the judge's file, as the provider loads it, asked the way the judge asks."""

    def __init__(self, record: Any, settings: Any, max_tokens: int) -> None:
        from llama_cpp import Llama, LlamaGrammar
        from llama_cpp._utils import suppress_stdout_stderr

        from registry.evaluation.judge import SCHEMA
        from registry.providers.gguf_file import verify_file
        from registry.providers.llamacpp import skip_amx_repack

        spec = record.spec
        self.n_ctx = min(settings.n_ctx, spec.context_window)
        self.max_tokens = max_tokens
        skip_amx_repack()  # as the provider does: AMX weight repacking segfaults in these VMs
        started = time.perf_counter()
        with suppress_stdout_stderr(disable=False):
            self.llm = Llama(model_path=str(verify_file(spec)), n_ctx=self.n_ctx, n_threads=settings.n_threads,
                             n_threads_batch=settings.n_threads, seed=settings.seed, chat_format=spec.chat_format,
                             verbose=False)
        self.load_ms = (time.perf_counter() - started) * 1000
        self.grammar = LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)

    def ask(self, messages: list[dict[str, str]]) -> tuple[float, str, dict[str, int], float]:
        import llama_cpp

        started = time.perf_counter()
        self.llm.reset()
        llama_cpp.llama_perf_context_reset(self.llm.ctx)  # the provider does it too; for compute_ms here
        answer = self.llm.create_chat_completion(messages=messages, max_tokens=self.max_tokens, temperature=0.0,
                                                 seed=0, grammar=self.grammar)
        wall_ms = (time.perf_counter() - started) * 1000
        return wall_ms, answer["choices"][0]["message"]["content"] or "", answer["usage"], compute_ms(self.llm)

    def close(self) -> None:
        self.llm.close()


def compute_ms(llm: Any) -> float:
    """llama.cpp's prompt-eval + decode milliseconds since its perf counters were last reset."""
    import llama_cpp

    data = llama_cpp.llama_perf_context(llm.ctx)
    return float(data.t_p_eval_ms + data.t_eval_ms)


def run_pair(index: int, item: Any, judge: Any, direct: Direct, instance: Any) -> Pair:
    from registry.errors import JudgeError
    from registry.evaluation.judge import parse

    messages = judged_messages(item.criterion, item.task, item.output)
    first = "judge" if index % 2 == 0 else "direct"
    outcome: dict[str, Any] = {}
    for path in (("judge", "direct") if first == "judge" else ("direct", "judge")):
        if path == "judge":
            started = time.perf_counter()
            try:
                [judgement] = judge.evaluate(item.task, item.output, [item.criterion])
            except JudgeError as exc:
                judgement, error = None, str(exc)
            else:
                error = None
            # the pool's instance: its provider resets the counters before every generation
            outcome["judge"] = ((time.perf_counter() - started) * 1000, judgement, error,
                                compute_ms(instance.provider._llm))
        else:
            outcome["direct"] = direct.ask(messages)
    judge_ms, judgement, judge_error, judge_compute_ms = outcome["judge"]
    direct_ms, direct_text, usage, direct_compute_ms = outcome["direct"]
    try:
        direct_score, direct_reason = parse(direct_text)
        direct_error = None
    except ValueError as exc:
        direct_score, direct_reason, direct_error = None, None, str(exc)
    figures = judgement.figures if judgement else {}
    return Pair(
        pair=index, item=item.id, criterion=item.criterion, injection=item.injection, first=first,
        judge_ms=judge_ms, judge_model_ms=figures.get("wall_ms"),
        judge_score=judgement.score if judgement else None, judge_reason=judgement.reason if judgement else None,
        judge_attempts=judgement.attempts if judgement else None,
        judge_prompt_tokens=figures.get("prompt_tokens"), judge_completion_tokens=figures.get("completion_tokens"),
        judge_error=judge_error, direct_ms=direct_ms, direct_score=direct_score, direct_reason=direct_reason,
        direct_prompt_tokens=usage["prompt_tokens"], direct_completion_tokens=usage["completion_tokens"],
        direct_error=direct_error, judge_compute_ms=judge_compute_ms if judgement else None,
        direct_compute_ms=direct_compute_ms,
    )


def _stats(values: Sequence[float], digits: int = 3) -> dict[str, float | None]:
    return {"p50": harness.rounded(harness.percentile(values, 50), digits),
            "p95": harness.rounded(harness.percentile(values, 95), digits),
            "mean": harness.rounded(statistics.fmean(values), digits) if values else None}


def neutralize_cost(texts: Sequence[str], rounds: int = 200) -> dict[str, Any]:
    """``neutralize`` timed call by call over the calibration outputs (it runs on every judgement),
    and on one ordinary 12,000-character text (it runs before the clip, on the whole output)."""
    from registry.evaluation.judge import neutralize

    timings = []
    for _ in range(rounds):
        for text in texts:
            started = time.perf_counter()
            neutralize(text)
            timings.append((time.perf_counter() - started) * 1e6)
    long_timings = []
    for _ in range(rounds // 4):
        started = time.perf_counter()
        neutralize(LONG_TEXT)
        long_timings.append((time.perf_counter() - started) * 1e6)
    return {"calls": len(timings), "texts": len(texts), "mean_chars": round(statistics.fmean(map(len, texts))),
            "us": _stats(timings, 2), "long_text_chars": len(LONG_TEXT), "long_text_us": _stats(long_timings, 1)}


def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from registry.catalog.routes import Routes
    from registry.catalog.shipped import smollm2_path
    from registry.catalog.versions import Catalog
    from registry.evaluation.datasets import load_calibration_set
    from registry.evaluation.judge import JUDGE_ROUTE, ModelBasedJudge
    from registry.serving.pool import WarmPool
    from registry.settings import get_settings

    machine = harness.machine_facts()
    run_started = time.perf_counter()
    settings = get_settings(home=home, n_threads=args.threads)
    catalog = Catalog(settings)
    record = harness.register(home, smollm2_path())
    Routes(catalog).promote(JUDGE_ROUTE, record.name, record.version, force=True)
    calibration = load_calibration_set(settings.datasets_dir)
    cold_item, *items = pick_items(calibration, args.items + 1)

    events: list[tuple[str, str]] = []
    direct = Direct(record, settings, args.max_tokens)
    try:
        with WarmPool(settings, on_event=lambda kind, rec, detail: events.append((kind, rec.ref))) as pool:
            started = time.perf_counter()
            pool.warm(record)
            pool_warm_ms = (time.perf_counter() - started) * 1000
            instance = pool.instances_of(record)[0]
            judge = ModelBasedJudge(catalog, pool, max_tokens=args.max_tokens)
            measuring_started = time.perf_counter()
            cold = run_pair(0, cold_item, judge, direct, instance)
            pairs = [run_pair(index, item, judge, direct, instance) for index, item in enumerate(items, start=1)]
            measuring_s = time.perf_counter() - measuring_started
            served = instance.served
            lookups = []
            for _ in range(args.lookups):
                started = time.perf_counter()
                judge.judge_version()
                lookups.append((time.perf_counter() - started) * 1000)
            provider_load_ms = instance.provider.load_ms
    finally:
        direct.close()
    neutralize_us = neutralize_cost([item.output for item in calibration])

    judged = [p for p in pairs if p.judge_model_ms is not None]
    overhead = [p.overhead_ms for p in pairs]
    outside = [p.judge_ms - p.judge_model_ms for p in judged]
    judge_total_s = sum(p.judge_ms for p in pairs) / 1000
    direct_total_s = sum(p.direct_ms for p in pairs) / 1000
    mean_judge, mean_direct = statistics.fmean(p.judge_ms for p in pairs), statistics.fmean(p.direct_ms for p in pairs)
    summary = {
        "pairs": len(pairs),
        "judgements_per_s": round(len(pairs) / judge_total_s, 4),
        "direct_per_s": round(len(pairs) / direct_total_s, 4),
        "judge_ms": _stats([p.judge_ms for p in pairs], 1),
        "direct_ms": _stats([p.direct_ms for p in pairs], 1),
        "overhead_ms": _stats(overhead),
        "overhead_ms_judge_first_p50": harness.rounded(
            harness.percentile([p.overhead_ms for p in pairs if p.first == "judge"], 50)),
        "overhead_ms_direct_first_p50": harness.rounded(
            harness.percentile([p.overhead_ms for p in pairs if p.first == "direct"], 50)),
        "ratio_p50": harness.rounded(harness.percentile([p.judge_ms / p.direct_ms for p in pairs], 50), 4),
        "ratio_of_means": round(mean_judge / mean_direct, 4),
        # evaluate() minus its calls row's wall_ms: the judge's own work around the model call
        "outside_model_ms": _stats(outside),
        "outside_model_share_p50": harness.rounded(
            harness.percentile([(p.judge_ms - p.judge_model_ms) / p.judge_ms for p in judged], 50), 5),
        # the calls row's wall_ms minus the direct call: the provider's streamed decode, its lock,
        # reset and perf counters, and measure()'s RSS sampler, against llama.cpp asked directly
        "model_call_vs_direct_ms": _stats([p.judge_model_ms - p.direct_ms for p in judged]),
        # llama.cpp's own compute time, judge's instance - direct: the model itself running slower
        # (or faster) in the judge's path, which is load, not code, when the code around it is cheap
        "compute_delta_ms": _stats([p.judge_compute_ms - p.direct_compute_ms for p in judged]),
        # overhead_ms with each side's llama.cpp compute taken out: what the code around the model costs
        # (sampling under the grammar, Python per token, the judge's own work), steadier under load
        "overhead_outside_compute_ms": _stats([(p.judge_ms - p.judge_compute_ms) - (p.direct_ms - p.direct_compute_ms)
                                               for p in judged]),
        "same_score": sum(p.same_score for p in pairs),
        "same_reason": sum(p.same_score and p.judge_reason == p.direct_reason for p in pairs),
        "same_work": sum(p.same_work for p in pairs),
        "mismatches": [{"item": p.item, "criterion": p.criterion, "judge": p.judge_score, "direct": p.direct_score,
                        "judge_error": p.judge_error, "direct_error": p.direct_error}
                       for p in pairs if not p.same_score],
        "retried": sum((p.judge_attempts or 0) > 1 for p in pairs),
        "judge_errors": sum(p.judge_error is not None for p in pairs),
    }
    summary["goals"] = {name: _goal(summary["overhead_ms"]["p50"], *goal) for name, goal in GOALS.items()}
    judge_generations = sum(p.judge_attempts or 2 for p in [cold, *pairs])
    return {
        "benchmark": "judge_throughput",
        **{k: v for k, v in machine.items() if k in ("ts", "hardware")},
        "machine": {k: v for k, v in machine.items() if k not in ("ts", "hardware")}
        | {"load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "judge": record.ref,
        "route": JUDGE_ROUTE,
        "settings": {"threads": settings.n_threads, "n_ctx": direct.n_ctx, "seed": settings.seed,
                     "max_tokens": args.max_tokens, "temperature": 0, "items": args.items, "cold_pairs": 1},
        "summary": summary,
        "cold": {
            "pool_warm_ms": round(pool_warm_ms, 1),  # load + health check, before any judgement
            "pool_load_ms": harness.rounded(provider_load_ms, 1),
            "direct_load_ms": round(direct.load_ms, 1),
            "first_judgement_ms": round(cold.judge_ms, 1),
            "first_direct_ms": round(cold.direct_ms, 1),
            "first_overhead_ms": round(cold.overhead_ms, 1),
            "warm_judgement_ms_p50": summary["judge_ms"]["p50"],
            "pool_loads": sum(kind == "pool.load" for kind, _ in events),
            "pool_events": [kind for kind, _ in events],
            "instance_served": served,
            "judge_generations": judge_generations,
            "same_score": cold.same_score,
        },
        "breakdown": {
            "champion_lookup_ms": _stats(lookups) | {"n": len(lookups)},
            "neutralize": neutralize_us,
        },
        "wall_s": {"measuring": round(measuring_s, 1), "run": round(time.perf_counter() - run_started, 1)},
        "pairs": [asdict(p) | {"overhead_ms": round(p.overhead_ms, 3)} for p in [cold, *pairs]],
        "notes": NOTES,
    }


def _goal(value: float | None, op: str, target: float) -> dict[str, Any]:
    met = value is not None and (value >= target if op == ">=" else value <= target)
    return {"goal": f"{op} {target}", "met": met}


NOTES = [
    "pairs: judge and direct answer the same item one after the other (never at once); the first path "
    "alternates every pair; pair 0 is the cold pair (first judgement after pool.warm, first direct call) and is "
    "only in 'cold'",
    "overhead_ms: evaluate() wall - direct create_chat_completion wall, per pair; ratio_p50: judge/direct per pair",
    "outside_model_ms: evaluate() wall - its calls row's wall_ms (provider.generate inside measured_call): the "
    "champion lookup (MLflow, every evaluate), neutralize, clip, prompt, lease, parse, the row",
    "model_call_vs_direct_ms: the calls row's wall_ms - the direct wall: the provider's streamed decode against "
    "llama.cpp's non-streamed call, and measure()'s RSS sampler thread",
    "compute_delta_ms: llama.cpp's own prompt-eval + decode time (llama_perf_context) on the judge's instance - "
    "on the direct one, per pair: when it is near overhead_ms the gap is the model computing slower (load, another "
    "thread on the core), not code around the call",
    "overhead_outside_compute_ms: (judge wall - its llama.cpp compute) - (direct wall - its compute), per pair: "
    "the overhead with the model's own (load-sensitive) compute time taken out of both sides",
    "judgements_per_s: measured pairs / the sum of their evaluate() walls (one criterion per evaluate)",
    "same_work: the judge needed one attempt and both sides evaluated the same prompt and completion tokens",
    "cold.pool_loads counts pool.load events over the whole run: 1 means every judgement reused the warm instance; "
    "cold.instance_served counts leases of that instance (= judge_generations)",
    "on 2 cores llama.cpp slows badly when another process takes a core: read the figures only with a quiet "
    "load_avg_before (machine_busy false)",
]


def summary_line(result: dict[str, Any], out: Path) -> str:
    s, cold = result["summary"], result["cold"]
    return (
        f"judge_throughput: {s['judgements_per_s']:.2f} judgements/s (direct {s['direct_per_s']:.2f}/s), "
        f"overhead p50 {s['overhead_ms']['p50']:+.1f} ms p95 {s['overhead_ms']['p95']:+.1f} ms "
        f"mean {s['overhead_ms']['mean']:+.1f} ms ({s['ratio_p50']:.3f}x direct; goal <= 2 ms, seeds' budget 15), "
        f"model compute {s['compute_delta_ms']['p50']:+.1f} ms, "
        f"outside compute {s['overhead_outside_compute_ms']['p50']:+.1f} ms; outside the model {s['outside_model_ms']['p50']:.1f} ms p50 "
        f"({s['outside_model_share_p50'] * 100:.2f} % of evaluate), "
        f"champion lookup {result['breakdown']['champion_lookup_ms']['p50']:.1f} ms, "
        f"neutralize {result['breakdown']['neutralize']['us']['p50']:.0f} us; "
        f"same score {s['same_score']}/{s['pairs']} (same work {s['same_work']}); "
        f"cold first judgement {cold['first_judgement_ms'] / 1000:.2f} s vs warm p50 "
        f"{cold['warm_judgement_ms_p50'] / 1000:.2f} s, pool loads {cold['pool_loads']}, "
        f"served {cold['instance_served']}/{cold['judge_generations']}; {result['settings']['threads']} thread(s) "
        f"-> {harness.shown(out)}" + harness.busy_warning(result)
    )


def main(argv: list[str] | None = None) -> int:
    return harness.run_main("judge_throughput", parse_args(argv), measure, summary_line)


if __name__ == "__main__":
    sys.exit(main())
