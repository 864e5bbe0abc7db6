"""Registration's file checks: what a GGUF header says, and files that are not whole GGUF files."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf_copies import with_chat_template

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


def test_reads_the_chat_template_and_the_bos_and_eos_texts_it_is_given() -> None:
    info = inspect_gguf(smollm2_path())
    assert info.chat_template is not None and info.chat_template.startswith("{% for message in messages %}")
    assert "<|im_start|>assistant" in info.chat_template
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")  # token ids 1 and 2
    assert info.named_chat_templates == {}


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SmolLM2's header with a longer, non-ASCII template, without one, and with a named one beside
    its own (its tensors a hole)."""
    folder = tmp_path_factory.mktemp("gguf-copies")
    return {
        "replaced": with_chat_template(smollm2_path(), folder / "replaced.gguf", "{# é #}" + "{{ messages }}" * 50,
                                       tensors=False),
        "removed": with_chat_template(smollm2_path(), folder / "removed.gguf", None, tensors=False),
        "named": with_chat_template(smollm2_path(), folder / "named.gguf", "{{ tools | tojson }}", tensors=False,
                                    key="tokenizer.chat_template.tool_use"),
    }


def test_a_copy_with_another_template_reads_it_and_keeps_everything_else(copies: dict[str, Path]) -> None:
    original, copy = inspect_gguf(smollm2_path()), inspect_gguf(copies["replaced"])
    assert copy.chat_template == "{# é #}" + "{{ messages }}" * 50
    assert (copy.bos_token, copy.eos_token, copy.tensor_count, copy.quantization, copy.context_window) == (
        original.bos_token, original.eos_token, original.tensor_count, original.quantization, original.context_window)


def test_a_file_without_a_template_says_so(copies: dict[str, Path]) -> None:
    info = inspect_gguf(copies["removed"])
    assert (info.has_chat_template, info.chat_template) == (False, None)
    assert info.bos_token == "<|im_start|>"


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


def test_named_templates_are_read_beside_the_default(copies: dict[str, Path]) -> None:
    info = inspect_gguf(copies["named"])
    assert info.named_chat_templates == {"tool_use": "{{ tools | tojson }}"}
    assert info.chat_template == inspect_gguf(smollm2_path()).chat_template
