"""The OpenAI API (``/v1/*``): chat and completions in ``wire.py`` (wire types) and ``handlers.py``
(endpoints); ``embeddings.py`` (``/v1/embeddings``); the Responses API in ``responses_api.py``,
``responses_input.py`` and ``responses_wire.py``. app.py includes each module's router."""

from registry.gateway.openai_api.handlers import router

__all__ = ["router"]
