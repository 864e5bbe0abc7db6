"""Read what a GGUF file says about itself, and refuse files that are not whole GGUF files.

We use the ``gguf`` package (llama.cpp's own reader) rather than loading the model: registering a
file must be cheap and must never crash the process on a bad file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from registry.errors import ModelFileError

GGUF_MAGIC = b"GGUF"
_HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class GGUFInfo:
    """The metadata registration needs, read from the file header."""

    architecture: str
    context_window: int
    quantization: str
    model_name: str | None
    has_chat_template: bool
    tensor_count: int


def sha256_of(path: Path) -> str:
    """Hash in chunks so a multi-GB file does not need to fit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_gguf(path: Path) -> GGUFInfo:
    """Validate ``path`` as a complete GGUF file and read its metadata.

    Raises :class:`ModelFileError` with the fix when the file is missing, is not GGUF, or is
    shorter than its own tensor table says (a truncated download or copy).
    """
    if not path.exists():
        raise ModelFileError(f"{path}: no such file; check the path (it must point at a .gguf file)")
    if not path.is_file():
        raise ModelFileError(f"{path}: is not a file; pass the path of a .gguf model file")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{path}: not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
            "convert it with llama.cpp's convert_hf_to_gguf.py or pass a .gguf file"
        )
    from gguf import GGUFReader  # lazy: numpy-heavy, and only registration needs it

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # the reader raises bare ValueError/IndexError on damaged headers
        raise ModelFileError(f"{path}: damaged or truncated GGUF header ({exc}); copy or download the file again") from exc
    size = path.stat().st_size
    data_end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=reader.data_offset)
    if data_end > size:
        raise ModelFileError(
            f"{path}: truncated GGUF ({size} bytes, its tensors need {data_end}); copy or download the file again"
        )
    architecture = _field(reader, "general.architecture")
    if not isinstance(architecture, str):
        raise ModelFileError(f"{path}: GGUF metadata has no general.architecture; the file was not written by a GGUF converter")
    context = _field(reader, f"{architecture}.context_length")
    if not isinstance(context, int) or context <= 0:
        raise ModelFileError(f"{path}: GGUF metadata has no {architecture}.context_length; cannot know its context window")
    return GGUFInfo(
        architecture=architecture,
        context_window=context,
        quantization=_quantization(reader),
        model_name=name if isinstance(name := _field(reader, "general.name"), str) else None,
        has_chat_template="tokenizer.chat_template" in reader.fields,
        tensor_count=len(reader.tensors),
    )


def _field(reader: object, key: str) -> str | int | None:
    field = reader.fields.get(key)  # type: ignore[attr-defined]
    if field is None:
        return None
    value = field.contents()
    return value if isinstance(value, (str, int)) else None


def _quantization(reader: object) -> str:
    """The file's declared type (``general.file_type``, e.g. ``Q4_K_M``), else its commonest weight type."""
    from gguf import LlamaFileType

    declared = _field(reader, "general.file_type")
    if isinstance(declared, int):
        try:
            return LlamaFileType(declared).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    counts: dict[str, int] = {}
    for tensor in reader.tensors:  # type: ignore[attr-defined]
        if len(tensor.shape) >= 2:
            kind = tensor.tensor_type.name
            counts[kind] = counts.get(kind, 0) + int(tensor.n_elements)
    return max(counts, key=counts.__getitem__) if counts else "unknown"
