"""``arbiter deploy`` on several classes never leaves half its work without a word.

Against a real Prefect server: a pool that would make the second class fail is found before
anything is written; a write that fails midway says which classes were written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flows.deploy import deploy
from flows.deployed_run import BenchmarkTarget
from registry.errors import ArbiterError, UserError

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(prefect_harness, prefect_api: str) -> str:
    """The session's Prefect server: no other test writes work pools or deployments to it."""
    return prefect_api


@pytest.fixture
def clean(server: str) -> Iterator[str]:
    yield server
    for deployment in httpx.post(f"{server}/deployments/filter", json={}).json():
        httpx.delete(f"{server}/deployments/{deployment['id']}")
    for pool in httpx.post(f"{server}/work_pools/filter", json={}).json():
        if pool["name"].startswith("arbiter-"):
            httpx.delete(f"{server}/work_pools/{pool['name']}")


def state(url: str) -> tuple[list[str], list[str]]:
    pools = sorted(p["name"] for p in httpx.post(f"{url}/work_pools/filter", json={}).json()
                   if p["name"].startswith("arbiter-"))
    deployments = sorted(d["name"] for d in httpx.post(f"{url}/deployments/filter", json={}).json())
    return pools, deployments


def test_a_pool_that_would_fail_the_second_class_is_refused_before_any_write(clean: str) -> None:
    created = httpx.post(f"{clean}/work_pools/", json={"name": "arbiter-cuda", "type": "kubernetes"})
    assert created.status_code == 201, created.text
    with pytest.raises(UserError, match=r"work pool 'arbiter-cuda' exists with type 'kubernetes'.*nothing was written"):
        deploy(["cpu", "cuda"], BenchmarkTarget())
    assert state(clean) == (["arbiter-cuda"], [])  # no arbiter-cpu pool, no deployment


class SecondDeploymentFails:
    """A fake fault, named as one: the real client, except that the second ``create_deployment``
    fails as if the server went away between two writes (which no real test can time)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.creates = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def create_deployment(self, **kwargs: Any) -> Any:
        self.creates += 1
        if self.creates == 2:
            raise httpx.ConnectError("All connection attempts failed")
        return self.real.create_deployment(**kwargs)


def test_a_write_that_fails_midway_says_which_classes_were_written(clean: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as real, pytest.raises(ArbiterError) as raised:
        deploy(["cpu", "cuda"], BenchmarkTarget(), client=SecondDeploymentFails(real))
    message = str(raised.value)
    assert message.startswith("deploying the cuda class failed (ConnectError: All connection attempts failed)")
    assert "already written: arbiter-cpu and scheduled-benchmark/nightly-cpu" in message
    assert "\n" not in message
    pools, deployments = state(clean)
    assert "arbiter-cpu" in pools and deployments == ["nightly-cpu"]
