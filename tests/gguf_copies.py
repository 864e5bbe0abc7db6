"""Test support: a copy of a real GGUF file with another chat template, as a user's edited copy would be.

The header is rewritten and the tensor data copied byte for byte behind it, re-aligned: tensor
offsets count from the start of the data section, so only the padding before it changes. The ``gguf``
package's ``GGUFReader`` would decode the whole vocabulary first (5 s for SmolLM2); this walks the
header by lengths. A copy of SmolLM2 is 98 MB: make each variant once per module (tmp_path_factory),
and without the tensors where only the header is read.
"""

from __future__ import annotations

import mmap
import shutil
import struct
from pathlib import Path

from gguf import GGUF_DEFAULT_ALIGNMENT, GGUFValueType

TEMPLATE_KEY = "tokenizer.chat_template"
_FIXED = {
    GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.BOOL: 1, GGUFValueType.UINT16: 2,
    GGUFValueType.INT16: 2, GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4,
    GGUFValueType.UINT64: 8, GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8,
}


def with_chat_template(source: Path, target: Path, template: str | None, *, tensors: bool = True,
                       key: str = TEMPLATE_KEY) -> Path:
    """Write ``target``: ``source`` with ``key`` (the default chat template, or a named one such as
    ``tokenizer.chat_template.tool_use``) set to ``template`` (added when the file has none; removed when
    ``template`` is None), every other key and every tensor unchanged.

    ``tensors`` False leaves the tensor data a hole of the same length (a sparse file, written in
    milliseconds): a whole file to a header reader, for tests that never load or serve it."""
    with source.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as head:
        entries, tensors_at, tensors_end, alignment, data_at = _layout(head)
        kept = [head[start:end] for name, start, end in entries if name != key]
        if template is not None:
            kept.append(_string(key) + struct.pack("<I", GGUFValueType.STRING) + _string(template))
        header = head[:16] + struct.pack("<Q", len(kept)) + b"".join(kept) + head[tensors_at:tensors_end]
        header += b"\0" * (-len(header) % alignment)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            out.write(header)
            if tensors:
                handle.seek(data_at)
                shutil.copyfileobj(handle, out, 16 * 1024 * 1024)
            else:
                out.truncate(len(header) + len(head) - data_at)
    return target


def _layout(head: mmap.mmap) -> tuple[list[tuple[str, int, int]], int, int, int, int]:
    """Each key with the byte range of its entry; where the tensor table starts and ends; the
    alignment; where the data section starts."""
    tensor_count, kv_count = struct.unpack_from("<QQ", head, 8)
    at, entries, alignment = 24, [], GGUF_DEFAULT_ALIGNMENT
    for _ in range(kv_count):
        start = at
        key, at = _read_string(head, at)
        (kind,) = struct.unpack_from("<I", head, at)
        value_at = at + 4
        at = _skip(head, value_at, GGUFValueType(kind))
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", head, value_at)
        entries.append((key, start, at))
    tensors_at = at
    for _ in range(tensor_count):
        _, at = _read_string(head, at)
        (dims,) = struct.unpack_from("<I", head, at)
        at += 4 + 8 * dims + 4 + 8  # dims, type, offset
    return entries, tensors_at, at, alignment, at + (-at % alignment)


def _skip(head: mmap.mmap, at: int, kind: GGUFValueType) -> int:
    if kind == GGUFValueType.STRING:
        return _read_string(head, at)[1]
    if kind == GGUFValueType.ARRAY:
        item, count = struct.unpack_from("<IQ", head, at)
        at += 12
        if GGUFValueType(item) in _FIXED:
            return at + count * _FIXED[GGUFValueType(item)]
        if item == GGUFValueType.STRING:  # a vocabulary: jumped over by lengths, not decoded
            for _ in range(count):
                at += 8 + struct.unpack_from("<Q", head, at)[0]
            return at
        for _ in range(count):
            at = _skip(head, at, GGUFValueType(item))
        return at
    return at + _FIXED[kind]


def _read_string(head: mmap.mmap, at: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", head, at)
    end = at + 8 + length
    return head[at + 8 : end].decode("utf-8"), end


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw
