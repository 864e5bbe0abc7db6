"""Can version B replace version A on a route? Checked before a rollout starts, not after it fails.

Blocking rules (each failure is a reason; ``can_replace`` only when there are none):

- B's context window is not smaller than A's: prompts A accepted must still fit;
- B can serve the route's task (``contract``, the task's :class:`TaskContract`, when the route is
  a task): a text classifier only a classification task with its labels;
- B keeps every capability A has: the route's callers may rely on any of them — except where the
  route's task is the contract instead (a classification route, or a classifier on either side):
  on a classification route a classifier with the task's labels may replace a chat model, and a
  chat model a classifier;
- B was measured on the task (else: benchmark it first);
- B's success rate on the task ≥ 0.9 × A's;
- B's quality on the task ≥ 0.95 × A's (and B has a quality figure when A has one).

Warnings (the rollout may go on, but a person should know): A has no measured figures on the task
(nothing to compare B with), either has fewer than 10 samples (figures are noisy), a different
family or quantization (answers will differ in style, not only in score).

Example::

    result = check_compatibility("qa", champion, candidate, ProfileCache(store), fingerprint().hardware_id,
                                 contract=TaskCatalog(settings).contract("qa"))
    if not result.can_replace:
        raise PromotionError("; ".join(result.reasons))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry.selection.contract import TaskContract
from registry.selection.profiles import Profile, ProfileCache
from registry.spec import VersionRecord

MIN_SUCCESS_RATIO = 0.9
MIN_QUALITY_RATIO = 0.95
FEW_SAMPLES = 10


@dataclass(frozen=True)
class Compatibility:
    """The verdict, its reasons and warnings, and the figures both sides were judged on."""

    task: str
    current: str
    candidate: str
    can_replace: bool
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    figures: dict[str, dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "current": self.current,
            "candidate": self.candidate,
            "can_replace": self.can_replace,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "figures": self.figures,
        }


def check_compatibility(
    task: str,
    current: VersionRecord,
    candidate: VersionRecord,
    profiles: ProfileCache,
    hardware_id: str | None = None,
    *,
    contract: TaskContract | None = None,
) -> Compatibility:
    """Whether ``candidate`` may replace ``current`` on ``task`` (rules in the module docstring);
    ``contract`` is the task's, None for a route that is no task."""
    a, b = current.spec, candidate.spec
    mine = profiles.get(current.name, current.version, task, hardware_id)
    theirs = profiles.get(candidate.name, candidate.version, task, hardware_id)
    reasons: list[str] = []
    warnings: list[str] = []

    if b.context_window < a.context_window:
        reasons.append(f"context window {b.context_window} is smaller than {current.ref}'s {a.context_window}")
    reasons += _capability_reasons(current, candidate, contract)

    if theirs is None:
        reasons.append(
            f"{candidate.ref} has no measured data on {task}; benchmark it first: "
            f"`arbiter benchmark --model {candidate.ref} --task {task}`"
        )
    if mine is None:
        warnings.append(f"{current.ref} has no measured data on {task}: success and quality not compared")
    if mine is not None and theirs is not None:
        reasons += _compare(mine, theirs, task)
    for profile in (mine, theirs):
        if profile is not None and profile.samples < FEW_SAMPLES:
            warnings.append(f"{profile.ref} has only {profile.samples} samples on {task} (< {FEW_SAMPLES}): noisy figures")
    if a.family != b.family:
        warnings.append(f"different family: {a.family} → {b.family}")
    if a.quantization != b.quantization:
        warnings.append(f"different quantization: {a.quantization} → {b.quantization}")

    figures = {
        "context_window": {"current": a.context_window, "candidate": b.context_window},
        "success": {"current": _get(mine, "success_rate"), "candidate": _get(theirs, "success_rate")},
        "quality": {"current": _get(mine, "quality"), "candidate": _get(theirs, "quality")},
        "samples": {"current": _get(mine, "samples"), "candidate": _get(theirs, "samples")},
    }
    return Compatibility(task, current.ref, candidate.ref, not reasons, tuple(reasons), tuple(warnings), figures)


def keeps_champion_capabilities(current: VersionRecord, candidate: VersionRecord, contract: TaskContract | None) -> bool:
    """Whether ``candidate`` must keep every capability of ``current``: on a text route, yes (callers
    may rely on any of them); not where the route's task says what it needs instead — a
    classification task (its labels or its capabilities), or a classifier on either side of a
    task's route (the task's contract decides whether it may serve, not the other's capabilities)."""
    return contract is None or not (
        contract.is_classification or current.spec.is_classifier or candidate.spec.is_classifier
    )


def _capability_reasons(current: VersionRecord, candidate: VersionRecord, contract: TaskContract | None) -> list[str]:
    """Whether the candidate can do what the route needs: the task's contract, then the champion's
    capabilities where they bind (:func:`keeps_champion_capabilities`)."""
    refused = contract.cannot_serve(candidate) if contract is not None else None
    if refused:
        return [refused]
    if not keeps_champion_capabilities(current, candidate, contract):
        return []
    lost = sorted(set(current.spec.capabilities) - set(candidate.spec.capabilities))
    return [f"lacks {current.ref}'s capabilit{'ies' if len(lost) > 1 else 'y'} {', '.join(lost)}"] if lost else []


def _compare(mine: Profile, theirs: Profile, task: str) -> list[str]:
    reasons = []
    if theirs.success_rate < MIN_SUCCESS_RATIO * mine.success_rate:
        reasons.append(
            f"success rate on {task} {theirs.success_rate:.1%} is under {MIN_SUCCESS_RATIO} × "
            f"{mine.ref}'s {mine.success_rate:.1%}"
        )
    if mine.quality is not None:
        if theirs.quality is None:
            reasons.append(
                f"{theirs.ref} has no quality score on {task} to compare with {mine.ref}'s {mine.quality:.3f}; "
                f"benchmark it: `arbiter benchmark --model {theirs.ref} --task {task}`"
            )
        elif theirs.quality < MIN_QUALITY_RATIO * mine.quality:
            reasons.append(
                f"quality on {task} {theirs.quality:.3f} is under {MIN_QUALITY_RATIO} × {mine.ref}'s {mine.quality:.3f}"
            )
    return reasons


def _get(profile: Profile | None, name: str) -> Any:
    return getattr(profile, name) if profile is not None else None
