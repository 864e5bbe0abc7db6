"""``arbiter serve``: the gateway — Ollama API + OpenAI API over routes, following alias changes."""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
from collections.abc import Iterator

import click
from rich.console import Console

from registry.errors import ConfigError
from registry.settings import get_settings


@click.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1; anything else needs ARBITER_ADMIN_TOKEN).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default 11434, Ollama's).")
@click.option("--replicas", type=click.IntRange(1, 16), default=None,
              help="Instances per version (a route's `arbiter.replicas` tag overrides).")
@click.option("--no-webhook", is_flag=True, help="Do not register an MLflow webhook; follow aliases by polling only.")
@click.option("--auto-swap/--no-auto-swap", default=None,
              help="Roll back or swap a degraded champion by itself (ARBITER_AUTO_SWAP; thresholds: ARBITER_AUTO_SWAP_*).")
def serve(host: str | None, port: int | None, replicas: int | None, no_webhook: bool, auto_swap: bool | None) -> None:
    """Serve every route to unchanged Ollama and OpenAI clients until Ctrl-C.

    Champions are loaded before the port opens; a champion moved later (here, by `arbiter routes
    promote`, or in the MLflow UI) is warmed first, then switched to, with no request dropped.
    """
    import uvicorn

    from registry.gateway import Gateway, build_app

    chosen = {"host": host, "port": port, "replicas": replicas, "auto_swap": auto_swap}
    overrides = {k: v for k, v in chosen.items() if v is not None}
    settings = get_settings(**overrides)
    _check_port_free(settings.host, settings.port)
    console = Console(stderr=True)
    gateway = Gateway(settings)
    console.print(f"warming champions from {settings.tracking_uri} …")
    try:
        gateway.start()
        base_url = f"http://{settings.host}:{settings.port}"
        webhook = None if no_webhook else gateway.register_webhook(base_url)
        if webhook is None:
            console.print(f"following aliases by polling MLflow every {settings.alias_poll_s:g} s"
                          + ("" if no_webhook else " (no webhook: see README, 'Following the MLflow UI at once')"))
        else:
            console.print(f"following aliases by MLflow webhook {webhook}, and polling every {settings.alias_poll_s:g} s")
        if settings.auto_swap:
            console.print(f"auto-swap on: a champion under {settings.auto_swap_success_threshold:g} success over "
                          f"{settings.auto_swap_min_samples} calls is rolled back (cooldown {settings.auto_swap_cooldown_s:g} s)")
        for route, entry in sorted(gateway.router.entries().items()):
            console.print(f"  {route} → {entry.champion.ref if entry.champion else '(no champion)'}")
        console.print(f"arbiter gateway on {base_url} (Ollama API at /api, OpenAI API at /v1); Ctrl-C stops it")
        config = uvicorn.Config(
            build_app(gateway), host=settings.host, port=settings.port, log_level="warning", access_log=False,
            timeout_graceful_shutdown=30,
        )
        _graceful_server_class()(config).run()
    finally:
        gateway.close()  # flushes every calls and events row
        console.print(f"stopped; {gateway.recorder.written} rows written to {settings.results_dir}")


def _graceful_server_class():
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGINT/SIGTERM once it has shut down gracefully, which would end the
        process before the gateway flushes its last rows (and print a KeyboardInterrupt trace on
        Ctrl-C). Same handlers, minus the re-raise: ``run()`` returns and ``serve`` exits 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer


def _check_port_free(host: str, port: int) -> None:
    """Fail before minutes of model loading, not after, when the port is taken (a real Ollama?)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use (an Ollama server?); pass --port or set ARBITER_PORT") from None
            raise ConfigError(f"cannot bind {host}:{port}: {exc.strerror}; pass another --host") from None
