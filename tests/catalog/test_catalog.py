"""The catalog on a real MLflow sqlite store with the real shipped model files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from registry.catalog.versions import Catalog
from registry.errors import IntegrityError, NotFoundError, UserError
from registry.spec import Status

pytestmark = pytest.mark.integration


def test_four_versions_across_two_families(catalog: Catalog, registered) -> None:
    refs = [r.ref for r in catalog.list_versions()]
    assert refs == ["gemma3-270m/1", "gemma3-270m/2", "smollm2-135m/1", "smollm2-135m/2"]
    smol, smol_q4_0, gemma, gemma_q4_0 = registered
    assert (smol.spec.quantization, smol_q4_0.spec.quantization) == ("Q4_1", "Q4_0")
    assert gemma.spec.architecture == "gemma3" and gemma.spec.chat_format == "gemma"
    assert gemma_q4_0.spec.size_bytes < gemma.spec.size_bytes
    assert all(len(r.spec.sha256) == 64 and r.status == "testing" for r in registered)


def test_registering_the_same_file_again_returns_the_existing_version(catalog: Catalog, smollm2) -> None:
    first, created = catalog.register(smollm2.path, name="smollm2-135m")
    again, created_again = catalog.register(smollm2.path, name="smollm2-135m")
    assert (created, created_again) == (True, False)
    assert again.version == first.version
    assert [r.version for r in catalog.list_versions(name="smollm2-135m")] == [1]


def test_version_json_contract(catalog: Catalog, smollm2) -> None:
    record, _ = catalog.register(smollm2.path, name="smollm2-135m", capabilities=["chat", "json"])
    payload = record.as_json()
    for key in ("name", "version", "kind", "sha256", "status", "capabilities", "context_window"):
        assert key in payload
    assert payload["kind"] == "gguf" and payload["capabilities"] == ["chat", "json"]
    assert payload["context_window"] == 8192


def test_spec_json_artifact_is_logged(catalog: Catalog, smollm2) -> None:
    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    local = catalog.client.download_artifacts(record.run_id, "model/spec.json")
    assert record.spec.sha256 in Path(local).read_text()


def test_filters_and_status_moves(catalog: Catalog, registered) -> None:
    catalog.set_status("smollm2-135m", 1, Status.ACTIVE)
    catalog.set_status("gemma3-270m", 2, Status.DEPRECATED)
    assert [r.ref for r in catalog.list_versions(status="active")] == ["smollm2-135m/1"]
    assert [r.ref for r in catalog.list_versions(status="deprecated")] == ["gemma3-270m/2"]
    assert catalog.list_versions(capability="embedding") == []
    assert len(catalog.list_versions(capability="chat")) == 4
    events = catalog.store.query("select kind, model, version from events where kind like 'status.%' order by ts")
    assert [e["kind"] for e in events] == ["status.active", "status.deprecated"]


def test_unknown_model_and_version_name_what_exists(catalog: Catalog, registered) -> None:
    with pytest.raises(NotFoundError, match="known models: gemma3-270m, smollm2-135m"):
        catalog.get("llama-70b")
    with pytest.raises(NotFoundError, match="its versions: 1, 2"):
        catalog.get("smollm2-135m", 9)
    with pytest.raises(UserError, match="unknown status"):
        catalog.list_versions(status="retired")


def test_bad_names_and_files_leave_the_registry_unchanged(catalog: Catalog, tmp_path: Path, smollm2) -> None:
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    for path, name in ((tmp_path / "missing.gguf", "x"), (not_gguf, "x"), (smollm2.path, "Bad Name"), (smollm2.path, "route.qa")):
        with pytest.raises(UserError):
            catalog.register(path, name=name)
    assert catalog.list_versions() == []
    assert catalog.store.query("select count(*) as n from events") == [{"n": 0}]


def test_a_file_changed_after_registration_is_refused_on_load(catalog: Catalog, smollm2, tmp_path: Path) -> None:
    from registry.serving.pool import WarmPool

    copy = tmp_path / "copy.gguf"
    shutil.copy(smollm2.path, copy)
    record, _ = catalog.register(copy, name="smollm2-135m")
    with copy.open("r+b") as handle:  # flip one byte deep in the weights
        handle.seek(copy.stat().st_size - 1000)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with WarmPool(catalog.settings) as pool, pytest.raises(IntegrityError, match="changed since it was registered"):
        pool.get(record)
