"""ModelSpec: everything a version promises about itself, validated once at registration.

A version is immutable: its spec (above all the file's sha256) is written once as MLflow version
tags plus a ``spec.json`` artifact and never edited. Only the lifecycle ``status`` moves.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from registry.errors import UserError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
ROUTE_PREFIX = "route."


class ModelKind(StrEnum):
    GGUF = "gguf"
    OLLAMA = "ollama"
    OPENAI = "openai"
    ONNX = "onnx"
    COREML = "coreml"
    PYTORCH = "pytorch"


class Status(StrEnum):
    """Lifecycle of a version: new versions are ``testing`` until someone activates them."""

    TESTING = "testing"
    ACTIVE = "active"
    DEPRECATED = "deprecated"


KNOWN_CAPABILITIES = frozenset(
    {"text-generation", "chat", "json", "embedding", "scoring", "code", "classification"}
)


def validate_model_name(name: str) -> str:
    """Catalog names are lowercase slugs; ``route.`` is reserved for routes."""
    if not NAME_PATTERN.match(name):
        raise UserError(
            f"invalid model name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'smollm2-135m')"
        )
    if name.startswith(ROUTE_PREFIX):
        raise UserError(f"invalid model name {name!r}: names starting with {ROUTE_PREFIX!r} are reserved for routes")
    return name


class Hardware(BaseModel):
    """What the model can run on and how much memory it needs to load."""

    model_config = ConfigDict(frozen=True)

    accelerators: tuple[str, ...] = ("cpu",)
    min_memory_mb: int = Field(ge=0)


class ModelSpec(BaseModel):
    """One immutable model version.

    Example::

        spec = ModelSpec(name="smollm2-135m", kind="gguf", source="/abs/model.gguf", sha256="…",
                         size_bytes=98_000_000, capabilities=("chat",), context_window=8192,
                         architecture="llama", quantization="Q4_1", family="smollm2",
                         hardware=Hardware(min_memory_mb=300))
    """

    model_config = ConfigDict(frozen=True, use_enum_values=True)

    name: str
    kind: ModelKind
    source: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    size_bytes: int | None = Field(default=None, ge=0)
    capabilities: tuple[str, ...] = ("text-generation",)
    context_window: int = Field(ge=1)
    architecture: str | None = None
    quantization: str | None = None
    family: str | None = None
    chat_format: str | None = Field(
        default=None, description="llama.cpp chat format for files without a chat template (e.g. 'gemma')."
    )
    hardware: Hardware
    provenance: dict[str, str] = Field(default_factory=dict)
    default_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_model_name(value)

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - KNOWN_CAPABILITIES)
        if unknown:
            raise ValueError(
                f"unknown capabilities {unknown}; known: {', '.join(sorted(KNOWN_CAPABILITIES))}"
            )
        return tuple(sorted(set(value)))
