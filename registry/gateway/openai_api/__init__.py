"""The OpenAI API (``/v1/*``): its wire types (``wire.py``) and its endpoints (``handlers.py``)."""

from registry.gateway.openai_api.handlers import router

__all__ = ["router"]
