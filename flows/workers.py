"""A real Prefect server on loopback and one process worker per local work pool (``make workers``).

Each child runs in its own process group, so stopping it (Ctrl-C here, or a test's ``finally``)
also stops what it started — a worker's flow-run subprocess, the server's own workers — and
nothing is left holding the port or the model. The tests start the same processes through
:func:`prefect_server` and :func:`prefect_worker`.

Usage::

    python -m flows.workers [--port 4200] [--class cpu,cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from flows.deploy import pool_name
from registry.errors import UserError
from registry.machine.hardware import hardware_class, parse_hardware_class

PREFECT = str(Path(sys.executable).with_name("prefect"))
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


class StartError(RuntimeError):
    """The server did not come up; the message carries the end of its output when there is a log."""


class Interrupted(Exception):
    """Asked to stop (Ctrl-C, SIGTERM) before the server answered."""


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


@contextmanager
def prefect_server(port: int, env: Mapping[str, str], *, timeout_s: float = 180, log: Path | None = None,
                   stop: threading.Event | None = None) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1:``port``; yields its API URL once ``/health`` answers.

    A server that exits or never answers raises :class:`StartError` with the last lines it wrote
    to ``log``; ``stop`` set while waiting raises :class:`Interrupted`. Either way it is stopped."""
    url = api_url(port)
    server_env = {**env, **QUIET, "PREFECT_API_URL": url, "COLUMNS": "200"}  # rich wraps at 80 otherwise
    start = log.stat().st_size if log and log.exists() else 0
    with _group([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], server_env, log) as process:
        try:
            _wait_healthy(url, process, timeout_s, stop or threading.Event())
        except StartError as exc:
            said = log_tail(log, start) if log else ""
            raise StartError(f"{exc}: {said}" if said else str(exc)) from None
        yield url


def log_tail(log: Path, start: int = 0, lines: int = 3, chars: int = 400) -> str:
    """The last ``lines`` non-blank lines written to ``log`` since byte ``start``, as one line."""
    try:
        with log.open("rb") as handle:
            handle.seek(start)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    said = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    tail = " ".join(said[-lines:])
    return tail if len(tail) <= chars else "…" + tail[-chars:]


@contextmanager
def prefect_worker(pool: str, url: str, env: Mapping[str, str], *, log: Path | None = None,
                   name: str | None = None) -> Iterator[subprocess.Popen]:
    """``prefect worker start --pool POOL --type process`` against ``url`` (creates the pool if missing)."""
    command = [PREFECT, "worker", "start", "--pool", pool, "--type", "process"]
    if name:
        command += ["--name", name]
    with _group(command, {**env, **QUIET, "PREFECT_API_URL": url}, log) as process:
        yield process


@contextmanager
def _group(command: list[str], env: Mapping[str, str], log: Path | None) -> Iterator[subprocess.Popen]:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 — closed below
    process = subprocess.Popen(command, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process)
        if log:
            out.close()  # type: ignore[union-attr]


def stop_group(process: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM to the process group, then SIGKILL to whatever is left after ``grace_s`` — the
    group and every descendant seen at the start, since a worker runs each flow run in a session
    of its own (outside the group) that a killed worker would otherwise leave behind."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their parent
    except ProcessLookupError:
        pass
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait(timeout=10)


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartError(f"prefect server exited with {process.returncode} before answering at {url}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if stop.wait(0.3):
            raise Interrupted
    raise StartError(f"prefect server did not answer at {url} within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--class", dest="classes", default=None, help="Pools to work, comma-separated. "
                        "Default: this machine's hardware class.")
    args = parser.parse_args(argv)
    try:
        classes = [parse_hardware_class(c.strip()) for c in (args.classes or hardware_class()).split(",") if c.strip()]
    except UserError as exc:
        sys.exit(f"error: {exc}")
    env = dict(os.environ)
    env.setdefault("ARBITER_HOME", str(Path.cwd()))
    env.setdefault("PREFECT_HOME", str(Path(env["ARBITER_HOME"]) / ".prefect"))
    prefect_home = Path(env["PREFECT_HOME"])
    # The children write here, not to this terminal: the server's and the workers' own logs.
    server_log, workers_log = prefect_home / "server.log", prefect_home / "workers.log"
    stop = threading.Event()

    def interrupted(signum: int, frame: object) -> None:
        stop.set()

    # Before anything starts: Ctrl-C while the server is still starting stops it too.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        prefect_home.mkdir(parents=True, exist_ok=True)
        with prefect_server(args.port, env, log=server_log, stop=stop) as url:
            print(f"prefect server: {url.removesuffix('/api')} (PREFECT_HOME={prefect_home}, log {server_log})",
                  flush=True)
            with _workers(classes, url, env, workers_log):
                print(f"workers on {', '.join(pool_name(c) for c in classes)} (ARBITER_HOME={env['ARBITER_HOME']}, "
                      f"log {workers_log})")
                print(f"in another shell: export PREFECT_API_URL={url}; arbiter deploy --class {','.join(classes)}")
                print("Ctrl-C stops the workers and the server.", flush=True)
                while not stop.wait(0.5):  # a timeout: a signal handler must not meet a blocked wait
                    pass
    except StartError as exc:
        sys.exit(f"error: {exc} (full log: {server_log})")
    except Interrupted:
        pass
    except OSError as exc:
        sys.exit(f"error: cannot start in PREFECT_HOME={prefect_home}: {exc.strerror or exc}")
    print("stopped.")


@contextmanager
def _workers(classes: list[str], url: str, env: Mapping[str, str], log: Path) -> Iterator[None]:
    if not classes:
        yield
        return
    with prefect_worker(pool_name(classes[0]), url, env, log=log), _workers(classes[1:], url, env, log):
        yield


if __name__ == "__main__":
    main()
