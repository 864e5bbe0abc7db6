"""Task-file overhead: a benchmark through task files against the hard-coded path they replaced.

Before issue 14, each shipped task's prompt, token budget and scoring rule was Python code
(``registry/evaluation/prompts.py``, ``scoring.py``). Now they are task files: a Jinja2 template
rendered in a sandbox, and a list of scorers combined per item. Does that cost the benchmark time?

* Baseline: a git worktree of the commit before the change (``--baseline``, default 16ac67d), run
  by this venv's Python. Candidate: this checkout. The same shipped SmolLM2 file, the same items
  (``qa``: a template and two scorers combined by ``max``; ``extract``; ``classify``), temperature 0.
* Each round starts one worker process per tree (order alternating ABBA…): it loads the model,
  warms it up, then times ``benchmark_version`` over the tasks (wall per item, nothing recorded).
  Ratio = median candidate wall per item / median baseline wall per item. Goal ≤ 1.02×.
* The prompt-and-score work alone is also timed in each worker, replayed on one fixed synthetic
  answer per item (µs per item), since on 2 cores generation noise is larger than that difference.

A measurement, not a test: exits 0 when the goal is missed and says so in the JSON.

    .venv/bin/python benchmarks/task_overhead.py --rounds 3 --limit 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "results" / "benchmarks" / "task_overhead.json"
DEFAULT_BASELINE = "16ac67d"  # the last commit with the hard-coded tasks
TASKS = ("qa", "extract", "classify")
GOAL = 1.02
REPLAYS = 200  # prompt-and-score replays per item for the µs figure


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="worker pairs (default 3)")
    parser.add_argument("--limit", type=int, default=10, help="items per task (default 10)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git commit of the hard-coded path")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", choices=("baseline", "candidate"), help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.limit < 1:
        parser.error("--rounds and --limit must be at least 1")
    return args


# --------------------------------------------------------------------------- one worker (one tree)


def _worker(kind: str, home: Path, limit: int) -> dict[str, Any]:
    """Run inside a tree (cwd and sys.path): time the benchmark over TASKS on a warm model."""
    from registry.catalog.shipped import smollm2_path
    from registry.catalog.versions import Catalog
    from registry.evaluation.benchmark import benchmark_version, warm_up
    from registry.serving.pool import WarmPool
    from registry.settings import get_settings

    settings = get_settings(home=home)
    catalog = Catalog(settings)
    record, _ = catalog.register(smollm2_path(), name="smollm2-135m", capabilities=["chat", "text-generation"])
    if kind == "baseline":
        from registry.evaluation.prompts import build_messages

        from registry.evaluation.datasets import load_validation_set
        from registry.evaluation.scoring import score

        sets = [load_validation_set(name, settings.datasets_dir) for name in TASKS]

        def prompt_and_score(task_set: Any, item: Any, answer: str) -> None:
            build_messages(item)
            score(item, answer)
    else:
        from registry.evaluation.tasks import TaskCatalog

        tasks = TaskCatalog(settings)
        sets = [tasks.get(name) for name in TASKS]

        def prompt_and_score(task_set: Any, item: Any, answer: str) -> None:
            messages = task_set.messages(item)
            task_set.request(messages)
            task_set.score(item, messages, answer)

    with WarmPool(settings) as pool:
        warm_up(pool.get(record))
        started = time.perf_counter()
        results = [benchmark_version(pool, record, task_set, limit=limit) for task_set in sets]
        wall = time.perf_counter() - started
    items = sum(len(r.calls) for r in results)
    # The same synthetic answer per item in both trees (the baseline's rows keep no answer text).
    answers = [(s, item, json.dumps(item.data)[:80]) for s in sets for item in s.items[:limit]]
    replay_started = time.perf_counter()
    for _ in range(REPLAYS):
        for task_set, item, answer in answers:
            prompt_and_score(task_set, item, answer)
    replay_us = (time.perf_counter() - replay_started) / (REPLAYS * len(answers)) * 1e6
    return {
        "kind": kind, "items": items, "wall_s": wall, "wall_ms_per_item": wall / items * 1000,
        "prompt_and_score_us_per_item": replay_us,
        "quality": {r.run["task"]: r.run["quality"] for r in results},
    }


# --------------------------------------------------------------------------- the driver


def _run_worker(tree: Path, kind: str, home: Path, limit: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "ARBITER_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--home", str(home), "--limit", str(limit)],
        cwd=tree, env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"task_overhead: the {kind} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    machine = harness.machine_facts()
    with tempfile.TemporaryDirectory(prefix="arbiter-task-overhead-") as scratch:
        baseline_tree = Path(scratch) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline_tree), args.baseline],
                       check=True, capture_output=True)
        try:
            trees = {"baseline": baseline_tree, "candidate": REPO}
            runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "candidate": []}
            for round_ in range(args.rounds):
                order = ("baseline", "candidate") if round_ % 2 == 0 else ("candidate", "baseline")
                for kind in order:
                    home = Path(scratch) / f"home-{kind}-{round_}"
                    home.mkdir()
                    runs[kind].append(_run_worker(trees[kind], kind, home, args.limit))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline_tree)],
                           check=False, capture_output=True)
    base = statistics.median(r["wall_ms_per_item"] for r in runs["baseline"])
    cand = statistics.median(r["wall_ms_per_item"] for r in runs["candidate"])
    base_us = statistics.median(r["prompt_and_score_us_per_item"] for r in runs["baseline"])
    cand_us = statistics.median(r["prompt_and_score_us_per_item"] for r in runs["candidate"])
    ratio = cand / base
    return {
        "benchmark": "task_overhead", "baseline_commit": args.baseline, "tasks": list(TASKS), "limit": args.limit,
        "rounds": args.rounds, "goal_ratio": GOAL, "ratio": round(ratio, 4), "met": ratio <= GOAL,
        "baseline_ms_per_item": round(base, 2), "candidate_ms_per_item": round(cand, 2),
        "baseline_prompt_and_score_us": round(base_us, 1), "candidate_prompt_and_score_us": round(cand_us, 1),
        "prompt_and_score_share_of_item": round(cand_us / 1000 / cand, 5),
        "quality_equal": all(b["quality"] == c["quality"] for b, c in zip(runs["baseline"], runs["candidate"], strict=True)),
        "runs": runs, "machine": machine,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.home, args.limit)))
        return 0
    result = measure(args)
    out = harness.write_json(result, args.out)
    print(
        f"task_overhead: {result['ratio']:.3f}x wall per item (goal <= {GOAL}x, {'met' if result['met'] else 'MISSED'}): "
        f"{result['candidate_ms_per_item']:.1f} ms task files vs {result['baseline_ms_per_item']:.1f} ms hard-coded; "
        f"prompt+score {result['candidate_prompt_and_score_us']:.0f} us vs {result['baseline_prompt_and_score_us']:.0f} us "
        f"per item; same quality: {result['quality_equal']}{harness.busy_warning(result)} -> {harness.shown(out)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
