"""The HTTP gateway: the Ollama API and the OpenAI API over routes, plus admin, health and metrics.

``Gateway`` (runtime.py) owns the parts — pool, router, dispatcher, recorder, metrics — and
``build_app`` (app.py) puts the HTTP surface on top of them.
"""

from registry.gateway.app import build_app
from registry.gateway.runtime import Gateway

__all__ = ["Gateway", "build_app"]
