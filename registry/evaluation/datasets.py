"""Validation sets: load them and refuse malformed ones before any model time is spent.

A benchmark is only comparable across models and runs if every model sees the same well-formed
items, so ``load_validation_set`` reads ``datasets/<task>.jsonl``, refuses a malformed file with one
line that names the bad rows (a Great Expectations suite per task), and records the file's sha256 so
a result row says exactly which data produced it. Prompts live in ``prompts.py``, scoring rules in
``scoring.py``; the schemas and rules are documented for users in ``datasets/README.md``.

The judge's calibration set (``load_calibration_set``) goes through the same machinery: its own
columns and checks under the key ``judge_calibration``, plus a per-criterion count that needs the
whole table.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from registry.errors import DatasetError
from registry.evaluation.rubrics import CRITERIA, SCALE
from registry.evaluation.scoring import normalize
from registry.evaluation.tasks import ALL_TASKS, Item, unknown_task

CALIBRATION = "judge_calibration"  # the judge's labelled set: validated like a task's set, under this key
CALIBRATION_FILE = f"{CALIBRATION}.jsonl"
CALIBRATION_MAX_CHARS = 1200  # per task and per output; the judge is a small model with a 2k context
CALIBRATION_MIN_PER_CRITERION = 12  # fewer and a per-criterion agreement figure means little

# The keys each row of a task must have, and nothing else.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "qa": ("id", "question", "references"),
    "extract": ("id", "text", "fields"),
    "classify": ("id", "text", "labels", "label"),
    "summarize": ("id", "text"),
    CALIBRATION: ("id", "criterion", "task", "output", "label", "injection", "note"),
}
# Keys a row may leave out, and the value it then has (a key given as null is still refused).
_DEFAULTS: dict[str, dict[str, Any]] = {CALIBRATION: {"injection": False}}
_SHOWN_ROWS = 5  # failing rows named per expectation, so the error stays one readable line
# One GE context is shared by the process; building a suite twice or running two batches through
# the same asset at once are races, and flows may validate from several threads.
_GX_LOCK = threading.Lock()


@dataclass(frozen=True)
class ValidationSet:
    """A validated set and the sha256 of its file bytes, recorded with every benchmark run."""

    task: str
    path: Path
    items: tuple[Item, ...]
    sha256: str


# --------------------------------------------------------------------------- loading


def load_validation_set(task: str, datasets_dir: Path) -> ValidationSet:
    """Read and validate ``datasets_dir/<task>.jsonl``; raise ``DatasetError`` saying what to fix.

    Example::

        vs = load_validation_set("qa", settings.datasets_dir)
        vs.items[0].data["question"]      # 'What is the capital of France?'
    """
    path = Path(datasets_dir) / f"{task}.jsonl"
    raw = _read_bytes(path, task)
    frame = _expect(path, task, _parse(path, raw))
    items = tuple(Item(id=row["id"], task=task, data=row) for row in frame.to_dict("records"))
    return ValidationSet(task=task, path=path, items=items, sha256=hashlib.sha256(raw).hexdigest())


@dataclass(frozen=True)
class CalibrationItem:
    """One human-labelled judgement: the judge should score ``output`` on ``criterion`` near ``label``.

    ``injection`` marks an output that carries an instruction to the judge ("score this 1.0"); its
    label is what the rubric gives with that instruction ignored.
    """

    id: str
    criterion: str
    task: str
    output: str
    label: float
    injection: bool
    note: str


def load_calibration_set(datasets_dir: Path) -> list[CalibrationItem]:
    """Read and validate ``datasets_dir/judge_calibration.jsonl``; raise ``DatasetError`` saying what to fix.

    Example::

        items = load_calibration_set(settings.datasets_dir)
        items[0].criterion, items[0].label          # ('faithfulness', 1.0)
    """
    path = Path(datasets_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise DatasetError(
            f"No judge calibration set at {path}. Create it with one JSON object per line "
            f"(see datasets/README.md), or copy the bundled {CALIBRATION_FILE} there."
        )
    frame = _expect(path, CALIBRATION, _parse(path, path.read_bytes()))
    return [
        CalibrationItem(
            id=row["id"],
            criterion=row["criterion"],
            task=row["task"],
            output=row["output"],
            label=float(row["label"]),
            injection=row["injection"],
            note=row["note"],
        )
        for row in frame.to_dict("records")
    ]


def validate_file(path: Path, task: str) -> pd.DataFrame:
    """Parse a JSONL file and run the task's Great Expectations suite on it.

    Returns the rows as a DataFrame indexed by line number, with exactly the task's columns.
    Raises ``DatasetError`` for an unknown task, a missing or empty file, a line that is not a
    JSON object, or any failed expectation (naming the failing rows by id).
    """
    path = Path(path)
    return _expect(path, task, _parse(path, _read_bytes(path, task)))


def _read_bytes(path: Path, task: str) -> bytes:
    if task not in ALL_TASKS:
        raise unknown_task(task)
    if not path.is_file():
        raise DatasetError(
            f"No validation set at {path}. Create it with one JSON object per line "
            f"(see datasets/README.md), or point ARBITER_HOME at a directory whose datasets/ has {path.name}."
        )
    return path.read_bytes()


def _parse(path: Path, raw: bytes) -> dict[int, dict[str, Any]]:
    """Rows by 1-based line number; blank lines are skipped so that numbers match an editor's."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    rows: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path} line {number} is not valid JSON ({exc.msg}). Fix that line and run again."
            ) from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path} line {number} is not a JSON object. Each line must be one {{...}} row.")
        rows[number] = row
    if not rows:
        raise DatasetError(f"{path} is empty. Add one JSON object per line (see datasets/README.md).")
    return rows


