"""Feedback on one answer: a score an application or a person gives a live call, joined to its
``calls`` row, kept in the ``feedback`` table beside the live scorers' and the judge's scores.

A call is named by its ``call_id`` (the gateway's ``x-arbiter-call-id`` header; an OpenAI id
``chatcmpl-<call_id>``, or the Responses API's ``resp_<call_id>``, is accepted as it is). Feedback
is idempotent per (call, source): its ``feedback_id`` is derived from both, and the latest row of
an id wins, so a client that retries or changes its mind never counts twice. Only live answers take
feedback — a benchmark's or a shadow copy's answer was never seen by a user.

The call is looked up first in :class:`RecentCalls` (the gateway fills it as it answers, so
feedback sent a millisecond after the answer is accepted before the row is flushed), then in the
``calls`` rows of the last :data:`FEEDBACK_DAYS` days (so the lookup reads a bounded window, not
every call ever kept).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from registry.errors import NotFoundError, UserError
from registry.results.schemas import now_utc
from registry.results.store import LIVE_DAYS, ResultsStore

FEEDBACK_DAYS = LIVE_DAYS  # a call older than this takes no feedback: the live figures no longer count it
MAX_COMMENT_CHARS = 2000
MAX_SOURCE_CHARS = 64
RESERVED_SOURCE = "arbiter:"  # arbiter's own signals (scorer, judge): an application may not pose as them
THUMBS = {"up": 1.0, "down": 0.0}
LIVE_SOURCES = ("gateway", "manager", "tracker")  # calls a user saw the answer of
_CALL_ID = re.compile(r"^(?:chatcmpl-|cmpl-|resp_)?([0-9a-f]{32})$")
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]*$")


def feedback_id(call_id: str, source: str) -> str:
    """The id of ``source``'s feedback on ``call_id``: the same pair always gives the same id."""
    return hashlib.sha256(f"{call_id}\0{source}".encode()).hexdigest()[:32]


def parse_call_id(text: Any) -> str:
    """The bare call id from what a client sends (a header value, an OpenAI response id)."""
    found = _CALL_ID.match(text.strip()) if isinstance(text, str) else None
    if found is None:
        shown = repr(text)[:80]
        raise UserError(f"call_id {shown} is not a call id: send the x-arbiter-call-id header of the answer "
                        f"(32 hex characters) or its OpenAI id (chatcmpl-…, resp_…)")
    return found.group(1)


@dataclass(frozen=True)
class CallRef:
    """What feedback needs of a call: where it was served and by which version."""

    call_id: str
    route: str | None
    model: str
    version: int


class RecentCalls:
    """The last ``capacity`` answered calls, in memory: a bounded map (oldest out first), so a
    gateway that runs for weeks holds the same few megabytes on day 30 as on day 1."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._calls: OrderedDict[str, CallRef] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, call: CallRef) -> None:
        with self._lock:
            self._calls[call.call_id] = call
            if len(self._calls) > self._capacity:
                self._calls.popitem(last=False)

    def get(self, call_id: str) -> CallRef | None:
        with self._lock:
            return self._calls.get(call_id)

    def __len__(self) -> int:
        return len(self._calls)


class FeedbackBook:
    """Example::

        book = FeedbackBook(store)
        book.record("3f2a…", score=0.8, source="support-app", comment="right, but slow")
        book.record("3f2a…", thumbs="down", source="support-app")   # replaces the 0.8: same (call, source)

    ``write`` is where a row goes (default: appended to the store now; the gateway passes its
    background recorder); ``recent`` the calls answered lately in this process.
    """

    def __init__(self, store: ResultsStore, *, recent: RecentCalls | None = None,
                 write: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store = store
        self._recent = recent
        self._write = write or (lambda row: store.append("feedback", [row]))

    def record(self, call_id: str, *, score: float | None = None, thumbs: str | None = None, source: str = "user",
               comment: str | None = None) -> dict[str, Any]:
        """Validate, find the call, write one row; returns it. Bad input is a ``UserError`` naming
        the field and the fix; an unknown call a ``NotFoundError``. Nothing is written for either."""
        bare = parse_call_id(call_id)
        value = _score(score, thumbs)
        _check_source(source)
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
            size = f"{len(comment):,} characters" if isinstance(comment, str) else type(comment).__name__
            raise UserError(f"comment is {size}; send text of at most {MAX_COMMENT_CHARS:,} characters")
        call = self.find_call(bare)
        if call is None:
            raise NotFoundError(f"no live call {bare} in the last {FEEDBACK_DAYS} days: send the x-arbiter-call-id of "
                                f"an answer this gateway gave (benchmark and shadow answers take no feedback)")
        row = {"feedback_id": feedback_id(bare, source), "ts": now_utc(), "call_id": bare, "route": call.route,
               "model": call.model, "version": call.version, "signal": "feedback", "source": source,
               "score": value, "comment": comment, "detail": json.dumps({"thumbs": thumbs}) if thumbs else None}
        self._write(row)
        return row

    def find_call(self, call_id: str) -> CallRef | None:
        """The live call ``call_id``: from memory when it is recent, else from the ``calls`` rows."""
        if self._recent is not None:
            found = self._recent.get(call_id)
            if found is not None:
                return found
        since = now_utc() - timedelta(days=FEEDBACK_DAYS)
        rows = self.store.query(
            "select coalesce(route, task) as route, model, version from calls "
            "where call_id = $1 and ts >= $2 and source in ('gateway', 'manager', 'tracker') limit 1",
            [call_id, since], calls_since=since,
        )
        return CallRef(call_id, rows[0]["route"], rows[0]["model"], rows[0]["version"]) if rows else None


def _score(score: Any, thumbs: Any) -> float:
    if (score is None) == (thumbs is None):
        raise UserError("give exactly one of score (a number from 0 to 1) or thumbs ('up' or 'down')")
    if thumbs is not None:
        if thumbs not in THUMBS:
            raise UserError(f"thumbs must be 'up' or 'down' (got {str(thumbs)[:40]!r})")
        return THUMBS[thumbs]
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score) or not 0 <= score <= 1:
        raise UserError(f"score must be a number from 0 to 1 (got {str(score)[:40]!r}); scale your measure to [0, 1]")
    return float(score)


def _check_source(source: Any) -> None:
    if not isinstance(source, str) or not 0 < len(source) <= MAX_SOURCE_CHARS or not _SOURCE.match(source):
        raise UserError(f"source {str(source)[:80]!r} must be 1–{MAX_SOURCE_CHARS} characters of letters, digits and "
                        f"_ . : @ / - (your application's name, e.g. 'support-app')")
    if source.startswith(RESERVED_SOURCE):
        raise UserError(f"source {source!r}: names starting with {RESERVED_SOURCE!r} are arbiter's own signals; "
                        f"use your application's name")
