"""The GPU path: SmolLM2 with every layer offloaded, where a llama.cpp build with a GPU backend and
an NVIDIA GPU are both here. Elsewhere (CI, this project's CPU-only wheel) it skips and says why."""

from __future__ import annotations

import pytest

from registry.catalog.versions import Catalog
from registry.machine.gpu import gpu_devices, gpu_names
from registry.providers import GenerationRequest
from registry.providers.llamacpp import LlamaCppProvider, llama_build

pytestmark = pytest.mark.integration


def _why_no_gpu_path() -> str | None:
    if not gpu_names():
        return "no NVIDIA GPU: NVML finds none on this machine"
    if not llama_build().gpu_offload:
        return (f"llama-cpp-python {llama_build().version} was built without a GPU backend "
                f"(backends: {', '.join(llama_build().backends)}); rebuild with CMAKE_ARGS=-DGGML_CUDA=on")
    return None


@pytest.fixture
def gpu_path() -> None:
    why = _why_no_gpu_path()
    if why is not None:
        pytest.skip(f"GPU offload not testable here: {why}")


@pytest.mark.usefixtures("gpu_path")
def test_every_layer_goes_to_the_gpu_and_generation_agrees_with_the_cpu(catalog: Catalog, smollm2, settings) -> None:
    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    request = GenerationRequest(prompt="The capital of France is", max_tokens=8)
    before = sum(d.memory_used_mb for d in gpu_devices())
    on_gpu = LlamaCppProvider(record.spec, n_threads=settings.n_threads, n_ctx=512)
    on_gpu.load()
    try:
        assert on_gpu.offload.n_gpu_layers == -1 and on_gpu._llm.model_params.n_gpu_layers == -1
        assert sum(d.memory_used_mb for d in gpu_devices()) > before  # the weights are in GPU memory
        gpu_text = on_gpu.generate(request).text
    finally:
        on_gpu.unload()
    on_cpu = LlamaCppProvider(record.spec, n_threads=settings.n_threads, n_ctx=512, n_gpu_layers=0)
    on_cpu.load()
    try:
        cpu_text = on_cpu.generate(request).text
    finally:
        on_cpu.unload()
    assert gpu_text.strip() and gpu_text.split()[:1] == cpu_text.split()[:1]  # GPU kernels round differently later
