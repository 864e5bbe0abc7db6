"""Tool calling on the shipped SmolLM2 (issue 17): how valid its calls are, how well ``auto`` decides,
and what tools cost per request.

* **Prompts**: ``datasets/tool_prompts.jsonl``, 50 requests a declared function fits (``expect``: the
  one that should be called, among 1–3 tools with real parameter schemas) and 20 no function fits.
* **Version**: SmolLM2 135M Q4_1 (the shipped file) registered in a throwaway home and served by a
  ``WarmPool``, so requests take the provider path the gateway takes (grammar, prompt, parse).
* **required**: every prompt with ``tool_choice: required``; a call is valid when it names a declared
  function and its arguments validate against that function's schema (``jsonschema``). Goal: 100 %.
  Also the share whose call is the expected function. **named**: the expected function named as
  ``tool_choice``: valid and that function (goal 100 %).
* **auto**: how often it calls when a function fits, and the expected one; how often it calls when
  none fits (a false call). A 135M model is weak at deciding; that is the figure, not hidden.
* **Latency**: per prompt of the first ``--pairs`` fitting ones, three requests one after the other in
  a rotating order (ABC, BCA, CAB…), so drift on a shared machine lands on all three: *plain* (the
  same messages, no tools), *told* (the tools' system block in the prompt, decoded freely: the
  prompt's cost) and *tools* (``required``: block and grammar). Medians of the per-prompt ratios:
  wall tools/plain (what a request with tools costs more), time to first token told/plain (the
  block's prompt processing) and decode ms per token tools/told (the grammar alone).

A measurement, not a test: exits 0 when a goal is missed and says so in the JSON.

    .venv/bin/python benchmarks/tool_calls.py            # ~15 min on 2 loaded cores
    .venv/bin/python benchmarks/tool_calls.py --limit 10 --pairs 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import harness
import jsonschema

DEFAULT_OUT = harness.RESULTS_DIR / "tool_calls.json"
PROMPTS = harness.REPO / "datasets" / "tool_prompts.jsonl"
GOALS = {"required_valid_share": (">=", 1.0), "named_valid_share": (">=", 1.0)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts of each kind")
    parser.add_argument("--pairs", type=int, default=20, help="prompts timed for latency (default 20)")
    parser.add_argument("--max-tokens", type=int, default=256,
                        help="max_tokens of every request (default 256: the gateway's when a client gives none)")
    parser.add_argument("--home", type=Path, default=None, help="ARBITER_HOME to use (default: a throwaway one)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON output (default {DEFAULT_OUT.relative_to(harness.REPO)})")
    return parser.parse_args(argv)


def load_prompts(limit: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from registry.providers import Tool

    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    for row in rows:
        row["declared"] = tuple(Tool(t["name"], t["description"], json.dumps(t["parameters"], sort_keys=True))
                                for t in row["tools"])
    fits = [r for r in rows if r["expect"]][:limit]
    none_fits = [r for r in rows if not r["expect"]][:limit]
    return fits, none_fits


def valid(calls: tuple, row: dict[str, Any]) -> bool:
    """Each call names a declared function, with arguments that validate against its schema."""
    schemas = {t["name"]: t["parameters"] for t in row["tools"]}
    try:
        return bool(calls) and all(
            c.name in schemas and jsonschema.validate(json.loads(c.arguments), schemas[c.name]) is None for c in calls)
    except (jsonschema.ValidationError, json.JSONDecodeError):
        return False


def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from registry.catalog.shipped import smollm2_path
    from registry.providers import GenerationRequest
    from registry.providers import tools as tooling
    from registry.serving.pool import WarmPool
    from registry.settings import get_settings

    machine = harness.machine_facts()
    fits, none_fits = load_prompts(args.limit)
    record = harness.register(home, smollm2_path())
    settings = get_settings(home=home)
    with WarmPool(settings) as pool:
        pool.warm(record)
        provider = pool.get(record)

        def ask(row: dict[str, Any], choice: str) -> Any:
            return provider.generate(GenerationRequest(messages=({"role": "user", "content": row["prompt"]},),
                                                       tools=row["declared"], tool_choice=choice,
                                                       max_tokens=args.max_tokens))

        items: list[dict[str, Any]] = []
        for row in [*fits, *none_fits]:
            item: dict[str, Any] = {"id": row["id"], "expect": row["expect"]}
            for choice in ("required", *(() if row["expect"] is None else (row["expect"],)), "auto"):
                answer = ask(row, choice)
                mode = "named" if choice == row["expect"] else choice
                item[mode] = {"calls": [[c.name, c.arguments] for c in answer.tool_calls], "valid": valid(
                    answer.tool_calls, row), "text": answer.text[:80], "finish": answer.finish_reason,
                    "wall_ms": round(answer.generation_ms, 1)}
            items.append(item)
            print(f"  {row['id']}: required {item['required']['calls'][:1]} auto "
                  f"{item['auto']['calls'][:1] or item['auto']['text'][:30]!r}", file=sys.stderr)

        timing = []
        for index, row in enumerate(fits[:args.pairs]):
            question = ({"role": "user", "content": row["prompt"]},)
            with_tools = GenerationRequest(messages=question, tools=row["declared"], tool_choice="required",
                                           max_tokens=args.max_tokens)
            variants = {
                "plain": GenerationRequest(messages=question, max_tokens=args.max_tokens),
                "told": GenerationRequest(messages=tuple(tooling.chat_messages(with_tools)), max_tokens=args.max_tokens),
                "tools": with_tools,
            }
            order = list(variants)[index % 3:] + list(variants)[:index % 3]
            runs = {name: provider.generate(variants[name]) for name in order}
            timing.append({name: {"wall_ms": g.generation_ms, "ttft_ms": g.time_to_first_token_ms,
                                  "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                                  "decode_ms_per_token": (g.decode_ms / g.decode_steps) if g.decode_ms else None}
                           for name, g in runs.items()} | {"order": "".join(n[0] for n in order)})
    return {"machine": machine, "settings": {"max_tokens": args.max_tokens, "threads": settings.n_threads,
                                             "prompts_fit": len(fits), "prompts_none_fit": len(none_fits)},
            "summary": summarize(items, timing), "items": items, "timing": timing}


def share(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def median_ratio(timing: list[dict[str, Any]], top: str, bottom: str, field: str) -> float | None:
    ratios = [t[top][field] / t[bottom][field] for t in timing if t[top][field] and t[bottom][field]]
    return round(statistics.median(ratios), 3) if ratios else None


def summarize(items: list[dict[str, Any]], timing: list[dict[str, Any]]) -> dict[str, Any]:
    fit = [i for i in items if i["expect"]]
    none_fit = [i for i in items if not i["expect"]]
    summary = {
        "required_valid_share": share([i["required"]["valid"] for i in items]),
        "required_expected_share": share([any(c[0] == i["expect"] for c in i["required"]["calls"]) for i in fit]),
        "named_valid_share": share([i["named"]["valid"] and {c[0] for c in i["named"]["calls"]} == {i["expect"]}
                                    for i in fit]),
        "auto_called_when_fits": share([bool(i["auto"]["calls"]) for i in fit]),
        "auto_expected_when_fits": share([any(c[0] == i["expect"] for c in i["auto"]["calls"]) for i in fit]),
        "auto_valid_when_called": share([i["auto"]["valid"] for i in items if i["auto"]["calls"]]),
        "auto_called_when_none_fits": share([bool(i["auto"]["calls"]) for i in none_fit]),
        "wall_ratio_tools_vs_plain_p50": median_ratio(timing, "tools", "plain", "wall_ms"),
        "ttft_ratio_told_vs_plain_p50": median_ratio(timing, "told", "plain", "ttft_ms"),
        "decode_ms_per_token_ratio_grammar_p50": median_ratio(timing, "tools", "told", "decode_ms_per_token"),
        "prompt_tokens_added_p50": statistics.median([t["told"]["prompt_tokens"] - t["plain"]["prompt_tokens"]
                                                      for t in timing]) if timing else None,
        "wall_ms_p50": {name: harness.rounded(harness.percentile([t[name]["wall_ms"] for t in timing], 50), 1)
                        for name in ("plain", "told", "tools")},
    }
    summary["goals"] = {name: {"goal": f"{op} {target}", "met": summary[name] is not None and summary[name] >= target}
                        for name, (op, target) in GOALS.items()}
    return summary


def summary_line(result: dict[str, Any], out: Path) -> str:
    s = result["summary"]

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 100:.0f} %"

    return (
        f"tool_calls: required valid {pct(s['required_valid_share'])} (goal 100 %; expected function "
        f"{pct(s['required_expected_share'])}), named valid {pct(s['named_valid_share'])}; auto calls when a "
        f"function fits {pct(s['auto_called_when_fits'])} (the expected one {pct(s['auto_expected_when_fits'])}), "
        f"when none fits {pct(s['auto_called_when_none_fits'])}; per request with tools {s['wall_ratio_tools_vs_plain_p50']}x "
        f"the wall of the same prompt without (+{s['prompt_tokens_added_p50']} prompt tokens: first token "
        f"{s['ttft_ratio_told_vs_plain_p50']}x), grammar decode {s['decode_ms_per_token_ratio_grammar_p50']}x per token; "
        f"{result['settings']['prompts_fit']}+{result['settings']['prompts_none_fit']} prompts, "
        f"{result['settings']['threads']} thread(s) -> {harness.shown(out)}" + harness.busy_warning(result)
    )


def main(argv: list[str] | None = None) -> int:
    return harness.run_main("tool_calls", parse_args(argv), measure, summary_line)


if __name__ == "__main__":
    sys.exit(main())
