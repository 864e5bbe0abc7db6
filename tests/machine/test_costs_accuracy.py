"""The CPU time a calls row records agrees with the kernel's accounting of a process doing only that call.

A child process loads the shipped SmolLM2 through the catalog and the warm pool, as every path
does, and waits. The parent reads the child's CPU times from the kernel (``psutil`` reads
``/proc/PID/stat``: every thread, llama.cpp's OpenMP workers included), tells the child to run one
``measured_call``, gets the row's ``cpu_ms`` back, and reads the kernel's figures again. CPU time,
not wall time: a loaded machine stretches the wall clock but not the work.

The child runs llama.cpp with 2 threads, so half the work happens in an OpenMP worker thread the
calling thread's own clock never sees — the figure must still agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from registry.catalog.versions import Catalog

pytestmark = pytest.mark.integration

# The child: load, one unrecorded warm-up call, then one measured call per "go" line.
CHILD = r"""
import json, sys
from registry.serving.calls import measured_call
from registry.catalog.versions import Catalog
from registry.serving.pool import WarmPool
from registry.providers import GenerationRequest
from registry.settings import get_settings

settings = get_settings()
record = Catalog(settings).get("smollm2-135m")
prompt = "The history of the river town, told by its oldest baker. " * 12 + "Chapter one."
with WarmPool(settings) as pool:
    provider = pool.get(record)
    measured_call(provider, record, GenerationRequest(prompt="Hello", max_tokens=4), source="test")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        call = measured_call(provider, record, GenerationRequest(prompt=prompt, max_tokens=64), source="test")
        print(json.dumps({k: call.row[k] for k in ("cpu_ms", "cpu_thread_ms", "cpu_overlapped", "prompt_tokens",
                                                   "completion_tokens", "ok", "error")}), flush=True)
"""


def _kernel_cpu_ms(process: psutil.Process) -> float:
    times = process.cpu_times()
    return (times.user + times.system) * 1000


def test_recorded_cpu_time_agrees_with_the_kernels_accounting_within_5_percent(catalog: Catalog, smollm2) -> None:
    catalog.register(smollm2.path, name="smollm2-135m")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "ARBITER_N_THREADS": "2"},
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert json.loads(child.stdout.readline()) == {"ready": True}
        kernel = psutil.Process(child.pid)
        before = _kernel_cpu_ms(kernel)
        child.stdin.write("go\n")
        child.stdin.flush()
        row = json.loads(child.stdout.readline())
        after = _kernel_cpu_ms(kernel)
    finally:
        child.kill()
        child.wait(timeout=30)

    assert row["ok"], row["error"]
    assert row["completion_tokens"] >= 32 and row["prompt_tokens"] > 100  # real work, not a one-token answer
    kernel_ms = after - before
    # The kernel counts in 10 ms ticks: 5 % means something only above a few hundred ms.
    assert kernel_ms > 400, f"the generation took only {kernel_ms:.0f} ms of CPU; too little to compare"
    assert abs(row["cpu_ms"] - kernel_ms) <= 0.05 * kernel_ms, (row, kernel_ms)
    # Why the process clock and not the thread's: llama.cpp's worker did part of the work.
    assert row["cpu_thread_ms"] < 0.9 * row["cpu_ms"]
    assert row["cpu_overlapped"] is False