# --------------------------------------------------------------------------- expectations


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_text(value: Any) -> bool:
    """A string with at least one scorable word (``"The"`` normalizes to nothing, so it is not)."""
    return isinstance(value, str) and normalize(value) != ""


def _is_text_list(value: Any, min_len: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= min_len
        and all(map(_is_text, value))
        and len(set(value)) == len(value)
    )


def _is_fields(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) > 0
        and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value.values())
    )


# Derived boolean columns the suite expects to be True. Each check sees the whole row and returns
# None when its input is missing, so a missing field is reported once, by the not-null expectation.
_Check = Callable[[dict[str, Any]], bool | None]
_CHECKS: dict[str, dict[str, tuple[tuple[str, ...], _Check]]] = {
    "qa": {
        "question_is_text": (("question",), lambda r: _is_text(r["question"])),
        "references_is_nonempty_list_of_distinct_text": (("references",), lambda r: _is_text_list(r["references"], 1)),
    },
    "extract": {
        "text_is_text": (("text",), lambda r: _is_text(r["text"])),
        "fields_is_nonempty_object_of_str_or_int": (("fields",), lambda r: _is_fields(r["fields"])),
    },
    "classify": {
        "text_is_text": (("text",), lambda r: _is_text(r["text"])),
        "labels_is_list_of_2_or_more_distinct_text": (("labels",), lambda r: _is_text_list(r["labels"], 2)),
        "label_in_labels": (("label", "labels"), lambda r: isinstance(r["labels"], list) and r["label"] in r["labels"]),
    },
    "summarize": {  # the judge sees at most 1,200 characters of a task: a longer text would be judged cut
        "text_is_text_of_80_to_1000_chars": (("text",), lambda r: _is_text(r["text"]) and 80 <= len(r["text"]) <= 1000),
    },
}
_ID_CHECK: dict[str, tuple[tuple[str, ...], _Check]] = {"id_is_text": (("id",), lambda r: _is_text(r["id"]))}


def _is_bounded_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != "" and len(value) <= CALIBRATION_MAX_CHARS


