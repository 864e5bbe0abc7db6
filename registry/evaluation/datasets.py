"""Validation sets: read a task's data and refuse a malformed set before any model time is spent.

A benchmark is only comparable across models and runs if every model sees the same well-formed
items. ``read_items`` reads a task's JSONL, CSV or Parquet file and runs a Great Expectations suite
built from the task file (``registry/evaluation/taskspec.py``): every declared field present and of
its type and bounds, unique ids, values within their declared sets, and the row checks its scorers
need (a label within the item's labels). A failure is one line naming the file, the expectation and
the rows (by id; by line where the id is what is wrong). Columns the spec does not declare are
ignored: a template or scorer can only use declared fields, which the spec checks.

The judge's calibration set (``load_calibration_set``) goes through the same machinery with its own
fixed suite, plus a per-criterion count that needs the whole table.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from registry.errors import DatasetError
from registry.evaluation.rubrics import CRITERIA, SCALE
from registry.evaluation.scorers import normalize
from registry.evaluation.taskspec import DATA_FORMATS, FieldSpec, TaskSpec

CALIBRATION = "judge_calibration"  # the judge's labelled set: validated like a task's set, under this key
CALIBRATION_FILE = f"{CALIBRATION}.jsonl"
CALIBRATION_MAX_CHARS = 1200  # per task and per output; the judge is a small model with a 2k context
CALIBRATION_MIN_PER_CRITERION = 12  # fewer and a per-criterion agreement figure means little

_SHOWN_ROWS = 5  # failing rows named per expectation, so the error stays one readable line
# One GE context is shared by the process; building a suite twice or running two batches through
# the same asset at once are races, and flows may validate from several threads.
_GX_LOCK = threading.Lock()

Check = Callable[[dict[str, Any]], bool]
"""A row check: sees the whole row, is only called when every field it reads is present."""


@dataclass(frozen=True)
class Suite:
    """What a table must satisfy, in a hashable form so its GE suite is built once per process."""

    name: str
    columns: tuple[str, ...]  # present and not null
    optional: tuple[str, ...] = ()  # may be null or missing
    checks: tuple[tuple[str, tuple[str, ...]], ...] = ()  # derived boolean columns, expected True
    value_sets: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    distinct_must_contain: tuple[str, tuple[Any, ...]] | None = None
    id_column: str = "id"


@dataclass(frozen=True)
class Rows:
    """A parsed table: rows by 1-based position, and the word that names a position in messages."""

    rows: dict[int, dict[str, Any]]
    unit: str  # "line" (JSONL, CSV: the line in the file) or "row" (Parquet)


# --------------------------------------------------------------------------- task sets


def read_items(spec: TaskSpec, data_path: Path, raw: bytes) -> list[dict[str, Any]]:
    """Validate a task's data (``raw``, the bytes of ``data_path``) against its fields and the row
    checks its scorers need; returns its rows (declared fields only, in file order). Raises
    ``DatasetError`` saying what to fix."""
    parsed = parse_rows(data_path, raw, spec.data.fields)
    columns = tuple(spec.data.fields)
    checks = _field_checks(spec.data.fields)
    sets = {name: f.values for name, f in spec.data.fields.items() if f.values is not None and not f.type.startswith("list")}
    for scorer in spec.scoring.scorers:
        checks.update(scorer.checks())
        sets.update(scorer.value_sets())
    suite = Suite(
        name=f"task-{spec.name}",
        columns=tuple(c for c in columns if spec.data.fields[c].required),
        optional=tuple(c for c in columns if not spec.data.fields[c].required),
        checks=tuple((name, inputs) for name, (inputs, _) in checks.items()),
        value_sets=tuple(sorted((k, tuple(v)) for k, v in sets.items())),
        id_column=spec.data.id,
    )
    _expect(data_path, suite, {name: check for name, (_, check) in checks.items()}, parsed)
    return [{column: row.get(column) for column in columns} for row in parsed.rows.values()]


def parse_rows(path: Path, raw: bytes, fields: dict[str, FieldSpec] | None = None) -> Rows:
    """Rows by 1-based line (JSONL, CSV) or row (Parquet) number; blank JSONL lines are skipped so that
    numbers match an editor's. CSV cells are text: a declared number, boolean, list or object is
    converted (lists and objects written as JSON), and an empty cell is missing."""
    kind = DATA_FORMATS.get(path.suffix.lower(), "jsonl")
    if kind == "parquet":
        rows = _parquet_rows(path, raw)
    elif kind == "csv":
        rows = _csv_rows(path, raw, fields or {})
    else:
        rows = _jsonl_rows(path, raw)
    if not rows.rows:
        raise DatasetError(f"{path} is empty; add at least one item (see docs/tasks.md)")
    return rows


def _text(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _jsonl_rows(path: Path, raw: bytes) -> Rows:
    rows: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(_text(path, raw).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} line {number} is not valid JSON ({exc.msg}); fix that line and run again") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path} line {number} is not a JSON object; each line must be one {{...}} row")
        rows[number] = row
    return Rows(rows, "line")


def _csv_rows(path: Path, raw: bytes, fields: dict[str, FieldSpec]) -> Rows:
    """Rows by the line each starts on (a quoted cell may span lines), the header being line 1."""
    reader = csv.DictReader(io.StringIO(_text(path, raw), newline=""), restkey=_EXTRA_CELLS)
    rows: dict[int, dict[str, Any]] = {}
    start = 2
    try:
        for record in reader:
            if _EXTRA_CELLS in record:
                raise DatasetError(f"{path} line {start} has more cells than the header names; quote cells that hold commas")
            rows[start] = {k: _from_cell(v, fields.get(k)) for k, v in record.items()}
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DatasetError(f"{path} line {reader.line_num} is not readable CSV ({exc})") from None
    return Rows(rows, "line")


_EXTRA_CELLS = "\0extra"  # where csv puts cells beyond the header's (a key no header can have)


def _from_cell(cell: str | None, field: FieldSpec | None) -> Any:
    """A CSV cell as the declared type; left as text when it does not convert (the suite then says so).
    An empty cell, or one a short row does not have, is missing."""
    if cell is None or cell == "":
        return None
    kind = field.type if field else "string"
    try:
        if kind == "integer" and re.fullmatch(r"\s*[-+]?\d+\s*", cell):
            return int(cell)
        if kind == "number":
            return float(cell)
        if kind == "boolean" and cell.strip().lower() in ("true", "false"):
            return cell.strip().lower() == "true"
        if kind == "object" or kind.startswith("list"):
            return json.loads(cell)
    except ValueError:
        return cell
    return cell


def _parquet_rows(path: Path, raw: bytes) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"{path} is not a readable Parquet file ({exc})") from None
    return Rows({n: row for n, row in enumerate(table.to_pylist(), start=1)}, "row")


# --------------------------------------------------------------------------- field checks


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_text(value: Any) -> bool:
    """A string with at least one scorable word (``"The"`` normalizes to nothing, so it is not)."""
    return isinstance(value, str) and normalize(value) != ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_SCALARS: dict[str, Callable[[Any], bool]] = {
    "text": is_text,
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
}


def _conforms(field: FieldSpec, value: Any) -> bool:
    if field.type.startswith("list["):
        element = _SCALARS[field.type[5:-1]]
        if not isinstance(value, list) or not all(map(element, value)):
            return False
        if field.unique_items and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            return False
        if field.values is not None and not all(v in field.values for v in value):
            return False
        size = len(value)
        low = 1 if field.min_length is None else field.min_length
    else:
        if not _SCALARS[field.type](value):
            return False
        size = len(value) if isinstance(value, str | dict) else None
        low = field.min_length
    if size is None:
        return True
    return (low is None or size >= low) and (field.max_length is None or size <= field.max_length)


def _describe_field(name: str, field: FieldSpec) -> str:
    """The derived column's name says the rule: ``text_is_text_of_80_to_1000_chars``."""
    kind = field.type.replace("list[", "list_of_distinct_" if field.unique_items else "list_of_").rstrip("]")
    unit = "items" if field.type.startswith("list") or field.type == "object" else "chars"
    low = field.min_length if field.min_length is not None else (1 if field.type.startswith("list") else None)
    bounds = ""
    if low is not None and field.max_length is not None:
        bounds = f"_of_{low}_to_{field.max_length}_{unit}"
    elif low is not None:
        bounds = f"_of_{low}_or_more_{unit}"
    elif field.max_length is not None:
        bounds = f"_of_at_most_{field.max_length}_{unit}"
    return f"{name}_is_{kind}{bounds}"


