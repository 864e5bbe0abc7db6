"""The task file: what a user writes to make their validation set, prompt and scoring a task.

A task is one YAML (or JSON) file beside its data (docs/tasks.md)::

    name: support
    description: Route a support ticket to the team that handles it.
    capabilities: [chat]
    data:
      path: support.jsonl            # JSONL, CSV or Parquet, relative to this file
      fields: {id: text, ticket: text, team: text}
    prompt:
      template: "Which team handles this ticket? {{ ticket }}"
    generation: {max_tokens: 8}
    scoring:
      scorers:
        - {scorer: label, reference: team, labels: [billing, bugs, accounts]}
    live:                            # optional: how the route's live answers are scored
      scorers:
        - {scorer: label, labels: [billing, bugs, accounts]}

A fixed-label task may also say what a text classifier reads and answers (``classification:``);
its label scorers then take those labels, and a classifier with them can serve the task::

    classification: {input: ticket, labels: [billing, bugs, accounts]}
    scoring:
      scorers:
        - {scorer: label, reference: team}

YAML because a prompt template is multi-line text that a person edits, and YAML's block scalars
(``|-``) hold it as written, comments included; JSON is YAML, so a generated spec works too.
``read_spec`` parses and validates the file with pydantic and raises ``DatasetError`` naming the
file, the field and the fix, so nothing is recorded from a bad spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from registry.errors import DatasetError, one_line
from registry.evaluation.rubrics import JUDGE_ROUTE
from registry.evaluation.scorers import (
    SCORER_NAMES,
    LabelScorer,
    PythonScorer,
    ScorerConfig,
    check_json_schema,
    known_criteria,
    normalize,
)
from registry.spec import NAME_PATTERN, known_capabilities

FieldKind = Literal[
    "text", "string", "integer", "number", "boolean", "object",
    "list[text]", "list[string]", "list[integer]", "list[number]",
]
"""``text`` is a string with at least one word to score; ``string`` is any string."""

DATA_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """One field every item has, its type, and optional bounds."""

    type: FieldKind
    required: bool = True
    min_length: int | None = Field(default=None, ge=0, description="characters of a string, items of a list")
    max_length: int | None = Field(default=None, ge=1)
    unique_items: bool = False
    values: tuple[Any, ...] | None = Field(default=None, min_length=1, description="the only values allowed")


class DataSpec(_Strict):
    path: str = Field(description="the validation set, relative to the task file: .jsonl, .csv or .parquet")
    id: str = Field(default="id", description="the field that names each item; unique")
    fields: dict[str, FieldSpec]

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``question: text`` is short for ``question: {type: text}``."""
        if isinstance(value, dict):
            return {k: {"type": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("path")
    @classmethod
    def _format(cls, value: str) -> str:
        if Path(value).suffix.lower() not in DATA_FORMATS:
            raise ValueError(f"{value!r} is not a .jsonl, .csv or .parquet file")
        return value

    @model_validator(mode="after")
    def _id_declared(self) -> DataSpec:
        if self.id not in self.fields:
            raise ValueError(f"the id field {self.id!r} is not among fields; declare it (e.g. {self.id}: text)")
        if self.fields[self.id].type not in ("text", "string", "integer"):
            raise ValueError(f"the id field {self.id!r} must be text, string or integer")
        return self


class Example(_Strict):
    """A worked example shown before each item: its fields go through the same template."""

    item: dict[str, Any]
    answer: str


class PromptSpec(_Strict):
    template: str = Field(min_length=1, description="Jinja2 over the item's fields, rendered in a sandbox")
    system: str | None = None
    examples: tuple[Example, ...] = ()


class GenerationSpec(_Strict):
    max_tokens: int = Field(default=64, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0, le=2)
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = Field(default=None, description="the answer must be JSON that fits it")

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_json_schema(value)


def _known_names(value: Any) -> Any:
    """Name an unknown scorer with the list, rather than pydantic's tag-union message."""
    for index, entry in enumerate(value if isinstance(value, list | tuple) else ()):
        if isinstance(entry, dict) and entry.get("scorer") not in SCORER_NAMES:
            raise ValueError(
                f"scorer {index + 1}: {entry.get('scorer')!r} is not a scorer; use one of {', '.join(SCORER_NAMES)}"
            )
    return value


def _distinct_labels(value: tuple[Any, ...]) -> tuple[Any, ...]:
    """Each scorer's score is kept under its label, so two of one kind need their own ``name``."""
    labels = [scorer.label for scorer in value]
    if len(set(labels)) != len(labels):
        raise ValueError("two scorers share a label; give them distinct `name:` keys")
    return value


class ScoringSpec(_Strict):
    combine: Literal["mean", "max"] = Field(default="mean", description="weighted mean of the scorers, or the best one")
    scorers: tuple[ScorerConfig, ...] = Field(min_length=1)

    _names = field_validator("scorers", mode="before")(_known_names)
    _labels = field_validator("scorers")(_distinct_labels)


LIVE_FIELDS: tuple[str, ...] = ("prompt", "system")
"""All a live scorer's ``item`` holds. A live call is a client's own messages, not a validation item:
``prompt`` is the last user message (or a completion's prompt), ``system`` the system message or ``""``."""


class LiveSpec(_Strict):
    """How the route's live answers are scored, off the request path (registry/quality/live_scoring.py).

    Only scorers that need no reference answer, since a live call has none, and that read nothing
    of an item but ``prompt`` and ``system``: checked here, so a spec that could never score a live
    call is refused at ``tasks add`` rather than failing on every call later. ``judge`` names the
    criteria the ``judgment`` route's judge scores live answers on (a separate signal: whether that
    judge may gate a rollout depends on its calibration, read when a decision is made).
    """

    combine: Literal["mean", "max"] = Field(default="mean", description="weighted mean of the scorers, or the best one")
    scorers: tuple[ScorerConfig, ...] = ()
    judge: tuple[str, ...] = Field(default=(), description="criteria the judgment route's judge scores live answers on")

    _names = field_validator("scorers", mode="before")(_known_names)
    _labels = field_validator("scorers")(_distinct_labels)
    _criteria = field_validator("judge")(known_criteria)

    @model_validator(mode="after")
    def _scorable_live(self) -> LiveSpec:
        if not self.scorers and not self.judge:
            raise ValueError("name at least one scorer or judge criterion, or leave live out")
        for index, scorer in enumerate(self.scorers, start=1):
            name = f"scorer {index} ({scorer.label})"
            if scorer.scorer == "judge":
                raise ValueError(f"{name}: the judge is not a live scorer; name its criteria in live.judge instead")
            if not scorer.reference_free:
                raise ValueError(
                    f"{name} needs a reference answer, which a live call has not; use a reference-free scorer "
                    "(json without fields, label without reference, regex, python with needs_reference: false)"
                )
            outside = [f for f in scorer.reads() if not isinstance(scorer, PythonScorer) or f not in LIVE_FIELDS]
            if outside:
                fix = "give it labels: rather than labels_field" if scorer.scorer == "label" else "read only those"
                raise ValueError(f"{name} reads item fields {outside}; a live call has only "
                                 f"{' and '.join(LIVE_FIELDS)}: {fix}")
        return self

    @property
    def scoring(self) -> ScoringSpec | None:
        """The live scorers as a task's scoring (one scoring engine for benchmarks and live calls)."""
        return ScoringSpec(combine=self.combine, scorers=self.scorers) if self.scorers else None


class ClassificationSpec(_Strict):
    """A fixed-label classification task: the item field a text classifier reads and the labels it
    may answer. A text model still gets the prompt; a classifier gets ``input``'s raw text.

    Labels are plain strings, not slugs: a trained classifier's labels are whatever its training
    data said ("Billing", "tech support"), and renaming them would mean retraining. Each must hold
    a word and differ from the others after the label scorer's normalization (case, punctuation,
    a/an/the), since that scorer finds a label in a text model's answer by its words.
    """

    input: str = Field(description="the item field a classifier reads: the raw text, not the prompt")
    labels: tuple[str, ...] = Field(min_length=2, description="the fixed label set, in any order")

    @field_validator("labels")
    @classmethod
    def _distinct_words(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: dict[str, str] = {}
        for label in value:
            if label != label.strip():
                raise ValueError(f"label {label!r} has space around it; write it as the classifier answers it")
            if not normalize(label):
                raise ValueError(f"label {label!r} is no word to the label scorer (it ignores case, punctuation and "
                                 "a/an/the); name it with a word")
            if normalize(label) in seen:
                raise ValueError(f"labels {seen[normalize(label)]!r} and {label!r} read the same to the label scorer "
                                 "(it ignores case, punctuation and a/an/the); make them distinct")
            seen[normalize(label)] = label
        return value


def _task_labels_to_label_scorers(document: Any) -> Any:
    """A label scorer that names no labels (neither ``labels`` nor ``labels_field``) in a task with
    a ``classification:`` section scores against the task's labels: said once, in one place."""
    if not isinstance(document, dict) or not isinstance(document.get("classification"), dict):
        return document
    labels = document["classification"].get("labels")
    if not isinstance(labels, list | tuple):
        return document
    filled = dict(document)
    for section in ("scoring", "live"):
        part = document.get(section)
        if isinstance(part, dict) and isinstance(part.get("scorers"), list | tuple):
            filled[section] = {**part, "scorers": [
                {**s, "labels": list(labels)}
                if isinstance(s, dict) and s.get("scorer") == "label" and "labels" not in s and "labels_field" not in s
                else s
                for s in part["scorers"]
            ]}
    return filled


class TaskSpec(_Strict):
    name: str
    description: str = Field(min_length=1)
    capabilities: tuple[str, ...] = ("chat",)
    data: DataSpec
    prompt: PromptSpec
    generation: GenerationSpec = GenerationSpec()
    scoring: ScoringSpec
    live: LiveSpec | None = None
    classification: ClassificationSpec | None = None

    _fill_labels = model_validator(mode="before")(_task_labels_to_label_scorers)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value) or value.startswith("route."):
            raise ValueError(f"{value!r} is not a task name; use a lowercase slug such as 'support' or 'sql-gen'")
        if value == JUDGE_ROUTE:
            raise ValueError(f"{value!r} is the judge's route, not a task; name the task after what it asks for")
        return value

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return known_capabilities(value)

    @model_validator(mode="after")
    def _scorers_read_declared_fields(self) -> TaskSpec:
        for index, scorer in enumerate(self.scoring.scorers, start=1):
            missing = [f for f in scorer.reads() if f not in self.data.fields]
            if missing:
                raise ValueError(
                    f"scoring.scorers.{index} ({scorer.scorer}) reads {missing}, which data.fields does not declare; "
                    "declare it there or name a declared field"
                )
        return self

    @model_validator(mode="after")
    def _classification_fits(self) -> TaskSpec:
        if self.classification is None:
            return self
        field = self.data.fields.get(self.classification.input)
        if field is None or field.type != "text" or not field.required:
            raise ValueError(
                f"classification.input {self.classification.input!r} must name a required text field of data.fields "
                f"(declared: {', '.join(self.data.fields)}); a classifier reads that field's text"
            )
        labels = set(self.classification.labels)
        scorers = [("scoring", i, s) for i, s in enumerate(self.scoring.scorers, start=1)]
        scorers += [("live", i, s) for i, s in enumerate(self.live.scorers if self.live else (), start=1)]
        for section, index, scorer in scorers:
            if isinstance(scorer, LabelScorer) and (scorer.labels_field or set(scorer.labels or ()) != labels):
                raise ValueError(
                    f"{section}.scorers.{index} ({scorer.label}) scores other labels than classification.labels; "
                    "leave its labels and labels_field out (it takes the task's) or list the same labels"
                )
        return self

    @property
    def judge_criteria(self) -> tuple[str, ...]:
        """The criteria the ``judgment`` route judges this task on (empty: no judge needed)."""
        return tuple(c for s in self.scoring.scorers if s.scorer == "judge" for c in s.criteria)  # type: ignore[union-attr]

    @property
    def reference_free_scorers(self) -> tuple[str, ...]:
        """The scorers that can score an answer without a reference (live traffic)."""
        return tuple(s.label for s in self.scoring.scorers if s.reference_free)


def read_spec(path: Path) -> tuple[TaskSpec, bytes]:
    """Parse and validate a task file; returns the spec and the file's bytes (part of the task's version)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no task file at {path}; write one as docs/tasks.md shows (a .yaml file beside its data)")
    raw = path.read_bytes()
    try:
        document = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DatasetError(f"{path}{where} is not valid YAML ({problem}); fix that line and run again") from None
    return parse_spec(document, path), raw


def parse_spec(document: Any, source: Path | str) -> TaskSpec:
    """Validate an already-parsed spec (a dict), naming ``source`` in the error."""
    if not isinstance(document, dict):
        raise DatasetError(f"{source} is not a task spec: it must be a mapping with name, description, data, prompt "
                           "and scoring (see docs/tasks.md)")
    try:
        return TaskSpec.model_validate(document)
    except ValidationError as exc:
        errors = _without_echoes(exc.errors())
        raise DatasetError(f"{source}: {one_line(errors, where=_where, reword=_reword, default_where='spec')}") from None


def _without_echoes(errors: list[Any]) -> list[Any]:
    """Drop a list's "too short" that only echoes a bad entry inside it: a spec whose one scorer is
    wrong would otherwise also be told it has no scorers. Likewise a label scorer's complaint while
    ``classification.labels`` is wrong: it only repeats the labels it was given from there."""
    bad_labels = any(tuple(e["loc"][:2]) == ("classification", "labels") for e in errors)
    return [
        e for e in errors
        if not (e.get("type") == "too_short"
                and any(len(o["loc"]) > len(e["loc"]) and o["loc"][: len(e["loc"])] == e["loc"] for o in errors))
        and not (bad_labels and e["loc"][:1] in (("scoring",), ("live",)) and "label" in e["loc"])
    ]


def _where(loc: tuple[Any, ...]) -> str:
    """``scoring.scorers.0.label.labels`` → ``scoring.scorers.1.labels`` (1-based, union tag dropped)."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(str(part + 1))
        elif i > 0 and loc[i - 1] != "fields" and isinstance(loc[i - 1], int) and part in SCORER_NAMES:
            continue
        else:
            parts.append(str(part))
    return ".".join(parts)


def _reword(error: Any) -> str | None:
    if error.get("type") == "missing":
        return "required; add it (see docs/tasks.md)"
    if error.get("type") == "extra_forbidden":
        return "not a known key; check its spelling against docs/tasks.md"
    return None
