"""A CoreML model package (``.mlpackage``): validated, described and hashed without being changed.

A package is a directory: ``Manifest.json`` names the root model (``Data/com.apple.CoreML/
model.mlmodel``, a protobuf spec) and, for an ML program, the spec's constants point into weight
files (``weights/weight.bin``, MIL blob storage). Registration checks every link of that chain, so
a damaged copy fails here, in one line, rather than on a Mac at the first request.

coremltools' own package reader (``ModelPackage``, behind ``utils.load_spec`` and ``MLModel``)
rewrites ``Manifest.json`` whenever it opens a package (seen with coremltools 9.0: a manifest with
other formatting comes back with other bytes). So the user's package is never opened through it:
the manifest is read here as JSON, the spec file is parsed by ``coremltools.utils.load_spec`` (on
the file, which only reads), and the weight files' blob headers are checked against what the
program references. For the same reason the manifest enters the package's sha256 in canonical
JSON form: a reformatting by coremltools on a Mac does not change the version's identity; any
change of content does.

coremltools is imported on first need only (it takes ~2 s) with its import-time noise silenced at
this boundary: on Linux it logs eight "Failed to load _MLModelProxy…" lines (no CoreML framework
here) and a scikit-learn version complaint, facts of the platform rather than the user's problem.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from registry.errors import ConfigError, IntegrityError, ModelFileError
from registry.spec import Hardware

SUFFIX = ".mlpackage"
MANIFEST = "Manifest.json"
ACCELERATORS = ("ane",)  # CoreML runs on Apple hardware only; the selector words it "macOS on Apple Silicon"
# The CoreML runtime's own memory beside the weights. Chosen, not measured: there is no Mac here.
RUNTIME_OVERHEAD_MB = 100
_HASH_CHUNK = 4 * 1024 * 1024
_MODEL_PATH = "@model_path/"  # how an ML program names the directory holding its spec
_BLOB_SENTINEL = 0xDEADBEEF
_BLOB_HEADER = struct.Struct("<II")  # storage header: blob count, format version (2), then reserved to 64 bytes
_BLOB_METADATA = struct.Struct("<IIQQ")  # sentinel, data type, data size, data offset (MILBlob StorageFormat.hpp)
# MILBlob BlobDataType, as coremltools 9 writes it
_BLOB_TYPES = {
    1: "float16", 2: "float32", 3: "uint8", 4: "int8", 5: "bfloat16", 6: "int16", 7: "uint16", 8: "int4",
    9: "uint1", 10: "uint2", 11: "uint4", 12: "uint3", 13: "uint6", 14: "int32", 15: "uint32",
    16: "float8e4m3fn", 17: "float8e5m2",
}
_AGAIN = "copy the whole .mlpackage again, or save the model again with coremltools (model.save('NAME.mlpackage'))"


@dataclass(frozen=True)
class CoreMLInfo:
    """What registration records of a package: its contract (inputs, outputs), spec version and size."""

    spec_version: int
    model_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    context_window: int | None
    weight_dtype: str | None
    size_bytes: int
    converted_with: str | None

    def hardware(self) -> Hardware:
        """macOS on Apple Silicon, with the weights plus the runtime's share in memory."""
        return Hardware(accelerators=ACCELERATORS, min_memory_mb=self.size_bytes // (1024 * 1024) + RUNTIME_OVERHEAD_MB)

    def provenance(self) -> dict[str, str]:
        return {
            "coreml_spec_version": str(self.spec_version),
            "coreml_model_type": self.model_type,
            "coreml_inputs": "; ".join(self.inputs),
            "coreml_outputs": "; ".join(self.outputs),
            "converted_with": self.converted_with or "",
        }


def is_mlpackage(source: str | Path) -> bool:
    """Whether ``source`` names a CoreML package (by its extension, as CoreML itself does)."""
    return str(source).rstrip("/").endswith(SUFFIX)


@functools.cache
def import_coremltools() -> ModuleType:
    """coremltools, its import-time warnings and log lines silenced here and only here: the
    logger's level is restored after, and the warning filters are what a plain import leaves
    (the filters sympy and scipy install on import are kept; ours is not), so later messages show."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            before = list(warnings.filters)
            warnings.simplefilter("ignore")
            ours = warnings.filters[0]
            import coremltools

            installed = [f for f in warnings.filters if f is not ours and f not in before]
        for action, message, category, module, lineno in reversed(installed):
            warnings.filterwarnings(action, message.pattern if message else "", category,
                                    module.pattern if module else "", lineno)
    except ImportError as exc:
        raise ConfigError(
            f"coremltools is not importable ({exc}); install it with pip install 'coremltools==9.0'"
        ) from None
    finally:
        logger.setLevel(level)
    return coremltools


def inspect_mlpackage(path: Path) -> CoreMLInfo:
    """Validate ``path`` as a complete CoreML package and describe it, without writing to it.

    Raises :class:`ModelFileError` with the fix when it is missing, a plain file, lacks or has a
    damaged ``Manifest.json``, its spec is truncated or not a spec, or weights it references are
    missing or shorter than their headers say.
    """
    if not path.exists():
        raise ModelFileError(f"{path}: no such package; check the path (a CoreML model is a .mlpackage directory)")
    if not path.is_dir():
        raise ModelFileError(
            f"{path}: a file, not a CoreML package (a .mlpackage is a directory holding Manifest.json and Data/); "
            "unzip it if it was zipped, or save the model with coremltools as NAME.mlpackage"
        )
    size = sum(file.stat().st_size for _, file in _files(path))
    spec_file = _root_model(path)
    spec = _load_spec(path, spec_file)
    model_type = spec.WhichOneof("Type")
    relative = spec_file.relative_to(path)
    if model_type is None:
        raise ModelFileError(f"{path}: its spec {relative} holds no model (cut short?); {_AGAIN}")
    if not spec.description.input or not spec.description.output:
        raise ModelFileError(f"{path}: its spec {relative} declares no inputs or no outputs; {_AGAIN}")
    inputs = tuple(_feature(f) for f in spec.description.input)
    weight_dtype = _check_weights(path, spec_file.parent, spec.mlProgram) if model_type == "mlProgram" else None
    metadata = spec.description.metadata.userDefined
    tool = metadata.get("com.github.apple.coremltools.version")
    return CoreMLInfo(
        spec_version=spec.specificationVersion,
        model_type=model_type,
        inputs=inputs,
        outputs=tuple(_feature(f) for f in spec.description.output),
        context_window=_token_window(spec.description.input),
        weight_dtype=weight_dtype,
        size_bytes=size,
        converted_with=f"coremltools {tool}" if tool else None,
    )


def package_sha256(path: Path) -> str:
    """One sha256 over every file of the package in a stable order: each file's path relative to
    the package, its length and its bytes (``Manifest.json`` as canonical JSON, see above)."""
    digest = hashlib.sha256()
    for relative, file in _files(path):
        digest.update(relative.encode() + b"\0")
        if relative == MANIFEST:
            content = _canonical_manifest(file)
            digest.update(len(content).to_bytes(8, "little") + content)
            continue
        digest.update(file.stat().st_size.to_bytes(8, "little"))
        with file.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def verify_package(spec: Any) -> Path:
    """The package of a registered version (a ``ModelSpec``), refused if it is gone or changed.

    Hashes the whole package (~1 s per GB): CoreML packages load on a Mac worker, rarely."""
    path = Path(spec.source)
    if not path.is_dir():
        raise ModelFileError(f"{spec.name}: its package {path} is gone; restore it or register the model again")
    actual = package_sha256(path)
    if actual != spec.sha256:
        raise IntegrityError(
            f"{spec.name}: {path} changed since it was registered (sha256 {actual[:12]}… ≠ {str(spec.sha256)[:12]}…); "
            "a version is immutable: restore the original package or register the new one as a new version"
        )
    return path


# --- the package's parts -------------------------------------------------------------------------


def _files(path: Path) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, file)`` for every file, sorted; a link or device file is refused:
    what it points at is not part of the package the hash would name."""
    found = []
    for folder, dirs, names in os.walk(path):
        for name in dirs + names:
            entry = Path(folder) / name
            if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
                raise ModelFileError(
                    f"{path}: {entry.relative_to(path)} is a link or a special file; copy the package with its "
                    "files (cp -RL) so that it is self-contained"
                )
        found += [(Path(folder, name).relative_to(path).as_posix(), Path(folder, name)) for name in names]
    return iter(sorted(found))


def _canonical_manifest(file: Path) -> bytes:
    raw = file.read_bytes()
    try:
        return json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except ValueError:  # damaged since registration: its raw bytes give another hash, and the load is refused
        return raw


def _root_model(path: Path) -> Path:
    """The spec file Manifest.json names as the root model, checked to exist inside the package."""
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise ModelFileError(f"{path}: no {MANIFEST}, so not a complete CoreML package; {_AGAIN}")
    try:
        manifest = json.loads(manifest_file.read_bytes())
    except ValueError as exc:
        raise ModelFileError(f"{path}: {MANIFEST} is not valid JSON ({exc}); {_AGAIN}") from None
    entries = manifest.get("itemInfoEntries") if isinstance(manifest, dict) else None
    root_id = manifest.get("rootModelIdentifier") if isinstance(manifest, dict) else None
    entry = entries.get(root_id) if isinstance(entries, dict) and isinstance(root_id, str) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ModelFileError(
            f"{path}: {MANIFEST} names no root model (rootModelIdentifier with a path among itemInfoEntries); {_AGAIN}"
        )
    data = (path / "Data").resolve()
    spec_file = (data / entry["path"]).resolve()
    if not spec_file.is_relative_to(data):
        raise ModelFileError(f"{path}: {MANIFEST}'s root model path {entry['path']!r} leads outside the package; {_AGAIN}")
    if not spec_file.is_file():
        raise ModelFileError(f"{path}: the model spec Data/{entry['path']} that {MANIFEST} names is missing; {_AGAIN}")
    return spec_file


def _load_spec(path: Path, spec_file: Path) -> Any:
    coremltools = import_coremltools()
    try:
        return coremltools.utils.load_spec(str(spec_file))
    except Exception as exc:  # protobuf's DecodeError and kin: whatever the bytes were, they are not a spec
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(
            f"{path}: its spec {spec_file.relative_to(path)} is damaged or not a CoreML spec ({reason}); {_AGAIN}"
        ) from None


def _feature(feature: Any) -> str:
    """``input_ids: int32[1, 1..512]``: a feature's name, type and shape as a person reads them."""
    kind = feature.type.WhichOneof("Type") or "unknown"
    if kind != "multiArrayType":
        return f"{feature.name}: {kind.removesuffix('Type')}"
    array = feature.type.multiArrayType
    dtype = type(array).ArrayDataType.Name(array.dataType).lower()
    return f"{feature.name}: {dtype}[{', '.join(_dims(array))}]"


def _dims(array: Any) -> list[str]:
    if array.WhichOneof("ShapeFlexibility") == "shapeRange":
        return [f"{r.lowerBound}..{r.upperBound if r.upperBound >= 0 else ''}" for r in array.shapeRange.sizeRanges]
    if array.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
        shapes = array.enumeratedShapes.shapes
        return ["|".join(sorted({str(s.shape[i]) for s in shapes})) for i in range(len(shapes[0].shape))]
    return [str(d) for d in array.shape]


def _token_window(inputs: Any) -> int | None:
    """The most tokens the model takes, read from its ``input_ids`` input's last dimension (the
    convention of Hugging Face's and Apple's LLM exports); None when it has no such bounded input."""
    feature = next((f for f in inputs if f.name == "input_ids" and f.type.WhichOneof("Type") == "multiArrayType"), None)
    if feature is None:
        return None
    array = feature.type.multiArrayType
    flexibility = array.WhichOneof("ShapeFlexibility")
    if flexibility == "shapeRange" and array.shapeRange.sizeRanges:
        upper = array.shapeRange.sizeRanges[-1].upperBound
        return upper if upper > 0 else None
    if flexibility == "enumeratedShapes":
        return max((s.shape[-1] for s in array.enumeratedShapes.shapes if s.shape), default=None)
    return array.shape[-1] if array.shape and array.shape[-1] > 0 else None


def _check_weights(path: Path, model_dir: Path, program: Any) -> str | None:
    """Every blob the program references exists, with a valid header, inside its weight file;
    returns the commonest weight data type by bytes (``float16``), None without weight files."""
    references: dict[str, set[int]] = {}
    for blob in _blob_references(program):
        references.setdefault(blob.fileName, set()).add(blob.offset)
    root = path.resolve()
    by_type: dict[str, int] = {}
    for name, offsets in sorted(references.items()):
        weights = (model_dir / name.removeprefix(_MODEL_PATH)).resolve()
        if not weights.is_relative_to(root):
            raise ModelFileError(f"{path}: the program's weight file {name!r} lies outside the package; {_AGAIN}")
        shown = weights.relative_to(root)
        if not weights.is_file():
            raise ModelFileError(f"{path}: missing weights: {shown}, which the model's program references; {_AGAIN}")
        for dtype, size in _blob_headers(path, weights, shown, offsets):
            by_type[dtype] = by_type.get(dtype, 0) + size
    return max(by_type, key=by_type.__getitem__) if by_type else None


def _blob_headers(path: Path, weights: Path, shown: Any, offsets: set[int]) -> Iterator[tuple[str, int]]:
    """``(data type, size)`` of each referenced blob, its header checked and its data inside the file."""
    size = weights.stat().st_size
    with weights.open("rb") as handle:
        header = handle.read(_BLOB_HEADER.size)
        if len(header) < _BLOB_HEADER.size or _BLOB_HEADER.unpack(header)[1] != 2:
            raise ModelFileError(f"{path}: {shown} is not a CoreML weight file (blob storage version 2); {_AGAIN}")
        for offset in sorted(offsets):
            handle.seek(offset)
            raw = handle.read(_BLOB_METADATA.size)
            if len(raw) < _BLOB_METADATA.size:
                raise ModelFileError(f"{path}: truncated weights: {shown} ends before its blob at byte {offset}; {_AGAIN}")
            sentinel, dtype, data_size, data_offset = _BLOB_METADATA.unpack(raw)
            if sentinel != _BLOB_SENTINEL:
                raise ModelFileError(f"{path}: damaged weights: {shown} has no blob header at byte {offset}; {_AGAIN}")
            if data_offset + data_size > size:
                raise ModelFileError(
                    f"{path}: truncated weights: {shown} is {size} bytes, its blob at byte {offset} needs "
                    f"{data_offset + data_size}; {_AGAIN}"
                )
            yield _BLOB_TYPES.get(dtype, f"type {dtype}"), data_size


def _blob_references(message: Any) -> Iterator[Any]:
    """Every ``BlobFileValue`` anywhere in a protobuf message (constants sit at varying depths:
    operation attributes, nested blocks, constexpr ops' inputs)."""
    stack = [message]
    while stack:
        current = stack.pop()
        if current.DESCRIPTOR.full_name == "CoreML.Specification.MILSpec.Value.BlobFileValue":
            yield current
            continue
        for field, value in current.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                stack += [v for v in value.values() if hasattr(v, "ListFields")]
            elif field.is_repeated:
                stack += list(value)
            else:
                stack.append(value)
