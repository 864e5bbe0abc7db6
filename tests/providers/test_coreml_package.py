"""CoreML packages without MLflow: validation, the sha256 identity, damaged copies, the import boundary.

Every package is a real one built by coremltools' MIL builder (``coreml_models``); damage is done
to a copy with ordinary file operations, as a bad download or copy would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from coreml_models import SPEC_FILE, WEIGHTS_FILE, tiny_mlpackage

from registry.errors import ModelFileError
from registry.providers.coreml_package import (
    MANIFEST,
    RUNTIME_OVERHEAD_MB,
    inspect_mlpackage,
    is_mlpackage,
    package_sha256,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return tiny_mlpackage(tmp_path / "tiny.mlpackage")


def _snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    return {str(f.relative_to(path)): (f.read_bytes(), f.stat().st_mtime_ns) for f in path.rglob("*") if f.is_file()}


def test_a_built_package_validates_and_describes_its_contract(package: Path) -> None:
    info = inspect_mlpackage(package)
    assert (info.model_type, info.spec_version) == ("mlProgram", 7)  # macOS 13's ML program
    assert info.inputs == ("input_ids: int32[1, 8]",)
    assert info.outputs == ("logits: float32[1, 16]",)
    assert info.context_window == 8 and info.weight_dtype == "float16"
    assert info.size_bytes == sum(f.stat().st_size for f in package.rglob("*") if f.is_file())
    assert info.converted_with == "coremltools 9.0"
    need = info.hardware()
    assert need.accelerators == ("ane",) and need.min_memory_mb == info.size_bytes // 2**20 + RUNTIME_OVERHEAD_MB
    assert info.provenance()["coreml_inputs"] == "input_ids: int32[1, 8]"
    assert is_mlpackage(package) and is_mlpackage(f"{package}/") and not is_mlpackage("model.gguf")


def test_validation_and_hashing_write_nothing_into_the_package(package: Path) -> None:
    """coremltools' own package reader rewrites Manifest.json on open; ours must not."""
    before = _snapshot(package)
    inspect_mlpackage(package)
    package_sha256(package)
    assert _snapshot(package) == before


def test_sha256_covers_every_file_by_path_and_content(package: Path, tmp_path: Path) -> None:
    sha = package_sha256(package)
    assert len(sha) == 64 and package_sha256(tiny_mlpackage(tmp_path / "copy.mlpackage")) == sha

    weights = package / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert package_sha256(package) != sha  # one weight byte

    moved = tiny_mlpackage(tmp_path / "moved.mlpackage")
    (moved / "Data" / "extra.txt").write_text("")
    assert package_sha256(moved) != sha  # an extra (empty) file: paths are hashed too


def test_a_reformatted_manifest_keeps_the_identity_but_changed_content_does_not(package: Path) -> None:
    sha = package_sha256(package)
    manifest = package / MANIFEST
    content = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(content))  # what coremltools' package reader may do on a Mac
    assert package_sha256(package) == sha
    content["itemInfoEntries"][content["rootModelIdentifier"]]["description"] = "edited"
    manifest.write_text(json.dumps(content, indent=4))
    assert package_sha256(package) != sha


def _garbage_manifest(package: Path) -> None:
    (package / MANIFEST).write_text("{{{ not json")


def _no_manifest(package: Path) -> None:
    (package / MANIFEST).unlink()


def _manifest_without_root(package: Path) -> None:
    content = json.loads((package / MANIFEST).read_text())
    content["rootModelIdentifier"] = "nothing-by-that-id"
    (package / MANIFEST).write_text(json.dumps(content))


def _manifest_leading_outside(package: Path) -> None:
    content = json.loads((package / MANIFEST).read_text())
    content["itemInfoEntries"][content["rootModelIdentifier"]]["path"] = "../../tiny.gguf"
    (package / MANIFEST).write_text(json.dumps(content))


def _truncated_spec(package: Path) -> None:
    spec = package / SPEC_FILE
    spec.write_bytes(spec.read_bytes()[: spec.stat().st_size // 2])


def _no_spec(package: Path) -> None:
    (package / SPEC_FILE).unlink()


def _missing_weights(package: Path) -> None:
    (package / WEIGHTS_FILE).unlink()


def _truncated_weights(package: Path) -> None:
    weights = package / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-40])


