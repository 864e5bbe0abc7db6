"""A custom scorer that fails on an item leaves that item unscored in a real benchmark run: the run
counts it in ``n_unscored``, quality is the mean over the scored items, and the call row says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.catalog.versions import Catalog
from registry.evaluation.benchmark import benchmark_version, record_result
from registry.evaluation.tasks import TaskCatalog
from registry.serving.pool import WarmPool

pytestmark = pytest.mark.integration

SPEC = """\
name: fragile
description: Capitals, scored by a custom function that fails on one item.
data:
  path: fragile.jsonl
  fields: {id: text, country: text, capital: text}
prompt:
  template: "What is the capital of {{ country }}? Answer in one word."
generation: {max_tokens: 8}
scoring:
  scorers:
    - {scorer: contains, reference: capital}
    - {scorer: python, function: "fragile_scorer:score", reads: [capital]}
"""
SCORER = """\
def score(item, answer):
    if item["id"] == "c2":
        raise RuntimeError("no rule for this one")
    return 1.0
"""


def test_a_failing_custom_scorer_leaves_its_item_unscored(tmp_path: Path, catalog: Catalog, smollm2,
                                                          session_pool: WarmPool) -> None:
    (tmp_path / "fragile.yaml").write_text(SPEC)
    (tmp_path / "fragile_scorer.py").write_text(SCORER)
    rows = [{"id": "c1", "country": "France", "capital": "Paris"}, {"id": "c2", "country": "Italy", "capital": "Rome"}]
    (tmp_path / "fragile.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task, _ = TaskCatalog(catalog.settings).add(tmp_path / "fragile.yaml")
    record, _ = catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))

    run = record_result(catalog, benchmark_version(session_pool, record, task, limit=None))

    assert (run["n"], run["n_unscored"], run["task"], run["task_version"]) == (2, 1, "fragile", 1)
    calls = {c["item_id"]: c for c in catalog.store.query("select * from calls where run_id = $1", [run["run_id"]])}
    assert calls["c2"]["quality"] is None
    assert calls["c2"]["score_problems"] == "python: fragile_scorer:score raised RuntimeError: no rule for this one"
    assert json.loads(calls["c2"]["scores"])["python"] is None
    assert calls["c1"]["score_problems"] is None and calls["c1"]["quality"] == run["quality"]  # the scored one alone
