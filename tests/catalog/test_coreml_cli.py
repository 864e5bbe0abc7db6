"""``arbiter`` with a CoreML package, run as a user runs it (the installed command, its own process):
register and show, a damaged package, ``select`` next to the shipped GGUF model, ``generate`` on it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pytest
from coreml_models import SPEC_FILE, tiny_mlpackage
from support import ARBITER

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.providers.coreml_package import MANIFEST, package_sha256

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(platform.system() == "Darwin" and platform.machine() == "arm64",
                       reason="on Apple Silicon a CoreML version can run"),
]


def arbiter(*args: str) -> tuple[int, str, str]:
    done = subprocess.run([ARBITER, *args], capture_output=True, text=True, timeout=300, env=dict(os.environ))
    return done.returncode, done.stdout, done.stderr


def assert_one_line_error(code: int, stderr: str, expected: str) -> None:
    assert code == 2, stderr
    assert stderr.startswith("error: ") and expected in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return tiny_mlpackage(tmp_path / "tiny.mlpackage")


def test_register_and_show_a_package(package: Path) -> None:
    code, out, err = arbiter("models", "register", str(package), "--name", "tiny-coreml", "--json")
    assert code == 0 and err == ""  # coremltools' import noise stays silent
    registered = json.loads(out)
    assert registered["created"] is True and registered["kind"] == "coreml"
    assert registered["sha256"] == package_sha256(package) and registered["context_window"] == 8
    assert registered["min_memory_mb"] >= 100 and registered["capabilities"] == ["text-generation"]

    code, out, _ = arbiter("models", "register", str(package), "--name", "tiny-coreml")
    assert code == 0 and out.startswith("already registered as tiny-coreml/1 (sha256 ")
    assert "needs macOS on Apple Silicon" in out
    code, out, _ = arbiter("models", "show", "tiny-coreml/1", "--json")
    assert code == 0 and json.loads(out)["source"] == str(package)


def _garbage_manifest(package: Path) -> None:
    (package / MANIFEST).write_text("not json at all")


def _truncated_spec(package: Path) -> None:
    spec = package / SPEC_FILE
    spec.write_bytes(spec.read_bytes()[:100])


DAMAGED = {
    "garbage manifest": (_garbage_manifest, "Manifest.json is not valid JSON"),
    "truncated spec": (_truncated_spec, "is damaged or not a CoreML spec"),
}


@pytest.mark.parametrize("damage", DAMAGED, ids=list(DAMAGED))
def test_a_damaged_package_is_one_line_and_registers_nothing(package: Path, damage: str) -> None:
    break_it, expected = DAMAGED[damage]
    break_it(package)
    code, _, err = arbiter("models", "register", str(package), "--name", "tiny-coreml")
    assert_one_line_error(code, err, expected)
    code, out, _ = arbiter("models", "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_a_plain_file_named_mlpackage_and_gguf_only_flags(tmp_path: Path, package: Path) -> None:
    plain = tmp_path / "zipped.mlpackage"
    plain.write_bytes(b"PK\x03\x04 a zip, say")
    code, _, err = arbiter("models", "register", str(plain), "--name", "tiny-coreml")
    assert_one_line_error(code, err, "a file, not a CoreML package")
    code, _, err = arbiter("models", "register", str(package), "--name", "tiny-coreml", "--chat-format", "gemma")
    assert_one_line_error(code, err, "--base-url and --chat-format are not for CoreML packages")


@pytest.fixture
def side_by_side(catalog: Catalog, smollm2, package: Path) -> Catalog:
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    code, _, err = arbiter("models", "register", str(package), "--name", "tiny-coreml")
    assert code == 0, err
    return catalog


def test_select_excludes_it_here_with_the_reason(side_by_side: Catalog) -> None:
    code, out, err = arbiter("select", "--task", "qa", "--json")
    assert code == 0, err
    chosen = json.loads(out)
    assert chosen["primary"]["ref"] == "smollm2-135m/1"
    [excluded] = chosen["excluded"]
    assert excluded["ref"] == "tiny-coreml/1"
    reasons = excluded["reasons"]
    assert any(r.startswith("needs ane (macOS on Apple Silicon); this machine has cpu") for r in reasons), reasons
    assert any("chat" in r for r in reasons), reasons  # the qa task file needs chat; the package declares text-generation


def test_generate_on_it_is_one_clear_line(side_by_side: Catalog) -> None:
    Routes(side_by_side).promote("qa", "tiny-coreml", 1, force=True)  # as a Mac worker's promotion would
    code, out, err = arbiter("generate", "--route", "qa", "Say hello.")
    assert_one_line_error(
        code, err,
        f"tiny-coreml: CoreML models run only on macOS on Apple Silicon; this machine is "
        f"{platform.system()} {platform.machine()} — run it on a Mac worker (hardware class apple) "
        "or register a GGUF build of the model",
    )
    assert out == "" and "Model prediction is only supported" not in err