def _field_checks(fields: dict[str, FieldSpec]) -> dict[str, tuple[tuple[str, ...], Check]]:
    return {
        _describe_field(name, field): ((name,), functools.partial(lambda n, f, row: _conforms(f, row[n]), name, field))
        for name, field in fields.items()
    }


# --------------------------------------------------------------------------- the judge's calibration set


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


def _is_bounded_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != "" and len(value) <= CALIBRATION_MAX_CHARS


def _is_on_scale(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value in SCALE


_CALIBRATION_CHECKS: dict[str, tuple[tuple[str, ...], Check]] = {
    "id_is_text": (("id",), lambda r: is_text(r["id"])),
    "criterion_is_known": (("criterion",), lambda r: r["criterion"] in CRITERIA),
    "label_is_on_the_5_point_scale": (("label",), lambda r: _is_on_scale(r["label"])),
    f"task_is_text_of_1_to_{CALIBRATION_MAX_CHARS}_chars": (("task",), lambda r: _is_bounded_text(r["task"])),
    f"output_is_text_of_1_to_{CALIBRATION_MAX_CHARS}_chars": (("output",), lambda r: _is_bounded_text(r["output"])),
    "injection_is_boolean": (("injection",), lambda r: isinstance(r["injection"], bool)),
    "note_is_text": (("note",), lambda r: is_text(r["note"])),
}
_CALIBRATION_SUITE = Suite(
    name=CALIBRATION,
    columns=("id", "criterion", "task", "output", "label", "injection", "note"),
    checks=tuple((name, inputs) for name, (inputs, _) in _CALIBRATION_CHECKS.items()),
    distinct_must_contain=("criterion", tuple(CRITERIA)),
)
_CRITERION_COUNT = f"criterion_has_{CALIBRATION_MIN_PER_CRITERION}_or_more_items"


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
    rows = _jsonl_rows(path, path.read_bytes())
    if not rows.rows:
        raise DatasetError(f"{path} is empty. Add one JSON object per line (see datasets/README.md).")
    for row in rows.rows.values():
        row.setdefault("injection", False)  # the one key a row may leave out (null is still refused)
    checks = {name: check for name, (_, check) in _CALIBRATION_CHECKS.items()}
    frame = _expect(path, _CALIBRATION_SUITE, checks, rows, table_checks={_CRITERION_COUNT: _criterion_count_check},
                    keep_extra=True)
    return [
        CalibrationItem(id=r["id"], criterion=r["criterion"], task=r["task"], output=r["output"], label=float(r["label"]),
                        injection=r["injection"], note=r["note"])
        for r in frame.to_dict("records")
    ]


def _criterion_count_check(frame: pd.DataFrame) -> pd.Series:
    """True where the row's criterion has enough items in the table; None for an unknown criterion
    (reported once, by ``criterion_is_known``)."""
    known = frame["criterion"].map(lambda c: c if isinstance(c, str) and c in CRITERIA else None)
    counts = known.value_counts()
    return pd.Series(
        {n: None if _is_missing(c) else bool(counts[c] >= CALIBRATION_MIN_PER_CRITERION) for n, c in known.items()},
        dtype=object,
    )


# --------------------------------------------------------------------------- expectations


def _frame(suite: Suite, checks: dict[str, Check], rows: Rows, keep_extra: bool) -> pd.DataFrame:
    """The rows as a frame (index = position) with the derived check columns added. A check returns
    None when a field it reads is missing, so a missing field is reported once, by not-null."""
    # From a list of rows, not ``from_dict(orient="index")``: that one makes a column of integers with
    # a gap floats (1 -> 1.0), failing every other row's integer check. Gaps are None, as in a snapshot.
    frame = pd.DataFrame(list(rows.rows.values()), index=list(rows.rows), dtype=object)
    frame = frame.where(frame.notna(), None)
    declared = [*suite.columns, *suite.optional]
    for column in declared:
        if column not in frame:
            frame[column] = None  # so not-null names every row, rather than GE raising on a missing column
    if not keep_extra:
        frame = frame[declared]
    records = {n: {c: row.get(c) for c in declared} for n, row in rows.rows.items()}
    for name, inputs in suite.checks:
        check = checks[name]
        frame[name] = pd.Series(
            {n: None if any(_is_missing(r[c]) for c in inputs) else bool(check(r)) for n, r in records.items()},
            dtype=object,
        )
    return frame


@functools.cache
def _gx() -> Any:
    """One ephemeral Great Expectations context per process: importing GE takes ~5 s, a run ~30 ms."""
    # GE imports tqdm.auto, which warns in a Jupyter kernel without ipywidgets; its bars are off anyway.
    warnings.filterwarnings("ignore", message="IProgress not found")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.data_sources.add_pandas("datasets")
    return context


@functools.cache
def _validation_definition(suite: Suite, table_checks: tuple[str, ...]) -> Any:
    """The suite in GE, built once per distinct suite: columns exactly as declared, required ones not
    null, unique ids, values in their sets, every derived check True."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    context = _gx()
    key = f"{suite.name}-{hashlib.sha256(repr((suite, table_checks)).encode()).hexdigest()[:12]}"
    batch = context.data_sources.get("datasets").add_dataframe_asset(key).add_batch_definition_whole_dataframe(key)
    checks = [name for name, _ in suite.checks] + list(table_checks)
    expectations = context.suites.add(gx.ExpectationSuite(name=key))
    expectations.add_expectation(gxe.ExpectTableColumnsToMatchSet(
        column_set=[*suite.columns, *suite.optional, *checks], exact_match=True))
    for column in suite.columns:
        expectations.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    expectations.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=suite.id_column))
    for column, values in suite.value_sets:
        expectations.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values)))
    for column in checks:
        expectations.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True]))
    if suite.distinct_must_contain:  # a value with no rows at all has no row to fail a count check
        column, values = suite.distinct_must_contain
        expectations.add_expectation(gxe.ExpectColumnDistinctValuesToContainSet(column=column, value_set=list(values)))
    return context.validation_definitions.add(gx.ValidationDefinition(name=key, data=batch, suite=expectations))


def _expect(path: Path, suite: Suite, checks: dict[str, Check], rows: Rows, *,
            table_checks: dict[str, Callable[[pd.DataFrame], pd.Series]] | None = None,
            keep_extra: bool = False) -> pd.DataFrame:
    frame = _frame(suite, checks, rows, keep_extra)
    for name, table_check in (table_checks or {}).items():
        frame[name] = table_check(frame)
    with _GX_LOCK:
        definition = _validation_definition(suite, tuple(table_checks or ()))
        result = definition.run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")
    failures = [_describe(r, frame, suite, rows.unit) for r in result.results if not r.success]
    if failures:
        raise DatasetError(
            f"{path} fails {len(failures)} expectation{'s' * (len(failures) > 1)}: {'; '.join(failures)}. "
            "Fix those rows and run again."
        )
    return frame[[*suite.columns, *suite.optional]]


def _describe(result: Any, frame: pd.DataFrame, suite: Suite, unit: str) -> str:
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
    labels = list(dict.fromkeys(_row_label(frame, n, suite.id_column, unit) for n in details["unexpected_index_list"]))
    more = f" and {len(labels) - _SHOWN_ROWS} more" if len(labels) > _SHOWN_ROWS else ""
    return f"{name} at rows {', '.join(labels[:_SHOWN_ROWS])}{more}"


def _row_label(frame: pd.DataFrame, position: int, id_column: str, unit: str) -> str:
    """A row's id, with its position where the id alone does not tell the row apart."""
    row_id = frame.at[position, id_column]
    if _is_missing(row_id) or not str(row_id).strip():
        return f"{unit} {position}"
    return str(row_id) if (frame[id_column] == row_id).sum() == 1 else f"{row_id} ({unit} {position})"
