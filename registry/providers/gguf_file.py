"""Read what a GGUF file says about itself, and refuse files that are not whole GGUF files.

Registration must be cheap and must never crash the process on a bad file, so we do not load the
model. The ``gguf`` package's ``GGUFReader`` turns every tokenizer string into a numpy view
(5 s for SmolLM2's 49k-token vocabulary, 24 s for Gemma's 262k); this module walks the same header
with ``struct`` instead, jumping over arrays it does not need by their lengths alone, and takes the
format's constants (value types, quant block sizes) from ``gguf`` so it stays in step with llama.cpp.
Of the vocabulary it reads only the two entries the chat template is given, the BOS and EOS texts.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGMLQuantizationType,
    GGUFValueType,
    LlamaFileType,
)

from registry.errors import IntegrityError, ModelFileError

GGUF_MAGIC = b"GGUF"
_TOKENS = "tokenizer.ggml.tokens"
_TEMPLATE = "tokenizer.chat_template"
_LENGTH = struct.Struct("<Q")
_HASH_CHUNK = 4 * 1024 * 1024
_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class GGUFInfo:
    """The metadata registration needs, read from the file header."""

    architecture: str
    context_window: int
    quantization: str
    model_name: str | None
    has_chat_template: bool
    tensor_count: int
    chat_template: str | None = None
    """``tokenizer.chat_template``: Jinja2 that llama-cpp-python runs on every chat request."""
    bos_token: str = ""
    """The texts of the BOS and EOS tokens, as llama-cpp-python passes them to the template ("" if none)."""
    eos_token: str = ""
    named_chat_templates: dict[str, str] = field(default_factory=dict)
    """``tokenizer.chat_template.<name>`` (e.g. ``tool_use``) by name: llama-cpp-python compiles them at load too."""


def sha256_of(path: Path) -> str:
    """Hash in chunks so a multi-GB file does not need to fit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(spec: Any) -> Path:
    """The file of a registered version (a ``ModelSpec``), refused if it is gone or changed.

    A version is immutable: a file whose sha256 differs from the one recorded at registration is
    never served, or benchmarked, under the old version's name.
    """
    return verify_recorded(spec.name, Path(spec.source), str(spec.sha256))


def verify_recorded(name: str, path: Path, sha256: str, *, what: str = "file") -> Path:
    """``path``, one of version ``name``'s files (its model file, or ``what`` else it needs, such as
    an ONNX model's tokenizer), refused if it is gone or no longer has the ``sha256`` recorded at
    registration."""
    if not path.is_file():
        raise ModelFileError(f"{name}: its {what} {path} is gone; restore it or register the model again")
    stat = path.stat()
    identity = (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    actual = _VERIFIED.get(identity) or sha256_of(path)  # hashing costs ~1 s per GB, inside every swap
    if actual != sha256:
        raise IntegrityError(
            f"{name}: its {what} {path} changed since it was registered "
            f"(sha256 {actual[:12]}… ≠ {sha256[:12]}…); a version is immutable: "
            f"restore the original {what} or register the new one as a new version"
        )
    _VERIFIED[identity] = actual
    return path


# Files this process has hashed, by (path, device, inode, size, mtime): any write to a file changes
# its mtime (or its inode, when replaced), so a changed file is hashed again before it is served.
_VERIFIED: dict[tuple[str, int, int, int, int], str] = {}


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
        if handle.read(4) != GGUF_MAGIC:
            raise ModelFileError(
                f"{path}: not a GGUF file (it does not start with b'GGUF'); "
                "convert it with llama.cpp's convert_hf_to_gguf.py or pass a .gguf file"
            )
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            try:
                metadata, tensors_end = _Header(buffer).read()
            except (struct.error, ValueError, UnicodeDecodeError, IndexError) as exc:
                raise ModelFileError(
                    f"{path}: damaged or truncated GGUF header ({exc}); copy or download the file again"
                ) from exc
            size = len(buffer)
    if tensors_end > size:
        raise ModelFileError(
            f"{path}: truncated GGUF ({size} bytes, its tensors need {tensors_end}); copy or download the file again"
        )
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str):
        raise ModelFileError(f"{path}: GGUF metadata has no general.architecture; the file was not written by a GGUF converter")
    context = metadata.get(f"{architecture}.context_length")
    if not isinstance(context, int) or context <= 0:
        raise ModelFileError(f"{path}: GGUF metadata has no {architecture}.context_length; cannot know its context window")
    name = metadata.get("general.name")
    template = metadata.get(_TEMPLATE)
    return GGUFInfo(
        architecture=architecture,
        context_window=context,
        quantization=_quantization(metadata.get("general.file_type"), metadata["_tensor_types"]),
        model_name=name if isinstance(name, str) else None,
        has_chat_template=_TEMPLATE in metadata,
        tensor_count=metadata["_tensor_count"],
        chat_template=template if isinstance(template, str) else None,
        named_chat_templates={key.removeprefix(f"{_TEMPLATE}."): value for key, value in metadata.items()
                              if key.startswith(f"{_TEMPLATE}.") and isinstance(value, str)},
        bos_token=metadata["_special_tokens"].get("bos", ""),
        eos_token=metadata["_special_tokens"].get("eos", ""),
    )


