"""The scorer library: how a task file says an answer is scored, one small class per rule.

A task's ``scoring.scorers`` list names scorers from here (``scorer: contains``, ``scorer: json``, …),
each with its own settings and a ``weight``; ``registry/evaluation/scoring.py`` combines them. Every
scorer is deterministic except ``judge``, lenient about form (case, punctuation, code fences) and
strict about content: a tiny model gets credit for a right answer said clumsily, never for a wrong
one said well. A scorer returns a score in [0, 1], or ``None`` when it cannot score the item (a
custom function that raised, a judge that gave no judgement): the item then counts as unscored.

``reference_free`` says whether a scorer needs the item's reference answer; the ones that do not
can score live traffic, where no reference exists. ``docs/tasks.md`` documents each with an example.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from rapidfuzz.distance import LCSseq

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]|_")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")

ItemData = dict[str, Any]
CheckFunction = Callable[[ItemData], bool]


def normalize(text: str) -> str:
    """Lowercase, punctuation to spaces, drop a/an/the, collapse spaces (SQuAD-style, hyphens split)."""
    text = _PUNCTUATION.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def _word_position(needle: str, haystack: str) -> int:
    """Index of ``needle`` as whole words in normalized ``haystack``, or -1."""
    return f" {haystack} ".find(f" {needle} ") if needle else -1


def _as_list(value: Any) -> list[Any]:
    """A reference field holds one answer or a list of acceptable ones."""
    return list(value) if isinstance(value, list | tuple) else [value]


def _f1(predicted: list[str], reference: list[str]) -> float:
    common = sum((Counter(predicted) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def first_json_object(output: str) -> dict[str, Any] | None:
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


def _matches(expected: Any, actual: Any) -> bool:
    """A field value matches: integers by value (``"27"`` is 27), anything else as trimmed, casefolded text."""
    if isinstance(expected, int) and not isinstance(expected, bool) and not isinstance(actual, bool):
        if isinstance(actual, int | float):
            return actual == expected
        if isinstance(actual, str) and re.fullmatch(r"\s*[-+]?\d+\s*", actual):
            return int(actual) == expected
    return str(actual).strip().casefold() == str(expected).strip().casefold()


def check_json_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """``value`` if it is a valid JSON Schema (or None); a pydantic validator's ``ValueError`` otherwise."""
    if value is not None:
        import jsonschema

        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema ({exc.message})") from None
    return value


def known_criteria(value: tuple[str, ...]) -> tuple[str, ...]:
    """``value`` if the judge has a rubric for each criterion; a pydantic validator's ``ValueError`` otherwise."""
    from registry.evaluation.rubrics import CRITERIA

    unknown = [c for c in value if c not in CRITERIA]
    if unknown:
        raise ValueError(f"unknown criteria {unknown}; the judge knows {', '.join(CRITERIA)}")
    return value


class ScorerBase(BaseModel):
    """Settings every scorer shares. ``name`` labels its per-item score (default: the scorer's kind)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(default=1.0, gt=0, description="share of this scorer in the weighted mean")
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.scorer  # type: ignore[attr-defined]

    @property
    def reference_free(self) -> bool:
        """True when the scorer needs no reference answer, so live traffic can be scored with it."""
        return not self.reads()

    def reads(self) -> tuple[str, ...]:
        """The item fields this scorer reads (the validation set must declare them)."""
        return ()

    def checks(self) -> dict[str, tuple[tuple[str, ...], CheckFunction]]:
        """Row checks the data must pass for this scorer to work: name → (fields read, check)."""
        return {}

    def value_sets(self) -> dict[str, tuple[Any, ...]]:
        """Fields whose values must come from a fixed set (checked by Great Expectations)."""
        return {}

    def score(self, data: ItemData, answer: str) -> float | None:
        raise NotImplementedError


class _ReferenceScorer(ScorerBase):
    reference: str = Field(description="the item field holding the reference answer, or a list of acceptable ones")

    def reads(self) -> tuple[str, ...]:
        return (self.reference,)


class ExactScorer(_ReferenceScorer):
    """1.0 if the answer equals a reference; ``normalized`` (default) compares after ``normalize``."""

    scorer: Literal["exact"]
    normalized: bool = True

    def score(self, data: ItemData, answer: str) -> float:
        fold = normalize if self.normalized else str.strip
        return float(fold(answer) in {fold(str(r)) for r in _as_list(data[self.reference])})


class ContainsScorer(_ReferenceScorer):
    """1.0 if a normalized reference occurs as whole words in the normalized answer."""

    scorer: Literal["contains"]

    def score(self, data: ItemData, answer: str) -> float:
        text = normalize(answer)
        return float(any(_word_position(normalize(str(r)), text) >= 0 for r in _as_list(data[self.reference])))


class TokenF1Scorer(_ReferenceScorer):
    """The best token F1 between the normalized answer and any reference (partial credit)."""

    scorer: Literal["token_f1"]

    def score(self, data: ItemData, answer: str) -> float:
        tokens = normalize(answer).split()
        return max(_f1(tokens, normalize(str(r)).split()) for r in _as_list(data[self.reference]))


class RougeLScorer(_ReferenceScorer):
    """ROUGE-L F1 (longest common subsequence of normalized words) against the best reference,
    computed by rapidfuzz's ``LCSseq``."""

    scorer: Literal["rouge_l"]

    def score(self, data: ItemData, answer: str) -> float:
        tokens = normalize(answer).split()
        best = 0.0
        for reference in _as_list(data[self.reference]):
            ref = normalize(str(reference)).split()
            common = LCSseq.similarity(tokens, ref) if tokens and ref else 0
            if common:
                precision, recall = common / len(tokens), common / len(ref)
                best = max(best, 2 * precision * recall / (precision + recall))
        return best


