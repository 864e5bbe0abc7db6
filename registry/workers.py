"""A real Prefect server on loopback and one process worker per local work pool (``make workers``).

Each child runs in its own process group, so stopping it (Ctrl-C here, or a test's ``finally``)
also stops what it started — a worker's flow-run subprocess, the server's own workers — and
nothing is left holding the port or the model. The tests start the same processes through
:func:`prefect_server` and :func:`prefect_worker`.

Usage::

    python -m registry.workers [--port 4200] [--class cpu,cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from registry.deploy import pool_name
from registry.errors import UserError
from registry.hardware import hardware_class, parse_hardware_class

PREFECT = str(Path(sys.executable).with_name("prefect"))
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


@contextmanager
def prefect_server(port: int, env: Mapping[str, str], *, timeout_s: float = 180,
                   log: Path | None = None) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1:``port``; yields its API URL once ``/health`` answers."""
    url = api_url(port)
    server_env = {**env, **QUIET, "PREFECT_API_URL": url}
    with _group([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], server_env, log) as process:
        _wait_healthy(url, process, timeout_s)
        yield url


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


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode} before answering at {url}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"prefect server did not answer at {url} within {timeout_s:.0f} s")


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
    stop = False

    def interrupted(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    with prefect_server(args.port, env) as url:
        print(f"prefect server: {url.removesuffix('/api')} (PREFECT_HOME={env['PREFECT_HOME']})", flush=True)
        with _workers(classes, url, env):
            print(f"workers on {', '.join(pool_name(c) for c in classes)} (ARBITER_HOME={env['ARBITER_HOME']})")
            print(f"in another shell: export PREFECT_API_URL={url}; arbiter deploy --class {','.join(classes)}")
            print("Ctrl-C stops the workers and the server.", flush=True)
            while not stop:
                time.sleep(0.5)
    print("stopped.")


@contextmanager
def _workers(classes: list[str], url: str, env: Mapping[str, str]) -> Iterator[None]:
    if not classes:
        yield
        return
    with prefect_worker(pool_name(classes[0]), url, env), _workers(classes[1:], url, env):
        yield


if __name__ == "__main__":
    main()
