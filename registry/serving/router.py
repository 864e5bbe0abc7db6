"""Name → version, served from memory, following alias changes in MLflow without a dropped request.

A client asks for a *route* (``qa``: its champion), an alias (``smollm2-135m@champion``,
``qa@previous``) or a pinned version (``gemma3-270m/2``). Reading aliases from MLflow costs
3–6 ms per lookup (shared/STACK.md), so the router keeps a table in memory and re-reads MLflow
every ``alias_poll_s`` seconds, or at once when MLflow's webhook says an alias moved.

When a route's champion moves, the new version is loaded and health-checked *first*; only then
does the table switch. Requests already running finish on the old instance, which stays warm
for its keep-alive so a rollback is instant. A version that fails to warm is not switched to:
the route keeps serving the old champion and the failure is an event.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from registry.catalog.route_model import CHALLENGER, CHAMPION, PREVIOUS, ROUTE_ALIASES, RouteModel, read_alias_table
from registry.catalog.versions import Catalog
from registry.errors import NotFoundError
from registry.serving.pool import WarmPool
from registry.spec import VersionRecord, parse_ref

_log = logging.getLogger(__name__)
_RETRY_FAILED_SWAP_S = 30.0
_CATALOG_REFRESH_EVERY = 10  # polls; a request for an unknown version also asks for the next poll


@dataclass(frozen=True)
class RouteEntry:
    """What one route serves: its aliases resolved to catalog versions."""

    route: str
    aliases: dict[str, VersionRecord] = field(default_factory=dict)
    replicas: int = 1
    share: int = 0  # per cent of the route's requests sent to the challenger (a gradual rollout)
    shadow: bool = False  # the challenger also gets copies of the champion's requests, its answers never sent

    @property
    def champion(self) -> VersionRecord | None:
        return self.aliases.get(CHAMPION)

    @property
    def challenger(self) -> VersionRecord | None:
        """The challenger when it takes a share of traffic (and is not the champion itself)."""
        challenger = self.aliases.get(CHALLENGER)
        champion = self.champion
        if challenger is None or self.share <= 0 or (champion is not None and challenger.ref == champion.ref):
            return None
        return challenger

    @property
    def shadow_challenger(self) -> VersionRecord | None:
        """The challenger when it gets shadow copies, whatever its share (0 in a shadow-only step)."""
        challenger = self.aliases.get(CHALLENGER)
        champion = self.champion
        if challenger is None or not self.shadow or (champion is not None and challenger.ref == champion.ref):
            return None
        return challenger

    @property
    def contender(self) -> VersionRecord | None:
        """The challenger on trial, by share or by shadow copies: warmed before either starts, and
        kept loaded while it lasts."""
        return self.challenger or self.shadow_challenger


@dataclass(frozen=True)
class Resolution:
    """Where one request goes: a version, and the versions to fail over to, in order."""

    requested: str
    record: VersionRecord
    route: str | None = None
    fallbacks: tuple[VersionRecord, ...] = ()


RouterEvent = Callable[[str, str | None, VersionRecord | None, dict[str, Any]], None]


class Router:
    """Example::

        router = Router(catalog, pool)
        router.start()                       # reads MLflow, warms champions, starts following
        router.resolve("qa").record          # VersionRecord of the champion, from memory
    """

    def __init__(
        self,
        catalog: Catalog,
        pool: WarmPool,
        *,
        on_event: RouterEvent | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._pool = pool
        self._on_event = on_event
        self._clock = clock
        self._settings = catalog.settings
        self._lock = threading.Lock()
        self._served: dict[str, RouteEntry] = {}
        self._model_aliases: dict[tuple[str, str], VersionRecord] = {}
        self._versions: dict[str, VersionRecord] = {}
        self._targets: dict[tuple[str, str], tuple[str, int]] = {}
        self._swapping: dict[str, str] = {}
        self._desired: dict[str, str] = {}  # each route's champion in MLflow at the last read
        self._failed_swaps: dict[str, tuple[str, float]] = {}
        self._warm_challengers: set[str] = set()
        self._warming_challengers: set[str] = set()
        self._failed_challengers: dict[str, float] = {}
        self._counters: dict[str, itertools.count] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polls = 0
        self._catalog_stale = False
        self.refreshes = 0
        self.last_refresh_error: str | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, *, follow: bool = True) -> None:
        """Read MLflow, warm every champion (blocking: the gateway answers once they are ready),
        then follow alias changes in a background thread."""
        self._refresh_catalog()
        desired = self._read_routes()
        for entry in desired.values():
            champion = entry.champion
            if champion is not None:
                self._pool.set_replicas(champion, entry.replicas)
                try:
                    self._pool.warm(champion)
                except Exception as exc:  # noqa: BLE001 — one bad champion must not stop the others serving
                    self._emit("swap.failed", entry.route, champion, {"error": str(exc), "at": "start"})
        servable = {route: self._servable(entry) for route, entry in desired.items()}  # a challenger warms first
        with self._lock:
            self._served = servable
        self._pin_champions()
        if follow:
            self._thread = threading.Thread(target=self._follow, name="arbiter-alias-follower", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def refresh_soon(self) -> None:
        """Re-read MLflow now instead of at the next poll (MLflow's webhook calls this)."""
        self._wake.set()

    # --- resolution (memory only) -----------------------------------------------------------

    def resolve(self, name: str, *, turn: bool = False) -> Resolution:
        """Raises ``NotFoundError`` listing the names that exist — never a default model.

        ``turn``: this resolution serves a generation, so during a rollout it may go to the
        challenger (its share counts only such requests). Listings, ``/api/show`` and Ollama's
        "load the model" calls resolve without a turn: they see the champion and move no counter.
        """
        requested = name
        name = name.strip().removesuffix(":latest")
        if "@" in name:
            base, _, alias = name.partition("@")
            return Resolution(requested, self._alias(base, alias, requested), route=base if base in self._served else None)
        if "/" in name:
            return Resolution(requested, self._version(name, requested))
        entry = self._served.get(name)
        if entry is None or entry.champion is None:
            raise self._unknown(requested, why="route has no champion yet" if entry else None)
        previous = entry.aliases.get(PREVIOUS)
        challenger = entry.challenger
        if turn and challenger is not None and self._challenger_turn(name, entry.share):
            fallbacks = tuple(r for r in (entry.champion, previous) if r is not None and r.ref != challenger.ref)
            return Resolution(requested, challenger, route=name, fallbacks=fallbacks)
        fallbacks = (previous,) if previous is not None and previous.ref != entry.champion.ref else ()
        return Resolution(requested, entry.champion, route=name, fallbacks=fallbacks)

    def _challenger_turn(self, route: str, share: int) -> bool:
        """Exactly ``share`` of every 100 consecutive requests, spread evenly (not at random, so a
        short test or a low-traffic route sees the share it was promised)."""
        n = next(self._counters.setdefault(route, itertools.count()))
        return (n + 1) * share // 100 > n * share // 100

    def names(self) -> list[str]:
        """Every name a client may ask for: routes, aliases, pinned versions."""
        with self._lock:
            routes = [r for r, e in self._served.items() if e.champion is not None]
            aliases = [f"{r}@{a}" for r, e in self._served.items() for a in e.aliases]
            aliases += [f"{m}@{a}" for m, a in self._model_aliases]
            versions = list(self._versions)
        return sorted(routes) + sorted(aliases) + sorted(versions)

    def entries(self) -> dict[str, RouteEntry]:
        with self._lock:
            return dict(self._served)

    def versions(self) -> list[VersionRecord]:
        with self._lock:
            return list(self._versions.values())

    def swapping(self) -> dict[str, str]:
        with self._lock:
            return dict(self._swapping)

    # --- following ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read aliases; start a warm-then-switch for each route whose champion moved."""
        self._polls += 1
        if self._catalog_stale or self._polls % _CATALOG_REFRESH_EVERY == 0:
            self._catalog_stale = False
            self._refresh_catalog()
        desired = self._read_routes()
        self.refreshes += 1
        with self._lock:
            served = dict(self._served)
            gone = set(served) - set(desired)
            for route in gone:
                del self._served[route]
        with self._lock:
            self._desired = {route: e.champion.ref for route, e in desired.items() if e.champion is not None}
        for route, entry in desired.items():
            current = served.get(route)
            old = current.champion if current else None
            new = entry.champion
            if new is None or (old is not None and old.ref == new.ref):
                with self._lock:  # back to what is served (a rollback during a warm-up): drop that swap
                    self._swapping.pop(route, None)
                if new is not None and current is not None and current.replicas != entry.replicas:
                    self._pool.set_replicas(new, entry.replicas)  # the added replicas load on first use
                servable = self._servable(entry)
                with self._lock:  # previous / replicas move without a warm-up; a challenger after one
                    self._served[route] = servable
                continue
            self._start_swap(self._servable(entry), old)
        with self._lock:  # a challenger withdrawn is warmed again before it next takes a share or copies
            self._warm_challengers &= {e.contender.ref for e in desired.values() if e.contender is not None}
        self._pin_champions()  # champions and challengers now; a deleted route's are no longer kept

    def _servable(self, entry: RouteEntry) -> RouteEntry:
        """The entry as it may serve now: a challenger gets its share, or shadow copies, only once
        it is warm (a copy that waited for a load would hold the cores the champion's users need)."""
        challenger = entry.contender
        if challenger is None or challenger.ref in self._warm_challengers:
            return entry
        self._start_challenger_warm(entry, challenger)
        return replace(entry, share=0, shadow=False)

    def _start_challenger_warm(self, entry: RouteEntry, challenger: VersionRecord) -> None:
        with self._lock:
            failed_at = self._failed_challengers.get(challenger.ref)
            if challenger.ref in self._warming_challengers or (
                failed_at is not None and self._clock() - failed_at < _RETRY_FAILED_SWAP_S
            ):
                return
            self._warming_challengers.add(challenger.ref)

        def warm() -> None:
            try:
                self._pool.set_replicas(challenger, entry.replicas)
                self._pool.warm(challenger)
            except Exception as exc:  # noqa: BLE001 — the champion keeps all traffic; the rollout sees no samples
                with self._lock:
                    self._failed_challengers[challenger.ref] = self._clock()
                self._emit("challenger.failed", entry.route, challenger, {"error": str(exc)})
            else:
                with self._lock:
                    self._warm_challengers.add(challenger.ref)
                    self._failed_challengers.pop(challenger.ref, None)
                self._emit("challenger.ready", entry.route, challenger, {"share": entry.share, "shadow": entry.shadow})
                self.refresh_soon()
            finally:
                with self._lock:
                    self._warming_challengers.discard(challenger.ref)

        threading.Thread(target=warm, name=f"arbiter-challenger-{entry.route}", daemon=True).start()

    def _start_swap(self, entry: RouteEntry, old: VersionRecord | None) -> None:
        new = entry.champion
        assert new is not None
        with self._lock:
            if self._swapping.get(entry.route) == new.ref:
                return
            failed = self._failed_swaps.get(entry.route)
            if failed and failed[0] == new.ref and self._clock() - failed[1] < _RETRY_FAILED_SWAP_S:
                return
            self._swapping[entry.route] = new.ref
        threading.Thread(
            target=self._swap, args=(entry, old), name=f"arbiter-swap-{entry.route}", daemon=True
        ).start()

    def _swap(self, entry: RouteEntry, old: VersionRecord | None) -> None:
        new = entry.champion
        assert new is not None
        started = self._clock()
        self._emit("swap.start", entry.route, new, {"from": old.ref if old else None})
        try:
            self._pool.set_replicas(new, entry.replicas)
            self._pool.warm(new)
        except Exception as exc:  # noqa: BLE001 — whatever the cause, the route keeps its champion
            with self._lock:
                if self._swapping.get(entry.route) == new.ref:
                    self._swapping.pop(entry.route)
                self._failed_swaps[entry.route] = (new.ref, self._clock())
            self._emit("swap.failed", entry.route, new, {"from": old.ref if old else None, "error": str(exc)})
            return
        with self._lock:
            if self._desired.get(entry.route) != new.ref:  # moved again while this one warmed: stale
                stale = True
            else:
                stale = False
                self._served[entry.route] = entry
                self._failed_swaps.pop(entry.route, None)
            if self._swapping.get(entry.route) == new.ref:
                self._swapping.pop(entry.route)
        if stale:
            self._emit("swap.abandoned", entry.route, new, {"from": old.ref if old else None})
            return
        self._pin_champions()
        warm_ms = (self._clock() - started) * 1000
        self._emit("swap.done", entry.route, new, {"from": old.ref if old else None, "warm_ms": round(warm_ms, 1)})

    def _follow(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._settings.alias_poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
                self.last_refresh_error = None
            except Exception as exc:  # noqa: BLE001 — MLflow down or locked: keep serving the table we have
                self.last_refresh_error = str(exc)
                _log.warning("alias refresh failed, serving the last known table: %s", exc)

    # --- reading MLflow ------------------------------------------------------------------------

    def _read_routes(self) -> dict[str, RouteEntry]:
        table = read_alias_table(self._catalog)  # one MLflow call per poll
        desired: dict[str, RouteEntry] = {}
        for route, view in table.routes.items():
            resolved = {
                alias: self._route_alias_record(route, view.aliases[alias])
                for alias in ROUTE_ALIASES
                if alias in view.aliases
            }
            desired[route] = RouteEntry(
                route=route,
                aliases={a: r for a, r in resolved.items() if r is not None},
                replicas=view.replicas if view.replicas is not None else self._settings.replicas,
                share=min(view.share, 100),
                shadow=view.shadow,
            )
        model_aliases: dict[tuple[str, str], VersionRecord] = {}
        for name, aliases in table.models.items():
            for alias, version in aliases.items():
                record = self._cached_version(f"{name}/{version}")
                if record is not None:
                    model_aliases[(name, alias)] = record
        with self._lock:
            self._model_aliases = model_aliases
        return desired

    def _route_alias_record(self, route: str, route_version: str) -> VersionRecord | None:
        key = (route, route_version)
        target = self._targets.get(key)
        if target is None:
            try:
                found = RouteModel(self._catalog, route).target(route_version)  # route copies never change: cache
            except NotFoundError as exc:  # an alias set by hand on a version arbiter did not make
                _log.warning("%s", exc)
                return None
            if found is None:
                return None
            target = self._targets[key] = (found.model, found.version)
        return self._cached_version(f"{target[0]}/{target[1]}")

    def _refresh_catalog(self) -> None:
        records = self._catalog.list_versions()
        with self._lock:
            self._versions = {r.ref: r for r in records}

    def _cached_version(self, ref: str) -> VersionRecord | None:
        record = self._versions.get(ref)
        if record is None:
            name, version = parse_ref(ref)
            try:
                record = self._catalog.get(name, version)
            except NotFoundError:
                return None
            with self._lock:
                self._versions[ref] = record
        return record

    # --- helpers ------------------------------------------------------------------------------

    def _alias(self, base: str, alias: str, requested: str) -> VersionRecord:
        entry = self._served.get(base)
        if entry is not None:
            record = entry.aliases.get(alias)
        else:
            record = self._model_aliases.get((base, alias))
        if record is None:
            raise self._unknown(requested)
        return record

    def _version(self, ref: str, requested: str) -> VersionRecord:
        record = self._versions.get(ref)
        if record is not None:
            return record
        self._catalog_stale = True  # registered since the last read? The next poll re-reads the catalog
        raise self._unknown(requested, why="a version registered just now is served after the next alias poll")

    def _unknown(self, requested: str, why: str | None = None) -> NotFoundError:
        names = self.names()
        shown = ", ".join(names[:50]) + (f" … ({len(names)} in all)" if len(names) > 50 else "")
        reason = f" ({why})" if why else ""
        return NotFoundError(f"model {requested!r} not found{reason}; available: {shown or 'none registered'}")

    def _pin_champions(self) -> None:
        """Champions, and challengers taking a share or shadow copies, stay loaded whatever their idle time."""
        with self._lock:
            champions = {e.champion.ref for e in self._served.values() if e.champion is not None}
            champions |= {e.contender.ref for e in self._served.values() if e.contender is not None}
        self._pool.pin(champions)

    def _emit(self, kind: str, route: str | None, record: VersionRecord | None, detail: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(kind, route, record, detail)