class LabelScorer(ScorerBase):
    """The allowed label that occurs earliest in the answer (whole words; at a tie the longer one)
    is the prediction. With ``reference``: 1.0 if it is the item's label. Without: 1.0 if the answer
    names any allowed label at all (reference-free). Labels come from ``labels`` (one set for the
    task; in a task with a ``classification:`` section, its labels when none are given) or
    ``labels_field`` (a list per item)."""

    scorer: Literal["label"]
    reference: str | None = None
    labels: tuple[str, ...] | None = Field(default=None, min_length=2)
    labels_field: str | None = None

    @model_validator(mode="after")
    def _one_label_source(self) -> LabelScorer:
        if (self.labels is None) == (self.labels_field is None):
            raise ValueError("give exactly one of labels (a list for the whole task) or labels_field (a field per item), "
                             "or neither in a task whose classification: section lists its labels")
        return self

    def reads(self) -> tuple[str, ...]:
        return tuple(f for f in (self.reference, self.labels_field) if f)

    @property
    def reference_free(self) -> bool:
        return self.reference is None  # labels_field is part of the request, not a reference answer

    def checks(self) -> dict[str, tuple[tuple[str, ...], CheckFunction]]:
        found: dict[str, tuple[tuple[str, ...], CheckFunction]] = {}
        if self.labels_field:
            field = self.labels_field
            found[f"{field}_has_2_or_more_distinct_labels"] = (
                (field,), lambda r: isinstance(r[field], list) and len(set(map(str, r[field]))) == len(r[field]) >= 2
            )
            if self.reference:
                reference = self.reference
                found[f"{reference}_in_{field}"] = (
                    (reference, field), lambda r: isinstance(r[field], list) and r[reference] in r[field]
                )
        return found

    def value_sets(self) -> dict[str, tuple[Any, ...]]:
        return {self.reference: self.labels} if self.reference and self.labels else {}

    def predict(self, data: ItemData, answer: str) -> str | None:
        labels = self.labels if self.labels is not None else data[self.labels_field]  # type: ignore[index]
        text = normalize(answer)
        positions = [(_word_position(normalize(str(label)), text), -len(str(label)), label) for label in labels]
        found = sorted(p for p in positions if p[0] >= 0)
        return found[0][2] if found else None

    def score(self, data: ItemData, answer: str) -> float:
        predicted = self.predict(data, answer)
        if self.reference is None:
            return float(predicted is not None)
        return float(predicted is not None and predicted == data[self.reference])


class RegexScorer(ScorerBase):
    """1.0 if the pattern is found in the answer (``fullmatch: true``: the whole trimmed answer)."""

    scorer: Literal["regex"]
    pattern: str
    ignore_case: bool = False
    fullmatch: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    def score(self, data: ItemData, answer: str) -> float:
        pattern = re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0)
        found = pattern.fullmatch(answer.strip()) if self.fullmatch else pattern.search(answer)
        return float(found is not None)


