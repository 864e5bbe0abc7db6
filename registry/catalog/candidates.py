"""Every version benchmarked on a route's task, offered in the route's registered model with its figures.

A person who promotes in the MLflow UI picks from the route model's versions; if only versions once
promoted were there, ``champion`` could only go back to an old champion. So each version measured on
the task gets a route version (a copy, made once: ``RouteModel.copy_of``) tagged with its latest
figures on this hardware and a description that says them in words, both shown in the UI's version
list; its own run (``tracking.candidate_run``) holds the same figures as metrics, so the UI's Compare
puts candidates side by side. Publishing runs after each benchmark and when a route is made, never on
a read path: each tag is an MLflow call.

Example::

    Candidates(catalog, "qa").publish(catalog.get("smollm2-135m", 1))   # the copy's route version
    Candidates(catalog, "qa").publish_all()                               # every version measured on qa
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from registry.catalog.route_model import TAG_CANDIDATE_RUN, RouteModel
from registry.catalog.tracking import log_figures
from registry.catalog.versions import Catalog
from registry.errors import NotFoundError
from registry.machine.hardware import fingerprint
from registry.results.schemas import iso_utc
from registry.results.store import ResultsStore
from registry.spec import VersionRecord

FIGURES = ("quality", "p50_ms", "p95_ms", "tokens_per_s", "energy_mwh_per_1k_tokens")
"""The figures a candidate is chosen on: its run's metrics, its version's tags, an external move's event."""

_FORMATS: dict[str, Callable[[Any], str]] = {
    "quality": lambda v: f"{v:.3f}",
    "quality_source": str,
    "p50_ms": lambda v: f"{v:.1f}",
    "p95_ms": lambda v: f"{v:.1f}",
    "tokens_per_s": lambda v: f"{v:.1f}",
    "energy_mwh_per_1k_tokens": lambda v: f"{v:.4g}",
    "hardware_id": str,
    "task_version": str,
    "ts": iso_utc,
    "mlflow_run_id": str,
}
_TAG_NAMES = {"ts": "benchmarked_at", "mlflow_run_id": "benchmark_run"}


def latest_figures(
    store: ResultsStore, task: str, hardware_id: str, *, model: str | None = None, version: int | None = None,
    task_version: int | None = None,
) -> list[dict[str, Any]]:
    """Each version's newest ``runs`` row on ``task`` measured on ``hardware_id`` (only there: a
    figure from another machine says nothing of this one), on the newest task version it was
    measured on unless ``task_version`` is given; one version when ``model``/``version`` are."""
    return store.query(
        """
        select * from runs where task = $1 and hardware_id = $2
          and ($3 is null or model = $3) and ($4 is null or version = $4) and ($5 is null or task_version = $5)
        qualify row_number() over (partition by model, version order by task_version desc nulls last, ts desc) = 1
        order by model, version
        """,
        [task, hardware_id, model, version, task_version],
    )


def figures_of(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run's figures as an event's ``detail`` keeps them (None for no run)."""
    if run is None:
        return None
    return {**{key: run.get(key) for key in FIGURES}, "quality_source": run.get("quality_source"),
            "task_version": run.get("task_version"), "benchmark_run": run.get("mlflow_run_id"),
            "benchmarked_at": iso_utc(run.get("ts"))}


def candidate_tags(run: dict[str, Any]) -> dict[str, str | None]:
    """The version tags for a run's figures (``arbiter.quality``, ``arbiter.p50_ms`` …); None for a
    figure the run lacks, so an older run's value is removed rather than left to mislead."""
    return {f"arbiter.{_TAG_NAMES.get(key, key)}": None if run.get(key) is None else fmt(run[key])
            for key, fmt in _FORMATS.items()}


def candidate_description(route: str, record: VersionRecord, run: dict[str, Any]) -> str:
    """The tags in words, for the UI's version list and version page."""
    def shown(key: str, unit: str) -> str:
        return "n/a" if run.get(key) is None else f"{_FORMATS[key](run[key])}{unit}"

    return (
        f"A copy of {record.ref}, benchmarked on task '{route}' v{run.get('task_version')} on this hardware "
        f"({run.get('hardware_id')}) at {iso_utc(run.get('ts'))}: quality {shown('quality', '')} "
        f"({run.get('quality_source') or 'reference'}), p50 {shown('p50_ms', ' ms')}, p95 {shown('p95_ms', ' ms')}, "
        f"{shown('tokens_per_s', ' tokens/s')}, {shown('energy_mwh_per_1k_tokens', ' mWh')} per 1,000 tokens "
        f"(benchmark run {run.get('mlflow_run_id') or 'n/a'}). Point the alias 'champion' at this version to serve it."
    )


class Candidates:
    """Publish benchmarked versions into one route's registered model, when the route exists."""

    def __init__(self, catalog: Catalog, route: str) -> None:
        self.catalog = catalog
        self.route = route
        self.model = RouteModel(catalog, route)

    def publish(self, record: VersionRecord) -> int | None:
        """Offer ``record`` with its latest figures here; its route version, or None when the route
        does not exist or the version has no figures on this hardware."""
        if self.model.read() is None:
            return None
        runs = latest_figures(self.catalog.store, self.route, fingerprint().hardware_id, model=record.name,
                              version=record.version)
        if not runs:
            return None
        route_version = self.model.copy_of(record)
        self._tag(self.model.version(route_version), record, runs[0])
        return route_version

    def publish_all(self) -> list[int]:
        """Offer every version measured on the route's task here (a version since removed from the
        catalog is skipped); their route versions."""
        if self.model.read() is None:
            return []
        copies = {mv.source: mv for mv in self.model.versions()}
        published = []
        for run in latest_figures(self.catalog.store, self.route, fingerprint().hardware_id):
            try:
                record = self.catalog.get(run["model"], run["version"])
            except NotFoundError:
                continue
            mv = copies.get(f"models:/{record.name}/{record.version}")
            if mv is None:
                mv = self.model.version(self.model.copy_of(record))
            self._tag(mv, record, run)
            published.append(int(mv.version))
        return published

    def _tag(self, mv: Any, record: VersionRecord, run: dict[str, Any]) -> None:
        """The run's figures onto the version's own run first, then its tags: a kill in between
        leaves tags that differ, so the next publish logs again (never tags ahead of the run)."""
        tags = candidate_tags(run)
        if any(mv.tags.get(key) != value for key, value in tags.items()) and mv.run_id == mv.tags.get(TAG_CANDIDATE_RUN):
            metrics = {key: run[key] for key in FIGURES if run.get(key) is not None}
            log_figures(self.catalog, mv.run_id, metrics, {key: value for key, value in tags.items() if value is not None})
        self.model.update_version(mv, tags, candidate_description(self.route, record, run))
