"""Real servers for tests: the gateway in this process or as a subprocess, and ``mlflow server``.

Everything binds 127.0.0.1 on a free port and is waited for with a deadline, so a server that
does not come up fails the test with its own output instead of hanging it.
(Importable as ``support``: pytest puts ``tests/`` on ``sys.path`` for the root conftest.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from click.testing import CliRunner

from registry.cli.main import cli
from registry.gateway.background import free_loopback_port as free_port  # noqa: F401 — for tests

ARBITER = str(Path(sys.executable).with_name("arbiter"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


class Clock:
    """A clock the test moves by hand: the pool and breakers take their clock as an argument."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_for(url: str, *, timeout_s: float = 180, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}: {_output(process)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


@contextmanager
def gateway_process(
    home: Path, port: int, *extra: str, env: dict[str, str] | None = None, webhook: bool = False
) -> Iterator[subprocess.Popen]:
    """``arbiter serve`` as its own process (stopped with SIGTERM, or killed by the test)."""
    process = subprocess.Popen(
        [ARBITER, "serve", "--port", str(port), *([] if webhook else ["--no-webhook"]), *extra],
        env={**os.environ, "ARBITER_HOME": str(home), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", process=process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def mlflow_server(tracking_uri: str, env: dict[str, str] | None = None, artifacts: Path | None = None) -> Iterator[str]:
    """A lean real ``mlflow server`` on the test's store (the UI's and REST API's server); with
    ``artifacts``, it also stores and serves the artifacts clients upload through it."""
    port = free_port()
    served = ["--artifacts-destination", str(artifacts)] if artifacts is not None else []
    process = subprocess.Popen(
        [MLFLOW, "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", *served],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + "/health", timeout_s=120, process=process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _output(process: subprocess.Popen) -> str:
    if process.stdout is None:
        return ""
    try:
        return process.stdout.read()[-3000:]
    except ValueError:
        return ""


@contextmanager
def steady_load(url: str, route: str, *, num_predict: int = 12, gap_s: float = 0.0) -> Iterator[threading.Event]:
    """One client sending the same short request to ``route`` until the block ends: back to back, or
    with ``gap_s`` of think time after each answer (a shadow copy runs only in such gaps)."""
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                client.post("/api/generate", json={"model": route, "prompt": "Name one colour.", "stream": False,
                                                   "options": {"num_predict": num_predict, "temperature": 0}})
                stop.wait(gap_s)

    thread = threading.Thread(target=send, name=f"load-{route}", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=60)


def run(*args: str) -> tuple[int, str, str]:
    """``arbiter ARGS`` in this process (click's runner): exit code, stdout, stderr."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def assert_clean_error(code: int, stderr: str, expected: str, exit_code: int = 2) -> None:
    """A user error as the CLI must show it: one ``error:`` line with the fix, no trace, its exit code."""
    assert code == exit_code
    assert stderr.startswith("error: ") and expected in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
