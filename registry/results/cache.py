"""One value read from somewhere slow, kept in memory and read again once it is ``max_age_s`` old.

Why it lives in ``results``: it must sit at or below the lowest wing that uses it (``selection``:
``ProfileCache``, ``TaskLearnings``; ``evaluation``: the judge's champion), the root of ``registry``
has no room for another module, and ``results`` is the lowest wing (below it are only the single
modules of shared vocabulary: ``settings``, ``spec``, ``errors``). It is also where its reason is: two
of its three users keep a read of the results store, where every query opens DuckDB over every
Parquet file, and this cache is what keeps those queries off the selector's hot path. It imports
only ``registry.errors``.

Two ways to follow a stale value, chosen per cache:

- **wait** (the default): the first reader to find the value stale loads it again while the others
  wait for that one load, then all return the new value (checked again under the lock, so N readers
  that found it stale cost one load, not N in a row);
- **stale-while-revalidate** (``background=True``): a reader that finds it stale is answered at once
  with the value it has, and a background thread loads the new one (one at a time). For a caller
  whose own work takes seconds and whose source changes rarely — the judge — a moment of staleness
  costs less than making a call wait for the load. Only the very first load, with nothing to serve,
  is waited for.

A load that raises keeps the old value and its age (nothing is replaced by a half-read, nothing
dropped): waiting, the error is raised to the reader that triggered the load, and the next reader
tries again; in the background, readers keep the old value, the error is kept in
:attr:`ExpiringCache.last_error` and logged as a warning, and the next stale read starts another load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from registry.errors import ArbiterError

T = TypeVar("T")

_log = logging.getLogger(__name__)


class ExpiringCache(Generic[T]):
    """``load()``'s value, loaded again when ``max_age_s`` old by ``clock`` (stale at exactly that age,
    so ``max_age_s=0`` loads on every read).

    Example::

        profiles = ExpiringCache(lambda: store.query(SQL), max_age_s=5.0)
        profiles.get()          # loads once, then answers from memory for 5 s
        profiles.refresh()      # after a benchmark: load now
        profiles.invalidate()   # after a write: the next get() loads

    ``background=True`` serves a stale value while a thread named ``name`` loads the next one.
    """

    def __init__(
        self,
        load: Callable[[], T],
        *,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
        background: bool = False,
        name: str = "arbiter-cache",
    ) -> None:
        self._load_value = load
        self.max_age_s = max_age_s
        self._clock = clock
        self._background = background
        self._name = name
        self._entry: tuple[T, float] | None = None  # (value, loaded at): one field, so no reader pairs a value with another's age
        self._load_lock = threading.Lock()  # held by every load: one at a time, newest stored last
        self._reload_lock = threading.Lock()  # guards _reloading, the one background load in flight
        self._reloading = False
        self.last_error: Exception | None = None  # the last load's failure; None once one succeeds

    def get(self) -> T:
        """The value, loaded first when there is none or (waiting kind) when it is stale."""
        entry = self._entry
        if entry is not None and not self._stale(entry):
            return entry[0]
        if entry is not None and self._background:
            self._start_reload()
            return entry[0]
        with self._load_lock:
            entry = self._entry
            if entry is None or self._stale(entry):  # again: another reader may have just loaded it
                entry = self._load()
            return entry[0]

    def refresh(self) -> T:
        """Load now, whatever the value's age (after a change the caller knows of), and return it."""
        with self._load_lock:
            return self._load()[0]

    def invalidate(self) -> None:
        """Forget the value: the next :meth:`get` loads and waits for it, even with ``background``.

        Waits for a load in flight, so a load that began before the caller's write cannot store
        what it read after this returns."""
        with self._load_lock:
            self._entry = None

    def _stale(self, entry: tuple[T, float]) -> bool:
        return self._clock() - entry[1] >= self.max_age_s

    def _load(self) -> tuple[T, float]:
        """Call with ``_load_lock`` held. A load that raises leaves the old entry as it was."""
        try:
            value = self._load_value()
        except Exception as exc:
            self.last_error = exc
            raise
        self.last_error = None
        entry = self._entry = (value, self._clock())
        return entry

    def _start_reload(self) -> None:
        with self._reload_lock:
            if self._reloading:
                return
            self._reloading = True
        # Not a daemon: Python joins it before finalizing. A daemon caught mid-load at exit is torn
        # down inside native code, and the process aborted ("FATAL: exception not rethrown": the
        # judge's MLflow read did).
        threading.Thread(target=self._reload, name=self._name).start()

    def _reload(self) -> None:
        try:
            with self._load_lock:
                entry = self._entry
                if entry is not None and self._stale(entry):  # not loaded meanwhile, nor invalidated
                    self._load()
        except Exception as exc:  # no caller to raise to: _load kept it in last_error; say it, serve the old value
            # A bug's traceback is logged; an expected failure (MLflow locked, a route without a
            # champion: an ArbiterError) is one line.
            _log.warning("%s: background load failed, still serving the previous value: %s", self._name, exc,
                         exc_info=not isinstance(exc, ArbiterError))
        finally:
            with self._reload_lock:
                self._reloading = False