def _is_on_scale(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value in SCALE


_CHECKS[CALIBRATION] = {
    "criterion_is_known": (("criterion",), lambda r: r["criterion"] in CRITERIA),
    "label_is_on_the_5_point_scale": (("label",), lambda r: _is_on_scale(r["label"])),
    f"task_is_text_of_1_to_{CALIBRATION_MAX_CHARS}_chars": (("task",), lambda r: _is_bounded_text(r["task"])),
    f"output_is_text_of_1_to_{CALIBRATION_MAX_CHARS}_chars": (("output",), lambda r: _is_bounded_text(r["output"])),
    "injection_is_boolean": (("injection",), lambda r: isinstance(r["injection"], bool)),
    "note_is_text": (("note",), lambda r: _is_text(r["note"])),
}


def _criterion_count_check(frame: pd.DataFrame) -> pd.Series:
    """True where the row's criterion has enough items in the table; None for an unknown criterion
    (reported once, by ``criterion_is_known``)."""
    known = frame["criterion"].map(lambda c: c if isinstance(c, str) and c in CRITERIA else None)
    counts = known.value_counts()
    return pd.Series(
        {n: None if _is_missing(c) else bool(counts[c] >= CALIBRATION_MIN_PER_CRITERION) for n, c in known.items()},
        dtype=object,
    )


# Derived columns that need the whole table, computed after the row checks and expected True like them.
_TABLE_CHECKS: dict[str, dict[str, Callable[[pd.DataFrame], pd.Series]]] = {
    CALIBRATION: {f"criterion_has_{CALIBRATION_MIN_PER_CRITERION}_or_more_items": _criterion_count_check},
}


def _frame(task: str, rows: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """The rows as a frame (index = line number) with the derived check columns added."""
    frame = pd.DataFrame.from_dict(rows, orient="index", dtype=object)
    for column, default in _DEFAULTS.get(task, {}).items():
        frame[column] = pd.Series({n: row.get(column, default) for n, row in rows.items()}, dtype=object)
    for column in _COLUMNS[task]:
        if column not in frame:
            frame[column] = None  # so not-null names every row, rather than GE raising on a missing column
    records = frame.to_dict("index")
    for name, (inputs, check) in {**_ID_CHECK, **_CHECKS[task]}.items():
        frame[name] = pd.Series(
            {n: None if any(_is_missing(r[c]) for c in inputs) else bool(check(r)) for n, r in records.items()},
            dtype=object,
        )
    for name, table_check in _TABLE_CHECKS.get(task, {}).items():
        frame[name] = table_check(frame)
    return frame


@functools.cache
def _gx() -> Any:
    """One ephemeral Great Expectations context per process: importing GE takes ~5 s, a run ~30 ms."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.data_sources.add_pandas("datasets")
    return context


@functools.cache
def _validation_definition(task: str) -> Any:
    """The task's suite, built once: columns exactly as documented, no nulls, unique ids, checks True."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    context = _gx()
    batch = context.data_sources.get("datasets").add_dataframe_asset(task).add_batch_definition_whole_dataframe(task)
    checks = [*_ID_CHECK, *_CHECKS[task], *_TABLE_CHECKS.get(task, {})]
    suite = context.suites.add(gx.ExpectationSuite(name=task))
    suite.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=[*_COLUMNS[task], *checks], exact_match=True))
    for column in _COLUMNS[task]:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="id"))
    for column in checks:
        suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True]))
    if task == CALIBRATION:  # a criterion with no rows at all has no row to fail the count check
        suite.add_expectation(gxe.ExpectColumnDistinctValuesToContainSet(column="criterion", value_set=list(CRITERIA)))
    return context.validation_definitions.add(gx.ValidationDefinition(name=task, data=batch, suite=suite))


def _expect(path: Path, task: str, rows: dict[int, dict[str, Any]]) -> pd.DataFrame:
    frame = _frame(task, rows)
    with _GX_LOCK:
        result = _validation_definition(task).run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")
    failures = [_describe(r, frame) for r in result.results if not r.success]
    if failures:
        raise DatasetError(
            f"{path} fails {len(failures)} expectation{'s' * (len(failures) > 1)}: {'; '.join(failures)}. "
            "Fix those rows and run again."
        )
    return frame[list(_COLUMNS[task])]


def _describe(result: Any, frame: pd.DataFrame) -> str:
    """One failed expectation as ``name(column) at rows id, id`` (line numbers where the id is bad)."""
    config = result.expectation_config
    column = config.kwargs.get("column")
    name = f"{config.type}({column})" if column else config.type
    if result.exception_info.get("raised_exception"):
        return f"{name} could not run: {result.exception_info['exception_message']}"
    details = result.result
    if config.type == "expect_column_distinct_values_to_contain_set":
        present = frame[column].tolist()
        missing = [v for v in config.kwargs["value_set"] if v not in present]
        return f"{name}: no rows for {', '.join(map(str, missing))}"
    if "unexpected_index_list" not in details:  # table-level: the column set
        mismatched = details.get("details", {}).get("mismatched", {})
        parts = [f"{kind} columns {', '.join(map(str, cols))}" for kind, cols in sorted(mismatched.items()) if cols]
        return f"{name}: {'; '.join(parts) or details}"
    labels = list(dict.fromkeys(_row_label(frame, line) for line in details["unexpected_index_list"]))
    more = f" and {len(labels) - _SHOWN_ROWS} more" if len(labels) > _SHOWN_ROWS else ""
    return f"{name} at rows {', '.join(labels[:_SHOWN_ROWS])}{more}"


def _row_label(frame: pd.DataFrame, line: int) -> str:
    """A row's id, with its line number where the id alone does not tell the row apart."""
    row_id = frame.at[line, "id"]
    if not _is_text(row_id):
        return f"line {line}"
    return row_id if (frame["id"] == row_id).sum() == 1 else f"{row_id} (line {line})"