def _weights_without_blob_header(package: Path) -> None:
    weights = package / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[64:68] = b"\0\0\0\0"  # the first blob's 0xDEADBEEF sentinel
    weights.write_bytes(bytes(data))


def _a_link_inside(package: Path) -> None:
    os.symlink("/etc/hostname", package / "Data" / "linked.txt")


DAMAGE = {
    "garbage Manifest.json": (_garbage_manifest, "Manifest.json is not valid JSON"),
    "no Manifest.json": (_no_manifest, "no Manifest.json, so not a complete CoreML package"),
    "manifest without its root": (_manifest_without_root, "Manifest.json names no root model"),
    "manifest leading outside": (_manifest_leading_outside, "leads outside the package"),
    "truncated model.mlmodel": (_truncated_spec, "is damaged or not a CoreML spec"),
    "no model.mlmodel": (_no_spec, "model.mlmodel that Manifest.json names is missing"),
    "missing weights": (_missing_weights, "missing weights: Data/com.apple.CoreML/weights/weight.bin"),
    "truncated weights": (_truncated_weights, "truncated weights: Data/com.apple.CoreML/weights/weight.bin is"),
    "weights without blob header": (_weights_without_blob_header, "has no blob header at byte 64"),
    "a link inside": (_a_link_inside, "Data/linked.txt is a link or a special file"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_package_is_one_line_that_says_what_and_how_to_fix(package: Path, damage: str) -> None:
    break_it, what = DAMAGE[damage]
    break_it(package)
    with pytest.raises(ModelFileError) as caught:
        inspect_mlpackage(package)
    message = str(caught.value)
    assert what in message and "\n" not in message
    assert message.startswith(str(package))
    assert "copy" in message  # the fix: copy it again (or save it again with coremltools)


def test_every_cut_of_the_spec_is_refused(package: Path) -> None:
    """A cut at a protobuf field boundary parses cleanly; it must still not pass as a model."""
    spec = package / SPEC_FILE
    whole = spec.read_bytes()
    for cut in range(0, len(whole), 3):
        spec.write_bytes(whole[:cut])
        with pytest.raises(ModelFileError):
            inspect_mlpackage(package)
    spec.write_bytes(whole)
    assert inspect_mlpackage(package).model_type == "mlProgram"


def test_not_a_package(tmp_path: Path) -> None:
    plain = tmp_path / "plain.mlpackage"
    plain.write_bytes(b"a file, not a directory")
    with pytest.raises(ModelFileError, match="a file, not a CoreML package .* unzip it if it was zipped"):
        inspect_mlpackage(plain)
    with pytest.raises(ModelFileError, match="no such package; check the path"):
        inspect_mlpackage(tmp_path / "absent.mlpackage")


_PROBE = """
import logging, sys, warnings
level = logging.getLogger("coremltools").level
{body}
assert logging.getLogger("coremltools").level == level, "the logger's level leaked"
print("coremltools" in sys.modules)
print(sorted(map(repr, warnings.filters)))
"""


def _probe(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PROBE.format(body=body)], capture_output=True, text=True,
                          timeout=300, check=True)


@pytest.mark.skipif(sys.platform == "darwin", reason="the import noise measured here is Linux's (no CoreML framework)")
def test_coremltools_import_noise_is_silenced_at_our_boundary_only() -> None:
    plain = _probe("import coremltools")
    assert "Failed to load _MLModelProxy" in plain.stderr  # the noise is real …
    ours = _probe("from registry.providers.coreml_package import import_coremltools; import_coremltools()")
    assert ours.stderr == ""  # … and gone through our boundary,
    assert ours.stdout.splitlines()[0] == "True"
    assert ours.stdout.splitlines()[1] == plain.stdout.splitlines()[1]  # leaving the filters a plain import leaves


def test_neither_the_cli_nor_a_coreml_provider_imports_coremltools_by_itself() -> None:
    body = (
        "import registry.cli.main\n"
        "from registry.providers import provider_for\n"
        "from registry.spec import Hardware, ModelSpec\n"
        "spec = ModelSpec(name='tiny', kind='coreml', source='/nowhere/tiny.mlpackage', sha256='0' * 64,\n"
        "                 context_window=8, hardware=Hardware(accelerators=('ane',), min_memory_mb=100))\n"
        "provider_for(spec, n_threads=1, n_ctx=8).health()\n"
    )
    assert _probe(body).stdout.splitlines()[0] == "False"
