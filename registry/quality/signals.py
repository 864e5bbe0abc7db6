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
    their scores. Two queries over the window's days only (``calls_since``)."""
    moment = datetime.fromtimestamp(since, UTC)
    found: dict[str, Evidence] = {}
    in_window: set[str] = set()
    calls = store.query(
        """
        select model || '/' || version as ref, call_id, ok, tokens_per_s, source, shadow_of
        from calls
        where source in ('gateway', 'manager', 'shadow') and route = $1 and ts >= $2
          and coalesce(error, '') <> 'client disconnected'
        order by ts
        """,
        [route, moment], calls_since=moment,
    )
    for row in calls:
        seen = found.setdefault(row["ref"], Evidence())
        in_window.add(row["call_id"])
        seen.success.append(1.0 if row["ok"] else 0.0)
        if row["ok"] and row["tokens_per_s"] and row["tokens_per_s"] > 0:
            seen.speed.append(float(row["tokens_per_s"]))
        if row["source"] == "shadow":
            seen.shadow_calls += 1
            if row["shadow_of"]:
                seen.mirrors[row["call_id"]] = row["shadow_of"]
    scores = store.query(
        """
        with latest as (
            select call_id, model || '/' || version as ref, signal, source,
                   arg_max_null(score, ts) as score, min(ts) as first_ts
            from feedback where route = $1 and ts >= $2
            group by call_id, model, version, signal, source
        )
        select ref, call_id, signal, avg(score) as score, count(*) filter (where score is null) as failed
        from latest group by ref, call_id, signal
        order by signal, min(first_ts), call_id  -- arrival order: the sequential test's bets depend on it
        """,
        [route, moment],
    )
    for row in scores:
        if row["call_id"] not in in_window:  # late feedback on a call from before the window
            continue
        seen = found[row["ref"]]
        if row["failed"]:
            seen.failed[row["signal"]] = seen.failed.get(row["signal"], 0) + int(row["failed"])
        if row["score"] is not None:
            seen.quality.setdefault(row["signal"], {})[row["call_id"]] = float(row["score"])
    return found
