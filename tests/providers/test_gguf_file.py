"""Registration's file checks: what a GGUF header says, and files that are not whole GGUF files."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.catalog.shipped import smollm2_path
from registry.errors import ModelFileError
from registry.providers.gguf_file import inspect_gguf, sha256_of

pytestmark = pytest.mark.unit


def test_reads_architecture_context_and_quantization_from_the_header() -> None:
    info = inspect_gguf(smollm2_path())
    assert info.architecture == "llama"
    assert info.context_window == 8192
    assert info.quantization == "Q4_1"
    assert info.has_chat_template
    assert info.tensor_count == 272


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"no such file"):
        inspect_gguf(tmp_path / "nope.gguf")


def test_non_gguf_file_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(ModelFileError, match=r"not a GGUF file"):
        inspect_gguf(fake)


def test_truncated_gguf_is_refused(tmp_path: Path) -> None:
    truncated = tmp_path / "half.gguf"
    with smollm2_path().open("rb") as source:
        truncated.write_bytes(source.read(20 * 1024 * 1024))
    with pytest.raises(ModelFileError, match=r"truncated"):
        inspect_gguf(truncated)


def test_header_only_gguf_is_refused(tmp_path: Path) -> None:
    stub = tmp_path / "stub.gguf"
    with smollm2_path().open("rb") as source:
        stub.write_bytes(source.read(64))
    with pytest.raises(ModelFileError, match=r"damaged or truncated|truncated"):
        inspect_gguf(stub)


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"x" * (5 * 1024 * 1024 + 3))
    assert sha256_of(sample) == hashlib.sha256(sample.read_bytes()).hexdigest()
