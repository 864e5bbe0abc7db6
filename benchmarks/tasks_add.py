"""``arbiter tasks add`` at the size a real validation set has: 10,000 items, validation included.

A task file with three scorers (a label from a fixed set, a reference match, a regex) over a
generated JSONL set. Each round, on a fresh ARBITER_HOME, in fresh processes as a user runs it:

* ``arbiter tasks add`` of the 10,000-item task (the figure the goal is about: ≤ 5 s on 2 cores);
* the same command on the first 10 items of it (the baseline: imports, Great Expectations' start,
  MLflow-free CLI start-up — what does not grow with the set);
* ``python -c "import great_expectations"`` alone, so the line says how much of the fixed cost is GE.

In one process after the imports, ``compile_task`` on the 10,000 items is also timed (what a second
add in a long-lived process, e.g. a notebook, costs). Ratios are 10,000-item / 10-item walls.

    .venv/bin/python benchmarks/tasks_add.py --rounds 3
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
DEFAULT_OUT = REPO / "results" / "benchmarks" / "tasks_add.json"
GOAL_S = 5.0
TEAMS = ("billing", "bugs", "accounts", "shipping", "security")
SPEC = """\
name: {name}
description: Route a support ticket to the team that handles it.
capabilities: [chat]
data:
  path: {data}
  fields:
    id: text
    ticket: {{type: text, max_length: 400}}
    team: text
    keywords: {{type: "list[text]", unique_items: true}}
prompt:
  system: You route support tickets.
  template: |-
    Which team handles this ticket: {{{{ "billing, bugs, accounts, shipping or security" }}}}?

    Ticket: {{{{ ticket }}}}
  examples:
    - item: {{ticket: "I was charged twice this month."}}
      answer: billing
generation: {{max_tokens: 8}}
scoring:
  scorers:
    - {{scorer: label, reference: team, labels: [billing, bugs, accounts, shipping, security], weight: 3}}
    - {{scorer: contains, reference: keywords}}
    - {{scorer: regex, pattern: "^\\\\s*\\\\w+\\\\s*$", name: one_word}}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--items", type=int, default=10_000, help="items in the large set (default 10,000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.items < 10:
        parser.error("--rounds must be at least 1 and --items at least 10")
    return args


def write_task(folder: Path, name: str, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.jsonl").open("w") as out:
        for i in range(n):
            team = TEAMS[i % len(TEAMS)]
            row = {"id": f"t-{i:06d}", "ticket": f"Ticket {i}: something about {team} went wrong on order {i * 7}.",
                   "team": team, "keywords": [team, f"order {i * 7}"]}
            out.write(json.dumps(row) + "\n")
    spec = folder / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, data=f"{name}.jsonl"))
    return spec


def _wall(argv: list[str], home: Path) -> float:
    env = {**os.environ, "ARBITER_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tasks_add: {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return wall


def measure(args: argparse.Namespace) -> dict[str, Any]:
    arbiter = str(Path(sys.executable).parent / "arbiter")
    machine = harness.machine_facts()
    large, small, ge = [], [], []
    with tempfile.TemporaryDirectory(prefix="arbiter-tasks-add-") as scratch:
        root = Path(scratch)
        big = write_task(root / "big", "support", args.items)
        little = write_task(root / "little", "support", 10)
        for round_ in range(args.rounds):
            large.append(_wall([arbiter, "tasks", "add", str(big), "--json"], root / f"home-big-{round_}"))
            small.append(_wall([arbiter, "tasks", "add", str(little), "--json"], root / f"home-small-{round_}"))
            ge.append(_wall([sys.executable, "-c", "import great_expectations"], root))
        from registry.evaluation.tasks import compile_task

        compile_task(little)  # imports and Great Expectations' context, once
        started = time.perf_counter()
        task, _ = compile_task(big)
        in_process = time.perf_counter() - started
    large_s, small_s = statistics.median(large), statistics.median(small)
    return {
        "benchmark": "tasks_add", "items": args.items, "rounds": args.rounds, "goal_s": GOAL_S,
        "cli_wall_s": round(large_s, 3), "met": large_s <= GOAL_S, "cli_wall_10_items_s": round(small_s, 3),
        "ratio_to_10_items": round(large_s / small_s, 3), "great_expectations_import_s": round(statistics.median(ge), 3),
        "in_process_compile_s": round(in_process, 3), "items_compiled": len(task.items),
        "walls": {"large": large, "small": small, "ge_import": ge},
        "machine": machine,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    out = harness.write_json(result, args.out)
    print(
        f"tasks_add: {result['items']:,} items in {result['cli_wall_s']:.2f} s (goal <= {GOAL_S:.0f} s, "
        f"{'met' if result['met'] else 'MISSED'}); 10 items {result['cli_wall_10_items_s']:.2f} s "
        f"({result['ratio_to_10_items']:.2f}x), of which importing Great Expectations {result['great_expectations_import_s']:.2f} s; "
        f"in a warm process {result['in_process_compile_s']:.2f} s{harness.busy_warning(result)} -> {harness.shown(out)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
