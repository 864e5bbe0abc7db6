"""Results: append-only Parquet tables (``calls``, ``runs``, ``events``, …) read through DuckDB,
and the background writer that keeps Parquet off the request path.

The bottom of the stack beside ``errors``, ``settings`` and ``spec``: every wing that measures or
records writes here, and this wing imports none of them.
"""

from registry.results.events import event_row
from registry.results.recorder import Recorder
from registry.results.store import ResultsStore, iso_utc, new_id, now_utc

__all__ = ["Recorder", "ResultsStore", "event_row", "iso_utc", "new_id", "now_utc"]
