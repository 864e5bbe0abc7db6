"""What a request may ask of the version it resolved to, checked before any model runs: tokens
within its context window, a capability it was registered with, tools it can call. A request past
them is a 400 that names the bound, not a backend failure that would trip a breaker.

A text classifier (an ONNX model, ``spec.is_classifier``) takes a chat of one user text and answers
its label, so clients of a classification route need no change; what else a chat can carry (tools
here, a format or earlier turns in its provider) is refused naming what it can do."""

from __future__ import annotations

from registry.errors import UserError
from registry.providers.onnx import what_it_does
from registry.settings import Settings
from registry.spec import VersionRecord

DEFAULT_MAX_TOKENS = 256  # Ollama's default is "until the context is full"; a bound keeps a 135M model from rambling


def context_limit(settings: Settings, record: VersionRecord) -> int:
    """Tokens this version can take: llama.cpp runs with the smaller of the setting and the model's."""
    window = record.spec.context_window
    return min(window, settings.n_ctx) if record.spec.kind == "gguf" else window


def bounded_max_tokens(
    settings: Settings, record: VersionRecord, requested: int | None, *, field: str, default: int = DEFAULT_MAX_TOKENS,
    until_full: bool = False,
) -> int:
    """``requested`` checked against the context window. With ``until_full`` (Ollama's
    ``num_predict``), -1 and -2 mean "until the context is full": the limit."""
    limit = context_limit(settings, record)
    if requested is None:
        return min(default, limit)
    if until_full and requested in (-1, -2):
        return limit
    if requested < 1 or requested > limit:
        raise UserError(f"{field} must be between 1 and {limit} (the context window of {record.ref}); got {requested}")
    return requested


def check_num_ctx(record: VersionRecord, num_ctx: int | None) -> None:
    if num_ctx is None:
        return
    window = record.spec.context_window
    if num_ctx < 1 or num_ctx > window:
        raise UserError(f"options.num_ctx must be between 1 and {window} (the context window of {record.ref}); got {num_ctx}")


def require_capability(record: VersionRecord, capability: str, requested: str) -> None:
    """``capability`` registered, or a chat asked of a text classifier: it takes one user text and
    answers its label (its provider refuses any other chat by name)."""
    spec = record.spec
    if capability in spec.capabilities or (capability == "chat" and spec.is_classifier):
        return
    if spec.is_classifier:
        raise UserError(f"{requested} is served by {record.ref}, {what_it_does(spec)}; it cannot do {capability!r}")
    raise UserError(
        f"{requested} ({record.ref}) cannot do {capability!r}; its capabilities: {', '.join(spec.capabilities)}"
    )


def require_tools(record: VersionRecord, requested: str) -> None:
    """A request with tools needs a version that can call them: answering it with free text would
    leave an agent waiting for a call that never comes. The fix is the route's, not the request's."""
    if record.spec.is_classifier:
        raise UserError(f"{requested} is served by {record.ref}, {what_it_does(record.spec)}; it cannot take tools: "
                        "send the text alone, or promote a version that can call tools")
    if not record.spec.can_call_tools:
        raise UserError(
            f"{requested} is served by {record.ref}, which cannot call tools; promote a version that can, "
            "or register this model with the 'tools' capability (arbiter models register … --capability tools)"
        )
