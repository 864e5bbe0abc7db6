"""arbiter: a local-first model registry and hot-swap router for LLMs.

Nothing happens at import time: no directories are created and no tracking URI is set.
Start from :func:`registry.settings.get_settings` and :class:`registry.catalog.Catalog`.
"""

__version__ = "0.1.0"
