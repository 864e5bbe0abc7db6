"""Validation sets: load and check them, turn an item into a prompt, and score a model's answer.

A benchmark is only comparable across models and across runs if every model sees the same,
well-formed items and is scored by the same rule. So this module owns all three steps for each
task in ``TASKS``:

* **load** ``datasets/<task>.jsonl``, refusing a malformed file with one line that names the bad rows
  (a Great Expectations suite per task, so a broken set fails before any model time is spent), and
  recording the file's sha256 so a result row says exactly which data produced it;
* **prompt**: ``build_messages`` shows one worked example, then the item, as user/assistant turns
  (no system message: llama.cpp's ``gemma`` chat format drops it);
* **score**: ``score`` is deterministic and lenient about form (case, punctuation, code fences)
  but strict about content, so a tiny model gets credit for a right answer said clumsily.

The schemas and scoring rules are documented for users in ``datasets/README.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd

from registry.errors import DatasetError

TASKS: tuple[str, ...] = ("qa", "extract", "classify")

# The keys each row of a task must have, and nothing else.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "qa": ("id", "question", "references"),
    "extract": ("id", "text", "fields"),
    "classify": ("id", "text", "labels", "label"),
}
_MAX_TOKENS: dict[str, int] = {"qa": 24, "extract": 64, "classify": 8}
_SHOWN_ROWS = 5  # failing rows named per expectation, so the error stays one readable line
# One GE context is shared by the process; building a suite twice or running two batches through
# the same asset at once are races, and flows may validate from several threads.
_GX_LOCK = threading.Lock()

WARMUP_MESSAGES: tuple[list[dict[str, str]], ...] = (
    [{"role": "user", "content": "Say hello in one short sentence."}],
    [{"role": "user", "content": "Count from one to five."}],
)
"""Unscored prompts sent before timing starts, so a model's first-call costs (weights paged in,
buffers allocated) do not land on the first scored item."""


@dataclass(frozen=True)
class Item:
    """One validation item; ``data`` is the raw JSON row, so new task fields need no new class."""

    id: str
    task: str
    data: dict[str, Any]


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


def validate_file(path: Path, task: str) -> pd.DataFrame:
    """Parse a JSONL file and run the task's Great Expectations suite on it.

    Returns the rows as a DataFrame indexed by line number, with exactly the task's columns.
    Raises ``DatasetError`` for an unknown task, a missing or empty file, a line that is not a
    JSON object, or any failed expectation (naming the failing rows by id).
    """
    path = Path(path)
    return _expect(path, task, _parse(path, _read_bytes(path, task)))


def _read_bytes(path: Path, task: str) -> bytes:
    if task not in TASKS:
        raise _unknown_task(task)
    if not path.is_file():
        raise DatasetError(
            f"No validation set at {path}. Create it with one JSON object per line "
            f"(see datasets/README.md), or point ARBITER_HOME at a directory whose datasets/ has {path.name}."
        )
    return path.read_bytes()


def _unknown_task(task: str) -> DatasetError:
    return DatasetError(f"Unknown task {task!r}; known tasks: {', '.join(TASKS)}.")


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
    return isinstance(value, str) and _normalize(value) != ""


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
}
_ID_CHECK: dict[str, tuple[tuple[str, ...], _Check]] = {"id_is_text": (("id",), lambda r: _is_text(r["id"]))}


def _frame(task: str, rows: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """The rows as a frame (index = line number) with the derived check columns added."""
    frame = pd.DataFrame.from_dict(rows, orient="index", dtype=object)
    for column in _COLUMNS[task]:
        if column not in frame:
            frame[column] = None  # so not-null names every row, rather than GE raising on a missing column
    records = frame.to_dict("index")
    for name, (inputs, check) in {**_ID_CHECK, **_CHECKS[task]}.items():
        frame[name] = pd.Series(
            {n: None if any(_is_missing(r[c]) for c in inputs) else bool(check(r)) for n, r in records.items()},
            dtype=object,
        )
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
    checks = [*_ID_CHECK, *_CHECKS[task]]
    suite = context.suites.add(gx.ExpectationSuite(name=task))
    suite.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=[*_COLUMNS[task], *checks], exact_match=True))
    for column in _COLUMNS[task]:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="id"))
    for column in checks:
        suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True]))
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


# --------------------------------------------------------------------------- prompting


def build_messages(item: Item) -> list[dict[str, str]]:
    """Chat messages asking the model for an answer in the form ``score`` expects.

    Example::

        build_messages(Item("qa-001", "qa", {"question": "What is 2 plus 2?", "references": ["4"]}))
        # [{'role': 'user', 'content': '...Question: What is the capital of England?'},
        #  {'role': 'assistant', 'content': 'London'},
        #  {'role': 'user', 'content': 'Answer the question in a few words, ...Question: What is 2 plus 2?'}]
    """
    if item.task not in _PROMPTS:
        raise _unknown_task(item.task)
    prompt = _PROMPTS[item.task]
    demo, answer = _DEMOS[item.task]
    return [
        {"role": "user", "content": prompt(demo)},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": prompt(item.data)},
    ]


def _extract_prompt(data: dict[str, Any]) -> str:
    keys = ", ".join(f"{key} ({'integer' if isinstance(v, int) else 'string'})" for key, v in data["fields"].items())
    return (
        f"Extract facts from the text. Reply with ONLY a JSON object with exactly these keys: {keys}.\n\n"
        f"Text: {data['text']}"
    )


_PROMPTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "qa": lambda d: f"Answer the question in a few words, with no explanation.\n\nQuestion: {d['question']}",
    "extract": _extract_prompt,
    "classify": lambda d: (
        f"Classify the text. Reply with exactly one of these labels: {', '.join(d['labels'])}.\n\nText: {d['text']}"
    ),
}


# One worked example per task, in the dataset's own schema, shown as an earlier turn. Measured on the
# bundled sets (temperature 0), mean quality qa/extract/classify: Gemma 3 270M, a base model, only
# echoes the instruction without it (0.01/0.00/0.00) and answers in form with it (0.07/0.65/0.00);
# SmolLM2-135M-Instruct goes from 0.70/0.65/0.29 to 0.70/0.83/0.71.
_DEMOS: dict[str, tuple[dict[str, Any], str]] = {
    "qa": ({"question": "What is the capital of England?", "references": ["London"]}, "London"),
    "extract": (
        {"text": "Ali Khan, 27, lives in Dubai.", "fields": {"name": "Ali Khan", "age": 27, "city": "Dubai"}},
        '{"name": "Ali Khan", "age": 27, "city": "Dubai"}',
    ),
    "classify": (
        {"text": "A red car drove past.", "labels": ["animal", "plant", "vehicle"], "label": "vehicle"},
        "vehicle",
    ),
}


def max_tokens_for(task: str) -> int:
    """Generation budget per task: enough for a right answer, small enough that rambling is cut."""
    if task not in _MAX_TOKENS:
        raise _unknown_task(task)
    return _MAX_TOKENS[task]


# --------------------------------------------------------------------------- scoring

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def _normalize(text: str) -> str:
    """Lowercase, punctuation to spaces, drop a/an/the, collapse spaces (SQuAD-style, hyphens split)."""
    text = _PUNCTUATION.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def _word_position(needle: str, haystack: str) -> int:
    """Index of ``needle`` as whole words in normalized ``haystack``, or -1."""
    return f" {haystack} ".find(f" {needle} ") if needle else -1


def score(item: Item, output: str) -> float:
    """Score a model's raw output for an item, in [0, 1]; the same inputs always give the same score.

    * qa: 1.0 if a normalized reference occurs as whole words in the normalized output, else the
      best token F1 against any reference (partial credit for "the city of Paris, France").
    * extract: 0.0 without a parsable JSON object; else 0.3 for the object plus 0.7 times the
      fraction of expected fields whose value matches.
    * classify: the item's label that occurs earliest (as whole words) in the output is the
      prediction; 1.0 if it is the right one.
    """
    if item.task not in _SCORERS:
        raise _unknown_task(item.task)
    return _SCORERS[item.task](item.data, output)


def _score_qa(data: dict[str, Any], output: str) -> float:
    answer = _normalize(output)
    references = [_normalize(r) for r in data["references"]]
    if any(_word_position(r, answer) >= 0 for r in references):
        return 1.0
    return max(_f1(answer.split(), r.split()) for r in references)


def _f1(predicted: list[str], reference: list[str]) -> float:
    common = sum((Counter(predicted) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def _first_json_object(output: str) -> dict[str, Any] | None:
    """The first ``{...}`` that parses, wherever it sits (after prose, inside a code fence)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", output):
        try:
            value, _ = decoder.raw_decode(output, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _matches(expected: str | int, actual: Any) -> bool:
    if isinstance(expected, int) and not isinstance(actual, bool):
        if isinstance(actual, int | float):
            return actual == expected
        if isinstance(actual, str) and re.fullmatch(r"\s*[-+]?\d+\s*", actual):
            return int(actual) == expected
    return str(actual).strip().casefold() == str(expected).strip().casefold()


def _score_extract(data: dict[str, Any], output: str) -> float:
    found = _first_json_object(output)
    if found is None:
        return 0.0
    by_key = {str(key).strip().casefold(): value for key, value in found.items()}
    expected = data["fields"]
    hits = sum(k.casefold() in by_key and _matches(v, by_key[k.casefold()]) for k, v in expected.items())
    # Exact arithmetic, so a perfect answer is 1.0 rather than 0.3 + 0.7 == 0.9999999999999999.
    return float(Fraction(3, 10) + Fraction(7, 10) * Fraction(hits, len(expected)))


def _score_classify(data: dict[str, Any], output: str) -> float:
    answer = _normalize(output)
    positions = [(_word_position(_normalize(label), answer), -len(label), label) for label in data["labels"]]
    found = sorted(p for p in positions if p[0] >= 0)  # earliest; at a tie the longer label ("not spam" over "not")
    return 1.0 if found and found[0][2] == data["label"] else 0.0


_SCORERS: dict[str, Callable[[dict[str, Any], str], float]] = {
    "qa": _score_qa,
    "extract": _score_extract,
    "classify": _score_classify,
}
