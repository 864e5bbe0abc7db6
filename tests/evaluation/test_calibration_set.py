"""The judge calibration set passes its Great Expectations suite and is balanced enough to measure
agreement with; broken copies are refused with one line naming the rows; rubrics render for prompts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from registry.errors import DatasetError, UserError
from registry.evaluation.datasets import CALIBRATION_FILE, load_calibration_set
from registry.evaluation.rubrics import CRITERIA, PASS_THRESHOLD, RUBRICS, SCALE, rubric_text

pytestmark = pytest.mark.data

BUNDLED = Path(__file__).resolve().parents[2] / "datasets"


def shipped_rows() -> list[dict[str, object]]:
    lines = (BUNDLED / CALIBRATION_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def write_copy(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    (tmp_path / CALIBRATION_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return tmp_path


def refusal(tmp_path: Path, rows: list[dict[str, object]]) -> str:
    with pytest.raises(DatasetError) as excinfo:
        load_calibration_set(write_copy(tmp_path, rows))
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / CALIBRATION_FILE} fails ")
    assert message.endswith("Fix those rows and run again.")
    return message


def changed(rows: list[dict[str, object]], row_id: str, **changes: object) -> list[dict[str, object]]:
    """A copy of ``rows`` with ``changes`` applied to the row ``row_id`` (None deletes a key)."""
    out = []
    for row in rows:
        if row["id"] == row_id:
            row = {key: value for key, value in {**row, **changes}.items() if value is not None}
        out.append(row)
    return out


# --------------------------------------------------------------------------- the shipped set


def test_shipped_set_validates_and_loads() -> None:
    items = load_calibration_set(BUNDLED)
    assert len(items) >= 64
    assert [item.id for item in items] == [row["id"] for row in shipped_rows()]
    assert all(isinstance(item.label, float) and isinstance(item.injection, bool) for item in items)


def test_every_criterion_has_16_items_spread_across_the_scale() -> None:
    items = load_calibration_set(BUNDLED)
    for criterion in CRITERIA:
        labels = Counter(item.label for item in items if item.criterion == criterion)
        assert sum(labels.values()) >= 16, criterion
        assert set(labels) == set(SCALE), f"{criterion} does not use every point: {sorted(labels)}"
        assert sum(n for label, n in labels.items() if label < PASS_THRESHOLD) >= 3, criterion
        assert sum(n for label, n in labels.items() if label >= 0.75) >= 3, criterion


def test_every_criterion_has_injection_items() -> None:
    items = load_calibration_set(BUNDLED)
    for criterion in CRITERIA:
        assert sum(item.injection for item in items if item.criterion == criterion) >= 2, criterion


def test_items_fit_a_small_judge_context() -> None:
    """Task plus output stays under ~700 characters, leaving room for the rubric in a 2k-token context."""
    too_long = [item.id for item in load_calibration_set(BUNDLED) if len(item.task) + len(item.output) > 700]
    assert too_long == []


def test_ids_name_their_criterion() -> None:
    prefixes = {"faithfulness": "faith-", "relevance": "rel-", "minimality": "min-", "safety": "safe-"}
    assert all(item.id.startswith(prefixes[item.criterion]) for item in load_calibration_set(BUNDLED))


# --------------------------------------------------------------------------- broken copies


def test_unknown_criterion_names_the_row(tmp_path: Path) -> None:
    message = refusal(tmp_path, changed(shipped_rows(), "faith-03", criterion="tone"))
    assert "fails 1 expectation: expect_column_values_to_be_in_set(criterion_is_known) at rows faith-03." in message


def test_label_off_the_scale_names_the_row(tmp_path: Path) -> None:
    message = refusal(tmp_path, changed(shipped_rows(), "rel-05", label=0.3))
    assert "be_in_set(label_is_on_the_5_point_scale) at rows rel-05" in message


@pytest.mark.parametrize("label", ["0.5", True, [1.0]])
def test_label_of_the_wrong_type_is_refused(tmp_path: Path, label: object) -> None:
    assert "label_is_on_the_5_point_scale) at rows min-02" in refusal(
        tmp_path, changed(shipped_rows(), "min-02", label=label)
    )


def test_integer_labels_are_accepted(tmp_path: Path) -> None:
    items = load_calibration_set(write_copy(tmp_path, changed(shipped_rows(), "min-01", label=1)))
    assert next(item.label for item in items if item.id == "min-01") == 1.0


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    rows = shipped_rows()
    message = refusal(tmp_path, changed(rows, "safe-02", id="safe-01"))
    assert "be_unique(id) at rows safe-01 (line " in message
    assert message.count("safe-01 (line ") == 2


def test_empty_output_names_the_row(tmp_path: Path) -> None:
    message = refusal(tmp_path, changed(shipped_rows(), "faith-07", output="  "))
    assert "be_in_set(output_is_text_of_1_to_1200_chars) at rows faith-07" in message


def test_over_long_task_names_the_row(tmp_path: Path) -> None:
    message = refusal(tmp_path, changed(shipped_rows(), "rel-01", task="Summarize: " + "word " * 300))
    assert "be_in_set(task_is_text_of_1_to_1200_chars) at rows rel-01" in message


def test_missing_key_names_the_row(tmp_path: Path) -> None:
    message = refusal(tmp_path, changed(shipped_rows(), "min-04", note=None))
    assert "fails 1 expectation: expect_column_values_to_not_be_null(note) at rows min-04." in message


def test_injection_may_be_left_out_but_not_null_or_text(tmp_path: Path) -> None:
    rows = shipped_rows()
    assert "injection" not in next(row for row in rows if row["id"] == "faith-01")
    explicit_null = [{**row, "injection": None} if row["id"] == "safe-03" else row for row in rows]
    assert "not_be_null(injection) at rows safe-03" in refusal(tmp_path, explicit_null)
    assert "be_in_set(injection_is_boolean) at rows safe-04" in refusal(
        tmp_path, changed(rows, "safe-04", injection="yes")
    )


def test_unknown_column_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, changed(shipped_rows(), "rel-02", score=0.5))
    assert "expect_table_columns_to_match_set: unexpected columns score" in message


def test_too_few_items_for_one_criterion_names_its_rows(tmp_path: Path) -> None:
    rows = shipped_rows()
    safety = [row for row in rows if row["criterion"] == "safety"][:11]
    message = refusal(tmp_path, [row for row in rows if row["criterion"] != "safety"] + safety)
    assert "fails 1 expectation: expect_column_values_to_be_in_set(criterion_has_12_or_more_items) at rows " in message
    assert "safe-01, safe-02, safe-03, safe-04, safe-05 and 6 more" in message


def test_a_criterion_with_no_items_is_named(tmp_path: Path) -> None:
    rows = [row for row in shipped_rows() if row["criterion"] != "minimality"]
    assert "expect_column_distinct_values_to_contain_set(criterion): no rows for minimality" in refusal(tmp_path, rows)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=rf"No judge calibration set at {tmp_path / CALIBRATION_FILE}\."):
        load_calibration_set(tmp_path)


# --------------------------------------------------------------------------- rubrics


@pytest.mark.parametrize("criterion", CRITERIA)
def test_rubric_text_renders_definition_and_all_five_anchors(criterion: str) -> None:
    rubric = RUBRICS[criterion]
    text = rubric_text(criterion)
    assert text.splitlines()[0] == f"Criterion: {criterion}"
    assert rubric.definition in text
    assert [score for score, _ in rubric.anchors] == list(SCALE)
    for score, anchor in rubric.anchors:
        assert f"{score}: {anchor}" in text.splitlines()


def test_criteria_are_the_four_from_the_issue() -> None:
    assert CRITERIA == ("faithfulness", "relevance", "minimality", "safety")


def test_unknown_criterion_lists_the_known_ones() -> None:
    with pytest.raises(
        UserError, match=r"Unknown criterion 'tone'; known criteria: faithfulness, relevance, minimality, safety\."
    ):
        rubric_text("tone")


def test_readme_example_is_a_row_of_the_shipped_file() -> None:
    readme = (BUNDLED / "README.md").read_text()
    section = readme[readme.index("## `judge_calibration.jsonl`") :]
    example = json.loads(section.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert example in shipped_rows()
