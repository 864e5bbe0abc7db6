"""A user's trained ONNX classifier, benchmarked on a classification task like any LLM and put on its
route: real skl2onnx export, real registration (MLflow), real onnxruntime, the runs row with its
quality and energy; on a task that is not a classification task it is refused, by the benchmark
and by ``Routes.promote``, with the contract's reason."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from onnx_models import LABELS, TICKET_LABELS, text_classifier, ticket_tokenizer, token_classifier

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.errors import PromotionError, UserError
from registry.evaluation.benchmark import benchmark_and_record, benchmark_version
from registry.evaluation.tasks import TaskCatalog
from registry.machine.hardware import fingerprint
from registry.serving.pool import WarmPool

pytestmark = pytest.mark.integration

SPEC = """\
name: {name}
description: Route a support message to the team that handles it.
data:
  path: tickets.jsonl
  fields: {{id: text, text: text, label: text}}
prompt:
  template: "Which team handles this? Reply with one of: billing, technical, account, shipping. {{{{ text }}}}"
generation: {{max_tokens: 8}}
{classification}scoring:
  scorers:
    - {{scorer: label, reference: label{labels}}}
"""
ROWS = [  # none of them a training text of tests/onnx_models.py
    ("t1", "I was charged twice for one order", "billing"),
    ("t2", "the invoice shows the wrong amount", "billing"),
    ("t3", "the app crashes when I open settings", "technical"),
    ("t4", "the login page will not load at all", "technical"),
    ("t5", "I need to reset my password", "account"),
    ("t6", "please delete my account and my data", "account"),
    ("t7", "my parcel is delayed by a week", "shipping"),
    ("t8", "the delivery went to my old address", "shipping"),
]


def write_task(folder: Path, name: str, *, classification: bool) -> Path:
    folder.mkdir()
    (folder / "tickets.jsonl").write_text("".join(json.dumps({"id": i, "text": t, "label": lb}) + "\n" for i, t, lb in ROWS))
    section = f"classification: {{input: text, labels: [{', '.join(LABELS)}]}}\n" if classification else ""
    labels = "" if classification else f", labels: [{', '.join(LABELS)}]"
    (folder / f"{name}.yaml").write_text(SPEC.format(name=name, classification=section, labels=labels))
    return folder / f"{name}.yaml"


def test_a_trained_classifier_is_benchmarked_and_routed_on_its_classification_task(tmp_path: Path, catalog: Catalog) -> None:
    tasks = TaskCatalog(catalog.settings)
    tickets, _ = tasks.add(write_task(tmp_path / "tickets", "tickets", classification=True))
    chat_only, _ = tasks.add(write_task(tmp_path / "chat", "tickets-chat", classification=False))
    record, _ = catalog.register_onnx(text_classifier(tmp_path / "clf.onnx"), name="tickets-clf", labels=list(LABELS))

    with WarmPool(catalog.settings) as pool:
        run = benchmark_and_record(catalog, pool, record, tickets, limit=None)
        with pytest.raises(UserError, match=r"^tickets-clf/1 is a text classifier \(labels account, billing, "
                                            r"shipping, technical\); task tickets-chat/1 is not a classification task"):
            benchmark_version(pool, record, chat_only)

    assert (run["task"], run["model"], run["n"], run["n_ok"], run["n_unscored"]) == ("tickets", "tickets-clf", 8, 8, 0)
    calls = catalog.store.query("select item_id, answer, quality, energy_mwh from calls where run_id = $1", [run["run_id"]])
    assert sorted(c["item_id"] for c in calls) == [i for i, _, _ in ROWS]
    assert all(c["answer"] in LABELS for c in calls)  # one of its labels, scored by the task's label scorer
    assert run["quality"] == pytest.approx(statistics.fmean(c["quality"] for c in calls)) and run["quality"] >= 0.75
    assert run["quality_source"] == "reference" and run["p50_ms"] > 0 and run["load_ms"] is not None
    assert run["energy_mwh"] > 0 and run["energy_source"]  # measured per call, as for an LLM
    assert all(c["energy_mwh"] is not None for c in calls)
    assert catalog.store.latest_run("tickets", "tickets-clf", 1, fingerprint().hardware_id)["run_id"] == run["run_id"]

    routes = Routes(catalog)
    with pytest.raises(PromotionError, match=r"task tickets-chat/1 is not a classification task \(it needs chat\); "
                                             r"promote a version that can serve route 'tickets-chat'$"):
        routes.promote("tickets-chat", "tickets-clf", 1, force=True, contract=tasks.contract("tickets-chat"))
    assert "tickets-chat" not in routes.list()  # refused before anything was made
    shown = routes.promote("tickets", "tickets-clf", 1, contract=tasks.contract("tickets"))
    assert shown.champion is not None and (shown.champion.model, shown.champion.version) == ("tickets-clf", 1)


def test_a_token_id_classifier_is_benchmarked_on_the_shipped_task(tmp_path: Path, catalog: Catalog) -> None:
    """A fine-tuned-style classifier that reads token ids (``--tokenizer``) on the shipped
    ``ticket-topic`` task, all 48 items: the same path as the text classifier, its logits' argmax
    scored by the task's label scorer (0.896 when the model was built)."""
    task = TaskCatalog(catalog.settings).get("ticket-topic")
    record, _ = catalog.register_onnx(token_classifier(tmp_path / "tok-clf.onnx"), name="ticket-tok",
                                      labels=list(TICKET_LABELS), tokenizer=ticket_tokenizer(tmp_path / "tokenizer.json"))
    with WarmPool(catalog.settings) as pool:
        run = benchmark_and_record(catalog, pool, record, task, limit=None)
    assert (run["task"], run["n"], run["n_ok"], run["n_unscored"]) == ("ticket-topic", 48, 48, 0)
    assert run["quality"] > 0.8 and run["p50_ms"] > 0 and run["energy_mwh"] > 0