class _Header:
    """A cursor over the header: key/values (arrays skipped), then the tensor table."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer
        self.offset = 4

    def read(self) -> tuple[dict[str, Any], int]:
        version = self._unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported (2 or 3 expected)")
        tensor_count, kv_count = self._unpack("<Q"), self._unpack("<Q")
        metadata: dict[str, Any] = {}
        vocabulary = None  # where the tokens array's value starts
        for _ in range(kv_count):
            key = self._string()
            if key == _TOKENS:
                vocabulary = self.offset
            metadata[key] = self._value(GGUFValueType(self._unpack("<I")))
        metadata["_special_tokens"] = {
            which: self._vocabulary_entry(vocabulary, metadata[f"tokenizer.ggml.{which}_token_id"])
            for which in ("bos", "eos")
            if vocabulary is not None and isinstance(metadata.get(f"tokenizer.ggml.{which}_token_id"), int)
        }
        types: dict[str, int] = {}
        data_ends = []
        for _ in range(tensor_count):
            self._string()
            dims = [self._unpack("<Q") for _ in range(self._unpack("<I"))]
            kind = GGMLQuantizationType(self._unpack("<I"))
            offset = self._unpack("<Q")
            elements = 1
            for dim in dims:
                elements *= dim
            block, block_bytes = GGML_QUANT_SIZES[kind]
            data_ends.append(offset + elements // block * block_bytes)
            if len(dims) >= 2:
                types[kind.name] = types.get(kind.name, 0) + elements
        alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
        data_start = -(-self.offset // alignment) * alignment
        metadata["_tensor_types"] = types
        metadata["_tensor_count"] = tensor_count
        return metadata, data_start + max(data_ends, default=0)

    def _unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        length = self._unpack("<Q")
        end = self.offset + length
        if end > len(self.buffer):
            raise ValueError("string runs past the end of the file")
        text = self.buffer[self.offset : end].decode("utf-8")
        self.offset = end
        return text

    def _value(self, kind: GGUFValueType) -> Any:
        if kind == GGUFValueType.STRING:
            return self._string()
        if kind == GGUFValueType.ARRAY:
            item_kind = GGUFValueType(self._unpack("<I"))
            count = self._unpack("<Q")
            if item_kind in _SCALARS:  # fixed width: jump over it
                self.offset += count * struct.calcsize(_SCALARS[item_kind])
            elif item_kind == GGUFValueType.STRING:
                self.offset = self._skip_strings(self.offset, count)
            else:
                for _ in range(count):
                    self._value(item_kind)
            return None  # arrays (vocabularies, merges) are not needed to register a model
        return self._unpack(_SCALARS[kind])

    def _skip_strings(self, offset: int, count: int) -> int:
        """The offset past ``count`` strings from ``offset``, read by their lengths only: decoding each
        of a vocabulary's strings cost most of the walk."""
        unpack, end = _LENGTH.unpack_from, len(self.buffer)
        for _ in range(count):
            offset += 8 + unpack(self.buffer, offset)[0]
            if offset > end:
                raise ValueError("string runs past the end of the file")
        return offset

    def _vocabulary_entry(self, value_at: int, index: int) -> str:
        """Entry ``index`` of the vocabulary array whose value starts at ``value_at``; "" when the id is
        outside it (llama-cpp-python passes "" for a token the model does not have)."""
        kind, item_kind, count = struct.unpack_from("<IIQ", self.buffer, value_at)
        if (kind, item_kind) != (GGUFValueType.ARRAY, GGUFValueType.STRING) or not 0 <= index < count:
            return ""
        start = self._skip_strings(value_at + 16, index)
        end = self._skip_strings(start, 1)
        return self.buffer[start + 8 : end].decode("utf-8")


def _quantization(file_type: Any, tensor_types: dict[str, int]) -> str:
    """The file's declared type (``general.file_type``, e.g. ``Q4_K_M``), else its commonest weight type."""
    if isinstance(file_type, int):
        try:
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    return max(tensor_types, key=tensor_types.__getitem__) if tensor_types else "unknown"
