"""Serving one request: warm instances (pool), a breaker per instance, the router's name → version
table, and the dispatcher that leases, fails over, resumes streams and writes each ``calls`` row.
"""

from registry.serving.breaker import CircuitBreaker
from registry.serving.dispatcher import Dispatcher
from registry.serving.pool import WarmPool
from registry.serving.router import Router

__all__ = ["CircuitBreaker", "Dispatcher", "Router", "WarmPool"]
