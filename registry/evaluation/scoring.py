"""Scoring: one deterministic rule per task, lenient about form and strict about content.

A tiny model gets credit for a right answer said clumsily (case, punctuation, code fences), never
for a wrong one said well. The rules are documented for users in ``datasets/README.md``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from registry.errors import DatasetError
from registry.evaluation.tasks import JUDGED_TASKS, Item, unknown_task

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalize(text: str) -> str:
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
    if item.task in JUDGED_TASKS:
        raise DatasetError(f"task {item.task!r} has no reference answers: a judge scores it (registry/evaluation/judge.py)")
    if item.task not in _SCORERS:
        raise unknown_task(item.task)
    return _SCORERS[item.task](item.data, output)


def _score_qa(data: dict[str, Any], output: str) -> float:
    answer = normalize(output)
    references = [normalize(r) for r in data["references"]]
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
    answer = normalize(output)
    positions = [(_word_position(normalize(label), answer), -len(label), label) for label in data["labels"]]
    found = sorted(p for p in positions if p[0] >= 0)  # earliest; at a tie the longer label ("not spam" over "not")
    return 1.0 if found and found[0][2] == data["label"] else 0.0


_SCORERS: dict[str, Callable[[dict[str, Any], str], float]] = {
    "qa": _score_qa,
    "extract": _score_extract,
    "classify": _score_classify,
}
