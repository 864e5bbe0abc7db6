"""A real CoreML package in a real MLflow store, next to the shipped GGUF model: registration,
damaged copies that register nothing, the selector's exclusion here, and a run attempt through
the Python API (the pool, and the manager that answers with the GGUF model instead)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
from coreml_models import WEIGHTS_FILE, tiny_mlpackage

from registry.catalog.routes import Routes
from registry.catalog.versions import REGISTRATIONS_EXPERIMENT, Catalog
from registry.errors import ModelFileError, UserError
from registry.manager import ArbiterModelManager
from registry.providers.coreml_package import RUNTIME_OVERHEAD_MB, package_sha256
from registry.selection.criteria import Criteria
from registry.selection.profiles import ProfileCache
from registry.selection.selector import LocalModelSelector
from registry.serving.pool import WarmPool
from registry.settings import Settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(platform.system() == "Darwin" and platform.machine() == "arm64",
                       reason="on Apple Silicon a CoreML version is not excluded"),
]
NEEDS_ANE = "needs ane (macOS on Apple Silicon)"
CANNOT_RUN_HERE = "CoreML models run only on macOS on Apple Silicon; this machine is"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return tiny_mlpackage(tmp_path / "tiny.mlpackage")


def test_register_records_identity_contract_and_hardware_need(catalog: Catalog, package: Path) -> None:
    record, created = catalog.register_coreml(package, name="tiny-coreml")
    spec = record.spec
    assert created and record.ref == "tiny-coreml/1" and record.status == "testing"
    assert (spec.kind, spec.source, spec.sha256) == ("coreml", str(package), package_sha256(package))
    assert (spec.architecture, spec.quantization, spec.context_window) == ("mlProgram", "float16", 8)
    assert spec.capabilities == ("text-generation",)
    assert spec.hardware.accelerators == ("ane",)
    assert spec.hardware.min_memory_mb == spec.size_bytes // 2**20 + RUNTIME_OVERHEAD_MB
    assert spec.provenance["coreml_spec_version"] == "7"
    assert spec.provenance["coreml_inputs"] == "input_ids: int32[1, 8]"
    assert spec.provenance["coreml_outputs"] == "logits: float32[1, 16]"
    assert spec.provenance["converted_with"] == "coremltools 9.0"

    stored = catalog.client.get_model_version("tiny-coreml", "1")  # what MLflow holds, read back
    assert stored.tags["arbiter.kind"] == "coreml" and stored.tags["arbiter.sha256"] == spec.sha256
    artifact = catalog.client.download_artifacts(record.run_id, "model/spec.json", str(package.parent / "dl"))
    assert json.loads(Path(artifact).read_text())["hardware"]["accelerators"] == ["ane"]

    again, created_again = catalog.register_coreml(package, name="tiny-coreml")
    assert (created_again, again.version) == (False, 1)


def test_a_changed_package_is_a_new_version(catalog: Catalog, package: Path) -> None:
    catalog.register_coreml(package, name="tiny-coreml")
    weights = package / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # inside the last blob's data: still a valid package, other weights
    weights.write_bytes(bytes(data))
    second, created = catalog.register_coreml(package, name="tiny-coreml")
    assert created and second.version == 2
    assert [r.spec.sha256 for r in catalog.list_versions(name="tiny-coreml")] == [
        catalog.get("tiny-coreml", 1).spec.sha256, package_sha256(package)]


def test_a_damaged_package_registers_nothing(catalog: Catalog, package: Path) -> None:
    (package / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelFileError, match="missing weights: Data/com.apple.CoreML/weights/weight.bin"):
        catalog.register_coreml(package, name="tiny-coreml")
    assert catalog.client.search_registered_models() == []
    experiment = catalog.client.get_experiment_by_name(REGISTRATIONS_EXPERIMENT)
    assert experiment is None or catalog.client.search_runs([experiment.experiment_id]) == []


def test_a_package_without_input_ids_needs_its_context_window(catalog: Catalog, package: Path) -> None:
    manifest_entry = package / "Data/com.apple.CoreML/model.mlmodel"
    spec_bytes = manifest_entry.read_bytes()
    manifest_entry.write_bytes(spec_bytes.replace(b"input_ids", b"token_ids"))  # same length: still a valid spec
    with pytest.raises(UserError, match=r"inputs: token_ids: int32\[1, 8\]\), so its context window is unknown; "
                                        r"pass --context-window N"):
        catalog.register_coreml(package, name="tiny-coreml")
    record, _ = catalog.register_coreml(package, name="tiny-coreml", context_window=8)
    assert record.spec.context_window == 8


@pytest.fixture
def side_by_side(catalog: Catalog, smollm2, package: Path):
    """The shipped GGUF model and the CoreML package, both registered."""
    gguf, _ = catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    coreml, _ = catalog.register_coreml(package, name="tiny-coreml")
    return gguf, coreml


def test_the_selector_excludes_it_here_and_says_why(catalog: Catalog, side_by_side) -> None:
    gguf, coreml = side_by_side
    selector = LocalModelSelector(catalog.list_versions, ProfileCache(catalog.store))
    chosen = selector.select(Criteria(task="qa"))
    assert chosen.primary.ref == gguf.ref and chosen.fallback is None
    reasons = {e.ref: e.reasons for e in chosen.excluded}
    assert list(reasons) == [coreml.ref]
    assert len(reasons[coreml.ref]) == 1 and reasons[coreml.ref][0].startswith(NEEDS_ANE)


def test_a_run_attempt_through_the_pool_is_the_clear_error(settings: Settings, side_by_side) -> None:
    _, coreml = side_by_side
    with WarmPool(settings) as pool:
        with pytest.raises(UserError) as caught:
            pool.get(coreml)
        assert not pool.is_warm(coreml)
    message = str(caught.value)
    assert CANNOT_RUN_HERE in message and "run it on a Mac worker (hardware class apple)" in message
    assert "\n" not in message and "Model prediction is only supported" not in message


def test_the_manager_answers_with_the_gguf_model_when_the_champion_is_coreml(
    settings: Settings, catalog: Catalog, side_by_side
) -> None:
    gguf, coreml = side_by_side
    Routes(catalog).promote("qa", coreml.name, coreml.version, force=True)  # as a Mac worker's promotion would
    with ArbiterModelManager(settings) as manager:
        result = manager.execute_task("Say hello.", Criteria(task="qa"))
    assert result.version == gguf.ref and result.output.strip()
    # Excluded for the hardware it needs, and (the qa task file asks for chat) for a capability it lacks.
    assert result.swapped and result.swap_reason.startswith(f"champion {coreml.ref} excluded: ")
    assert NEEDS_ANE in result.swap_reason and "chat" in result.swap_reason
