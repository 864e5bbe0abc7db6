"""The demo's trained text classifier against every shipped LLM version on its task, in one run.

Issue 18's measurement: on ``ticket-topic`` (datasets/ticket-topic.yaml, 4 fixed labels), the
scikit-learn classifier trained at set-up from the shipped training set and exported to ONNX is
benchmarked beside each LLM version the demo registers (SmolLM2 135M and Gemma 3 270M, each as
shipped and as the Q4_0 copy made here), through the same ``benchmark_and_record`` every caller
uses: same items, same scorer, same cost measurement. The figures are each version's quality,
p50/p95 latency per answer and energy per answer (the estimate from CPU time, ``energy_source``),
and the ratios of each LLM's figures to the classifier's, measured in this run.

    .venv/bin/python benchmarks/custom_classifier.py             # all items (~4 min on 2 cores)
    .venv/bin/python benchmarks/custom_classifier.py --limit 12  # quicker
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import harness

TASK = "ticket-topic"
CLASSIFIER = "ticket-topic-clf"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N validation items")
    parser.add_argument("--home", type=Path, default=None, help="ARBITER_HOME to use (default: a throwaway one)")
    parser.add_argument("--out", type=Path, default=harness.RESULTS_DIR / "custom_classifier.json")
    return parser.parse_args(argv)


def _versions(home: Path) -> tuple[Any, list[Any], Any]:
    """The catalog, the LLM versions the demo registers, and the classifier trained and registered here."""
    from registry.catalog.shipped import prepare_shipped_models
    from registry.catalog.versions import Catalog
    from registry.evaluation.tasks import TaskCatalog
    from registry.settings import get_settings
    from registry.training.data import check_training_data
    from registry.training.text_classifier import train_text_classifier

    settings = get_settings(home=home)
    catalog = Catalog(settings)
    llms = []
    for shipped in prepare_shipped_models(settings.models_dir, settings.n_threads):
        record, _ = catalog.register(shipped.path, name=shipped.name, capabilities=list(shipped.capabilities),
                                     chat_format=shipped.chat_format, provenance=shipped.provenance)
        llms.append(record)
    task = TaskCatalog(settings).get(TASK)
    training_file = harness.REPO / "datasets" / f"{TASK}.train.jsonl"
    trained = train_text_classifier(check_training_data(training_file, task), task, home / "trained")
    classifier, _ = catalog.register_onnx(trained.path, name=CLASSIFIER, labels=list(task.classification.labels),
                                          provenance=trained.provenance())
    return catalog, llms, classifier


def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from registry.evaluation.benchmark import benchmark_and_record
    from registry.evaluation.tasks import TaskCatalog
    from registry.serving.pool import WarmPool

    machine = harness.machine_facts()
    catalog, llms, classifier = _versions(home)
    task = TaskCatalog(catalog.settings).get(TASK)
    pool = WarmPool(catalog.settings)
    rows = {}
    try:
        for record in [classifier, *llms]:
            run = benchmark_and_record(catalog, pool, record, task, limit=args.limit)
            answers = run["n_ok"] or 1
            rows[record.ref] = {
                "kind": record.spec.kind,
                "quality": harness.rounded(run["quality"]),
                "p50_ms": harness.rounded(run["p50_ms"], 2),
                "p95_ms": harness.rounded(run["p95_ms"], 2),
                "energy_mwh_per_answer": None if run["energy_mwh"] is None else run["energy_mwh"] / answers,
                "energy_source": run["energy_source"],
                "load_ms": harness.rounded(run["load_ms"], 1),
                "n": run["n"],
                "n_ok": run["n_ok"],
            }
            pool.unload(record.ref)  # one model in memory at a time: no LLM's figures pay for another's
    finally:
        pool.close()
    clf = rows[classifier.ref]
    against = {}
    for record in llms:
        llm = rows[record.ref]
        against[record.ref] = {
            "quality_gain": harness.rounded(clf["quality"] - llm["quality"]),
            "p50_ratio": harness.rounded(llm["p50_ms"] / clf["p50_ms"], 1) if clf["p50_ms"] else None,
            "p95_ratio": harness.rounded(llm["p95_ms"] / clf["p95_ms"], 1) if clf["p95_ms"] else None,
            "energy_ratio": harness.rounded(llm["energy_mwh_per_answer"] / clf["energy_mwh_per_answer"], 1)
            if clf["energy_mwh_per_answer"] and llm["energy_mwh_per_answer"] is not None else None,
        }
    best_llm = max(llms, key=lambda r: rows[r.ref]["quality"]).ref
    return {
        "benchmark": "custom_classifier", "task": TASK, "limit": args.limit, "classifier": classifier.ref,
        "classifier_provenance": dict(classifier.spec.provenance), "versions": rows,
        "llm_over_classifier": against, "best_llm": best_llm,
        "classifier_wins_quality": clf["quality"] > rows[best_llm]["quality"], "machine": machine,
    }


def summary_line(result: dict[str, Any], out: Path) -> str:
    clf = result["versions"][result["classifier"]]
    best = result["best_llm"]
    llm = result["versions"][best]
    ratios = result["llm_over_classifier"][best]
    return (
        f"custom_classifier: {result['classifier']} quality {clf['quality']:.3f}, p50 {clf['p50_ms']:.2f} ms vs best LLM "
        f"{best} quality {llm['quality']:.3f}, p50 {llm['p50_ms']:.0f} ms ({ratios['p50_ratio']}x slower, "
        f"{ratios['energy_ratio']}x the energy per answer) on {result['task']}"
        f"{harness.busy_warning(result)} -> {harness.shown(out)}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return harness.run_main("custom_classifier", args, measure, summary_line)


if __name__ == "__main__":
    sys.exit(main())
