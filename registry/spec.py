"""ModelSpec: everything a version promises about itself, validated once at registration.

A version is immutable: its spec (above all the file's sha256) is written once as MLflow version
tags plus a ``spec.json`` artifact and never edited. Only the lifecycle ``status`` moves.

A model served by another process (kinds ``ollama`` and ``openai``) has no file to hash: its
identity is what it is called on which server (see :func:`remote_identity`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from registry.errors import UserError, one_line

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
ROUTE_PREFIX = "route."
TASK_PROMPT_PREFIX = "task."  # MLflow prompt of each task: task.<name> (registry/evaluation/task_mlflow.py)


class ModelKind(StrEnum):
    GGUF = "gguf"
    OLLAMA = "ollama"
    OPENAI = "openai"
    ONNX = "onnx"
    COREML = "coreml"
    PYTORCH = "pytorch"


REMOTE_KINDS = frozenset({ModelKind.OLLAMA, ModelKind.OPENAI})


class Status(StrEnum):
    """Lifecycle of a version: new versions are ``testing`` until someone activates them."""

    TESTING = "testing"
    ACTIVE = "active"
    DEPRECATED = "deprecated"


KNOWN_CAPABILITIES = frozenset(
    {"text-generation", "chat", "json", "embedding", "scoring", "code", "classification", "tools"}
)


def known_capabilities(value: tuple[str, ...]) -> tuple[str, ...]:
    """``value`` sorted and without repeats, for a pydantic validator; ``ValueError`` naming any
    capability arbiter does not know (a version's, a task's and a selection's all use this list)."""
    unknown = sorted(set(value) - KNOWN_CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities {unknown}; known: {', '.join(sorted(KNOWN_CAPABILITIES))}")
    return tuple(sorted(set(value)))


def validate_model_name(name: str) -> str:
    """Catalog names are lowercase slugs; ``route.`` is reserved for routes, ``task.`` for the tasks'
    prompts (MLflow keeps prompts and models in one namespace)."""
    if not NAME_PATTERN.match(name):
        raise UserError(
            f"invalid model name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'smollm2-135m')"
        )
    if name.startswith(ROUTE_PREFIX):
        raise UserError(f"invalid model name {name!r}: names starting with {ROUTE_PREFIX!r} are reserved for routes")
    if name.startswith(TASK_PROMPT_PREFIX):
        raise UserError(f"invalid model name {name!r}: names starting with {TASK_PROMPT_PREFIX!r} are reserved for "
                        "the tasks' prompts; pick another name")
    return name


def normalize_base_url(kind: str, url: str | None) -> str | None:
    """The canonical form of a server URL, so the same server always gives the same identity.

    An http(s) URL without query or fragment, trailing ``/`` dropped. For ``openai`` the URL is
    the API root that ``/chat/completions`` hangs off, as in the OpenAI SDK's ``base_url``
    (``http://127.0.0.1:8000/v1``); a bare host (``http://127.0.0.1:8000``) gets ``/v1`` added,
    because that is where every OpenAI-compatible server we know puts it. A server with another
    root (``http://host/api/v1``) is taken as written. For ``ollama`` the URL is the host, as in
    ``OLLAMA_HOST``.
    """
    if url is None:
        return None
    parts = urlsplit(url.strip())
    try:
        valid = (
            parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment
            and parts.port != 0
        )
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise UserError(
            f"invalid base URL {url!r}: write the server's http(s) address, "
            "e.g. http://127.0.0.1:11434 for Ollama or http://127.0.0.1:8000/v1 for an OpenAI-compatible server"
        )
    path = parts.path.rstrip("/")
    if kind == ModelKind.OPENAI and not path:
        path = "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def remote_identity(kind: str, source: str, base_url: str | None) -> str:
    """What makes two registrations of a served model the same version: its kind, its name on
    the server and the server (``default`` for Ollama's ``OLLAMA_HOST``, resolved at serve time)."""
    return f"{kind}:{source}@{base_url or 'default'}"


# CPU features that decide whether (and how fast) a build of an inference engine runs, named as
# Linux's /proc/cpuinfo names them (macOS's sysctl names are mapped onto these). A spec may require
# some; ``arbiter hardware`` reports which of them this machine has.
KNOWN_CPU_FLAGS = frozenset({
    # x86
    "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni",
    "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512vbmi", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
    # ARM (``neon`` is also set wherever 64-bit ARM's ``asimd`` is)
    "neon", "asimd", "asimdhp", "asimddp", "fphp", "i8mm", "bf16", "sve", "sve2",
})


# Where a model can run: ``remote`` is another server (this machine's hardware does not matter),
# ``ane`` the Apple Neural Engine (CoreML). ``registry.machine.hardware.ACCELERATOR_NEEDS`` says what each needs.
KNOWN_ACCELERATORS = frozenset({"cpu", "cuda", "metal", "ane", "remote"})


class Hardware(BaseModel):
    """What the model can run on and what it needs there.

    ``accelerators`` are alternatives (any one present is enough; ``remote``: another server runs
    it, so this machine's hardware does not matter). ``cpu_flags`` must all be present — a build
    compiled for AVX-512 dies with an illegal instruction elsewhere. ``min_gpu_memory_mb`` is the
    memory the largest GPU must have when only a GPU accelerator (``cuda``) can run it. The later
    fields have defaults, so specs written before they existed load unchanged.

    Example::

        Hardware(accelerators=("cuda",), min_memory_mb=2048, min_gpu_memory_mb=6000)
        Hardware(min_memory_mb=400, cpu_flags=("avx2", "fma"))
    """

    model_config = ConfigDict(frozen=True)

    accelerators: tuple[str, ...] = ("cpu",)
    min_memory_mb: int = Field(ge=0)
    cpu_flags: tuple[str, ...] = ()
    min_gpu_memory_mb: int = Field(default=0, ge=0)

    @field_validator("cpu_flags")
    @classmethod
    def _cpu_flags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        flags = {flag.strip().lower() for flag in value}
        unknown = sorted(flags - KNOWN_CPU_FLAGS)
        if unknown:
            raise ValueError(
                f"unknown CPU flag {', '.join(unknown)}; known (as /proc/cpuinfo names them): "
                f"{', '.join(sorted(KNOWN_CPU_FLAGS))}"
            )
        return tuple(sorted(flags))

    def declared(self, needs: dict[str, Any] | None) -> Hardware:
        """These needs raised by what a person declares at registration (``cpu_flags``,
        ``min_gpu_memory_mb``, ``accelerators``, ``min_memory_mb``). A declared memory below
        this one is ignored: the figure from the file is a floor, not a guess to overrule.
        Bad input raises a one-line :class:`UserError`."""
        if not needs:
            return self
        unknown = sorted(set(needs) - set(Hardware.model_fields))
        if unknown:
            raise UserError(f"unknown hardware need {', '.join(unknown)}; use {', '.join(Hardware.model_fields)}")
        strange = sorted(set(needs.get("accelerators", ())) - KNOWN_ACCELERATORS)
        if strange:
            raise UserError(f"unknown accelerator {', '.join(strange)}; use {', '.join(sorted(KNOWN_ACCELERATORS))}")
        try:
            merged = Hardware(**{**self.model_dump(), **needs})
        except ValidationError as exc:
            raise UserError(f"invalid hardware needs: {one_line(exc.errors())}") from None
        return merged.model_copy(update={"min_memory_mb": max(self.min_memory_mb, merged.min_memory_mb)})


class ModelSpec(BaseModel):
    """One immutable model version.

    Example::

        spec = ModelSpec(name="smollm2-135m", kind="gguf", source="/abs/model.gguf", sha256="…",
                         size_bytes=98_000_000, capabilities=("chat",), context_window=8192,
                         architecture="llama", quantization="Q4_1", family="smollm2",
                         hardware=Hardware(min_memory_mb=300))
        remote = ModelSpec(name="llama3-local", kind="openai", source="llama3", context_window=8192,
                           base_url="http://127.0.0.1:8000/v1", hardware=Hardware(min_memory_mb=0))
    """

    model_config = ConfigDict(frozen=True, use_enum_values=True)

    name: str
    kind: ModelKind
    source: str
    base_url: str | None = Field(
        default=None, description="Server of an ollama/openai model; None for files (and for Ollama's default host)."
    )
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
    labels: tuple[str, ...] = Field(
        default=(), description="A classifier's output labels, in the model's order (empty for text models)."
    )
    provenance: dict[str, str] = Field(default_factory=dict)
    default_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_model_name(value)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return normalize_base_url(str(info.data.get("kind", "")), value)

    @model_validator(mode="after")
    def _served_where(self) -> ModelSpec:
        if self.kind == ModelKind.OPENAI and self.base_url is None:
            raise UserError(
                f"{self.name}: an openai model needs the server's URL; pass --base-url, "
                "e.g. --base-url http://127.0.0.1:8000/v1"
            )
        if self.base_url is not None and self.kind not in REMOTE_KINDS:
            raise UserError(
                f"{self.name}: a base URL is only for models served over HTTP (kinds ollama, openai); "
                f"a {self.kind} model runs in-process from its file"
            )
        return self

    @property
    def identity(self) -> str:
        """The file's sha256, or for a served model its :func:`remote_identity`."""
        return self.sha256 or remote_identity(str(self.kind), self.source, self.base_url)

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return known_capabilities(value)

    @property
    def can_call_tools(self) -> bool:
        """Whether this version can answer a request with tools: the one place that decides it.

        A GGUF chat version always can, tagged or not: the tool calls are decoded under our grammar
        and told in our prompt (registry/providers/tools.py), nothing the file must provide — and
        versions registered before the ``tools`` capability existed are immutable, so their tags
        cannot say it. A served model (Ollama, OpenAI-compatible) can only when registered with
        ``tools``: whether its server handles them is the server's business, declared by whoever
        registers it."""
        return "tools" in self.capabilities or (self.kind == ModelKind.GGUF and "chat" in self.capabilities)

    @property
    def is_classifier(self) -> bool:
        """A model that answers one text with one of its :attr:`labels` and nothing else (an ONNX text
        classifier): it can serve a classification task with those labels, never a chat."""
        return "classification" in self.capabilities and not {"chat", "text-generation"} & set(self.capabilities)

    def has_capability(self, capability: str) -> bool:
        """Registered with ``capability``, or, for ``tools``, able to call them all the same
        (:attr:`can_call_tools`): what a filter by capability must ask, not the tags alone."""
        return capability in self.capabilities or (capability == "tools" and self.can_call_tools)


@dataclass(frozen=True)
class VersionRecord:
    """One catalog version as the registry holds it."""

    name: str
    version: int
    status: str
    spec: ModelSpec
    created_at: datetime
    run_id: str | None

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def as_json(self) -> dict[str, Any]:
        """The JSON contract of ``arbiter models list/show --json``."""
        spec = self.spec
        return {
            "name": self.name,
            "version": self.version,
            "kind": spec.kind,
            "sha256": spec.sha256,
            "base_url": spec.base_url,
            "status": self.status,
            "capabilities": list(spec.capabilities),
            "context_window": spec.context_window,
            "architecture": spec.architecture,
            "quantization": spec.quantization,
            "family": spec.family,
            "size_bytes": spec.size_bytes,
            "source": spec.source,
            "chat_format": spec.chat_format,
            "min_memory_mb": spec.hardware.min_memory_mb,
            "labels": list(spec.labels),
            "provenance": dict(spec.provenance),
            "created_at": self.created_at.isoformat(),
        }


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"name"`` → (name, None); ``"name/3"`` → (name, 3)."""
    name, _, version = ref.partition("/")
    if not version:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise UserError(f"invalid version in {ref!r}: write NAME/VERSION with VERSION a number ≥ 1, e.g. smollm2-135m/2")
    return name, int(version)
