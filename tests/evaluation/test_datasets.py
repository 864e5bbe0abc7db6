"""Validation sets as task files name them: the shipped sets pass the Great Expectations suites their
specs build, and a malformed set (JSONL, CSV or Parquet) is refused with one line that names the file,
the failed expectation and the rows (by id; by line or row where the id is what is wrong)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from registry.errors import DatasetError
from registry.evaluation.tasks import TaskVersion, compile_task

pytestmark = pytest.mark.data

BUNDLED = Path(__file__).resolve().parents[2] / "datasets"
SHIPPED = ("qa", "extract", "classify", "summarize")

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


def shipped_copy(folder: Path, task: str, rows: Sequence[object]) -> Path:
    """The shipped task file beside ``rows`` in place of its data: what a user who copies one gets."""
    shutil.copy(BUNDLED / f"{task}.yaml", folder / f"{task}.yaml")
    write_jsonl(folder / f"{task}.jsonl", rows)
    return folder / f"{task}.yaml"


def refusal(spec_path: Path, data: str) -> str:
    """The one line a set is refused with; it names the data file and ends with the fix."""
    with pytest.raises(DatasetError) as excinfo:
        compile_task(spec_path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{spec_path.parent / data} fails ")
    assert message.endswith("Fix those rows and run again.")
    return message


# --------------------------------------------------------------------------- the shipped sets


@pytest.fixture(scope="module")
def shipped() -> dict[str, TaskVersion]:
    """The four shipped tasks compiled once for the module (each runs its GE suite)."""
    return {task: compile_task(BUNDLED / f"{task}.yaml")[0] for task in SHIPPED}


@pytest.mark.parametrize("task", SHIPPED)
def test_shipped_set_validates(shipped: dict[str, TaskVersion], task: str) -> None:
    compiled = shipped[task]
    assert compiled.name == task and compiled.version == 0  # compiled, not recorded
    assert len(compiled.items) >= (8 if task == "summarize" else 20)
    assert len({item.id for item in compiled.items}) == len(compiled.items)
    assert all(item.task == task and item.data["id"] == item.id for item in compiled.items)
    assert compiled.data_sha256 == hashlib.sha256((BUNDLED / f"{task}.jsonl").read_bytes()).hexdigest()
    assert set(compiled.items[0].data) == set(compiled.spec.data.fields)


def test_the_judged_summarize_set_bounds_its_texts(shipped: dict[str, TaskVersion], tmp_path: Path) -> None:
    assert all(80 <= len(item.data["text"]) <= 1000 for item in shipped["summarize"].items)
    text = "A long enough text about a bridge that the council voted to build over the river this spring."
    spec = shipped_copy(tmp_path, "summarize", [{"id": "s-1", "text": text}, {"id": "s-2", "text": "Too short."}])
    assert "be_in_set(text_is_text_of_80_to_1000_chars) at rows s-2" in refusal(spec, "summarize.jsonl")


# --------------------------------------------------------------------------- JSONL


def test_items_keep_file_order_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [])
    (tmp_path / "qa.jsonl").write_text(json.dumps(good("qa", 2)) + "\n\n" + json.dumps(good("qa", 1)) + "\n")
    task, _ = compile_task(spec)
    assert [item.id for item in task.items] == ["qa-002", "qa-001"]
    # The blank line 2 is skipped, but numbers stay the editor's: a bad third line is line 3.
    (tmp_path / "qa.jsonl").write_text(json.dumps(good("qa", 2)) + "\n\n" + '{"id": "qa-003", "question": \n')
    with pytest.raises(DatasetError, match=r"qa\.jsonl line 3 is not valid JSON \(.*\); fix that line and run again$"):
        compile_task(spec)


def test_a_line_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [good("qa", 1), ["qa-002", "What?"]])
    with pytest.raises(DatasetError, match=r"qa\.jsonl line 2 is not a JSON object"):
        compile_task(spec)


def test_a_missing_field_names_the_row(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [good("qa", 1), good("qa", 2), good("qa", 3, question=None)])
    message = refusal(spec, "qa.jsonl")
    assert message == (f"{tmp_path / 'qa.jsonl'} fails 1 expectation: expect_column_values_to_not_be_null(question) "
                       "at rows qa-003. Fix those rows and run again.")


def test_a_field_missing_from_every_row_names_every_row(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [good("qa", n, references=None) for n in (1, 2)])
    assert "not_be_null(references) at rows qa-001, qa-002" in refusal(spec, "qa.jsonl")


def test_a_wrong_type_names_the_row(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [good("qa", 1), good("qa", 2, question=42)])
    assert "expect_column_values_to_be_in_set(question_is_text) at rows qa-002" in refusal(spec, "qa.jsonl")


def test_a_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [good("qa", 1), good("qa", 2), good("qa", 1)])
    assert "be_unique(id) at rows qa-001 (line 1), qa-001 (line 3)" in refusal(spec, "qa.jsonl")


def test_a_missing_id_is_named_by_its_line(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [good("qa", 1), {**good("qa", 2), "id": None}])
    assert "not_be_null(id) at rows line 2" in refusal(spec, "qa.jsonl")


def test_a_label_outside_the_item_labels_fails_the_derived_check(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "classify", [good("classify", 1), good("classify", 2, label="neutral")])
    assert "be_in_set(label_in_labels) at rows classify-002" in refusal(spec, "classify.jsonl")


def test_a_field_the_spec_does_not_declare_is_ignored(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [good("qa", 1, answer="4", notes={"by": "me"})])
    task, _ = compile_task(spec)
    assert task.items[0].data == GOOD_ROWS["qa"]


@pytest.mark.parametrize(
    ("task", "changes", "check"),
    [
        ("qa", {"references": []}, "references_is_list_of_distinct_text_of_1_or_more_items"),
        ("qa", {"references": ["The"]}, "references_is_list_of_distinct_text_of_1_or_more_items"),  # no word left
        ("qa", {"references": ["4", "4"]}, "references_is_list_of_distinct_text_of_1_or_more_items"),
        ("qa", {"references": "4"}, "references_is_list_of_distinct_text_of_1_or_more_items"),
        ("extract", {"fields": {}}, "fields_is_nonempty_object"),
        ("extract", {"fields": ["name", "Tom"]}, "fields_is_object"),
        ("classify", {"labels": ["positive"], "label": "positive"}, "labels_has_2_or_more_distinct_labels"),
        ("classify", {"labels": ["positive"], "label": "positive"}, "labels_is_list_of_distinct_text_of_2_or_more_items"),
        ("classify", {"id": 7}, "id_is_text"),
    ],
)
def test_shapes_the_spec_and_its_scorers_need_are_checked(
    tmp_path: Path, task: str, changes: dict[str, object], check: str
) -> None:
    spec = shipped_copy(tmp_path, task, [good(task, 1), good(task, 2, **changes)])
    assert f"be_in_set({check}) at rows " in refusal(spec, f"{task}.jsonl")


def test_several_failures_are_counted_on_one_line(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [good("qa", 1, question=None), good("qa", 2, references="4")])
    message = refusal(spec, "qa.jsonl")
    assert "fails 2 expectations:" in message
    assert "not_be_null(question) at rows qa-001; " in message
    assert "be_in_set(references_is_list_of_distinct_text_of_1_or_more_items) at rows qa-002" in message


def test_many_failing_rows_are_cut_to_five(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [good("qa", n, question=n) for n in range(1, 9)])
    assert "question_is_text) at rows qa-001, qa-002, qa-003, qa-004, qa-005 and 3 more." in refusal(spec, "qa.jsonl")


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_an_empty_set_is_refused(tmp_path: Path, content: str) -> None:
    spec = shipped_copy(tmp_path, "qa", [])
    (tmp_path / "qa.jsonl").write_text(content)
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'qa.jsonl'} is empty; add at least one item"):
        compile_task(spec)


def test_a_missing_data_file_names_the_path(tmp_path: Path) -> None:
    shutil.copy(BUNDLED / "qa.yaml", tmp_path / "qa.yaml")
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'qa.yaml'}: data.path 'qa.jsonl' names no file "
                                           rf"\({tmp_path / 'qa.jsonl'}\); fix the path$"):
        compile_task(tmp_path / "qa.yaml")


def test_the_version_changes_when_the_data_changes(tmp_path: Path) -> None:
    spec = shipped_copy(tmp_path, "qa", [good("qa", 1)])
    before, _ = compile_task(spec)
    write_jsonl(tmp_path / "qa.jsonl", [good("qa", 1, references=["4"])])
    after, _ = compile_task(spec)
    assert before.data_sha256 != after.data_sha256 and before.sha256 != after.sha256
    assert after.items[0].data["references"] == ["4"]


# --------------------------------------------------------------------------- a user's own set

TICKETS = {
    "name": "support",
    "description": "Route a support ticket to the team that handles it.",
    "data": {
        "path": "support.jsonl",
        "fields": {
            "id": "integer",
            "ticket": {"type": "text", "max_length": 60},
            "team": "text",
            "priority": {"type": "integer", "required": False},
            "tags": {"type": "list[string]", "required": False, "values": ["urgent", "vip"]},
            "channel": {"type": "string", "values": ["mail", "chat"]},
            "weight": "number",
            "paying": "boolean",
        },
    },
    "prompt": {"template": "Which team handles this ticket? {{ ticket }}"},
    "scoring": {"scorers": [{"scorer": "label", "reference": "team", "labels": ["billing", "bugs"]}]},
}
TICKET = {"ticket": "I was charged twice", "team": "billing", "priority": 2, "tags": ["vip"], "channel": "mail",
          "weight": 1.5, "paying": True}


def user_task(folder: Path, rows: Sequence[dict[str, Any]], suffix: str = ".jsonl") -> Path:
    """The ``support`` task over ``rows`` written as JSONL, CSV (lists as JSON text) or Parquet."""
    spec = json.loads(json.dumps(TICKETS))
    spec["data"]["path"] = f"support{suffix}"
    path = folder / "support.yaml"
    path.write_text(yaml.safe_dump(spec))
    data = folder / f"support{suffix}"
    if suffix == ".jsonl":
        write_jsonl(data, rows)
    elif suffix == ".csv":
        cells = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows]
        pd.DataFrame(cells).to_csv(data, index=False)
    else:
        pd.DataFrame(list(rows)).to_parquet(data)
    return path


def test_a_label_outside_a_fixed_set_fails_its_value_set(tmp_path: Path) -> None:
    spec = user_task(tmp_path, [{"id": 1, **TICKET}, {"id": 2, **TICKET, "team": "sales"}])
    assert "expect_column_values_to_be_in_set(team) at rows 2." in refusal(spec, "support.jsonl")


def test_declared_values_and_lengths_are_checked(tmp_path: Path) -> None:
    rows = [
        {"id": 1, **TICKET},
        {"id": 2, **TICKET, "channel": "phone"},
        {"id": 3, **TICKET, "tags": ["urgent", "later"]},
        {"id": 4, **TICKET, "ticket": "x" * 61},
    ]
    message = refusal(user_task(tmp_path, rows), "support.jsonl")
    assert "be_in_set(channel) at rows 2" in message
    assert "be_in_set(tags_is_list_of_string_of_1_or_more_items) at rows 3" in message
    assert "be_in_set(ticket_is_text_of_at_most_60_chars) at rows 4" in message


def test_optional_fields_may_be_left_out_and_integers_stay_integers(tmp_path: Path) -> None:
    rows = [{"id": 1, **TICKET}, {"id": 2, **{k: v for k, v in TICKET.items() if k not in ("priority", "tags")}}]
    task, _ = compile_task(user_task(tmp_path, rows))
    first, second = (item.data for item in task.items)
    assert first["priority"] == 2 and type(first["priority"]) is int  # a gap in the column makes no floats
    assert second["priority"] is None and second["tags"] is None
    assert [item.id for item in task.items] == ["1", "2"]  # integer ids, named as text


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_the_same_rows_read_alike_from_each_format(tmp_path: Path, suffix: str) -> None:
    rows = [{"id": 1, **TICKET}, {"id": 2, **TICKET, "team": "bugs", "paying": False, "weight": 3.0}]
    task, _ = compile_task(user_task(tmp_path, rows, suffix))
    assert [item.data for item in task.items] == rows


def test_csv_cells_are_converted_to_the_declared_types_and_rows_named_by_line(tmp_path: Path) -> None:
    spec = user_task(tmp_path, [], ".csv")
    (tmp_path / "support.csv").write_text(
        "id,ticket,team,priority,tags,channel,weight,paying\n"
        '1,I was charged twice,billing,2,"[""vip""]",mail,1.5,true\n'
        "2,The app crashes,bugs,,,chat,2,FALSE\n"
    )
    first, second = (item.data for item in compile_task(spec)[0].items)
    assert first == {"id": 1, **TICKET}
    assert second == {"id": 2, "ticket": "The app crashes", "team": "bugs", "priority": None, "tags": None,
                      "channel": "chat", "weight": 2.0, "paying": False}
    (tmp_path / "support.csv").write_text(
        "id,ticket,team,priority,tags,channel,weight,paying\n"
        "1,I was charged twice,billing,two,not json,mail,heavy,yes\n"
        ",The app crashes,bugs,,,chat,2,false\n"
    )
    message = refusal(spec, "support.csv")
    assert "not_be_null(id) at rows line 3" in message  # line 1 is the header
    for check in ("priority_is_integer", "tags_is_list_of_string_of_1_or_more_items", "weight_is_number",
                  "paying_is_boolean"):
        assert f"be_in_set({check}) at rows 1;" in message or f"be_in_set({check}) at rows 1." in message


def test_csv_rows_are_named_by_the_line_they_start_on_and_extra_cells_are_refused(tmp_path: Path) -> None:
    spec = user_task(tmp_path, [], ".csv")
    (tmp_path / "support.csv").write_text(
        "id,ticket,team,priority,tags,channel,weight,paying\n"
        '1,"I was charged\ntwice",billing,2,"[""vip""]",mail,1.5,true\n'  # a quoted cell over two lines
        ",The app crashes,bugs,2,,chat,2,false\n"
    )
    assert "not_be_null(id) at rows line 4" in refusal(spec, "support.csv")
    (tmp_path / "support.csv").write_text(
        "id,ticket,team,priority,tags,channel,weight,paying\n1,a,billing,2,,mail,1.5,true,surplus\n"
    )
    with pytest.raises(DatasetError, match=r"support\.csv line 2 has more cells than the header names; quote cells"):
        compile_task(spec)


def test_parquet_rows_are_named_by_row_number(tmp_path: Path) -> None:
    rows = [{"id": 1, **TICKET}, {"id": 1, **TICKET, "team": "bugs"}]
    assert "be_unique(id) at rows 1 (row 1), 1 (row 2)" in refusal(user_task(tmp_path, rows, ".parquet"),
                                                                    "support.parquet")


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    spec = user_task(tmp_path, [], ".parquet")
    (tmp_path / "support.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'support.parquet'} is not a readable Parquet file"):
        compile_task(spec)
    spec = user_task(tmp_path, [], ".jsonl")
    (tmp_path / "support.jsonl").write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'support.jsonl'} is not UTF-8 text"):
        compile_task(spec)
