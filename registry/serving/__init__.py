"""Serving one request: warm instances (pool), a breaker per instance, the router's name → version
table, and the dispatcher that leases, fails over, resumes streams and writes each ``calls`` row.

Beside the users' requests, ``shadow.py``'s ``ShadowMirror`` sends copies of a route's answered
requests to a shadow challenger (a rollout's ``--shadow`` step) only while nobody waits, through a
bounded queue that drops rather than delays; each copy is a ``calls`` row with ``source = 'shadow'``
that no user ever sees.
"""

from registry.serving.breaker import CircuitBreaker
from registry.serving.dispatcher import Dispatcher
from registry.serving.pool import WarmPool
from registry.serving.router import Router
from registry.serving.shadow import ShadowMirror

__all__ = ["CircuitBreaker", "Dispatcher", "Router", "ShadowMirror", "WarmPool"]
