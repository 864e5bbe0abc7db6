"""The gateway in a background thread of this process: for ``arbiter demo`` and for tests.

``arbiter serve`` runs uvicorn in the foreground with signal handling; here the caller owns the
process, so uvicorn runs in a thread (it installs no signal handlers off the main thread) and is
stopped by the context manager, which also flushes every ``calls`` and ``events`` row.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from registry.errors import ConfigError
from registry.gateway.app import build_app
from registry.gateway.runtime import Gateway
from registry.settings import Settings

_START_TIMEOUT_S = 30.0


def free_loopback_port() -> int:
    """A port nothing listens on now (the OS picks it), for a gateway that must not collide with
    a running Ollama or another gateway."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gateway_in_background(settings: Settings) -> Iterator[tuple[str, Gateway]]:
    """Start (champions warmed), yield ``(base_url, gateway)``, stop and flush.

    Example::

        with gateway_in_background(get_settings(port=free_port)) as (url, gateway):
            ollama.Client(host=url).chat(model="qa", messages=[...])
    """
    import uvicorn

    gateway = Gateway(settings)
    try:
        gateway.start()
        server = uvicorn.Server(uvicorn.Config(build_app(gateway), host=settings.host, port=settings.port,
                                               log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, name="arbiter-gateway", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the gateway could not listen on {settings.host}:{settings.port}; pass another port")
            time.sleep(0.01)
        try:
            yield f"http://{settings.host}:{settings.port}", gateway
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    finally:
        gateway.close()
