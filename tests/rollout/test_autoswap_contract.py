"""Auto-swap picks a replacement that can serve the route's task: on a classification route whose
classifier champion fails, another classifier with the task's labels — not one with other labels,
which the champion's capabilities alone would allow, and none at all when only such are left.
(That a classifier never takes a chat route is the selector's contract exclusion, which auto-swap
passes the same way: tests/selection/test_selection_contract.py.)

Real MLflow, real ONNX files registered, the champion's failed calls as the gateway writes them;
nothing is loaded.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from onnx_models import LABELS, text_classifier

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.evaluation.tasks import TaskCatalog
from registry.rollout.autoswap import AutoSwapper, AutoSwapPolicy

pytestmark = pytest.mark.integration

SPEC = """\
name: tickets
description: Route a support message to its team.
data:
  path: items.jsonl
  fields: {{id: text, text: text, label: text}}
prompt:
  template: "Which team handles this? billing, technical, account or shipping? {{{{ text }}}}"
classification: {{input: text, labels: [{labels}]}}
scoring:
  scorers:
    - {{scorer: label, reference: label}}
"""
POLICY = AutoSwapPolicy(min_samples=10, min_dwell_s=0, cooldown_s=0)


def add_task(tasks: TaskCatalog, folder: Path) -> None:
    folder.mkdir()
    rows = [{"id": f"t{i}", "text": f"message number {i}", "label": label} for i, label in enumerate(LABELS)]
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "tickets.yaml").write_text(SPEC.format(labels=", ".join(LABELS)))
    tasks.add(folder / "tickets.yaml")


def fail_calls(catalog: Catalog, route: str, model: str, n: int = 20) -> None:
    """``n`` failed gateway calls of the champion: a champion auto-swap must replace."""
    catalog.store.append("calls", [{
        "call_id": uuid.uuid4().hex, "ts": datetime.now(UTC), "source": "gateway", "route": route, "model": model,
        "version": 1, "ok": False, "error": "boom", "wall_ms": 5.0,
    } for _ in range(n)])


def test_auto_swap_keeps_to_the_routes_task(tmp_path: Path, catalog: Catalog) -> None:
    tasks = TaskCatalog(catalog.settings)
    add_task(tasks, tmp_path / "tickets")
    catalog.register_onnx(text_classifier(tmp_path / "clf.onnx"), name="clf", labels=list(LABELS))
    catalog.register_onnx(text_classifier(tmp_path / "clf-b.onnx", seed=1), name="clf-b", labels=list(LABELS))
    # Other labels, and first by name: the champion's capabilities alone would pick it.
    catalog.register_onnx(text_classifier(tmp_path / "aaa.onnx", labels=("billing", "refund")), name="clf-aaa")
    routes = Routes(catalog)
    routes.promote("tickets", "clf", 1, force=True, contract=tasks.contract("tickets"))
    swapper = AutoSwapper(catalog, POLICY)

    fail_calls(catalog, "tickets", "clf")
    decision = swapper.check("tickets")
    assert decision is not None and (decision.action, decision.to) == ("swap", "clf-b/1")
    assert routes.show("tickets").champion.model == "clf-b"  # type: ignore[union-attr]

    # clf-b fails too, and its previous (clf) is degraded as well: only clf-aaa is left, which cannot serve.
    fail_calls(catalog, "tickets", "clf")
    fail_calls(catalog, "tickets", "clf-b")
    decision = swapper.check("tickets")
    assert decision is not None and decision.action == "held" and decision.reasons[0] == "no healthy alternative"
    assert routes.show("tickets").champion.model == "clf-b"  # type: ignore[union-attr]
