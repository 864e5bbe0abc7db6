"""Real CoreML packages for the tests, built with coremltools' MIL builder (no download, ~0.2 s).

The model is a toy with an LLM's contract: ``input_ids: int32[1, 8]`` → ``logits = ids · W + 1``
with W 8×16, large enough that coremltools stores it in ``weights/weight.bin`` (what the
missing- and truncated-weights tests damage). Built once per process; each test copies it.
(Importable as ``coreml_models``: pytest puts ``tests/`` on ``sys.path`` for the root conftest.)
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from registry.providers.coreml_package import import_coremltools

SEQUENCE = 8
VOCAB = 16
SPEC_FILE = Path("Data/com.apple.CoreML/model.mlmodel")
WEIGHTS_FILE = Path("Data/com.apple.CoreML/weights/weight.bin")


@functools.cache
def _built() -> Path:
    coremltools = import_coremltools()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    weights = (np.arange(SEQUENCE * VOCAB, dtype=np.float32).reshape(SEQUENCE, VOCAB) / (SEQUENCE * VOCAB))

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, SEQUENCE), dtype=types.int32)])
    def program(input_ids):  # noqa: ANN001 — the MIL builder's variable
        scores = mb.matmul(x=mb.cast(x=input_ids, dtype="fp32"), y=weights)
        return mb.add(x=scores, y=np.float32(1.0), name="logits")

    with warnings.catch_warnings():  # an int32 → fp16 range pass in coremltools 9 warns of overflow; not ours
        warnings.simplefilter("ignore", RuntimeWarning)
        model = coremltools.convert(
            program, convert_to="mlprogram", minimum_deployment_target=coremltools.target.macOS13,
        )
    folder = Path(tempfile.mkdtemp(prefix="arbiter-coreml-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    model.save(str(folder / "tiny.mlpackage"))
    return folder / "tiny.mlpackage"


def tiny_mlpackage(destination: Path) -> Path:
    """A fresh copy of the tiny package at ``destination`` (a path ending in ``.mlpackage``)."""
    shutil.copytree(_built(), destination)
    return destination
