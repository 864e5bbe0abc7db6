"""A route's live figures: what the gateway's ``calls`` rows say about each version lately.

Read by the rollout (challenger vs champion in a step) and by auto-swap (is the champion
degraded?), so both judge from the same rows with the same rules.
"""

from __future__ import annotations

from datetime import UTC, datetime

from registry.results.store import ResultsStore
from registry.rollout.policy import LiveFigures


def live_figures(store: ResultsStore, route: str, *, since: float) -> dict[str, LiveFigures]:
    """Per version (``NAME/VERSION``), the calls that served ``route`` since ``since`` (epoch
    seconds) — through the gateway or the Python facade, and a shadow challenger's copies (real
    requests, unseen answers); benchmark runs are not live traffic. A client that hung up is not the
    model's failure and is left out."""
    moment = datetime.fromtimestamp(since, UTC)
    rows = store.query(
        """
        select model || '/' || version as ref, count(*) as n, count(*) filter (where ok) as ok,
               median(wall_ms) filter (where ok) as p50_ms,
               median(tokens_per_s) filter (where ok and tokens_per_s > 0) as tokens_per_s,
               avg(quality) as quality, count(quality) as quality_n
        from calls
        where source in ('gateway', 'manager', 'shadow') and route = $1 and ts >= $2
          and coalesce(error, '') <> 'client disconnected'
        group by model, version
        """,
        [route, moment],
        calls_since=moment,  # only the days the window touches: a month of calls is not read every few seconds
    )
    return {row.pop("ref"): LiveFigures(**row) for row in rows}
