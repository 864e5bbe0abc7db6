"""The task contract where a version is chosen or replaced: the selector excludes a version that
cannot serve the task with a ``task contract`` reason, and the compatibility check and the
rollout's refusal take a classification route's contract from its task, not from its champion.

Versions are ``VersionRecord``s built in memory over a real Parquet/DuckDB results store, as in
test_selection.py; the contracts are the ones ``TaskVersion.contract`` makes for each kind of task.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry.errors import PromotionError, SelectionError
from registry.results.store import ResultsStore
from registry.rollout.compatibility import check_compatibility
from registry.rollout.promotion import _check_candidate
from registry.selection.contract import TaskContract
from registry.selection.criteria import Criteria
from registry.selection.profiles import ProfileCache
from registry.selection.selector import LocalModelSelector
from registry.spec import Hardware, ModelSpec, VersionRecord

pytestmark = pytest.mark.unit
HW = "hw-test"
LABELS = ("billing", "technical", "account", "shipping")
TICKETS = TaskContract("tickets/1", ("chat",), LABELS)  # a classification task: a chat model or a classifier
QA = TaskContract("qa/1", ("chat",))                     # a chat task: never a classifier


def classifier(name: str = "clf", labels: tuple[str, ...] = LABELS) -> VersionRecord:
    spec = ModelSpec(name=name, kind="onnx", source=f"/models/{name}.onnx", sha256=uuid.uuid4().hex * 2,
                     size_bytes=40_000, capabilities=("classification",), context_window=8192, labels=labels,
                     hardware=Hardware(accelerators=("cpu", "cuda"), min_memory_mb=64))
    return VersionRecord(name, 1, "active", spec, datetime.now(UTC), None)


def llm(name: str = "smollm2", capabilities: tuple[str, ...] = ("chat", "text-generation")) -> VersionRecord:
    spec = ModelSpec(name=name, kind="gguf", source=f"/models/{name}.gguf", sha256=uuid.uuid4().hex * 2,
                     capabilities=capabilities, context_window=8192, family="smollm2", quantization="Q4_0",
                     hardware=Hardware(min_memory_mb=300))
    return VersionRecord(name, 1, "active", spec, datetime.now(UTC), None)


def benchmark(store: ResultsStore, task: str, record: VersionRecord, quality: float) -> None:
    store.append("runs", [{
        "run_id": uuid.uuid4().hex, "ts": datetime.now(UTC), "task": task, "task_version": 1, "model": record.name,
        "version": record.version, "n": 20, "n_ok": 20, "quality": quality, "p50_ms": 50.0, "peak_rss_mb": 200.0,
        "load_ms": 100.0, "hardware_id": HW,
    }])


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path)


# --- the selector -------------------------------------------------------------------------------------------


def test_the_selector_excludes_who_cannot_serve_the_task_with_the_reason(store: ResultsStore) -> None:
    good, wrong, chat = classifier(), classifier("clf-old", ("billing", "technical")), llm()
    benchmark(store, "tickets", good, 0.9)
    benchmark(store, "tickets", chat, 0.5)
    pick = LocalModelSelector(lambda: [wrong, good, chat], ProfileCache(store), hardware_id=HW)

    chosen = pick.select(Criteria(task="tickets"), TICKETS)
    assert chosen.primary.ref == "clf/1" and chosen.fallback is not None and chosen.fallback.ref == "smollm2/1"
    assert [(e.ref, e.reasons) for e in chosen.excluded] == [("clf-old/1", (
        "task contract: clf-old/1 is a text classifier (labels billing, technical); task tickets/1 answers labels "
        "billing, technical, account, shipping (missing: account, shipping)",))]
    assert chosen.as_json()["contract"] == {"task": "tickets/1", "capabilities": ["chat"], "labels": list(LABELS)}

    on_qa = pick.select(Criteria(task="qa"), QA)
    assert [c.ref for c in on_qa.candidates] == ["smollm2/1"]
    assert {e.ref: e.reasons for e in on_qa.excluded}["clf/1"] == (
        "task contract: clf/1 is a text classifier (labels billing, technical, account, shipping); task qa/1 is not "
        "a classification task (it needs chat)",)
    # Without a contract (a route that is no task) the selector judges by the criteria alone, as before.
    assert pick.select(Criteria(task="qa", capabilities=("chat",))).excluded[0].reasons == (
        "missing capability chat",)


def test_with_no_version_left_the_error_names_the_contract(store: ResultsStore) -> None:
    pick = LocalModelSelector(lambda: [classifier()], ProfileCache(store), hardware_id=HW)
    with pytest.raises(SelectionError, match=r"no version can serve qa under these criteria — clf/1: task contract: "
                                             r"clf/1 is a text classifier .*not a classification task \(it needs chat\)$"):
        pick.select(Criteria(task="qa"), QA)


# --- compatibility and the rollout's refusal --------------------------------------------------------------------


def test_on_a_classification_route_a_classifier_and_a_chat_model_replace_each_other(store: ResultsStore) -> None:
    chat, clf = llm(), classifier()
    benchmark(store, "tickets", chat, 0.6)
    benchmark(store, "tickets", clf, 0.9)
    profiles = ProfileCache(store)
    forward = check_compatibility("tickets", chat, clf, profiles, HW, contract=TICKETS)
    assert forward.can_replace, forward.reasons
    back = check_compatibility("tickets", clf, chat, profiles, HW, contract=TICKETS)
    assert back.reasons == ("quality on tickets 0.600 is under 0.95 × clf/1's 0.900",)  # figures, not capabilities
    _check_candidate("tickets", clf, chat, TICKETS)  # nothing to refuse before its benchmark
    _check_candidate("tickets", chat, clf, TICKETS)


def test_a_classifier_is_refused_on_any_other_route(store: ResultsStore) -> None:
    chat, clf, wrong = llm(), classifier(), classifier("clf-old", ("billing", "technical"))
    for record in (chat, clf, wrong):
        benchmark(store, "qa", record, 0.9)
        benchmark(store, "tickets", record, 0.9)
    profiles = ProfileCache(store)
    refused = check_compatibility("qa", chat, clf, profiles, HW, contract=QA)
    assert refused.reasons == ("clf/1 is a text classifier (labels billing, technical, account, shipping); task qa/1 "
                               "is not a classification task (it needs chat)",)
    # A route that is no task: the champion's capabilities decide, as before.
    assert check_compatibility("qa", chat, clf, profiles, HW).reasons == (
        "lacks smollm2/1's capabilities chat, text-generation",)
    wrong_labels = check_compatibility("tickets", clf, wrong, profiles, HW, contract=TICKETS)
    assert not wrong_labels.can_replace and "task tickets/1 answers labels" in wrong_labels.reasons[0]

    with pytest.raises(PromotionError, match=r"^clf/1 is a text classifier .*\(it needs chat\); pick a candidate "
                                             r"that can serve route 'qa'$"):
        _check_candidate("qa", clf, chat, QA)
    with pytest.raises(PromotionError, match="lacks the route's capabilities"):  # a text model: as before
        _check_candidate("qa", llm("plain", ("text-generation",)), chat, QA)
