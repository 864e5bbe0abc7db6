"""What a caller asks of a version for a task: the selection criteria and the score's weights.

Kept apart from the selector so that what tasks taught us (:mod:`registry.selection.learnings`)
can build criteria without importing the selector that reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from registry.errors import UserError, one_line
from registry.spec import NAME_PATTERN, known_capabilities

PREFER_SHIFT = 0.2
PREFERENCES = ("fast", "quality", "low-memory")
_PREFERRED_PART = {"fast": "latency", "quality": "quality", "low-memory": "memory"}
Prefer = Literal["fast", "quality", "low-memory"]


class Weights(BaseModel):
    """How much each part of the score counts; they sum to 1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quality: float = Field(default=0.4, ge=0, le=1)
    latency: float = Field(default=0.3, ge=0, le=1)
    memory: float = Field(default=0.2, ge=0, le=1)
    success: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> Weights:
        total = self.quality + self.latency + self.memory + self.success
        if abs(total - 1) > 1e-6:
            raise ValueError(f"weights must sum to 1 (these sum to {total:g}), e.g. quality 0.4, latency 0.3, "
                             "memory 0.2, success 0.1")
        return self

    def shifted(self, prefer: str | None) -> Weights:
        """``prefer``'s part gains 0.2 (at most up to 1); the others shrink in proportion."""
        if prefer is None:
            return self
        part = _PREFERRED_PART[prefer]
        values = self.model_dump()
        old = values[part]
        new = min(1.0, old + PREFER_SHIFT)
        scale = (1 - new) / (1 - old) if old < 1 else 0.0
        return Weights(**{k: (new if k == part else v * scale) for k, v in values.items()})


class Criteria(BaseModel):
    """What the caller needs for a task. Bad input raises ``UserError`` with the fix (one line).

    Example::

        Criteria(task="qa", capabilities=("chat",), max_latency_ms=2000, prefer="fast")
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    capabilities: tuple[str, ...] = ()
    max_latency_ms: float | None = None
    max_memory_mb: int | None = None
    min_samples: int = 0
    weights: Weights = Weights()
    prefer: Prefer | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise UserError(f"invalid selection criteria: {one_line(exc.errors(), reword=_reword, default_where='criteria')}") from None

    @field_validator("task")
    @classmethod
    def _task(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a task name; use a lowercase route name such as 'qa' or 'extract'")
        return value

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return known_capabilities(value)

    @field_validator("max_latency_ms")
    @classmethod
    def _latency(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError(f"must be a number of milliseconds > 0 (got {value:g}), e.g. 2000")
        return value

    @field_validator("max_memory_mb")
    @classmethod
    def _memory(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(f"must be a number of MB > 0 (got {value}), e.g. 512")
        return value

    @field_validator("min_samples")
    @classmethod
    def _min_samples(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be 0 or more (got {value})")
        return value

    @property
    def effective_weights(self) -> Weights:
        """The weights after ``prefer``'s shift: what the score uses."""
        return self.weights.shifted(self.prefer)

    def as_json(self) -> dict[str, Any]:
        payload = self.model_dump(mode="json")
        payload["effective_weights"] = self.effective_weights.model_dump()
        return payload


def _reword(error: Mapping[str, Any]) -> str | None:
    """pydantic lists a Literal's values in its own quoting; say what to pass instead."""
    if error["type"] == "literal_error" and tuple(error["loc"]) == ("prefer",):
        return f"unknown preference {error['input']!r}; use one of: {', '.join(PREFERENCES)}"
    return None
