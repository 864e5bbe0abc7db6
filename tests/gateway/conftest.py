"""What every gateway test module shares: each module starts ONE real gateway as its ``served``
fixture (``(url, Gateway)``), routed as its tests need; these name its parts."""

from __future__ import annotations

import openai
import pytest

from registry.gateway.runtime import Gateway


@pytest.fixture
def url(served) -> str:
    return served[0]


@pytest.fixture
def gateway(served) -> Gateway:
    return served[1]


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    """The real ``openai`` client on the module's gateway, without retries (a 4xx/5xx shows at once)."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
