"""Backends behind one Provider protocol; ``provider_for(spec)`` picks one by the spec's kind.

Backend modules are imported only when a spec of their kind needs them (llama.cpp loads a native
library on import; the HTTP backends need nothing of it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from registry.errors import UserError
from registry.providers.base import Generation, GenerationRequest, Health, Provider, Tool, ToolCall
from registry.spec import ModelSpec

if TYPE_CHECKING:
    from registry.providers.remote import RemoteModel

__all__ = [
    "Generation", "GenerationRequest", "Health", "Provider", "Tool", "ToolCall", "describe_remote", "provider_for",
]

# kind → (module, provider class) for models served by another process over HTTP
_REMOTE = {
    "ollama": ("registry.providers.ollama", "OllamaProvider"),
    "openai": ("registry.providers.openai_compat", "OpenAICompatProvider"),
}


def provider_for(
    spec: ModelSpec, *, n_threads: int, n_ctx: int, seed: int = 0, n_gpu_layers: int | None = None
) -> Provider:
    """A provider for ``spec`` (not yet loaded). ``n_threads``, ``n_ctx`` and ``n_gpu_layers`` (None:
    all layers when the build and a GPU allow) shape an in-process model only (an ONNX model takes
    ``n_threads`` alone: onnxruntime's intra-op threads); a served model runs
    as its server is configured. ``seed`` is used when a request gives none."""
    if spec.kind == "gguf":
        from registry.providers.llamacpp import LlamaCppProvider

        return LlamaCppProvider(spec, n_threads=n_threads, n_ctx=n_ctx, seed=seed, n_gpu_layers=n_gpu_layers)
    if spec.kind == "coreml":  # runs on macOS on Apple Silicon only; elsewhere it says so (providers/coreml.py)
        from registry.providers.coreml import CoreMLProvider

        return CoreMLProvider(spec)
    if spec.kind == "onnx":  # a trained text classifier run by onnxruntime (providers/onnx.py)
        from registry.providers.onnx import OnnxProvider

        return OnnxProvider(spec, n_threads=n_threads)
    if spec.kind in _REMOTE:
        module, cls = _REMOTE[spec.kind]
        return getattr(importlib.import_module(module), cls)(spec, seed=seed)
    raise UserError(
        f"no provider for kind {spec.kind!r} yet; this build serves 'gguf' files through llama.cpp, 'onnx' "
        f"text classifiers through onnxruntime, 'coreml' packages on macOS, and models served over HTTP: "
        f"{', '.join(sorted(_REMOTE))}"
    )


def describe_remote(kind: str, source: str, base_url: str | None) -> RemoteModel:
    """Ask the server of a ``kind`` model what it knows about ``source`` (raises ``ProviderError``
    when it is unreachable or does not serve that model)."""
    if kind not in _REMOTE:
        raise UserError(f"kind {kind!r} is not served over HTTP; use one of: {', '.join(sorted(_REMOTE))}")
    return importlib.import_module(_REMOTE[kind][0]).describe(source, base_url)
