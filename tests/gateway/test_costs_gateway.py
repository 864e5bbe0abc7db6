"""Gateway calls carry the cost figures too: streamed or whole, alone or served at the same time.

A real gateway on loopback with two replicas of SmolLM2 on route ``qa``; the real ``ollama`` client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest
from support import free_port

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway import Gateway
from registry.gateway.background import gateway_in_background
from registry.settings import get_settings

pytestmark = pytest.mark.e2e

COLUMNS = ("api, ok, completion_tokens, wall_ms, cpu_ms, cpu_thread_ms, cpu_overlapped, peak_rss_mb, avg_rss_mb, "
           "gpu_ms, energy_mwh, energy_source, energy_model")


@pytest.fixture
def served(home: Path, smollm2) -> Iterator[tuple[str, Gateway]]:
    settings = get_settings(port=free_port(), replicas=2, alias_poll_s=0.2)
    catalog = Catalog(settings)
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    with gateway_in_background(settings) as running:
        yield running


def _rows(gateway: Gateway) -> list[dict]:
    gateway.recorder.flush()
    return gateway.store.query(f"select {COLUMNS} from calls where source = 'gateway' order by ts")


def test_gateway_rows_have_costs_and_calls_served_at_once_are_flagged(served) -> None:
    url, gateway = served
    client = ollama.Client(host=url)
    story = client.generate(model="qa", prompt="Write a long story about a dragon who learns to bake bread.",
                            stream=True, options={"num_predict": 200, "temperature": 0})
    next(story)  # the long stream is generating (its measure() open) ...
    short = client.generate(model="qa", prompt="Name a colour.", options={"num_predict": 4})  # ... when this runs
    assert short.done
    rest = list(story)
    assert rest and rest[-1].done
    client.generate(model="qa", prompt="Name a fruit.", options={"num_predict": 4})  # alone

    rows = _rows(gateway)
    assert len(rows) == 3 and all(r["ok"] for r in rows)
    long_row = max(rows, key=lambda r: r["completion_tokens"])
    assert long_row["completion_tokens"] > 4
    overlapped = [r["cpu_overlapped"] for r in rows]
    assert overlapped.count(True) == 2 and rows[-1]["cpu_overlapped"] is False  # the last ran alone
    assert long_row["cpu_overlapped"] is True
    for row in rows:
        # The stream is measured in its one producer thread, so the thread clock is there for it too.
        assert row["cpu_thread_ms"] is not None and 0 < row["cpu_thread_ms"] <= row["cpu_ms"]
        assert 0 < row["avg_rss_mb"] <= row["peak_rss_mb"]
        assert row["energy_mwh"] > 0 and row["energy_source"] and row["energy_model"]
        assert row["energy_source"].split("+")[0] in ("rapl", "estimate")
