"""Prefect's temporary API server, owned by the command that needs it and dead when that command is.

With no ``PREFECT_API_URL``, Prefect 3.8 starts a temporary server as a child process and stops it
from ``atexit``. A command killed with SIGKILL (the OOM killer, ``kill -9``, a closed terminal's
SIGHUP) runs no ``atexit``, so that server lived on (parent 1, ~200 MB) until someone found it.
No code in the dying process can run, so the fix has to live in the child: here the command starts
the server itself as ``python -m registry.cli.prefect_server PARENT_PID FD`` and the child watches
its parent: within :data:`POLL_S` of the parent's death, however it died, the server shuts down.

Why a watchdog over the alternatives:

* ``PR_SET_PDEATHSIG`` is Linux-only (macOS has no equivalent, the server would leak there) and
  fires when the *thread* that forked the child exits, not the process — a flow started from a
  short-lived thread would lose its server mid-run.
* A pid file reaped on the next start leaves the orphan running until a next start, which may
  never come, and risks killing a reused pid.
* One shared server per ``ARBITER_HOME`` is by design a process that outlives its command.

``os.getppid()`` changes when the parent dies on Linux and macOS alike (the child is re-parented
to init or a subreaper), and the parent pid is passed in so a parent that died before the child
started is seen too. The listening socket is bound by the parent and handed over as a file
descriptor, so the port is known before the child starts and no other process can take it.

The server runs in a session of its own: a Ctrl-C in the terminal reaches the command, which
finishes its flow's bookkeeping against a server still up, then stops the server itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from registry.cli.prefect_env import prepare_prefect
from registry.errors import ConfigError
from registry.settings import Settings

POLL_S = 0.5
# After the parent is gone: uvicorn's own shutdown gets this long before the child exits hard.
SHUTDOWN_S = 10.0
# What Prefect sets for its own temporary server: no UI, ephemeral services, one app per process.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
# Loopback is asked directly: an http_proxy in the environment must not see the health check.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextmanager
def prefect_api(settings: Settings) -> Iterator[None]:
    """Prefect's environment, and an API server for the flows run inside this block.

    A server already configured (``PREFECT_API_URL``, a test harness, an enclosing block) is used
    as it is; otherwise a temporary one starts here and is stopped on the way out, after Prefect's
    log and event workers have sent what they hold to it."""
    prepare_prefect(settings)
    # Deferred: Prefect is heavy (seconds) and must be imported after prepare_prefect set its environment.
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    startup_s = get_current_settings().server.ephemeral.startup_timeout_seconds
    env = {**os.environ, **SERVER_ENV, **get_current_settings().to_environment_variables(exclude_unset=True)}
    server, url = _start(env)
    try:
        _wait_healthy(server, url, startup_s)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield
            finally:
                drain_prefect_workers()
    finally:
        _stop(server)


def _start(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        server = subprocess.Popen([sys.executable, "-m", "registry.cli.prefect_server", str(os.getpid()), str(fd)],
                                  env=env, pass_fds=[fd], start_new_session=True)
    return server, f"http://127.0.0.1:{port}/api"


def _wait_healthy(server: subprocess.Popen, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ConfigError(f"Prefect's temporary server exited with {server.returncode} before answering "
                              f"(its output is above); set PREFECT_API_URL to a running server (`make workers`)")
        with contextlib.suppress(OSError):  # not listening yet, or a reset while it starts
            with _DIRECT.open(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise ConfigError(f"Prefect's temporary server did not answer within {timeout_s:.0f} s; raise "
                      f"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or set PREFECT_API_URL to a running server")


def drain_prefect_workers() -> None:
    """Send the flows' queued logs and events while the server is still up, and stop those workers,
    so neither retries against a stopped server at exit ("Error logging to API") nor carries this
    server's URL into a next block in the same process (as ``prefect_test_harness`` does)."""
    from prefect.events.worker import EventsWorker  # deferred like every Prefect import here
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(at_exit=False)
    EventsWorker.drain_all(at_exit=False)


def _stop(server: subprocess.Popen, grace_s: float = SHUTDOWN_S) -> None:
    """SIGTERM to the server's session (uvicorn shuts down cleanly), SIGKILL after ``grace_s``."""
    if server.poll() is not None:  # already gone and reaped: its pid may belong to someone else now
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _exit_with_parent(parent: int) -> None:
    """The child's watchdog thread: once ``parent`` is no longer our parent, shut down."""
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown (or death, if it is not up yet)
    time.sleep(SHUTDOWN_S)
    os._exit(1)


def serve(parent: int, fd: int) -> None:
    """The child: Prefect's API on the inherited socket, for as long as ``parent`` lives."""
    threading.Thread(target=_exit_with_parent, args=(parent,), name="exit-with-parent", daemon=True).start()
    import uvicorn  # deferred: only the child serves; the `arbiter` command need not import it

    config = uvicorn.Config("prefect.server.api.server:create_app", factory=True, lifespan="on", log_level="error",
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