class NumericScorer(_ReferenceScorer):
    """The first number in the answer, within ``abs_tol`` or ``rel_tol`` of the reference (thousands
    separators ignored): 1.0, else 0.0."""

    scorer: Literal["numeric"]
    abs_tol: float = Field(default=0.0, ge=0)
    rel_tol: float = Field(default=0.0, ge=0)

    def checks(self) -> dict[str, tuple[tuple[str, ...], CheckFunction]]:
        field = self.reference
        return {f"{field}_is_numeric": ((field,), lambda r: all(_is_number(v) for v in _as_list(r[field])))}

    def score(self, data: ItemData, answer: str) -> float:
        match = _NUMBER.search(answer)
        if match is None:
            return 0.0
        try:
            value = float(match.group().replace(",", ""))
        except ValueError:
            return 0.0
        return float(any(
            math.isclose(value, float(r), rel_tol=self.rel_tol, abs_tol=self.abs_tol) for r in _as_list(data[self.reference])
        ))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class JsonScorer(ScorerBase):
    """The first JSON object in the answer. No object (or one that fails ``schema``): 0.0. With
    ``fields`` (an item field holding the expected object): ``valid_weight`` for the object plus the
    rest times the share of expected keys whose value matches (keys casefolded, ``"27"`` matches 27).
    Without ``fields``: 1.0 for a valid object (reference-free)."""

    scorer: Literal["json"]
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    fields: str | None = None
    valid_weight: float = Field(default=0.3, ge=0, le=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_json_schema(value)

    def reads(self) -> tuple[str, ...]:
        return (self.fields,) if self.fields else ()

    def checks(self) -> dict[str, tuple[tuple[str, ...], CheckFunction]]:
        if not self.fields:
            return {}
        field = self.fields
        return {f"{field}_is_nonempty_object": ((field,), lambda r: isinstance(r[field], dict) and len(r[field]) > 0)}

    def score(self, data: ItemData, answer: str) -> float:
        found = first_json_object(answer)
        if found is None or not self._fits(found):
            return 0.0
        if not self.fields:
            return 1.0
        by_key = {str(key).strip().casefold(): value for key, value in found.items()}
        expected = data[self.fields]
        hits = sum(k.casefold() in by_key and _matches(v, by_key[k.casefold()]) for k, v in expected.items())
        # Exact arithmetic, so a perfect answer is 1.0 rather than 0.3 + 0.7 == 0.9999999999999999.
        valid = Fraction(self.valid_weight).limit_denominator(1000)
        return float(valid + (1 - valid) * Fraction(hits, len(expected)))

    def _fits(self, value: dict[str, Any]) -> bool:
        if self.json_schema is None:
            return True
        import jsonschema

        return jsonschema.validators.validator_for(self.json_schema)(self.json_schema).is_valid(value)


class PythonScorer(ScorerBase):
    """Your own function, ``module:function``, called as ``function(item, answer)`` with the item's
    fields (a dict) and the answer text; it returns a number in [0, 1]. A module file beside the
    task file is found first (and is part of the task's version). If it raises or returns anything
    else, that item counts as unscored and the run says how many."""

    scorer: Literal["python"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    needs_reference: bool = Field(default=True, description="false if it scores without a reference answer")
    fields_read: tuple[str, ...] = Field(default=(), alias="reads")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def reference_free(self) -> bool:
        return not self.needs_reference

    def reads(self) -> tuple[str, ...]:
        return self.fields_read

    @property
    def module(self) -> str:
        return self.function.split(":")[0]

    def score(self, data: ItemData, answer: str) -> float | None:
        raise NotImplementedError("a python scorer is bound to its function by registry/evaluation/scoring.py")


class JudgeScorer(ScorerBase):
    """The ``judgment`` route's judge: its mean score over the named criteria (see ``arbiter judge``),
    given the instruction the model saw. An empty answer scores 0 without a judgement."""

    scorer: Literal["judge"]
    criteria: tuple[str, ...] = Field(min_length=1)

    @field_validator("criteria")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return known_criteria(value)

    def score(self, data: ItemData, answer: str) -> float | None:
        raise NotImplementedError("a judge scorer is bound to a judge by registry/evaluation/scoring.py")


ScorerConfig = Annotated[
    ExactScorer | ContainsScorer | TokenF1Scorer | RougeLScorer | LabelScorer | RegexScorer | NumericScorer
    | JsonScorer | PythonScorer | JudgeScorer,
    Field(discriminator="scorer"),
]
"""One entry of a task's ``scoring.scorers``, chosen by its ``scorer`` key."""

SCORER_NAMES: tuple[str, ...] = (
    "exact", "contains", "token_f1", "rouge_l", "label", "regex", "numeric", "json", "python", "judge",
)
