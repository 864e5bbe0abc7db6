"""Pick the version that should serve a task here: filter, score, then weigh the cost of a swap.

**Filter.** Every catalog version is either a candidate or excluded with its reasons (several at
once when several apply, never silently):

- ``deprecated`` — its status says not to use it;
- ``missing capability json`` — a capability the criteria ask for;
- ``needs ane (macOS on Apple Silicon); this machine has cpu`` — none of the accelerators its spec
  runs on is here (:func:`registry.hardware.accelerators_available`); a model another server serves
  (accelerator ``remote``) runs anywhere;
- ``needs 391 MB (measured peak RSS), over the 256 MB budget`` — the measured peak RSS on the task
  (else the spec's ``min_memory_mb``) over ``max_memory_mb``; and the spec's ``min_memory_mb`` over
  the memory available now (a warm version is already loaded, so it is not held to that);
- ``too slow: p50 2474 ms over the 2000 ms limit`` — measured p50 over ``max_latency_ms``;
- ``too few samples: 3 on qa, 10 required`` — only when ``min_samples`` is set.

**Score** (weights overridable, summing to 1)::

    score = 0.4·quality + 0.3·(1 − p50/L) + 0.2·(1 − memory/M) + 0.1·success_rate

each part floored at 0. ``L`` is ``max_latency_ms``; without one, twice the slowest candidate's
p50 (so the slowest scores 0.5 on latency, not 0). ``M`` is ``max_memory_mb``; without one, twice
the largest candidate's memory. A part with no figure (quality unscored, say) counts 0.5. A version
with fewer than 10 samples on the task gets the conservative score 0.5 (the seeds' rule) and is
marked ``conservative``. ``prefer`` moves 0.2 of weight to its part (``fast`` → latency, ``quality``
→ quality, ``low-memory`` → memory), scaling the others so the weights still sum to 1.

**Swap cost.** When ``is_warm`` is given, a cold version loses up to 0.02: ``0.02 × min(1,
load_ms / 5000)``, the full 0.02 when its load time was never measured. A near-tie goes to the
version already loaded; a clearly better one still wins. Ties then break by name, then version.

The top candidate is ``primary``, the next ``fallback``. No candidate raises ``SelectionError``
listing every exclusion. Selection reads only memory (profiles from :class:`ProfileCache`, the
catalog from the caller): ~1.2 ms p50 for 1,000 versions on a busy 2-core machine
(``benchmarks/selection_latency.py``; the goal is 1 ms p95).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from registry.catalog import VersionRecord
from registry.errors import SelectionError, UserError
from registry.hardware import ACCELERATOR_NEEDS, accelerators_available, available_memory_mb
from registry.profiles import Profile, ProfileCache
from registry.spec import KNOWN_CAPABILITIES, NAME_PATTERN, Status

if TYPE_CHECKING:
    from registry.learnings import TaskLearnings

MIN_SAMPLES_TO_SCORE = 10
CONSERVATIVE_SCORE = 0.5
UNKNOWN_PART = 0.5
PREFER_SHIFT = 0.2
MAX_SWAP_PENALTY = 0.02
FULL_PENALTY_LOAD_MS = 5000.0
RUNS_ANYWHERE = "remote"  # served by another server: this machine's hardware does not matter
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
            raise UserError(f"invalid selection criteria: {_problems(exc)}") from None

    @field_validator("task")
    @classmethod
    def _task(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a task name; use a lowercase route name such as 'qa' or 'extract'")
        return value

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - KNOWN_CAPABILITIES)
        if unknown:
            raise ValueError(f"unknown capability {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_CAPABILITIES))}")
        return tuple(sorted(set(value)))

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


def _problems(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``field: message`` joined by ``; ``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "criteria"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "literal_error" and error["loc"] == ("prefer",):
            message = f"unknown preference {error['input']!r}; use one of: {', '.join(PREFERENCES)}"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


class Candidate(NamedTuple):
    """One eligible version and how it scored (``parts`` None: never measured on the task)."""

    record: VersionRecord
    score: float
    parts: Parts | None
    samples: int
    conservative: bool
    warm: bool | None
    swap_penalty: float
    profile: Profile | None

    @property
    def ref(self) -> str:
        return self.record.ref

    def as_json(self) -> dict[str, Any]:
        profile = self.profile
        return {
            "ref": self.ref,
            "model": self.record.name,
            "version": self.record.version,
            "score": round(self.score, 6),
            "parts": None if self.parts is None else {k: round(v, 6) for k, v in self.parts._asdict().items()},
            "samples": self.samples,
            "conservative": self.conservative,
            "warm": self.warm,
            "swap_penalty": round(self.swap_penalty, 6),
            "profile": None if profile is None else {
                "quality": profile.quality, "p50_ms": profile.p50_ms, "success_rate": profile.success_rate,
                "memory_mb": profile.memory_mb, "tokens_per_s": profile.tokens_per_s, "load_ms": profile.load_ms,
                "hardware_id": profile.hardware_id,
            },
        }


class Parts(NamedTuple):
    """The four parts of a score, each in [0, 1] before weighting."""

    quality: float
    latency: float
    memory: float
    success: float


class Exclusion(NamedTuple):
    """A version that cannot serve the task here, and every reason why."""

    ref: str
    reasons: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "reasons": list(self.reasons)}


# A reason is kept as (kind, figures) while selecting and worded only when someone reads it:
# wording hundreds of exclusions would cost more than the whole selection.
_REASON_TEXT: dict[str, Callable[..., str]] = {
    "deprecated": lambda ref: f"deprecated; `arbiter models activate {ref}` to consider it",
    "capability": lambda missing: f"missing capability {', '.join(sorted(missing))}",
    "hardware": lambda accelerators, here: "needs " + " or ".join(
        f"{a} ({ACCELERATOR_NEEDS.get(a, 'hardware arbiter does not detect')})" for a in accelerators
    ) + f"; this machine has {', '.join(sorted(here))}",
    "budget": lambda need, measured, budget: (
        f"needs {need:.0f} MB ({'measured peak RSS' if measured else 'spec min_memory_mb'}), "
        f"over the {budget} MB budget"
    ),
    "free": lambda need, free: f"needs {need} MB to load; {free} MB available on this machine",
    "slow": lambda p50, limit: f"too slow: p50 {p50:.0f} ms over the {limit:g} ms limit",
    "samples": lambda samples, task, wanted: f"too few samples: {samples} on {task}, {wanted} required",
}
_RawReason = tuple[str, tuple[Any, ...]]
# (penalty − score, name, version, position, facts, profile, parts, warm, penalty): sorts best first.
_Ranked = tuple[float, str, int, int, "_Facts", Profile | None, tuple[float, float, float, float] | None,
                bool | None, float]


class Selection:
    """The answer of :meth:`LocalModelSelector.select`; ``as_json`` is ``arbiter select --json``.

    ``primary`` and ``fallback`` are built at once; ``candidates`` (best first) and ``excluded``
    (with worded reasons) on first access, so a caller that only needs the winner does not pay
    for a thousand objects.
    """

    def __init__(
        self, ranked: list[_Ranked], excluded: list[tuple[str, list[_RawReason]]], criteria: Criteria,
        scale: dict[str, Any],
    ) -> None:
        best = heapq.nsmallest(2, ranked)
        self.primary = _candidate(best[0])
        self.fallback = _candidate(best[1]) if len(best) > 1 else None
        self._ranked = ranked
        self._excluded = excluded
        self.criteria = criteria
        self.scale = scale
        self.reasoning = _reasoning(criteria.task, self.primary, self.fallback, len(excluded))

    @cached_property
    def candidates(self) -> tuple[Candidate, ...]:
        ranked = sorted(self._ranked)
        return (self.primary, *(() if self.fallback is None else (self.fallback,)), *map(_candidate, ranked[2:]))

    @cached_property
    def excluded(self) -> tuple[Exclusion, ...]:
        return tuple(Exclusion(ref, _worded(raw)) for ref, raw in self._excluded)

    def as_json(self) -> dict[str, Any]:
        """Stable fields: primary, fallback, candidates, excluded, criteria, scale, reasoning."""
        return {
            "primary": self.primary.as_json(),
            "fallback": self.fallback.as_json() if self.fallback else None,
            "candidates": [c.as_json() for c in self.candidates],
            "excluded": [e.as_json() for e in self.excluded],
            "criteria": self.criteria.as_json(),
            "scale": self.scale,
            "reasoning": self.reasoning,
        }


def _worded(raw: list[_RawReason]) -> tuple[str, ...]:
    return tuple(_REASON_TEXT[kind](*figures) for kind, figures in raw)


class _Facts(NamedTuple):
    """What selection reads from a version's spec, taken once per record: walking pydantic
    attributes for 1,000 versions would cost more than the whole filter."""

    record: VersionRecord
    name: str
    version: int
    ref: str
    capabilities: frozenset[str]
    accelerators: tuple[str, ...]
    runs_here: bool
    min_memory_mb: int
    deprecated: bool


class LocalModelSelector:
    """The best version for a task on this machine, from memory.

    Example::

        selector = LocalModelSelector(catalog.list_versions, ProfileCache(store), TaskLearnings(store),
                                      is_warm=pool.is_warm, hardware_id=fingerprint().hardware_id)
        chosen = selector.select(Criteria(task="qa", max_latency_ms=2000))
        chosen.primary.ref, chosen.fallback.ref if chosen.fallback else None, chosen.reasoning
    """

    def __init__(
        self,
        versions: Callable[[], list[VersionRecord]],
        profiles: ProfileCache,
        learnings: TaskLearnings | None = None,
        *,
        is_warm: Callable[[VersionRecord], bool] | None = None,
        hardware_id: str | None = None,
    ) -> None:
        self._versions = versions
        self._profiles = profiles
        self._learnings = learnings
        self._is_warm = is_warm
        self._hardware_id = hardware_id
        self._facts: dict[int, _Facts] = {}  # id(record) → facts; the facts hold the record, so ids stay unique

    def select(self, criteria: Criteria) -> Selection:
        """Primary, fallback, every candidate's score and every exclusion's reasons.

        Raises ``SelectionError`` naming each exclusion when no version qualifies."""
        if self._learnings is not None:
            criteria = self._learnings.enhance(criteria)
        task = criteria.task
        index = self._profiles.table().index(task, self._hardware_id)
        required = frozenset(criteria.capabilities)
        free_mb = available_memory_mb()
        max_latency, max_memory, min_samples = criteria.max_latency_ms, criteria.max_memory_mb, criteria.min_samples

        eligible: list[tuple[_Facts, Profile | None]] = []
        excluded: list[tuple[str, list[_RawReason]]] = []
        slowest = largest = 0.0
        for facts in self._facts_of(self._versions()):
            profile = index.get(facts.ref)
            raw: list[_RawReason] = []
            if facts.deprecated:
                raw.append(("deprecated", (facts.ref,)))
            if required and not required <= facts.capabilities:
                raw.append(("capability", (required - facts.capabilities,)))
            if not facts.runs_here:
                raw.append(("hardware", (facts.accelerators, accelerators_available())))
            measured_mb = profile.memory_mb if profile is not None else None
            memory = measured_mb if measured_mb is not None else facts.min_memory_mb
            if max_memory is not None and memory > max_memory:
                raw.append(("budget", (memory, measured_mb is not None, max_memory)))
            if facts.min_memory_mb > free_mb and not (self._is_warm is not None and self._is_warm(facts.record)):
                raw.append(("free", (facts.min_memory_mb, free_mb)))
            p50 = profile.p50_ms if profile is not None else None
            if max_latency is not None and p50 is not None and p50 > max_latency:
                raw.append(("slow", (p50, max_latency)))
            if min_samples and (profile.samples if profile is not None else 0) < min_samples:
                raw.append(("samples", (profile.samples if profile is not None else 0, task, min_samples)))
            if raw:
                excluded.append((facts.ref, raw))
                continue
            eligible.append((facts, profile))
            if p50 is not None and p50 > slowest:
                slowest = p50
            if memory > largest:
                largest = memory

        if not eligible:
            raise SelectionError(_nothing_eligible(task, excluded))
        scale = _scale(max_latency, max_memory, slowest, largest)
        ranked = self._rank(eligible, criteria.effective_weights, scale["latency_ms"], scale["memory_mb"])
        return Selection(ranked, excluded, criteria, scale)

    def _facts_of(self, records: list[VersionRecord]) -> list[_Facts]:
        cache = self._facts
        here = accelerators_available()
        found = []
        for record in records:
            facts = cache.get(id(record))
            if facts is None or facts.record is not record:
                facts = cache[id(record)] = _facts(record, here)
            found.append(facts)
        if len(cache) > 2 * len(found) + 64:  # records replaced since (a catalog re-read): forget the old
            self._facts = {id(f.record): f for f in found}
        return found

    def _rank(
        self, eligible: list[tuple[_Facts, Profile | None]], weights: Weights,
        latency_ref: float | None, memory_ref: float | None,
    ) -> list[_Ranked]:
        """Scores as plain tuples that sort best first (then name, then version: never the input's
        order); :class:`Selection` sorts them only when all candidates are read."""
        w_quality, w_latency, w_memory, w_success = weights.quality, weights.latency, weights.memory, weights.success
        is_warm = self._is_warm
        ranked: list[_Ranked] = []
        for position, (facts, profile) in enumerate(eligible):
            parts = None
            if profile is not None:
                memory = profile.memory_mb if profile.memory_mb is not None else facts.min_memory_mb
                latency = 1 - profile.p50_ms / latency_ref if profile.p50_ms is not None and latency_ref else UNKNOWN_PART
                lightness = 1 - memory / memory_ref if memory_ref else UNKNOWN_PART
                parts = (
                    profile.quality if profile.quality is not None else UNKNOWN_PART,
                    latency if latency > 0 else 0.0,  # max(0, …) inlined: this loop is the selection's cost
                    lightness if lightness > 0 else 0.0,
                    profile.success_rate,
                )
            if parts is None or profile.samples < MIN_SAMPLES_TO_SCORE:
                score = CONSERVATIVE_SCORE
            else:
                score = w_quality * parts[0] + w_latency * parts[1] + w_memory * parts[2] + w_success * parts[3]
            warm = None if is_warm is None else is_warm(facts.record)
            penalty = _swap_penalty(profile) if warm is False else 0.0
            ranked.append((penalty - score, facts.name, facts.version, position, facts, profile, parts, warm, penalty))
        return ranked


def _candidate(ranked: _Ranked) -> Candidate:
    negative, _, _, _, facts, profile, parts, warm, penalty = ranked
    samples = profile.samples if profile is not None else 0
    return Candidate(facts.record, -negative, None if parts is None else Parts(*parts), samples,
                     parts is None or samples < MIN_SAMPLES_TO_SCORE, warm, penalty, profile)


def _facts(record: VersionRecord, here: frozenset[str]) -> _Facts:
    spec = record.spec
    accelerators = tuple(spec.hardware.accelerators)
    return _Facts(
        record=record,
        name=record.name,
        version=record.version,
        ref=record.ref,
        capabilities=frozenset(spec.capabilities),
        accelerators=accelerators,
        runs_here=RUNS_ANYWHERE in accelerators or not here.isdisjoint(accelerators),
        min_memory_mb=spec.hardware.min_memory_mb,
        deprecated=record.status == Status.DEPRECATED.value,
    )


def _swap_penalty(profile: Profile | None) -> float:
    """What loading a cold version costs the score: up to 0.02, scaled by its measured load time."""
    load_ms = profile.load_ms if profile is not None else None
    if load_ms is None:
        return MAX_SWAP_PENALTY
    return MAX_SWAP_PENALTY * min(1.0, load_ms / FULL_PENALTY_LOAD_MS)


def _scale(max_latency: float | None, max_memory: int | None, slowest: float, largest: float) -> dict[str, Any]:
    """The latency and memory that score 0: the caller's limits, else twice the worst candidate's."""
    return {
        "latency_ms": max_latency if max_latency is not None else (2 * slowest or None),
        "latency_basis": "max_latency_ms" if max_latency is not None else "2 × the slowest candidate's p50",
        "memory_mb": max_memory if max_memory is not None else (2 * largest or None),
        "memory_basis": "max_memory_mb" if max_memory is not None else "2 × the largest candidate's memory",
    }


def _nothing_eligible(task: str, excluded: list[tuple[str, list[_RawReason]]], shown: int = 20) -> str:
    if not excluded:
        return f"no version registered to serve {task}; register one with `arbiter models register PATH --name NAME`"
    listed = "; ".join(f"{ref}: {', '.join(_worded(raw))}" for ref, raw in excluded[:shown])
    more = f"; … and {len(excluded) - shown} more (see `arbiter models list`)" if len(excluded) > shown else ""
    return f"no version can serve {task} under these criteria — {listed}{more}"


def _reasoning(task: str, best: Candidate, runner: Candidate | None, excluded: int) -> str:
    """One sentence a person reads: who won, on what, against whom."""
    profile = best.profile
    if best.conservative or profile is None:
        why = f"only {best.samples} samples on {task}, so the conservative score {CONSERVATIVE_SCORE}"
    else:
        quality = f"quality {profile.quality:.3f}" if profile.quality is not None else "quality unscored"
        p50 = f"p50 {profile.p50_ms:.0f} ms" if profile.p50_ms is not None else "p50 unmeasured"
        why = f"{quality}, {p50}, success {profile.success_rate:.0%} over {best.samples} samples"
    text = f"{best.ref} scores {best.score:.3f} on {task} ({why})"
    if runner is not None:
        text += f", ahead of {runner.ref} ({runner.score:.3f})"
        if best.warm and runner.warm is False and runner.swap_penalty:
            text += f", which would need a load (−{runner.swap_penalty:.3f})"
    if excluded:
        text += f"; {excluded} version{'s' if excluded != 1 else ''} excluded"
    return text + "."
