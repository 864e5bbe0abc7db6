"""The cost hints at their edges: unknown core counts, a GPU known only by the hardware class, a GPU busy
exactly at the idle line, and the figures each hint names (gaps `make mutation` found in test_cost_hints.py)."""

from __future__ import annotations

from typing import Any

import pytest

from registry.machine.cost_profile import IDLE_GPU_PCT, hints

pytestmark = pytest.mark.unit


def profile(**overrides: Any) -> dict[str, Any]:
    base = {"cpu_cores": 8, "n_threads": 2, "cpu_utilization": 0.2, "gpu": "none", "hardware_class": "cpu",
            "n_gpu_layers": 0, "no_call_offloaded": True, "gpu_utilization_pct": {"avg": None, "p95": None}}
    return base | overrides


def test_the_thread_hint_names_the_default_and_the_machine_sharing_caveat() -> None:
    (hint,) = hints(profile())
    assert "default cores - 1 = 7;" in hint and hint.endswith("leave one free if other work shares the machine)")


def test_an_unknown_core_count_counts_as_one_core_so_one_thread_is_enough() -> None:
    assert hints(profile(cpu_cores=None, n_threads=1)) == []
    assert hints(profile(cpu_cores=0, n_threads=1)) == []


def test_the_cuda_hardware_class_alone_says_a_gpu_is_here() -> None:
    (hint,) = hints(profile(n_threads=8, hardware_class="cuda", gpu="none"))
    assert hint.startswith("a GPU (none) is here but llama.cpp put no layers on it")


@pytest.mark.parametrize("gpu", [None, "", "none"])
def test_no_gpu_hint_without_a_gpu_name_on_a_cpu_machine(gpu: str | None) -> None:
    assert hints(profile(n_threads=8, gpu=gpu)) == []


def offloading(avg: float | None) -> dict[str, Any]:
    return profile(n_threads=8, gpu="NVIDIA H100", hardware_class="cuda", no_call_offloaded=False,
                   gpu_utilization_pct={"avg": avg, "p95": avg})


def test_the_idle_gpu_hint_says_what_was_measured() -> None:
    (unknown,) = hints(offloading(None))
    assert "left it idle (no GPU figure recorded)" in unknown
    (idle,) = hints(offloading(2.0))
    assert "left it idle (GPU 2% busy)" in idle


def test_a_gpu_busy_exactly_at_the_idle_line_is_not_idle() -> None:
    assert hints(offloading(IDLE_GPU_PCT)) == []
