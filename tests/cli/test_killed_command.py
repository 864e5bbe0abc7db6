"""`arbiter benchmark` killed with SIGKILL while its Prefect flow runs leaves no process behind.

A SIGKILL runs no cleanup in the command, so this is what a user gets from the OOM killer or
``kill -9``: Prefect's API server, started by the command, must see its parent go and end itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from processes import assert_none_left
from support import ARBITER

from registry.catalog.versions import Catalog

pytestmark = pytest.mark.e2e


def _listening_port(process: psutil.Process) -> int | None:
    for connection in process.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN:
            return connection.laddr.port
    return None


def _running_flows(port: int) -> int:
    """How many flow runs the Prefect server on ``port`` has in state RUNNING (0 while it starts)."""
    body = json.dumps({"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/flow_runs/filter", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return len(json.loads(response.read()))
    except OSError:
        return 0


def wait_for_running_flow(command: subprocess.Popen, timeout_s: float = 300) -> None:
    """Return once the command's Prefect server reports the command's flow as running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert command.poll() is None, f"the command ended before its flow ran: {command.communicate()}"
        for child in psutil.Process(command.pid).children(recursive=True):
            try:
                port = _listening_port(child)
            except psutil.Error:
                continue
            if port and _running_flows(port):
                return
        time.sleep(0.3)
    raise AssertionError(f"no flow ran within {timeout_s:.0f} s")


def test_a_benchmark_killed_mid_flow_leaves_no_process(catalog: Catalog, smollm2, home: Path) -> None:
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    command = subprocess.Popen([ARBITER, "benchmark", "--model", "smollm2-135m/1", "--task", "qa", "--limit", "50"],
                               env={**os.environ, "ARBITER_HOME": str(home)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_running_flow(command)

    command.send_signal(signal.SIGKILL)
    command.wait(timeout=30)

    assert_none_left(home)
