"""The CoreML provider off Apple Silicon: a clear error with the fix, never coremltools' bare exception."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from coreml_models import WEIGHTS_FILE, tiny_mlpackage

from registry.errors import IntegrityError, ModelFileError, UserError
from registry.providers import GenerationRequest, Provider, provider_for
from registry.providers.coreml import CoreMLProvider
from registry.providers.coreml_package import inspect_mlpackage, package_sha256, verify_package
from registry.spec import ModelSpec

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(platform.system() == "Darwin" and platform.machine() == "arm64",
                       reason="these are the paths of machines that cannot run CoreML"),
]

HERE = f"{platform.system()} {platform.machine()}"
WHY = (f"tiny-coreml: CoreML models run only on macOS on Apple Silicon; this machine is {HERE} — "
       "run it on a Mac worker (hardware class apple) or register a GGUF build of the model")


@pytest.fixture
def spec(tmp_path: Path) -> ModelSpec:
    package = tiny_mlpackage(tmp_path / "tiny.mlpackage")
    info = inspect_mlpackage(package)
    return ModelSpec(name="tiny-coreml", kind="coreml", source=str(package), sha256=package_sha256(package),
                     size_bytes=info.size_bytes, context_window=8, hardware=info.hardware(),
                     provenance=info.provenance())


def test_load_generate_and_stream_say_why_and_what_to_do(spec: ModelSpec) -> None:
    provider = provider_for(spec, n_threads=1, n_ctx=8)
    assert isinstance(provider, CoreMLProvider) and isinstance(provider, Provider)
    request = GenerationRequest(prompt="1 2 3")
    for attempt in (provider.load, lambda: provider.generate(request), lambda: provider.stream(request)):
        with pytest.raises(UserError) as caught:
            attempt()
        assert str(caught.value) == WHY
    assert provider.load_ms is None


def test_health_reports_it_without_raising(spec: ModelSpec) -> None:
    health = provider_for(spec, n_threads=1, n_ctx=8).health()
    assert (health.ok, health.detail) == (False, WHY)
    CoreMLProvider(spec).unload()  # idempotent, never loaded


def test_a_package_changed_or_gone_after_registration_is_refused(spec: ModelSpec) -> None:
    assert verify_package(spec) == Path(spec.source)
    weights = Path(spec.source) / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IntegrityError, match="changed since it was registered .* register the new one as a new version"):
        verify_package(spec)
    moved = Path(spec.source).rename(Path(spec.source).with_name("elsewhere.mlpackage"))
    with pytest.raises(ModelFileError, match="is gone; restore it or register the model again"):
        verify_package(spec)
    assert moved.is_dir()
