"""The clients people point at the gateway, as they come from PyPI (the ``clients`` dependency group),
against one real gateway per test module on the shipped SmolLM2.

The machine has no internet, and these clients reach for it unless told not to. Set here, before any
test module imports them (pytest imports a directory's conftest first), and said in docs/clients.md:
- LiteLLM fetches its model cost map from GitHub at import (and DSPy's model metadata the same map on
  first use), retrying for seconds offline: ``LITELLM_LOCAL_MODEL_COST_MAP=True`` reads the copy they ship.
- The OpenAI Agents SDK uploads traces to OpenAI: ``OPENAI_AGENTS_DISABLE_TRACING=1``.
- LangChain traces to LangSmith only when asked; ``LANGSMITH_TRACING=false`` says so whatever the shell has.
- DSPy caches answers on disk under ``~/.dspy_cache``: a cached answer would pass a test without the
  gateway, so tests pass ``cache=False``, and the directory DSPy still creates is in the run's own
  (the root conftest's, removed when the run ends).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["DSPY_CACHEDIR"] = str(Path(os.environ["ARBITER_TESTS_RUN_DIR"]) / "dspy-cache")

import pytest  # noqa: E402
from support import free_port  # noqa: E402

from registry.catalog.routes import Routes  # noqa: E402
from registry.catalog.versions import Catalog  # noqa: E402
from registry.gateway import Gateway  # noqa: E402
from registry.gateway.background import gateway_in_background  # noqa: E402
from registry.settings import get_settings  # noqa: E402

CHAT_ROUTE = "qa"  # the names `arbiter demo` gives, so docs/clients.md's snippets run here unchanged
EMBED_ROUTE = "embed"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path, shipped) -> Iterator[tuple[str, Gateway]]:
    """One gateway for the module: route ``qa`` on SmolLM2 Q4_1 (chat and tools), route ``embed`` on the
    same file registered as an embedding model, as `arbiter demo` sets them up."""
    home = tmp_path_factory.mktemp("clients-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, port=free_port(), keep_alive_s=600)
    catalog = Catalog(settings)
    smollm2 = shipped[0]
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-embed", capabilities=["embedding"])
    routes = Routes(catalog)
    routes.promote(CHAT_ROUTE, "smollm2-135m", 1, force=True)
    routes.promote(EMBED_ROUTE, "smollm2-embed", 1, force=True)
    with gateway_in_background(settings) as running:
        yield running


@pytest.fixture(scope="module")
def url(served: tuple[str, Gateway]) -> str:
    return served[0]


@pytest.fixture(scope="module")
def gateway(served: tuple[str, Gateway]) -> Gateway:
    return served[1]
