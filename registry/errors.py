"""The exception tree, drawn once so callers know what to catch.

    ArbiterError                 anything this package raises on purpose
    ├── UserError                bad input; the message says what was wrong and how to fix it
    │   ├── ModelFileError       path missing, not a GGUF file, truncated GGUF
    │   ├── IntegrityError       a registered file changed after registration (sha256 mismatch)
    │   ├── NotFoundError        unknown model, version, route or alias
    │   ├── DatasetError         a validation set fails its schema or its Great Expectations suite
    │   ├── PromotionError       a promotion or rollback the rules refuse
    │   ├── ConflictError        another process is promoting the same route (exit 4)
    │   ├── SelectionError       no version meets the selection criteria (each exclusion says why)
    │   ├── ContextOverflowError a prompt (plus max_tokens) longer than the model's context
    │   └── ConfigError          a setting that cannot work
    ├── ProviderError            a backend failed to load or generate
    ├── JudgeError               the judge model gave no valid judgement (after its retry)
    ├── CapacityError            every instance's queue is full: retry later (HTTP 429)
    ├── UnavailableError         no healthy instance could answer in time (HTTP 503)
    └── StoreError               the registry or results store failed (locked, unreadable)

Errors from MLflow, llama.cpp, Great Expectations and DuckDB are mapped into this tree at the
boundary where they happen, so the CLI can print one clean line and exit non-zero for any
``UserError`` without a stack trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any


class ArbiterError(Exception):
    """Base of every error this package raises on purpose."""


class UserError(ArbiterError):
    """The caller asked for something that cannot be done; the message carries the fix."""

    exit_code = 2


class ModelFileError(UserError):
    """A model file is missing, is not GGUF, or is truncated."""


class IntegrityError(UserError):
    """A registered file no longer has the sha256 recorded in its version."""


class NotFoundError(UserError):
    """An unknown model, version, route or alias."""

    exit_code = 3


class DatasetError(UserError):
    """A validation set is malformed or fails its expectations."""


class PromotionError(UserError):
    """A promotion or rollback that the route's rules refuse."""


class ConflictError(UserError):
    """Another process holds the thing asked for (a promotion of the same route already running)."""

    exit_code = 4


class SelectionError(UserError):
    """No registered version meets the selection criteria; the message says why each one was excluded."""


class ContextOverflowError(UserError):
    """The request does not fit the model's context window: the caller's to shorten, not a backend fault."""


class ConfigError(UserError):
    """A setting that cannot work as given."""


class ProviderError(ArbiterError):
    """A model backend failed to load or to generate."""


class JudgeError(ArbiterError):
    """The judge model answered twice without a valid judgement (not JSON, or off the scale)."""


class CapacityError(ArbiterError):
    """The instances of a version are busy and their queues are full; retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnavailableError(ArbiterError):
    """No healthy instance (and no fallback) could take the request in time."""


class StoreError(ArbiterError):
    """The registry or the results store could not be read or written."""


def one_line(
    errors: Iterable[Mapping[str, Any]],
    *,
    where: Callable[[tuple[Any, ...]], str] | None = None,
    reword: Callable[[Mapping[str, Any]], str | None] | None = None,
    default_where: str = "value",
) -> str:
    """A list of validation errors (pydantic's ``exc.errors()``) as the one line a ``UserError``
    carries: ``where: message`` joined by ``; ``, pydantic's ``Value error, `` prefix dropped.

    The one policy every entry applies to bad input; ``where`` names a location the way the caller's
    user wrote it (a CLI flag, an ``ARBITER_*`` variable), ``reword`` replaces a message pydantic words
    poorly (``None`` keeps it)."""
    parts = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        place = where(loc) if where else ".".join(map(str, loc))
        message = (reword(error) if reword else None) or str(error.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{place or default_where}: {message}")
    return "; ".join(parts)
