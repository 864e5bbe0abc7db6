"""Backends behind one Provider protocol; ``provider_for(spec)`` picks one by the spec's kind."""

from __future__ import annotations

from registry.errors import UserError
from registry.providers.base import Generation, GenerationRequest, Health, Provider
from registry.spec import ModelSpec

__all__ = ["Generation", "GenerationRequest", "Health", "Provider", "provider_for"]


def provider_for(spec: ModelSpec, *, n_threads: int, n_ctx: int, seed: int = 0) -> Provider:
    """A provider for ``spec`` (not yet loaded)."""
    if spec.kind == "gguf":
        from registry.providers.llamacpp import LlamaCppProvider

        return LlamaCppProvider(spec, n_threads=n_threads, n_ctx=n_ctx, seed=seed)
    raise UserError(f"no provider for kind {spec.kind!r} yet; this build serves 'gguf' models through llama.cpp")
