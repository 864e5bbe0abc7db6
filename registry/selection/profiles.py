"""What a version measured on a task on a machine, cached so selection is dictionary lookups.

A :class:`Profile` is one (version, task, hardware) summarised from the results store. Two kinds
of rows feed it:

- the **latest benchmark run** per (task, model, version, hardware_id) in ``runs``, on the newest
  version of the task the version was measured on, together with that run's own ``calls`` rows
  (older runs are superseded: a re-benchmark replaces them, and a run on a newer task version
  replaces runs on older ones);
- **live calls**: ``calls`` rows outside any benchmark run (``run_id`` null: the gateway, ``arbiter
  generate``). The gateway names a route rather than a task, so a row's task is ``task``, else
  ``route``.

The rule, per (task, model, version, hardware_id):

- ``samples`` = the run's ``n`` + the live rows;
- ``success_rate`` = (the run's ``n_ok`` + live rows with ``ok``) / ``samples``;
- ``quality`` = the mean over rows that have a score: the run's ``quality`` weighted by its ``n``,
  plus each live row's ``quality`` (live rows are usually unscored: NULL, left out); None when no
  row has one;
- ``p50_ms`` = the median wall time of the successful generations counted (the run's calls rows
  and the live rows); the run's own ``p50_ms`` when none of its calls rows are there;
- ``memory_mb`` = the run's ``peak_rss_mb``, else the largest live ``peak_rss_mb``. A benchmark
  process holds one model; a gateway's RSS includes every model it keeps warm, so it is only a
  figure of last resort;
- ``tokens_per_s`` = the run's decode rate, else the mean of the live rows';
- ``load_ms`` = the newest measured load of the version on that hardware, whatever the task (only
  the first task a benchmark runs pays for the load; the later ones find it warm).

Everything is aggregated by one DuckDB query; the cache answers from memory and re-reads the
store once its copy is ``max_age_s`` (5 s) old, or on :meth:`ProfileCache.refresh`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from registry.results.cache import ExpiringCache
from registry.results.store import LIVE_DAYS, ResultsStore, now_utc


@dataclass(frozen=True, slots=True)
class Profile:
    """One version's figures on one task on one machine."""

    model: str
    version: int
    task: str
    hardware_id: str | None
    samples: int
    quality: float | None
    p50_ms: float | None
    success_rate: float
    memory_mb: float | None
    tokens_per_s: float | None
    load_ms: float | None

    @property
    def ref(self) -> str:
        return f"{self.model}/{self.version}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


_PROFILES_SQL = """
with latest as (
    select task, model, version, hardware_id, run_id, n, n_ok, quality, p50_ms, peak_rss_mb, tokens_per_s
    from runs
    -- the newest run on the newest version of the task it was measured on (as ResultsStore.latest_run)
    qualify row_number() over (
        partition by task, model, version, hardware_id order by task_version desc nulls last, ts desc) = 1
),
loads as (
    select model, version, hardware_id, arg_max(load_ms, ts) as load_ms
    from runs where load_ms is not null
    group by all
),
measured as (
    select coalesce(task, route) as task, model, version, hardware_id,
           median(wall_ms) filter (where ok) as p50_ms,
           count(*) filter (where run_id is null) as live_n,
           count(*) filter (where run_id is null and ok) as live_ok,
           sum(quality) filter (where run_id is null) as live_quality_sum,
           count(quality) filter (where run_id is null) as live_quality_n,
           max(peak_rss_mb) filter (where run_id is null) as live_rss_mb,
           avg(tokens_per_s) filter (where run_id is null and ok) as live_tokens_per_s
    -- live calls of the last LIVE_DAYS days (figures that say how a version does now, and a read that
    -- stays the same size however long the gateway runs); the calls of each latest benchmark run, of any age.
    -- Two scans, not one with an `or`: each filter then skips files and row groups by their statistics.
    from (select * from calls where run_id is null and ts >= $1
          union all
          select * from calls where run_id in (select run_id from latest))
    where coalesce(task, route) is not null
    group by all
),
joined as (
    select coalesce(l.task, m.task) as task, coalesce(l.model, m.model) as model,
           coalesce(l.version, m.version) as version, coalesce(l.hardware_id, m.hardware_id) as hardware_id,
           coalesce(l.n, 0) as bench_n, coalesce(l.n_ok, 0) as bench_ok, l.quality as bench_quality,
           l.p50_ms as bench_p50_ms, l.peak_rss_mb, l.tokens_per_s,
           coalesce(m.live_n, 0) as live_n, coalesce(m.live_ok, 0) as live_ok,
           coalesce(m.live_quality_sum, 0) as live_quality_sum, coalesce(m.live_quality_n, 0) as live_quality_n,
           m.p50_ms, m.live_rss_mb, m.live_tokens_per_s
    from latest l full outer join measured m
      on l.task = m.task and l.model = m.model and l.version = m.version
         and l.hardware_id is not distinct from m.hardware_id
)
select j.task, j.model, j.version, j.hardware_id,
       j.bench_n + j.live_n as samples,
       (j.bench_ok + j.live_ok) / nullif(j.bench_n + j.live_n, 0) as success_rate,
       (coalesce(j.bench_quality * j.bench_n, 0) + j.live_quality_sum)
         / nullif(case when j.bench_quality is null then 0 else j.bench_n end + j.live_quality_n, 0) as quality,
       coalesce(j.p50_ms, j.bench_p50_ms) as p50_ms,
       coalesce(j.peak_rss_mb, j.live_rss_mb) as memory_mb,
       coalesce(j.tokens_per_s, j.live_tokens_per_s) as tokens_per_s,
       d.load_ms
from joined j left join loads d
  on d.model = j.model and d.version = j.version and d.hardware_id is not distinct from j.hardware_id
where j.bench_n + j.live_n > 0
"""


