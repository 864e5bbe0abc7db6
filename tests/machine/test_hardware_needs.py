"""Hardware needs on real registered versions (real MLflow store, the shipped SmolLM2 file): what
registration records, what the selector and ``version_verdicts`` make of it, and the GPU offload
llama.cpp is actually given."""

from __future__ import annotations

import pytest

from registry.catalog.versions import Catalog
from registry.cli.hardware import version_verdicts
from registry.errors import UserError
from registry.machine.hardware import available_memory_mb, cpu_flags, fingerprint, this_machine
from registry.providers import GenerationRequest
from registry.providers.llamacpp import LlamaCppProvider, llama_build, offload_here
from registry.selection.criteria import Criteria
from registry.selection.profiles import ProfileCache
from registry.selection.selector import LocalModelSelector
from registry.spec import KNOWN_CPU_FLAGS

pytestmark = pytest.mark.integration


@pytest.fixture
def versions(catalog: Catalog, smollm2):
    """The same file three times: as shipped, needing more RAM than this machine has, needing a CPU flag it lacks."""
    total = fingerprint().ram_mb
    absent = sorted(KNOWN_CPU_FLAGS - cpu_flags())[0]
    fits, _ = catalog.register(smollm2.path, name="smollm2-135m")
    huge, _ = catalog.register(smollm2.path, name="smollm2-huge", needs={"min_memory_mb": total + 1})
    flagged, _ = catalog.register(smollm2.path, name="smollm2-flagged", needs={"cpu_flags": [absent]})
    return fits, huge, flagged, total, absent


def test_declared_needs_are_part_of_the_registered_version(catalog: Catalog, versions) -> None:
    _, _, _, total, absent = versions
    assert catalog.get("smollm2-huge").spec.hardware.min_memory_mb == total + 1  # read back from MLflow
    assert catalog.get("smollm2-flagged").spec.hardware.cpu_flags == (absent,)
    assert catalog.get("smollm2-135m").spec.hardware.cpu_flags == ()


def test_a_version_needing_more_memory_than_the_machine_cannot_run_here_and_says_by_how_much(versions) -> None:
    fits, huge, flagged, total, absent = versions
    verdicts = {v["ref"]: v for v in version_verdicts([fits, huge, flagged], this_machine(), available_memory_mb())}
    assert verdicts["smollm2-135m/1"]["can_run"] and verdicts["smollm2-135m/1"]["runs_on"] == ["cpu"]
    assert verdicts["smollm2-135m/1"]["fits_now"] is True and verdicts["smollm2-135m/1"]["reasons"] == []
    assert verdicts["smollm2-huge/1"]["can_run"] is False and verdicts["smollm2-huge/1"]["fits_now"] is None
    assert verdicts["smollm2-huge/1"]["runs_on"] == []
    assert verdicts["smollm2-huge/1"]["reasons"] == [
        f"needs {total + 1} MB (spec min_memory_mb); this machine has {total} MB total"]
    assert verdicts["smollm2-flagged/1"]["reasons"] == [f"needs CPU flags {absent}; this machine's CPU lacks them"]
    assert verdicts["smollm2-flagged/1"]["needs"]["cpu_flags"] == [absent]


def test_the_selector_excludes_them_by_the_same_rule(catalog: Catalog, versions) -> None:
    _, _, _, total, absent = versions
    selector = LocalModelSelector(catalog.list_versions, ProfileCache(catalog.store),
                                  hardware_id=fingerprint().hardware_id)
    chosen = selector.select(Criteria(task="qa"))
    reasons = {e.ref: e.reasons for e in chosen.excluded}
    assert chosen.primary.ref == "smollm2-135m/1" and chosen.fallback is None
    assert reasons["smollm2-flagged/1"] == (f"needs CPU flags {absent}; this machine's CPU lacks them",)
    (free,) = reasons["smollm2-huge/1"]
    assert free.startswith(f"needs {total + 1} MB to load; ") and free.endswith(" MB available on this machine")


def test_bad_declared_needs_register_nothing(catalog: Catalog, smollm2) -> None:
    with pytest.raises(UserError, match="unknown CPU flag avx-512"):
        catalog.register(smollm2.path, name="smollm2-bad", needs={"cpu_flags": ["avx-512"]})
    assert catalog.list_versions() == []
    assert catalog.client.search_registered_models() == []  # no model half made


def test_llama_cpp_is_given_the_planned_offload(catalog: Catalog, smollm2, settings) -> None:
    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    provider = LlamaCppProvider(record.spec, n_threads=settings.n_threads, n_ctx=256)
    provider.load()
    try:
        assert provider.offload == offload_here()
        assert provider._llm.model_params.n_gpu_layers == provider.offload.n_gpu_layers
        assert provider.health().extra["n_gpu_layers"] == str(provider.offload.n_gpu_layers)
        assert provider.generate(GenerationRequest(prompt="The capital of France is", max_tokens=4)).completion_tokens
    finally:
        provider.unload()


def test_the_setting_chooses_the_layers_where_the_build_can_offload(
    catalog: Catalog, smollm2, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARBITER_N_GPU_LAYERS", "3")
    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    provider = LlamaCppProvider(record.spec, n_threads=settings.n_threads, n_ctx=256)
    provider.load()
    try:
        expected = 3 if llama_build().gpu_offload else 0  # a CPU-only build runs every layer on the CPU
        assert provider.offload.n_gpu_layers == provider._llm.model_params.n_gpu_layers == expected
        assert "n_gpu_layers=3" in provider.offload.why
    finally:
        provider.unload()
