"""``make workers`` (``python -m flows.workers``) when the server cannot start: one clean line.

A real socket holds the port and the real ``prefect server start`` fails on it; the reason comes
from the server's own log under PREFECT_HOME, and nothing is left running.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from support import free_port

pytestmark = pytest.mark.e2e


def test_a_busy_port_is_one_line_with_the_servers_reason_and_leaves_nothing(tmp_path: Path) -> None:
    port = free_port()
    prefect_home = tmp_path / "prefect"
    env = {**os.environ, "ARBITER_HOME": str(tmp_path), "PREFECT_HOME": str(prefect_home)}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        done = subprocess.run([sys.executable, "-m", "flows.workers", "--port", str(port), "--class", "cpu"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: prefect server exited with") and "Traceback" not in done.stderr
    assert f"Port {port} is already in use" in line  # the server's own words, from its log
    assert str(prefect_home / "server.log") in line and (prefect_home / "server.log").exists()
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if f"--port {port}" in " ".join(p.info["cmdline"] or [])]
