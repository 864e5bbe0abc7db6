"""The bundled validation sets pass their Great Expectations suites, and malformed sets are refused
with a one-line message that names the file, the failed expectation and the rows to fix."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from registry.errors import DatasetError
from registry.evaluation.datasets import load_validation_set, validate_file
from registry.evaluation.tasks import TASKS

pytestmark = pytest.mark.data

BUNDLED = Path(__file__).resolve().parents[2] / "datasets"

GOOD_ROWS: dict[str, dict[str, object]] = {
    "qa": {"id": "qa-001", "question": "What is 2 plus 2?", "references": ["4", "four"]},
    "extract": {"id": "extract-001", "text": "Tom, 19, lives in Rome.", "fields": {"name": "Tom", "age": 19}},
    "classify": {"id": "classify-001", "text": "Great!", "labels": ["positive", "negative"], "label": "positive"},
}


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def good(task: str, n: int, **changes: object) -> dict[str, object]:
    """A valid row for ``task`` with id ``<task>-00n``, with ``changes`` applied (None deletes a key)."""
    row = {**GOOD_ROWS[task], "id": f"{task}-{n:03d}", **changes}
    return {key: value for key, value in row.items() if value is not None}


@pytest.mark.parametrize("task", TASKS)
def test_bundled_set_validates(task: str) -> None:
    vs = load_validation_set(task, BUNDLED)
    assert vs.task == task
    assert len(vs.items) >= 20
    assert len({item.id for item in vs.items}) == len(vs.items)
    assert all(item.task == task and item.data["id"] == item.id for item in vs.items)
    assert vs.sha256 == hashlib.sha256((BUNDLED / f"{task}.jsonl").read_bytes()).hexdigest()


def test_validate_file_returns_the_task_columns_indexed_by_line(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(good("qa", 1)) + "\n\n" + json.dumps(good("qa", 2)) + "\n")
    frame = validate_file(path, "qa")
    assert list(frame.columns) == ["id", "question", "references"]
    assert list(frame.index) == [1, 3]  # the blank line 2 is skipped, numbers stay the editor's
    assert list(frame["id"]) == ["qa-001", "qa-002"]


def test_invalid_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(good("qa", 1)) + "\n" + '{"id": "qa-002", "question": \n')
    with pytest.raises(DatasetError, match=r"qa\.jsonl line 2 is not valid JSON"):
        validate_file(path, "qa")


def test_line_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [good("qa", 1), ["qa-002", "What?"]])
    with pytest.raises(DatasetError, match=r"line 2 is not a JSON object"):
        validate_file(path, "qa")


def test_missing_field_names_the_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [good("qa", 1), good("qa", 2), good("qa", 3, question=None)])
    with pytest.raises(DatasetError) as excinfo:
        validate_file(path, "qa")
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{path} fails 1 expectation: ")
    assert "expect_column_values_to_not_be_null(question) at rows qa-003" in message
    assert message.endswith("Fix those rows and run again.")


def test_column_missing_from_every_row_names_every_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [good("qa", n, references=None) for n in (1, 2)])
    with pytest.raises(DatasetError, match=r"not_be_null\(references\) at rows qa-001, qa-002"):
        validate_file(path, "qa")


def test_wrong_type_names_the_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [good("qa", 1), good("qa", 2, question=42)])
    with pytest.raises(DatasetError, match=r"expect_column_values_to_be_in_set\(question_is_text\) at rows qa-002"):
        validate_file(path, "qa")


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [good("qa", 1), good("qa", 2), good("qa", 1)])
    with pytest.raises(DatasetError, match=r"be_unique\(id\) at rows qa-001 \(line 1\), qa-001 \(line 3\)"):
        validate_file(path, "qa")


def test_label_not_in_labels_names_the_row(tmp_path: Path) -> None:
    rows = [good("classify", 1), good("classify", 2, label="neutral")]
    path = write_jsonl(tmp_path / "classify.jsonl", rows)
    with pytest.raises(DatasetError, match=r"be_in_set\(label_in_labels\) at rows classify-002"):
        validate_file(path, "classify")


def test_unknown_column_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [good("qa", 1, answer="4")])
    with pytest.raises(DatasetError, match=r"expect_table_columns_to_match_set: unexpected columns answer"):
        validate_file(path, "qa")


@pytest.mark.parametrize(
    ("task", "changes", "check"),
    [
        ("qa", {"references": []}, "references_is_nonempty_list_of_distinct_text"),
        ("qa", {"references": ["The"]}, "references_is_nonempty_list_of_distinct_text"),
        ("extract", {"fields": {}}, "fields_is_nonempty_object_of_str_or_int"),
        ("extract", {"fields": {"name": "Tom", "age": 19.5}}, "fields_is_nonempty_object_of_str_or_int"),
        ("classify", {"labels": ["positive"]}, "labels_is_list_of_2_or_more_distinct_text"),
        ("classify", {"id": 7}, "id_is_text"),
    ],
)
def test_task_specific_shapes_are_checked(tmp_path: Path, task: str, changes: dict[str, object], check: str) -> None:
    path = write_jsonl(tmp_path / f"{task}.jsonl", [good(task, 1), good(task, 2, **changes)])
    with pytest.raises(DatasetError, match=rf"be_in_set\({check}\) at rows"):
        validate_file(path, task)


def test_several_failures_are_counted_on_one_line(tmp_path: Path) -> None:
    rows = [good("qa", 1, question=None), good("qa", 2, references="4")]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_file(path, "qa")
    message = str(excinfo.value)
    assert "fails 2 expectations:" in message
    assert "not_be_null(question) at rows qa-001; " in message
    assert "be_in_set(references_is_nonempty_list_of_distinct_text) at rows qa-002" in message
    assert "\n" not in message


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(DatasetError, match=r"qa\.jsonl is empty"):
        validate_file(path, "qa")


def test_unknown_task_lists_known_tasks(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"Unknown task 'translate'; known tasks: qa, extract, classify, summarize"):
        load_validation_set("translate", BUNDLED)


def test_the_judged_summarize_set_validates_and_bounds_its_texts(tmp_path: Path) -> None:
    vs = load_validation_set("summarize", BUNDLED)
    assert len(vs.items) >= 8 and all(80 <= len(item.data["text"]) <= 1000 for item in vs.items)
    text = "A long enough text about a bridge that the council voted to build over the river this spring."
    path = write_jsonl(tmp_path / "summarize.jsonl", [{"id": "s-1", "text": text}, {"id": "s-2", "text": "Too short."}])
    with pytest.raises(DatasetError, match=r"text_is_text_of_80_to_1000_chars\) at rows s-2"):
        validate_file(path, "summarize")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=rf"No validation set at {tmp_path / 'qa.jsonl'}\..*datasets/README\.md"):
        load_validation_set("qa", tmp_path)


def test_sha256_changes_when_the_data_changes(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "qa.jsonl", [good("qa", 1)])
    before = load_validation_set("qa", tmp_path)
    write_jsonl(tmp_path / "qa.jsonl", [good("qa", 1, references=["4"])])
    after = load_validation_set("qa", tmp_path)
    assert before.sha256 != after.sha256
    assert after.items[0].data["references"] == ["4"]
