"""CoreML packages (``.mlpackage``) behind the Provider protocol: what can be done honestly, and no more.

CoreML runs only on Apple hardware. Elsewhere ``load``, ``generate`` and ``stream`` raise a
:class:`UserError` that says so and what to do (run it on a Mac worker, or register a GGUF build),
before coremltools is even imported — never coremltools' bare ``Exception: Model prediction is
only supported on macOS``. ``health`` reports the same without raising.

On macOS on Apple Silicon, ``load`` checks the package's sha256 and loads it with
``coremltools.models.MLModel`` (all compute units). Generating *text* is refused with a
``ProviderError``: a ``.mlpackage`` is a tensor function (``input_ids: int32[1, 512]`` →
``logits: float16[1, 512, 49152]``, say) and carries neither the tokenizer that turns a prompt into
ids and ids back into text, nor the contract of its decode loop (which output holds the logits,
whether a KV cache is a state, how positions and masks are fed). Guessing those would produce text
that is wrong in ways nobody could see; docs/coreml.md says what a real CoreML text path needs.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Generator
from typing import Any

from registry.errors import ProviderError, UserError
from registry.machine.hardware import accelerators_available
from registry.providers.base import Generation, GenerationRequest, Health
from registry.providers.coreml_package import import_coremltools, verify_package
from registry.spec import ModelSpec


class CoreMLProvider:
    """One registered CoreML version.

    Example::

        provider = CoreMLProvider(spec)
        provider.health()  # Health(ok=False, detail="…: CoreML models run only on macOS on Apple Silicon; …") on Linux
        provider.load()    # UserError on Linux; on a Mac: sha256 checked, MLModel loaded
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.load_ms: float | None = None
        self._lock = threading.Lock()
        self._model: Any = None

    def load(self) -> None:
        _require_apple_silicon(self.spec)
        with self._lock:
            if self._model is not None:
                return
            path = verify_package(self.spec)
            coremltools = import_coremltools()
            started = time.perf_counter()
            self._model = coremltools.models.MLModel(str(path), compute_units=coremltools.ComputeUnit.ALL)
            self.load_ms = (time.perf_counter() - started) * 1000

    def generate(self, request: GenerationRequest) -> Generation:
        raise self._cannot_generate()

    def stream(self, request: GenerationRequest) -> Generator[str, None, Generation]:
        raise self._cannot_generate()

    def health(self) -> Health:
        reason = _elsewhere(self.spec)
        if reason is not None:
            return Health(ok=False, detail=reason)
        return Health(ok=self._model is not None, detail="loaded" if self._model is not None else "not loaded")

    def unload(self) -> None:
        with self._lock:
            self._model = None

    def _cannot_generate(self) -> Exception:
        reason = _elsewhere(self.spec)
        if reason is not None:
            return UserError(reason)
        return ProviderError(
            f"{self.spec.name}: arbiter does not generate text with CoreML packages: a .mlpackage carries neither "
            f"its tokenizer nor its decode contract (inputs {self.spec.provenance.get('coreml_inputs', '?')}; "
            f"outputs {self.spec.provenance.get('coreml_outputs', '?')}); serve a GGUF build of the model "
            "(see docs/coreml.md)"
        )


def _elsewhere(spec: ModelSpec) -> str | None:
    """Why this machine cannot run CoreML at all, with the fix; None on macOS on Apple Silicon."""
    if "ane" in accelerators_available():
        return None
    return (
        f"{spec.name}: CoreML models run only on macOS on Apple Silicon; this machine is "
        f"{platform.system()} {platform.machine()} — run it on a Mac worker (hardware class apple) "
        "or register a GGUF build of the model"
    )


def _require_apple_silicon(spec: ModelSpec) -> None:
    reason = _elsewhere(spec)
    if reason is not None:
        raise UserError(reason)
