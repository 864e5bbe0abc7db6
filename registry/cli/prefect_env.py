"""Prefect's environment, set before Prefect is imported (it reads settings at import)."""

from __future__ import annotations

import logging
import os

from registry.settings import Settings


def prepare_prefect(settings: Settings) -> None:
    """Keep Prefect's home inside ARBITER_HOME, telemetry off, and its console logs quiet."""
    os.environ.setdefault("PREFECT_HOME", str(settings.home / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A failing task is logged by Prefect with its traceback; the CLI says the error in one line itself.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    # The temporary API server needs ~18 s on a fresh database on 2 cores, longer under load.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    logging.getLogger("prefect").setLevel(logging.CRITICAL)
