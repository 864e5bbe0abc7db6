"""What the gateway benchmarks share: a throwaway ARBITER_HOME with SmolLM2 on route ``qa``, real
server subprocesses (``arbiter serve``, ``mlflow server``) stopped on every way out, percentiles,
and the JSON writer.

Servers run in their own process group and session, so a Ctrl-C in the terminal reaches only the
benchmark, which then stops them in order (SIGTERM, then SIGKILL after a grace period; the gateway
gets SIGINT first, see ``INTERRUPT_FIRST``) from its ``finally`` blocks; SIGTERM to the benchmark is turned into the same exit path. Their output goes
to a log file in the home (a pipe nobody reads would block a chatty server), and its tail is shown
when one fails to start.

Imported by the scripts beside it (``python benchmarks/x.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "results" / "benchmarks"
MODEL_NAME = "smollm2-135m"
ROUTE = "qa"
CAPABILITIES = ["chat", "text-generation"]
# Other work worth a whole core before we start: on 2 cores llama.cpp's timings then say more
# about the neighbours than about the gateway, and the printed line says so.
BUSY_LOAD = 1.0
_BIN = Path(sys.executable).parent


class BenchmarkError(RuntimeError):
    """A set-up step failed; the message says which and what to do."""


def exit_on_sigterm() -> None:
    """``kill <benchmark>`` unwinds like Ctrl-C, so every ``finally`` stops its servers."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def prepare_home(home: Path | None) -> Path:
    """A throwaway ARBITER_HOME (removed at exit) unless one is given; set in this process's env."""
    if home is None:
        home = Path(tempfile.mkdtemp(prefix="arbiter-bench-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["ARBITER_HOME"] = str(home)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    return home


def register(home: Path, path: Path, provenance: dict[str, str] | None = None):  # -> VersionRecord
    """Register a GGUF file as a version of ``smollm2-135m`` in the home's catalog."""
    from registry.catalog.versions import Catalog
    from registry.settings import get_settings

    record, _ = Catalog(get_settings(home=home)).register(
        path, name=MODEL_NAME, capabilities=CAPABILITIES, provenance=provenance
    )
    return record


def promote(home: Path, version: int):  # -> RouteState
    """Make ``smollm2-135m/<version>`` the champion of route ``qa`` (no benchmark needed: force)."""
    from registry.catalog.routes import Routes
    from registry.catalog.versions import Catalog
    from registry.settings import get_settings

    return Routes(Catalog(get_settings(home=home))).promote(ROUTE, MODEL_NAME, version, force=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def executable(name: str) -> str:
    path = _BIN / name
    if not path.is_file():
        raise BenchmarkError(f"{path} not found; run `make install` and use .venv/bin/python")
    return str(path)


# How each server is stopped: signals in turn, each given its grace period in seconds.
TERMINATE = ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0))
# The gateway gets SIGINT (Ctrl-C) first: the signal on which `arbiter serve` has always flushed its
# calls/events rows. Until its GracefulServer (registry/cli/serve.py), uvicorn re-raised SIGTERM after
# shutting down and the default action ended the process before `finally: gateway.close()` ran.
INTERRUPT_FIRST = ((signal.SIGINT, 30.0), *TERMINATE)


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log: Path
    stop_signals: tuple[tuple[signal.Signals, float], ...] = TERMINATE

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextmanager
def server(name: str, argv: list[str], *, url: str, env: dict[str, str], cwd: Path, ready_path: str = "/health",
           timeout_s: float = 180, stop_signals: tuple[tuple[signal.Signals, float], ...] = TERMINATE,
           ) -> Iterator[Server]:
    """Start ``argv``, wait until ``url + ready_path`` answers 200, yield it, stop it on the way out."""
    log = cwd / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    running = Server(name, url, process, log, stop_signals)
    try:
        _wait_ready(running, ready_path, timeout_s)
        yield running
    finally:
        with _uninterrupted():
            stop(running)


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """A second Ctrl-C must not cut a server's stop short and leave it running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_ready(running: Server, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise BenchmarkError(
                f"{running.name} exited with status {running.process.returncode} before it was ready; "
                f"its output ({running.log}):\n{running.log_tail()}"
            )
        try:
            if httpx.get(running.url + path, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise BenchmarkError(
        f"{running.name} did not answer {running.url + path} within {timeout_s:.0f} s; its output:\n{running.log_tail()}"
    )


def stop(running: Server) -> None:
    """The server's stop signals in turn to its process group (mlflow server has worker children),
    each given its grace period; what is left of the group afterwards is killed."""
    process = running.process
    for sig, wait_s in running.stop_signals:
        if process.poll() is not None:
            _reap_group(process.pid)
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            _reap_group(process.pid)
            return
        except subprocess.TimeoutExpired:
            continue


def _reap_group(pgid: int) -> None:
    """Children left in the server's group after its leader exited (a worker) are killed too."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def gateway_env(home: Path, threads: int, **extra: str) -> dict[str, str]:
    """The environment of ``arbiter serve``: this one, plus the home and the thread count."""
    return {**os.environ, "ARBITER_HOME": str(home), "ARBITER_N_THREADS": str(threads), **extra}


@contextmanager
def gateway(home: Path, threads: int, **extra_env: str) -> Iterator[Server]:
    """``arbiter serve`` on a free loopback port, polling MLflow (no webhook), warm when yielded."""
    port = free_port()
    argv = [executable("arbiter"), "serve", "--port", str(port), "--no-webhook"]
    with server("gateway", argv, url=f"http://127.0.0.1:{port}", env=gateway_env(home, threads, **extra_env),
                cwd=home, stop_signals=INTERRUPT_FIRST) as running:
        yield running


@contextmanager
def mlflow_server(tracking_uri: str, home: Path) -> Iterator[Server]:
    """A lean real ``mlflow server`` on the same sqlite store (shared/STACK.md: 2 processes, ~9 s)."""
    port = free_port()
    argv = [executable("mlflow"), "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with server("mlflow", argv, url=f"http://127.0.0.1:{port}", env=env, cwd=home, timeout_s=120) as running:
        yield running


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def machine_facts() -> dict[str, Any]:
    from registry.machine.hardware import fingerprint
    from registry.results.store import now_utc

    load = os.getloadavg()
    return {
        "ts": now_utc().isoformat(),
        "hardware": fingerprint().as_row(),
        "cpu_count": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load],
        "machine_busy": load[0] >= BUSY_LOAD,
    }


def write_json(result: dict[str, Any], out: Path) -> Path:
    """Written to a temporary name and renamed: a reader never sees half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.tmp")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(partial, out)
    return out


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def busy_warning(result: dict[str, Any]) -> str:
    if not result["machine"]["machine_busy"]:
        return ""
    return f" [machine busy: load {result['machine']['load_avg_before'][0]:.1f} before the run, timings unreliable]"


def run_main(name: str, args: Any, measure: Callable[[Any, Path], dict[str, Any]],
             summary_line: Callable[[dict[str, Any], Path], str]) -> int:
    """A benchmark's ``main``: measure in a prepared home, write the JSON, print one line.
    Exit 1 with the reason when a server does not start, 130 on Ctrl-C (servers stopped)."""
    exit_on_sigterm()
    home = prepare_home(args.home)
    try:
        result = measure(args, home)
    except BenchmarkError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted; its servers were stopped, nothing written", file=sys.stderr)
        return 130
    out = write_json(result, args.out)
    print(summary_line(result, out))
    return 0
