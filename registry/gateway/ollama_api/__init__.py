"""The Ollama API (``/api/*``): its wire types (``wire.py``) and its endpoints (``handlers.py``)."""

from registry.gateway.ollama_api.handlers import router

__all__ = ["router"]
