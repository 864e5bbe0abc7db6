"""Pick the version that should serve a task here: filter, score, then weigh the cost of a swap.

**Filter.** Every catalog version is either a candidate or excluded with its reasons (several at
once when several apply, never silently):

- ``deprecated`` — its status says not to use it;
- ``missing capability json`` — a capability the criteria ask for;
- ``task contract: clf/1 is a text classifier (labels …); task qa/1 is not a classification task
  (it needs chat)`` — the task's contract, when the caller passes it (``TaskCatalog.contract``): a
  classifier serves only a classification task with its labels, a text model needs the task's
  capabilities (:mod:`registry.selection.contract`);
- ``needs ane (macOS on Apple Silicon); this machine has cpu`` — none of the accelerators its spec
  runs on is here; likewise CPU flags it needs that this CPU lacks, or GPU memory over the largest
  GPU's (:func:`registry.machine.hardware.shortfalls`, the rule ``arbiter hardware`` reports too); a model
  another server serves (accelerator ``remote``) runs anywhere;
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
listing every exclusion.

**Speed.** Selection reads only memory (profiles from :class:`ProfileCache`, the catalog from the
caller). Per task, what it needs of every version's spec and profile is laid out once as numpy
columns (:class:`_Columns`), again only when the catalog listing or the profile table changes; a
call then filters and scores all versions in a few array operations, and words reasons and builds
``Candidate`` objects only for what is read. ~0.12 ms p50, ~0.3 ms p95 for 1,000 versions on a
busy 2-core machine, where scoring each version in Python took ~1.2 ms p50
(``benchmarks/selection_latency.py``; the goal is 1 ms p95).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from registry.errors import SelectionError
from registry.machine.hardware import available_memory_mb, shortfalls, this_machine
from registry.selection.contract import TaskContract
from registry.selection.criteria import Criteria, Weights
from registry.selection.learnings import TaskLearnings
from registry.selection.profiles import Profile, ProfileCache, ProfileTable
from registry.spec import Status, VersionRecord

MIN_SAMPLES_TO_SCORE = 10
CONSERVATIVE_SCORE = 0.5
UNKNOWN_PART = 0.5
MAX_SWAP_PENALTY = 0.02
FULL_PENALTY_LOAD_MS = 5000.0


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
    "contract": lambda reason: f"task contract: {reason}",
    "hardware": lambda shortfall: shortfall,  # worded by registry.machine.hardware.shortfalls
    "budget": lambda need, measured, budget: (
        f"needs {need:.0f} MB ({'measured peak RSS' if measured else 'spec min_memory_mb'}), "
        f"over the {budget} MB budget"
    ),
    "free": lambda need, free: f"needs {need} MB to load; {free} MB available on this machine",
    "slow": lambda p50, limit: f"too slow: p50 {p50:.0f} ms over the {limit:g} ms limit",
    "samples": lambda samples, task, wanted: f"too few samples: {samples} on {task}, {wanted} required",
}
_RawReason = tuple[str, tuple[Any, ...]]


class Selection:
    """The answer of :meth:`LocalModelSelector.select`; ``as_json`` is ``arbiter select --json``.

    ``primary`` and ``fallback`` are built at once; ``candidates`` (best first) and ``excluded``
    (with worded reasons) on first access, so a caller that only needs the winner does not pay
    for a thousand objects.
    """

    def __init__(
        self, ranking: _Ranking, verdicts: _Verdicts, criteria: Criteria, scale: dict[str, Any],
        contract: TaskContract | None = None,
    ) -> None:
        best = ranking.best_two()
        self.primary = ranking.candidate(best[0])
        self.fallback = ranking.candidate(best[1]) if len(best) > 1 else None
        self._ranking = ranking
        self._verdicts = verdicts
        self.criteria = criteria
        self.contract = contract
        self.scale = scale
        self.reasoning = _reasoning(criteria.task, self.primary, self.fallback, len(verdicts.excluded))

    @cached_property
    def candidates(self) -> tuple[Candidate, ...]:
        rest = self._ranking.order()[2:]
        return (self.primary, *(() if self.fallback is None else (self.fallback,)),
                *map(self._ranking.candidate, rest.tolist()))

    @cached_property
    def excluded(self) -> tuple[Exclusion, ...]:
        return tuple(Exclusion(ref, _worded(raw)) for ref, raw in self._verdicts.listed())

    def as_json(self) -> dict[str, Any]:
        """Stable fields: primary, fallback, candidates, excluded, criteria, contract, scale, reasoning."""
        return {
            "primary": self.primary.as_json(),
            "fallback": self.fallback.as_json() if self.fallback else None,
            "candidates": [c.as_json() for c in self.candidates],
            "excluded": [e.as_json() for e in self.excluded],
            "criteria": self.criteria.as_json(),
            "contract": None if self.contract is None else self.contract.as_json(),
            "scale": self.scale,
            "reasoning": self.reasoning,
        }


def _worded(raw: list[_RawReason]) -> tuple[str, ...]:
    return tuple(_REASON_TEXT[kind](*figures) for kind, figures in raw)


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
        self._built = _Built([], [], None, {})

    def select(self, criteria: Criteria, contract: TaskContract | None = None) -> Selection:
        """Primary, fallback, every candidate's score and every exclusion's reasons. ``contract`` is
        the task's (``TaskCatalog.contract``): a version that cannot serve the task is excluded.

        Raises ``SelectionError`` naming each exclusion when no version qualifies."""
        if self._learnings is not None:
            criteria = self._learnings.enhance(criteria)
        columns = self._columns_for(criteria.task)
        verdicts = _Verdicts(columns, criteria, available_memory_mb(), self._is_warm, contract)
        eligible = verdicts.eligible
        if not eligible.size:
            raise SelectionError(_nothing_eligible(criteria.task, verdicts.listed()))
        scale = _scale(criteria.max_latency_ms, criteria.max_memory_mb, columns.slowest(eligible),
                       columns.largest(eligible))
        ranking = _Ranking(columns, eligible, criteria.effective_weights, scale["latency_ms"], scale["memory_mb"],
                           self._is_warm)
        return Selection(ranking, verdicts, criteria, scale, contract)

    def _columns_for(self, task: str) -> _Columns:
        """The task's columns, built again only when the catalog's records or the profile table
        changed. The table is replaced, never edited, on a re-read: its identity tells."""
        records, table = self._versions(), self._profiles.table()
        built = self._built
        if table is not built.table or not built.holds(records):
            built = self._built = _Built(records, list(records), table, {})  # one assignment: threads see all or none
        columns = built.columns.get(task)
        if columns is None:
            columns = built.columns[task] = _Columns(records, table.index(task, self._hardware_id))
        return columns


class _Built(NamedTuple):
    """The columns built so far per task, and the catalog listing and profile table they came from."""

    source: list[VersionRecord]
    records: list[VersionRecord]  # a copy of ``source`` then, so an edit of it in place shows
    table: ProfileTable | None
    columns: dict[str, _Columns]

    def holds(self, records: list[VersionRecord]) -> bool:
        """Whether ``records`` are the records the columns came from, in the same order.

        The list a caller keeps is compared item by item (~1 µs for 1,000 unchanged items, which
        compare by identity first); a new list (a fresh catalog read) by identity only, ~20 µs."""
        if records is self.source:
            return records == self.records
        return len(records) == len(self.records) and all(map(operator.is_, records, self.records))


class _Columns:
    """One task's figures for every catalog version, as arrays in catalog order.

    A selection then only compares them with its criteria and weighs them, a few array
    operations, where Python per version cost ~1–1.5 µs: over 1 ms for 1,000 versions. The Python
    objects are kept beside the arrays to word reasons and build candidates with the original
    values (an int memory stays an int in the JSON).
    """

    def __init__(self, records: list[VersionRecord], profiles: dict[str, Profile]) -> None:
        machine = this_machine()
        self.records = records
        self.profiles = found = [profiles.get(r.ref) for r in records]
        self.capabilities = [frozenset(r.spec.capabilities) for r in records]
        # RAM is the "free" rule's, against the memory available now (never more than the total)
        self.unfit = [shortfalls(r.spec.hardware, machine, memory=False) for r in records]
        self.min_memory_mb = [r.spec.hardware.min_memory_mb for r in records]
        self.memory_mb = [  # measured peak RSS, else the spec's need
            p.memory_mb if p is not None and p.memory_mb is not None else m
            for p, m in zip(found, self.min_memory_mb, strict=True)
        ]
        self.deprecated = np.array([r.status == Status.DEPRECATED.value for r in records], dtype=bool)
        self.foreign = np.array([bool(unfit) for unfit in self.unfit], dtype=bool)
        self.min_memory = np.array(self.min_memory_mb, dtype=float)
        self.memory = np.array(self.memory_mb, dtype=float)
        self.unmeasured = np.array([p is None or p.p50_ms is None for p in found], dtype=bool)
        self.p50 = np.array([0.0 if p is None or p.p50_ms is None else p.p50_ms for p in found], dtype=float)
        self.samples = np.array([0 if p is None else p.samples for p in found], dtype=np.int64)
        self.quality = np.array([UNKNOWN_PART if p is None or p.quality is None else p.quality for p in found])
        self.success = np.array([0.0 if p is None else p.success_rate for p in found], dtype=float)
        self.conservative = np.array([p is None or p.samples < MIN_SAMPLES_TO_SCORE for p in found], dtype=bool)
        self.swap_penalty = np.array([_swap_penalty(p) for p in found], dtype=float)
        self.rank = _name_rank(records)
        self._lacking: dict[frozenset[str], np.ndarray] = {}
        self._outside: dict[TaskContract, np.ndarray] = {}

    def lacks(self, required: frozenset[str]) -> np.ndarray:
        """Which versions miss one of ``required``; kept per set (criteria repeat a handful of sets)."""
        found = self._lacking.get(required)
        if found is None:
            found = self._lacking[required] = np.array([not required <= c for c in self.capabilities], dtype=bool)
        return found

    def outside(self, contract: TaskContract) -> np.ndarray:
        """Which versions cannot serve under ``contract``; kept per contract (a task has one at a time)."""
        found = self._outside.get(contract)
        if found is None:
            found = self._outside[contract] = np.array([bool(contract.missing(r.spec)) for r in self.records], dtype=bool)
        return found

    def slowest(self, eligible: np.ndarray) -> float:
        """The largest measured p50 among ``eligible`` (the first one met, as given), else 0.0."""
        p50 = self.p50[eligible]
        at = int(p50.argmax())
        return self.profiles[eligible[at]].p50_ms if p50[at] > 0 else 0.0  # a p50 above 0 was measured

    def largest(self, eligible: np.ndarray) -> float:
        """The largest memory figure among ``eligible`` (the first one met, as given), else 0.0."""
        memory = self.memory[eligible]
        at = int(memory.argmax())
        return self.memory_mb[eligible[at]] if memory[at] > 0 else 0.0


def _name_rank(records: list[VersionRecord]) -> np.ndarray:
    """Each version's place in (name, version, catalog position) order: how ties break."""
    order = sorted(range(len(records)), key=lambda i: (records[i].name, records[i].version, i))
    rank = np.empty(len(records), dtype=np.int64)
    rank[order] = np.arange(len(records))
    return rank


