"""What the two HTTP providers (Ollama, OpenAI-compatible) share: timeouts, and one mapping of
transport failures into ``ProviderError``.

The gateway's circuit breaker and failover catch ``ProviderError`` only, so a refused connection,
a reset mid-stream, a timeout or an HTTP error must never escape as an ``httpx`` exception. The
message names the model and the URL, because "connection refused" alone does not say which of
several backends is down.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from registry.errors import ProviderError, UserError

# Connecting to a server on the same network is quick or not happening; a server may need a long
# time before its first byte (it loads a cold model on the first request), and a healthy one is
# quick to answer a listing, so health checks get their own short budget.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 300.0
HEALTH_TIMEOUT_S = 3.0
GENERATION_TIMEOUT = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
PROBE_TIMEOUT = httpx.Timeout(HEALTH_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)


@dataclass(frozen=True)
class RemoteModel:
    """What a server says about a model when it is registered (None where it does not say)."""

    context_window: int | None = None
    architecture: str | None = None
    quantization: str | None = None


def describe_failure(exc: Exception) -> str:
    """One line saying what went wrong on the wire, with what to check."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT_S:.0f} s; check the URL and that the server is reachable"
    if isinstance(exc, httpx.ConnectError | ConnectionError):
        return "cannot connect (is the server running? check the URL and port)"
    if isinstance(exc, httpx.TimeoutException):
        return f"the server stopped answering ({type(exc).__name__}); it may be overloaded or stuck"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return f"the connection broke mid-response ({str(exc) or type(exc).__name__})"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}: {exc.response.text[:300]}"
    if _status_of(exc) is not None:
        return f"HTTP {_status_of(exc)}: {exc}"
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def transport_errors(where: str, *also: type[Exception]) -> Iterator[None]:
    """Re-raise any ``httpx`` error (and the ``also`` types) as a ``ProviderError`` about ``where``."""
    try:
        yield
    except (httpx.HTTPError, *also) as exc:
        if _status_of(exc) in _CALLER_FAULTS:  # e.g. a prompt over the context: not the backend's failure
            raise UserError(f"{where}: the server refused the request: {describe_failure(exc)}") from exc
        raise ProviderError(f"{where}: {describe_failure(exc)}") from exc


# Statuses that say the request itself was wrong; they must not open a breaker or fail over.
_CALLER_FAULTS = frozenset({400, 413, 422})


def _status_of(exc: Exception) -> int | None:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    status = getattr(exc, "status_code", None)  # ollama.ResponseError
    return status if isinstance(status, int) else None
