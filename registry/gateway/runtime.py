"""The gateway's parts wired together, started and stopped in the right order.

Start: recorder (so the first events are kept), results maintenance, router (reads MLflow, warms
every champion), then pool maintenance. Stop: stop following aliases, unload the pool, flush the
recorder last so every ``calls`` and ``events`` row of the session reaches Parquet, then one last
maintenance pass so it is in its Delta table.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import threading
import time
from typing import Any

from registry.catalog.routes import Routes
from registry.catalog.tracking import delete_webhook, replace_webhook
from registry.catalog.versions import Catalog
from registry.errors import ConfigError
from registry.evaluation.judge import ModelBasedJudge
from registry.evaluation.rubrics import JUDGE_ROUTE
from registry.evaluation.tasks import TaskCatalog
from registry.gateway.metrics import GatewayMetrics
from registry.gateway.rate import TokenBucket
from registry.quality.judge_gate import JudgeGate
from registry.quality.live_scoring import LiveCall, LiveScorer
from registry.results.events import event_row
from registry.results.feedback import CallRef, FeedbackBook, RecentCalls
from registry.results.maintenance import Maintainer, Maintenance
from registry.results.recorder import Recorder
from registry.results.store import ResultsStore
from registry.rollout.autoswap import AutoSwapper, AutoSwapPolicy
from registry.serving.dispatcher import AnsweredCall, Dispatcher
from registry.serving.pool import WarmPool
from registry.serving.router import Router
from registry.serving.shadow import ShadowAnswer, ShadowMirror
from registry.settings import Settings
from registry.spec import VersionRecord

WEBHOOK_PATH = "/hooks/mlflow"
_log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Gateway:
    """Example::

        gateway = Gateway(settings)
        gateway.start()                      # blocks until champions are warm
        app = build_app(gateway)             # serve with uvicorn
        gateway.close()
    """

    def __init__(self, settings: Settings) -> None:
        if not is_loopback(settings.host) and not settings.admin_token:
            raise ConfigError(
                f"refusing to bind {settings.host}: off loopback every endpoint needs a token; "
                "set ARBITER_ADMIN_TOKEN (e.g. `export ARBITER_ADMIN_TOKEN=$(openssl rand -hex 16)`) or bind 127.0.0.1"
            )
        self.settings = settings
        self.started_at = time.time()
        self.store = ResultsStore(settings.results_dir)
        self.catalog = Catalog(settings, self.store)
        self.routes = Routes(self.catalog)
        self.recorder = Recorder(self.store, flush_s=settings.calls_flush_s, commits=False)  # the maintainer commits
        self.maintainer = Maintainer(
            Maintenance(self.store, retain_days=settings.results_retain_days, min_small_files=32),
            commit_s=settings.results_commit_s, compact_s=settings.results_compact_s)
        self.pool = WarmPool(settings, on_event=self._pool_event)
        self.router = Router(self.catalog, self.pool, on_event=self._event)
        self.recent_calls = RecentCalls()
        self.feedback = FeedbackBook(self.store, recent=self.recent_calls,
                                     write=lambda row: self.recorder.add("feedback", row))
        self.feedback_bucket = TokenBucket(settings.feedback_per_s, settings.feedback_burst)
        self.live_scorer = LiveScorer(
            TaskCatalog(settings), lambda row: self.recorder.add("feedback", row), judge=lambda: self._judge,
            gate=JudgeGate.from_settings(settings, self.store))
        # The judgment route's judge, on the instances this gateway holds (resolved from memory).
        self._judge = ModelBasedJudge(self.catalog, self.pool, resolve=lambda: self.router.resolve(JUDGE_ROUTE).record)
        self.shadow = ShadowMirror(self.pool, self.recorder, self.router.entries, on_answer=self._shadow_answered)
        self.dispatcher = Dispatcher(self.pool, self.recorder, watchers=(self._answered, self.shadow))
        self.metrics = GatewayMetrics(self.pool.snapshot)
        self.autoswapper = AutoSwapper(self.catalog, AutoSwapPolicy(
            cooldown_s=settings.auto_swap_cooldown_s, min_samples=settings.auto_swap_min_samples,
            success_threshold=settings.auto_swap_success_threshold, quality_factor=settings.auto_swap_quality_factor,
            min_dwell_s=settings.auto_swap_min_dwell_s, window_s=settings.auto_swap_window_s,
        )) if settings.auto_swap else None
        self.webhook_secret = secrets.token_hex(16)
        self.webhook_id: str | None = None
        self.ready = False
        self._closed = False

    @property
    def requires_token_everywhere(self) -> bool:
        return not is_loopback(self.settings.host)

    def start(self, *, follow: bool = True) -> None:
        self.recorder.start()
        self.maintainer.start()
        self.router.start(follow=follow)
        self.live_scorer.start()
        self.shadow.start()
        self.pool.start_maintenance()
        if self.autoswapper is not None:
            self.autoswapper.start(lambda: list(self.router.entries()), every_s=self.settings.auto_swap_check_s,
                                   on_change=self.router.refresh_soon)
        self.ready = True

    def register_webhook(self, base_url: str) -> str | None:
        """Ask MLflow to tell us when an alias moves (SQL backend; experimental in MLflow 3).

        Delivery happens in the MLflow *server* that handles the change (the UI's). It needs, in
        both that server's environment and ours: ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`` (the same
        Fernet key: MLflow stores the signing secret encrypted, and otherwise each process invents
        its own key), and for a local http URL ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` and
        ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true``. Without them this returns None and says why in
        an event; polling stays on either way, the webhook only makes a change visible sooner.
        """
        if not os.environ.get("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"):
            self._event("webhook.unavailable", None, None, {
                "error": "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY is not set; set the same key for `arbiter serve` "
                         "and the MLflow server to use webhooks"})
            return None
        try:
            self.webhook_id = replace_webhook(
                self.catalog, name=f"arbiter-gateway-{self.settings.port}", url=base_url + WEBHOOK_PATH,
                secret=self.webhook_secret, events=["model_version_alias.created", "model_version_alias.deleted"],
                description="arbiter serve: re-read route aliases at once",
            )
        except Exception as exc:  # noqa: BLE001 — MlflowException, or a secret another key encrypted
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._event("webhook.unavailable", None, None, {"error": message})
            return None
        return self.webhook_id

    def close(self) -> None:
        """Stop following, unload, flush; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        if self.autoswapper is not None:
            self.autoswapper.stop()
        self.router.stop()
        self.shadow.stop()
        self.live_scorer.stop()
        if self.webhook_id is not None:
            try:
                delete_webhook(self.catalog, self.webhook_id)
            except Exception:  # noqa: BLE001 — best effort at shutdown; a stale hook only costs a 404
                pass
        self.pool.close()
        self.recorder.close()
        self.maintainer.close()  # after the last flush: what this process staged goes into its tables

    def promote(self, route: str, model: str, version: int, *, force: bool) -> dict[str, Any]:
        state = self.routes.promote(route, model, version, force=force)
        self.router.refresh_soon()
        return state.as_json()

    def rollback(self, route: str) -> dict[str, Any]:
        state = self.routes.rollback(route)
        self.router.refresh_soon()
        return state.as_json()

    # --- events -------------------------------------------------------------------------------

    def _answered(self, answered: AnsweredCall) -> None:
        """Each answer: known at once to feedback (before its row is flushed), and scored off the
        request path by the route's live scorers."""
        record, route = answered.record, answered.resolution.route
        self.recent_calls.add(CallRef(answered.call_id, route, record.name, record.version))
        # A tool call is left unscored: it is no text for the task's scorers, which would read it as a
        # wrong answer and drag the route's quality down. (A text answer to a request with tools is scored.)
        if route is not None and not answered.generation.tool_calls:
            self.live_scorer.offer(LiveCall.of(answered.call_id, route, record.name, record.version, answered.request,
                                               answered.generation.text, judged=self._judging(route)))

    def _shadow_answered(self, shadow: ShadowAnswer) -> None:
        """A challenger's answer to a copy: scored like a user's, so the two sides compare pair by pair."""
        record = shadow.record
        if shadow.generation.tool_calls or shadow.champion.tool_calls:  # no pair to compare (see _answered)
            return
        self.live_scorer.offer(LiveCall.of(shadow.call_id, shadow.route, record.name, record.version, shadow.request,
                                           shadow.generation.text, judged=self._judging(shadow.route)))

    def _judging(self, route: str) -> bool:
        """Whether the judge scores this route's answer now: a judgement is a generation on the judge's
        instance, so by default only while a rollout wants the evidence (ARBITER_LIVE_JUDGE)."""
        mode = self.settings.live_judge
        if mode != "rollout":
            return mode == "always"
        entry = self.router.entries().get(route)
        return entry is not None and entry.contender is not None

    def _pool_event(self, kind: str, record: VersionRecord, detail: dict[str, Any]) -> None:
        self._event(kind, None, record, detail)

    def _event(self, kind: str, route: str | None, record: VersionRecord | None, detail: dict[str, Any]) -> None:
        self.metrics.events.labels(kind=kind).inc()
        self.recorder.add("events", event_row(kind, route=route, model=record.name if record else None,
                                              version=record.version if record else None, detail=detail))
        if kind == "swap.start" and route is not None:  # a champion moved: by arbiter, or by hand in the UI
            threading.Thread(target=self._take_up_move, args=(route,), name=f"arbiter-move-{route}", daemon=True).start()

    def _take_up_move(self, route: str) -> None:
        """Read the route as ``routes show`` does: a move made by hand in the MLflow UI is taken up now
        (the old champion becomes ``previous``, an ``alias.external`` event with the figures), not at
        the next CLI call. A move arbiter made itself is already recorded: this changes nothing."""
        try:
            self.routes.show(route)
        except Exception as exc:  # noqa: BLE001 — MLflow busy: the next `routes show` takes it up instead
            _log.warning("could not take up the champion move on %s: %s", route, exc)