class _Verdicts:
    """Which versions each exclusion rule rejects under one criteria, as masks in catalog order.

    The reasons are worded only when someone reads them: wording hundreds of exclusions would
    cost more than the whole selection."""

    def __init__(
        self, columns: _Columns, criteria: Criteria, free_mb: int, is_warm: Callable[[VersionRecord], bool] | None,
        contract: TaskContract | None = None,
    ) -> None:
        self._columns, self._criteria, self._free_mb, self._contract = columns, criteria, free_mb, contract
        required = frozenset(criteria.capabilities)
        max_memory, max_latency, min_samples = criteria.max_memory_mb, criteria.max_latency_ms, criteria.min_samples
        masks = [("deprecated", columns.deprecated)]  # in the order reasons are listed
        if required:
            masks.append(("capability", columns.lacks(required)))
        if contract is not None:
            masks.append(("contract", columns.outside(contract)))
        masks.append(("hardware", columns.foreign))
        if max_memory is not None:
            masks.append(("budget", columns.memory > max_memory))
        masks.append(("free", _short_of_memory(columns, free_mb, is_warm)))
        if max_latency is not None:
            masks.append(("slow", columns.p50 > max_latency))  # unmeasured: 0, never too slow
        if min_samples:
            masks.append(("samples", columns.samples < min_samples))
        self._masks = masks
        rejected = masks[0][1].copy()
        for _, mask in masks[1:]:
            rejected |= mask
        self.eligible = np.flatnonzero(~rejected)
        self.excluded = np.flatnonzero(rejected)

    def listed(self) -> list[tuple[str, list[_RawReason]]]:
        """``(ref, reasons)`` per excluded version, in catalog order."""
        return [(self._columns.records[i].ref, self._reasons(i)) for i in self.excluded.tolist()]

    def _reasons(self, i: int) -> list[_RawReason]:
        columns, criteria = self._columns, self._criteria
        profile = columns.profiles[i]
        figures = {
            "deprecated": lambda: (columns.records[i].ref,),
            "capability": lambda: (frozenset(criteria.capabilities) - columns.capabilities[i],),
            "contract": lambda: (self._contract.cannot_serve(columns.records[i]),),  # type: ignore[union-attr]
            "budget": lambda: (columns.memory_mb[i], profile is not None and profile.memory_mb is not None,
                               criteria.max_memory_mb),
            "free": lambda: (columns.min_memory_mb[i], self._free_mb),
            "slow": lambda: (profile.p50_ms, criteria.max_latency_ms),  # only a measured p50 is too slow
            "samples": lambda: (profile.samples if profile is not None else 0, criteria.task, criteria.min_samples),
        }
        reasons: list[_RawReason] = []
        for kind, mask in self._masks:
            if mask[i]:  # a version short of several hardware needs gets a reason for each
                reasons += [(kind, (s,)) for s in columns.unfit[i]] if kind == "hardware" else [(kind, figures[kind]())]
        return reasons


