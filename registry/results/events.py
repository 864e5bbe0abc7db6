"""The one builder of ``events`` rows, so every writer fills the same columns the same way.

An event is what changed (``kind``), where (``route``, ``model``/``version``) and its figures
(``detail``, a dict stored as JSON text). ``ts`` is the moment the row is built unless the caller
knows better; ``event_id`` is new unless the caller gives one to make a retried write the same
event (a promotion finished twice, a rollout step re-applied after a kill).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from registry.results.store import new_id, now_utc


def event_row(
    kind: str,
    *,
    route: str | None = None,
    model: str | None = None,
    version: int | None = None,
    detail: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    ts: datetime | None = None,
) -> dict[str, Any]:
    """One row of the ``events`` table (``registry/results/store.py`` SCHEMAS), every column set."""
    return {
        "event_id": event_id or new_id(),
        "ts": ts or now_utc(),
        "kind": kind,
        "route": route,
        "model": model,
        "version": version,
        "detail": json.dumps(dict(detail)) if detail is not None else None,
    }
