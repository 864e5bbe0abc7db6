"""The Ollama API (``/api/*``): its wire types (``wire.py``) and its endpoints (``handlers.py``);
``models_api.py`` the model calls clients make (``pull``, the refused ones) and the legacy
``/api/embeddings``. app.py includes each module's router."""

from registry.gateway.ollama_api.handlers import router

__all__ = ["router"]