def _short_of_memory(
    columns: _Columns, free_mb: int, is_warm: Callable[[VersionRecord], bool] | None
) -> np.ndarray:
    """Versions whose spec needs more than the memory free now, unless already loaded (warm)."""
    short = columns.min_memory > free_mb
    if is_warm is not None:
        for i in np.flatnonzero(short).tolist():
            if is_warm(columns.records[i]):
                short[i] = False
    return short


class _Ranking:
    """Every candidate's score, computed for all of them at once as arrays; a :class:`Candidate`
    is built only for the ones someone reads. Positions ``j`` index ``eligible``."""

    def __init__(
        self, columns: _Columns, eligible: np.ndarray, weights: Weights, latency_ref: float | None,
        memory_ref: float | None, is_warm: Callable[[VersionRecord], bool] | None,
    ) -> None:
        self._columns, self._eligible = columns, eligible
        latency = _headroom(columns.p50[eligible], latency_ref, unknown=columns.unmeasured[eligible])
        self._parts = (columns.quality[eligible], latency, _headroom(columns.memory[eligible], memory_ref),
                       columns.success[eligible])
        quality, latency, memory, success = self._parts
        # Summed left to right, as the per-version Python sum did: the same figures to the last bit.
        weighted = (weights.quality * quality + weights.latency * latency + weights.memory * memory
                    + weights.success * success)
        score = np.where(columns.conservative[eligible], CONSERVATIVE_SCORE, weighted)
        if is_warm is None:  # no pool to ask: nothing is cold, nothing pays for a load
            self._warm: list[bool | None] = [None] * len(eligible)
            self._penalty = np.zeros(len(eligible))
        else:
            self._warm = [is_warm(columns.records[i]) for i in eligible.tolist()]
            cold = np.array([warm is False for warm in self._warm], dtype=bool)
            self._penalty = np.where(cold, columns.swap_penalty[eligible], 0.0)
        self._negative = self._penalty - score  # sorts best first
        self._rank = columns.rank[eligible]

    def best_two(self) -> list[int]:
        """The first two of :meth:`order` without sorting them all."""
        first = self._best(self._negative)
        if len(self._negative) == 1:
            return [first]
        rest = self._negative.copy()
        rest[first] = np.inf
        return [first, self._best(rest)]

    def _best(self, negative: np.ndarray) -> int:
        tied = np.flatnonzero(negative == negative.min())
        return int(tied[self._rank[tied].argmin()])

    def order(self) -> np.ndarray:
        """Best first: highest score after the swap penalty, then name, then version."""
        return np.lexsort((self._rank, self._negative))

    def candidate(self, j: int) -> Candidate:
        i = int(self._eligible[j])
        profile = self._columns.profiles[i]
        parts = None if profile is None else Parts(*(float(part[j]) for part in self._parts))
        return Candidate(
            self._columns.records[i], float(-self._negative[j]), parts, 0 if profile is None else profile.samples,
            bool(self._columns.conservative[i]), self._warm[j], float(self._penalty[j]), profile,
        )


def _headroom(values: np.ndarray, limit: float | None, unknown: np.ndarray | None = None) -> np.ndarray:
    """``1 − value/limit`` floored at 0; ``UNKNOWN_PART`` without a limit, or where ``unknown``."""
    if not limit:
        return np.full(len(values), UNKNOWN_PART)
    part = 1 - values / limit
    np.maximum(part, 0.0, out=part)  # as `part if part > 0 else 0.0`: 1 − x/x is +0.0, never −0.0
    if unknown is not None:
        part[unknown] = UNKNOWN_PART
    return part


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
