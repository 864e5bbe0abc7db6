"""Warm model instances, one per version, loaded on first use and kept until closed.

First cut of the pool the gateway will grow (replicas, queues, keep-alive, breakers): for now it
makes sure a benchmark over several tasks, or several prompts, loads each version once.
"""

from __future__ import annotations

import threading

from registry.catalog import VersionRecord
from registry.providers import Provider, provider_for
from registry.settings import Settings


class WarmPool:
    """Loaded providers keyed by ``name/version``.

    Example::

        with WarmPool(settings) as pool:
            provider = pool.get(record)      # loads (and checks the sha256) the first time
            provider.generate(request)
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._instances: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def get(self, record: VersionRecord) -> Provider:
        with self._lock:
            provider = self._instances.get(record.ref)
            if provider is None:
                provider = provider_for(
                    record.spec, n_threads=self._settings.n_threads, n_ctx=self._settings.n_ctx, seed=self._settings.seed
                )
                provider.load()
                self._instances[record.ref] = provider
            return provider

    def is_warm(self, record: VersionRecord) -> bool:
        return record.ref in self._instances

    def close(self) -> None:
        with self._lock:
            for provider in self._instances.values():
                provider.unload()
            self._instances.clear()

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
