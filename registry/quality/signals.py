"""A route's live evidence, per version: one value per call for each signal a swap is judged on.

- ``success``: 1 for a call that answered, 0 for one that failed (a client that hung up is left
  out: it is not the model's failure);
- ``speed``: decode tokens/s of each answered call;
- ``quality:<signal>``: each call's score from the ``feedback`` table — ``feedback`` (applications
  and people), ``scorer`` (the task's reference-free live scorers), ``judge`` (the judgment route's
  judge). The latest row per (call, source) counts; several sources of one signal on one call are
  averaged; a row with no score (a scorer or the judge failed) is counted as a failure, never as a
  pass or a zero.

The calls are the gateway's and the Python facade's user calls, plus the challenger's shadow copies
(``calls.source = 'shadow'``), each of which names the user call it mirrors, so the champion's and
the challenger's answers to the same request can be compared pair by pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from registry.results.store import ResultsStore

QUALITY_SIGNALS = ("scorer", "feedback", "judge")


@dataclass
class Evidence:
    """One version's calls on a route in a window."""

    success: list[float] = field(default_factory=list)
    speed: list[float] = field(default_factory=list)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)  # signal → call_id → score
    failed: dict[str, int] = field(default_factory=dict)  # signal → scorings that failed
    mirrors: dict[str, str] = field(default_factory=dict)  # shadow call_id → the user call it copies
    shadow_calls: int = 0

    @property
    def n(self) -> int:
        return len(self.success)


def evidence(store: ResultsStore, route: str, *, since: float) -> dict[str, Evidence]:
    """Per version (``NAME/VERSION``), its calls on ``route`` since ``since`` (epoch seconds) and
    their scores. Two queries over the window's days only (``calls_since``), read as column arrays:
    a rollout of hours at 10 requests a second holds hundreds of thousands of calls, read every few
    seconds."""
    moment = datetime.fromtimestamp(since, UTC)
    found: dict[str, Evidence] = {}
    calls = store.arrays(
        f"""
        select model || '/' || version as ref, call_id, coalesce(ok, false) as ok,
               coalesce(tokens_per_s, 0) as tokens_per_s, source = 'shadow' as shadow, shadow_of
        from calls where {_LIVE_CALLS}
        order by ts
        """,
        [route, moment], calls_since=moment,
    )
    refs, ok, speed, shadow = calls["ref"], _plain(calls["ok"]), _plain(calls["tokens_per_s"]), _plain(calls["shadow"])
    for ref in dict.fromkeys(refs.tolist()):
        mine = refs == ref
        seen = found[ref] = Evidence()
        seen.success = ok[mine].astype(float).tolist()
        seen.speed = speed[mine & ok & (speed > 0)].astype(float).tolist()
        copies = mine & shadow
        seen.shadow_calls = int(copies.sum())
        seen.mirrors = {c: u for c, u in zip(calls["call_id"][copies].tolist(), calls["shadow_of"][copies].tolist(),
                                             strict=True) if u}
    scores = store.arrays(
        f"""
        with latest as (
            select call_id, model || '/' || version as ref, signal, source,
                   arg_max_null(score, ts) as score, min(ts) as first_ts
            from feedback
            where route = $1 and ts >= $2
              and call_id in (select call_id from calls where {_LIVE_CALLS})  -- not late feedback on older calls
            group by call_id, model, version, signal, source
        )
        select ref, call_id, signal, avg(score) as score, count(*) filter (where score is null) as failed
        from latest group by ref, call_id, signal
        order by signal, min(first_ts), call_id  -- arrival order: the sequential test's bets depend on it
        """,
        [route, moment], calls_since=moment,
    )
    values = scores["score"]
    scored = ~np.ma.getmaskarray(values)
    failed = _plain(scores["failed"])
    for ref in dict.fromkeys(scores["ref"].tolist()):
        seen = found.setdefault(ref, Evidence())
        for signal in dict.fromkeys(scores["signal"][scores["ref"] == ref].tolist()):
            mine = (scores["ref"] == ref) & (scores["signal"] == signal)
            if failed[mine].sum():
                seen.failed[signal] = int(failed[mine].sum())
            kept = mine & scored
            if kept.any():
                seen.quality[signal] = dict(zip(scores["call_id"][kept].tolist(),
                                                np.ma.getdata(values)[kept].astype(float).tolist(), strict=True))
    return found


_LIVE_CALLS = ("source in ('gateway', 'manager', 'shadow') and route = $1 and ts >= $2 "
               "and coalesce(error, '') <> 'client disconnected'")


def _plain(column: np.ndarray) -> np.ndarray:
    """A column without DuckDB's mask (every column read here is filled in SQL)."""
    return np.ma.getdata(column)
