"""The shipped ticket-topic sets and the checks a training set meets before anything trains on it.

Real files through the real Great Expectations suite (the task's own, as its validation set meets
it); each refusal is one line naming the rows and the fix."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest

from registry.errors import DatasetError, UserError
from registry.evaluation.scorers import normalize
from registry.evaluation.tasks import TaskVersion, compile_task
from registry.training.data import MIN_ROWS_PER_LABEL, check_training_data

pytestmark = pytest.mark.data

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
TRAINING = DATASETS / "ticket-topic.train.jsonl"
LABELS = ("billing", "technical", "account", "shipping")
NEAR = 0.6  # word-set Jaccard at or over which two texts count as near-duplicates


@pytest.fixture(scope="module")
def task() -> TaskVersion:
    return compile_task(DATASETS / "ticket-topic.yaml")[0]


def rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def written(tmp_path: Path, items: list[dict[str, object]]) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def test_the_shipped_sets_pass_their_expectations_with_12_and_60_items_per_label(task: TaskVersion) -> None:
    data = check_training_data(TRAINING, task)  # the task's suite, labels held to classification.labels
    assert task.classification is not None and task.classification.labels == LABELS
    assert Counter(item.data["label"] for item in task.items) == dict.fromkeys(LABELS, 12)
    assert Counter(data.targets) == dict.fromkeys(LABELS, 60)
    assert (data.rows, data.size_bytes, len(data.sha256)) == (240, TRAINING.stat().st_size, 64)
    assert data.provenance() == {
        "training_data": str(TRAINING), "training_data_sha256": data.sha256,
        "training_data_bytes": str(TRAINING.stat().st_size), "training_data_rows": "240",
    }


def test_no_item_is_shared_or_nearly_shared_between_the_sets() -> None:
    validation, training = rows(DATASETS / "ticket-topic.jsonl"), rows(TRAINING)
    everything = validation + training
    assert len({r["id"] for r in everything}) == len(everything)
    words = [(r["id"], set(normalize(r["text"]).split())) for r in everything]
    assert len({frozenset(w) for _, w in words}) == len(words)
    near = [(a, b) for (a, wa), (b, wb) in combinations(words, 2) if len(wa & wb) / len(wa | wb) >= NEAR]
    assert near == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"label": "refunds"}, "expect_column_values_to_be_in_set(label) at rows tt-train-001"),
        ({"text": None}, "expect_column_values_to_not_be_null(text) at rows tt-train-001"),
        ({"id": "tt-train-002"}, "expect_column_values_to_be_unique(id) at rows tt-train-002 (line 1)"),
    ],
    ids=["bad label", "missing field", "repeated id"],
)
def test_a_training_row_that_fails_the_tasks_expectations_is_refused_in_one_line(
    task: TaskVersion, tmp_path: Path, change: dict[str, object], says: str
) -> None:
    items = rows(TRAINING)
    items[0] = {k: v for k, v in (items[0] | change).items() if v is not None}
    with pytest.raises(DatasetError) as refused:
        check_training_data(written(tmp_path, items), task)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_an_item_of_the_validation_set_in_the_training_set_is_refused(task: TaskVersion, tmp_path: Path) -> None:
    validation = rows(DATASETS / "ticket-topic.jsonl")
    copied = {**validation[2], "id": "copy-1", "text": validation[2]["text"].upper() + "!!"}  # same text, normalized
    same_id = {**rows(TRAINING)[5], "id": validation[7]["id"]}
    with pytest.raises(DatasetError) as refused:
        check_training_data(written(tmp_path, [*rows(TRAINING), copied, same_id]), task)
    message = str(refused.value)
    assert "shares 2 items with task ticket-topic/0's validation set" in message
    assert f"copy-1 (same text as {validation[2]['id']})" in message and f"{validation[7]['id']} (same id)" in message
    assert "\n" not in message


def test_a_label_with_too_few_rows_is_refused(task: TaskVersion, tmp_path: Path) -> None:
    kept = [r for r in rows(TRAINING) if r["label"] != "shipping"] + [r for r in rows(TRAINING) if r["label"] == "shipping"][:2]
    with pytest.raises(DatasetError, match=rf"too few rows for shipping \(2\); give each label at least {MIN_ROWS_PER_LABEL}"):
        check_training_data(written(tmp_path, kept), task)


def test_a_task_without_a_classification_section_cannot_take_a_training_set() -> None:
    classify = compile_task(DATASETS / "classify.yaml")[0]
    with pytest.raises(UserError, match="task classify/0 has no classification section"):
        check_training_data(TRAINING, classify)


def test_a_missing_file_is_one_line(task: TaskVersion, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cannot read the training set .*nothing\.jsonl \(No such file or directory\)"):
        check_training_data(tmp_path / "nothing.jsonl", task)
