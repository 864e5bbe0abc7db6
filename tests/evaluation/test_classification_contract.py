"""A task file's ``classification:`` section and the task contract: a text classifier serves only a
classification task whose labels are its own (as sets), a text model serves a task by its
capabilities, and a classifier is sent the item's raw text where a text model gets the prompt.

Versions are ``VersionRecord``s built in memory and tasks are compiled from a spec dict (no data
file, no MLflow): the rule is a function of the two specs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from registry.errors import DatasetError
from registry.evaluation.scoring import TaskScoring
from registry.evaluation.tasks import Item, TaskVersion
from registry.evaluation.taskspec import parse_spec
from registry.evaluation.templates import PromptTemplate
from registry.providers import GenerationRequest
from registry.spec import Hardware, ModelSpec, VersionRecord

pytestmark = pytest.mark.unit

LABELS = ["billing", "technical", "account", "shipping"]


def spec(**changes: Any) -> dict[str, Any]:
    """A fixed-label task as a user writes it; ``changes`` replace top-level keys (None drops one)."""
    document = {
        "name": "tickets",
        "description": "Route a support message to its team.",
        "data": {"path": "tickets.jsonl", "fields": {"id": "text", "text": "text", "label": "text", "n": "integer"}},
        "prompt": {"template": "Which team handles this? Reply with one of: billing, technical, account, shipping.\n"
                               "{{ text }}"},
        "classification": {"input": "text", "labels": LABELS},
        "scoring": {"scorers": [{"scorer": "label", "reference": "label"}]},
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def task(**changes: Any) -> TaskVersion:
    """The spec compiled as a task version (no items, nothing recorded)."""
    parsed = parse_spec(spec(**changes), "tickets.yaml")
    return TaskVersion(
        name=parsed.name, version=1, sha256="0" * 64, data_sha256="0" * 64, spec=parsed, items=(),
        prompt=PromptTemplate(parsed.prompt, set(parsed.data.fields), "tickets.yaml"),
        scoring=TaskScoring(parsed.scoring, None, "tickets.yaml"), directory=Path("."), data_path=Path("x"),
        source="tickets.yaml", added="",
    )


def classifier(labels: list[str] = LABELS, name: str = "clf") -> VersionRecord:
    spec = ModelSpec(name=name, kind="onnx", source=f"/models/{name}.onnx", sha256=uuid.uuid4().hex * 2,
                     size_bytes=40_000, capabilities=("classification",), context_window=8192, labels=tuple(labels),
                     hardware=Hardware(accelerators=("cpu", "cuda"), min_memory_mb=64))
    return VersionRecord(name, 1, "active", spec, datetime.now(UTC), None)


def llm(name: str = "smollm2", capabilities: tuple[str, ...] = ("chat", "text-generation")) -> VersionRecord:
    spec = ModelSpec(name=name, kind="gguf", source=f"/models/{name}.gguf", sha256=uuid.uuid4().hex * 2,
                     capabilities=capabilities, context_window=8192, hardware=Hardware(min_memory_mb=300))
    return VersionRecord(name, 1, "active", spec, datetime.now(UTC), None)


# --- the task file ---------------------------------------------------------------------------------------


def test_a_label_scorer_without_labels_takes_the_tasks_labels() -> None:
    parsed = parse_spec(spec(live={"scorers": [{"scorer": "label", "name": "names_a_label"}]}), "tickets.yaml")
    assert parsed.classification is not None and parsed.classification.labels == tuple(LABELS)
    assert parsed.scoring.scorers[0].labels == tuple(LABELS)  # type: ignore[union-attr]
    assert parsed.live is not None and parsed.live.scorers[0].labels == tuple(LABELS)  # type: ignore[union-attr]
    # The same labels said again, in any order, are the same set.
    same = [{"scorer": "label", "reference": "label", "labels": LABELS[::-1]}]
    assert parse_spec(spec(scoring={"scorers": same}), "tickets.yaml").scoring.scorers[0].reference == "label"
    # Plain strings, not slugs: what a trained model's labels are.
    assert parse_spec(spec(classification={"input": "text", "labels": ["Tech support", "Billing"]}),
                      "t.yaml").classification.labels == ("Tech support", "Billing")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"classification": {"input": "ticket", "labels": LABELS}},
         "classification.input 'ticket' must name a required text field of data.fields (declared: id, text, label, n)"),
        ({"classification": {"input": "n", "labels": LABELS}}, "classification.input 'n' must name a required text"),
        ({"classification": {"labels": LABELS}}, "classification.input: required; add it"),
        ({"classification": {"input": "text", "labels": ["billing"]}}, "classification.labels: Tuple should have at least 2"),
        ({"classification": {"input": "text", "labels": ["billing", "Billing!"]}},
         "labels 'billing' and 'Billing!' read the same to the label scorer"),
        ({"classification": {"input": "text", "labels": ["billing", "?"]}}, "label '?' is no word to the label scorer"),
        ({"classification": {"input": "text", "labels": ["billing ", "account"]}}, "label 'billing ' has space around it"),
        ({"classification": {"input": "text", "labels": LABELS, "field": "text"}},
         "classification.field: not a known key"),
        ({"scoring": {"scorers": [{"scorer": "label", "reference": "label", "labels": ["billing", "bugs"]}]}},
         "scoring.scorers.1 (label) scores other labels than classification.labels; leave its labels and "
         "labels_field out"),
        ({"classification": None},
         "scoring.scorers.1: give exactly one of labels (a list for the whole task) or labels_field (a field per "
         "item), or neither in a task whose classification: section lists its labels"),
    ],
)
def test_a_bad_classification_section_is_one_line(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(DatasetError) as caught:
        parse_spec(spec(**changes), "tickets.yaml")
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert message.count(";") <= 2  # one mistake, one reason (a label scorer does not echo the labels' error)


# --- who can serve it --------------------------------------------------------------------------------------


def test_a_classifier_with_the_tasks_labels_serves_a_classification_task() -> None:
    tickets = task()
    reordered = classifier(LABELS[::-1])
    assert tickets.classification is not None and tickets.classification.input == "text"
    assert tickets.cannot_serve(reordered) is None and tickets.missing_capabilities(reordered) == []
    assert tickets.cannot_serve(llm()) is None  # a chat model serves it by the prompt, as any task


def test_a_classifier_with_other_labels_is_refused_naming_both_sets() -> None:
    other = classifier(["billing", "technical", "refund"])
    assert task().cannot_serve(other) == (
        "clf/1 is a text classifier (labels billing, technical, refund); task tickets/1 answers labels billing, "
        "technical, account, shipping (not the task's: refund; missing: account, shipping)"
    )
    assert task().missing_capabilities(other) == ["labels billing, technical, account, shipping"]


def test_a_classifier_cannot_serve_a_task_without_a_classification_section() -> None:
    chat_task = task(classification=None, scoring={"scorers": [{"scorer": "exact", "reference": "label"}]})
    assert chat_task.classification is None
    assert chat_task.cannot_serve(classifier()) == (
        "clf/1 is a text classifier (labels billing, technical, account, shipping); task tickets/1 is not a "
        "classification task (it needs chat)"
    )
    assert chat_task.missing_capabilities(classifier()) == ["chat"]
    # Even a task that names the capability needs the section: it says which labels are answers.
    named = task(classification=None, capabilities=["classification"],
                 scoring={"scorers": [{"scorer": "exact", "reference": "label"}]})
    assert named.missing_capabilities(classifier()) == ["a classification task"]
    assert "is not a classification task (it needs classification)" in named.cannot_serve(classifier())  # type: ignore[operator]


def test_a_text_model_serves_a_classification_task_by_its_capabilities() -> None:
    tickets = task(capabilities=["chat", "json"])
    assert tickets.cannot_serve(llm(capabilities=("chat", "json"))) is None
    plain = llm("plain", capabilities=("text-generation",))
    assert tickets.cannot_serve(plain) == "plain/1 lacks ['chat', 'json'], which task tickets/1 needs"
    assert tickets.missing_capabilities(plain) == ["chat", "json"]


# --- what each is sent -----------------------------------------------------------------------------------------


def test_a_classifier_gets_the_raw_text_and_a_text_model_the_prompt() -> None:
    tickets = task()
    item = Item(id="t1", task="tickets", data={"id": "t1", "text": "My card was charged twice", "label": "billing", "n": 1})
    messages = tickets.messages(item)
    assert tickets.request_for(classifier(), item, messages) == GenerationRequest(prompt="My card was charged twice")
    sent = tickets.request_for(llm(), item, messages)
    assert sent.prompt is None and sent.messages[-1]["content"].endswith("My card was charged twice")
    assert "Reply with one of" in sent.messages[-1]["content"]
    # The classifier's answer is scored by the task's own scorer against the item's label.
    assert tickets.score(item, messages, "billing").quality == 1.0
    assert tickets.score(item, messages, "shipping").quality == 0.0


def test_the_summary_shows_the_classification_section() -> None:
    summary = task().summary()
    assert summary["classification"] == {"input": "text", "labels": LABELS}
    assert task(classification=None, scoring={"scorers": [{"scorer": "exact", "reference": "label"}]}
                ).summary()["classification"] is None
