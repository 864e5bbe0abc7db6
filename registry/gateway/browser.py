"""Browser safety: which ``Host`` names and which ``Origin``\\ s the gateway answers, as Ollama does.

A web page in the user's browser can reach a gateway on loopback in two ways:

- **DNS rebinding** (Ollama's CVE-2024-28224): a page on ``evil.example`` points its own name at
  127.0.0.1 and then reads every answer as if it were same-origin. The browser still sends
  ``Host: evil.example``, so a gateway on loopback answers only loopback names (``localhost``,
  ``*.localhost``, 127.0.0.0/8, ``[::1]``) and those listed in ``ARBITER_ALLOWED_HOSTS``. Off loopback
  every endpoint needs the token, which no such page has, so any ``Host`` is answered there.
- **Cross-site requests**: any page may send a "simple" request (a ``text/plain`` POST needs no
  preflight); it cannot read the answer, but the model would run. The browser names the page in
  ``Origin`` on every such request, so one whose origin is not allowed is refused before any model
  runs. Allowed: the gateway's own origin, and those listed in ``ARBITER_ORIGINS``.

Refusals are 403 in the API's own error shape, with the setting that would allow the request. The
allowed origins get their CORS answers (preflights included) from Starlette's ``CORSMiddleware``,
configured here, so a browser app the user lists works. Requests without ``Origin`` — curl, the
``ollama`` and ``openai`` packages, every SDK — are not affected by the origin check.

Unlike Ollama, no other origin is allowed by default (Ollama allows every port of localhost and
127.0.0.1, and ``app://``, ``file://``, ``tauri://`` and browser extensions): any local process can
serve a page on a loopback port — a dev server, a notebook, a tool rendering a document someone sent —
and the browser treats each port as a separate site. Listing one is a line of configuration.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.gateway.http import error_response

# What a browser app may read from our answers: which call and version answered (feedback needs the id),
# the overhead and queue figures, and how long to wait after a 429 or 503.
EXPOSED_HEADERS = ("x-arbiter-call-id", "x-arbiter-model", "x-arbiter-overhead-ms", "x-arbiter-queue-ms", "retry-after")
ALLOWED_METHODS = ("GET", "HEAD", "POST")
_SHOWN = 100  # characters of a refused header value quoted back: enough to recognise it, never a long line


@dataclass(frozen=True)
class BrowserPolicy:
    """The Host and Origin rules of one gateway, from its settings.

    Example::

        policy = BrowserPolicy.of(hosts=(), origins=("http://localhost:3000",), any_host=False)
        policy.refusal(host="evil.example:11434", origin=None, scheme="http")   # 'Host ... is not allowed ...'
        policy.refusal(host="127.0.0.1:11434", origin="http://localhost:3000", scheme="http")   # None
    """

    hosts: tuple[str, ...]
    origin_regex: str | None
    any_host: bool

    @classmethod
    def of(cls, *, hosts: tuple[str, ...], origins: tuple[str, ...], any_host: bool) -> BrowserPolicy:
        """``hosts`` and ``origins`` as ``Settings`` keeps them (checked, lower case); ``any_host`` when
        the gateway binds off loopback (and so needs its token everywhere)."""
        return cls(hosts=hosts, origin_regex="|".join(_origin_pattern(o) for o in origins) or None, any_host=any_host)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 — one policy per app, lives as long; clients repeat their headers
    def refusal(self, *, host: str | None, origin: str | None, scheme: str) -> str | None:
        """Why this request may not be answered, or None. ``host`` and ``origin`` are the headers
        (None when absent), ``scheme`` the request's."""
        name = _host_name(host) if host else None
        if name is not None and not self.any_host and not self._known(name):
            return (f"Host {_quoted(host)} is not allowed: a gateway on loopback answers only loopback names "
                    "(localhost, 127.0.0.1, [::1]); list other names in ARBITER_ALLOWED_HOSTS")
        if origin is not None and not self._origin_allowed(origin.lower(), host, name, scheme):
            return (f"Origin {_quoted(origin)} is not allowed to call this gateway from a browser; "
                    "list it in ARBITER_ORIGINS (comma-separated)")
        return None

    def _known(self, name: str) -> bool:
        if name == "localhost" or name.endswith(".localhost") or _is_loopback_address(name):
            return True  # browsers resolve *.localhost to loopback themselves: no page can rebind them
        return any(pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:]))
                   for pattern in self.hosts)

    def _origin_allowed(self, origin: str, host: str | None, name: str | None, scheme: str) -> bool:
        if self.origin_regex is not None and re.fullmatch(self.origin_regex, origin):
            return True
        # Same-origin: a page the gateway itself served. Only under a name vouched for above — off loopback
        # any Host passes, and a rebound page's own origin would otherwise count as ours.
        return host is not None and name is not None and self._known(name) and origin == f"{scheme}://{host.lower()}"


class BrowserGuard:
    """Pure ASGI, outermost: refuses a request whose ``Host`` or ``Origin`` the policy does not allow,
    before the token check or any handler sees it (preflights included), and hands a request with an
    allowed ``Origin`` to Starlette's ``CORSMiddleware``. One without ``Origin`` (every SDK) skips CORS:
    it would only add ``Vary: Origin`` to answers no cache keeps, for ~15 µs a request."""

    def __init__(self, app: ASGIApp, *, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy
        self.cors = CORSMiddleware(
            app,
            allow_origin_regex=policy.origin_regex,
            allow_methods=ALLOWED_METHODS,
            # Whatever headers the preflight asks for: the origin is trusted already, and a fixed list goes stale
            # as SDKs add headers (the openai packages' x-stainless-*), failing the app with an opaque CORS error.
            allow_headers=["*"],
            allow_private_network=True,  # a listed public site calling this loopback gateway (Chrome's preflight)
            expose_headers=EXPOSED_HEADERS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
        refusal = self.policy.refusal(host=host, origin=origin, scheme=scope.get("scheme", "http"))
        if refusal is not None:
            await error_response(scope["path"], 403, refusal)(scope, receive, send)
        elif origin is None:
            await self.app(scope, receive, send)
        else:
            await self.cors(scope, receive, send)


def _origin_pattern(origin: str) -> str:
    """One ``ARBITER_ORIGINS`` entry as a regular expression: ``*`` alone is any origin; inside one it
    is any run of characters but ``/``, so ``https://*.example.com`` cannot reach past the host."""
    if origin == "*":
        return ".*"
    return "[^/]*".join(re.escape(part) for part in origin.split("*"))


def _host_name(host: str) -> str:
    """The name in a ``Host`` header: without port, brackets or a trailing dot, in lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.removesuffix(".")


def _is_loopback_address(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _quoted(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")