class ProfileTable:
    """One consistent read of every profile, indexed for lookups (what a selection holds on to)."""

    def __init__(self, profiles: list[Profile]) -> None:
        self._exact: dict[tuple[str, int, str, str | None], Profile] = {}
        self._any: dict[tuple[str, int, str], Profile] = {}
        self._by_task: dict[str, list[Profile]] = {}
        self._indexes: dict[tuple[str, str | None], dict[str, Profile]] = {}
        for profile in sorted(profiles, key=lambda p: (p.samples, p.hardware_id or ""), reverse=True):
            self._exact[(profile.model, profile.version, profile.task, profile.hardware_id)] = profile
            self._any.setdefault((profile.model, profile.version, profile.task), profile)  # most samples first
            self._by_task.setdefault(profile.task, []).append(profile)

    def __len__(self) -> int:
        return len(self._exact)

    def get(self, model: str, version: int, task: str, hardware_id: str | None = None) -> Profile | None:
        """This hardware's profile when ``hardware_id`` is given and measured there, else the one
        with the most samples on any hardware; None when the version was never measured on ``task``."""
        if hardware_id is not None:
            found = self._exact.get((model, version, task, hardware_id))
            if found is not None:
                return found
        return self._any.get((model, version, task))

    def index(self, task: str, hardware_id: str | None = None) -> dict[str, Profile]:
        """``{"model/version": profile}`` for ``task``, chosen as :meth:`get` chooses; built once
        per read and kept, so a selection over 1,000 versions is one string-keyed lookup each."""
        key = (task, hardware_id)
        found = self._indexes.get(key)
        if found is None:
            found = {}
            for profile in self._by_task.get(task, ()):  # most samples first
                ref = profile.ref
                if ref not in found or (hardware_id is not None and profile.hardware_id == hardware_id != found[ref].hardware_id):
                    found[ref] = profile
            self._indexes[key] = found
        return found

    def for_task(self, task: str) -> list[Profile]:
        """Every profile measured on ``task`` (all versions, all hardware)."""
        return list(self._by_task.get(task, ()))


class ProfileCache:
    """Profiles from the results store, re-read once ``max_age_s`` old.

    The read is one query over every ``runs`` and ``calls`` file (0.66 s over 1M rows in
    benchmarks/selection_latency.py), so readers that find the table stale wait for one re-read
    rather than each making their own (:class:`~registry.results.cache.ExpiringCache`). The table
    object changes only on a re-read: the selector keeps its columns for as long as it is the same.

    Example::

        profiles = ProfileCache(ResultsStore(settings.results_dir))
        profiles.get("smollm2-135m", 1, "qa", fingerprint().hardware_id)   # Profile(samples=26, …) or None
        profiles.refresh()                                                 # after a benchmark, at once
    """

    def __init__(
        self, store: ResultsStore, *, max_age_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
        live_days: int = LIVE_DAYS,
    ) -> None:
        self.store = store
        self.live_days = live_days
        self._cache = ExpiringCache(self._read, max_age_s=max_age_s, clock=clock)

    @property
    def max_age_s(self) -> float:
        return self._cache.max_age_s

    def table(self) -> ProfileTable:
        """The current read, re-read first when stale (one thread reads; the others wait for it)."""
        return self._cache.get()

    def refresh(self) -> ProfileTable:
        """Re-read the store now (after a benchmark run, say)."""
        return self._cache.refresh()

    def get(self, model: str, version: int, task: str, hardware_id: str | None = None) -> Profile | None:
        return self.table().get(model, version, task, hardware_id)

    def _read(self) -> ProfileTable:
        since = now_utc() - timedelta(days=self.live_days)
        return ProfileTable([_profile(row) for row in self.store.query(_PROFILES_SQL, [since])])


def _profile(row: dict[str, Any]) -> Profile:
    return Profile(
        model=row["model"],
        version=int(row["version"]),
        task=row["task"],
        hardware_id=row["hardware_id"],
        samples=int(row["samples"]),
        quality=row["quality"],
        p50_ms=row["p50_ms"],
        success_rate=float(row["success_rate"]),
        memory_mb=row["memory_mb"],
        tokens_per_s=row["tokens_per_s"],
        load_ms=row["load_ms"],
    )
