"""The cost profile's hints: which figures make arbiter suggest more threads or GPU offload."""

from __future__ import annotations

from typing import Any

import pytest

from registry.machine.cost_profile import hints

pytestmark = pytest.mark.unit


def profile(**overrides: Any) -> dict[str, Any]:
    base = {"cpu_cores": 8, "n_threads": 2, "cpu_utilization": 0.2, "gpu": "none", "hardware_class": "cpu",
            "n_gpu_layers": 0, "no_call_offloaded": True, "gpu_utilization_pct": {"avg": None, "p95": None}}
    return base | overrides


def test_few_threads_on_idle_cores_suggest_more_threads_and_name_the_figures() -> None:
    (hint,) = hints(profile())
    assert hint.startswith("CPU busy 20% of 8 cores") and "ran 2 thread(s)" in hint and "ARBITER_N_THREADS" in hint


@pytest.mark.parametrize("change", [{"n_threads": 8}, {"cpu_utilization": 0.7}, {"cpu_cores": 1},
                                    {"n_threads": None}, {"cpu_utilization": None}])
def test_no_thread_hint_when_threads_fill_the_cores_the_cpu_is_busy_or_the_model_is_served(change) -> None:
    assert hints(profile(**change)) == []


def test_a_gpu_with_no_layers_on_it_suggests_offload() -> None:
    (hint,) = hints(profile(n_threads=8, gpu="NVIDIA H100", hardware_class="cuda", n_gpu_layers=0,
                            gpu_utilization_pct={"avg": 40.0, "p95": 60.0}))
    assert "put no layers on it in any call" in hint and "ARBITER_N_GPU_LAYERS=-1" in hint


def test_a_group_where_some_calls_offloaded_is_not_called_no_layers() -> None:
    # The latest call ran with 0 layers, an earlier one with all (-1): "no layers" would be wrong.
    mixed = profile(n_threads=8, gpu="NVIDIA H100", hardware_class="cuda", n_gpu_layers=0, no_call_offloaded=False,
                    gpu_utilization_pct={"avg": 40.0, "p95": 60.0})
    assert hints(mixed) == []
    idle = mixed | {"gpu_utilization_pct": {"avg": 2.0, "p95": 3.0}}
    assert ["left it idle (GPU 2% busy)" in h for h in hints(idle)] == [True]


def test_an_offloaded_but_idle_gpu_is_named_and_a_busy_one_is_not() -> None:
    idle = profile(n_threads=8, gpu="NVIDIA H100", hardware_class="cuda", n_gpu_layers=-1, no_call_offloaded=False,
                   gpu_utilization_pct={"avg": 1.0, "p95": 2.0})
    assert ["GPU 1% busy" in h for h in hints(idle)] == [True]
    assert hints(idle | {"gpu_utilization_pct": {"avg": 55.0, "p95": 80.0}}) == []


def test_a_served_model_gets_no_gpu_hint_either() -> None:
    served = profile(n_threads=None, n_gpu_layers=None, no_call_offloaded=None, gpu="NVIDIA H100",
                     hardware_class="cuda")
    assert hints(served) == []
