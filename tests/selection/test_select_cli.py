"""``arbiter select`` and ``arbiter learnings`` as a user runs them: JSON contracts and one-line errors."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner

from registry.catalog.versions import Catalog
from registry.cli.main import cli
from registry.machine.hardware import fingerprint
from registry.results.store import now_utc

pytestmark = pytest.mark.e2e


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def runs_row(catalog: Catalog, model: str, version: int, quality: float, p50_ms: float) -> None:
    catalog.store.append("runs", [{
        "run_id": uuid.uuid4().hex, "ts": now_utc(), "task": "qa", "model": model, "version": version,
        "n": 20, "n_ok": 20, "quality": quality, "p50_ms": p50_ms, "peak_rss_mb": 300.0, **fingerprint().as_row(),
    }])


@pytest.fixture
def measured(catalog: Catalog, registered) -> Catalog:
    runs_row(catalog, "smollm2-135m", 1, 0.9, 1400.0)
    runs_row(catalog, "smollm2-135m", 2, 0.6, 800.0)
    runs_row(catalog, "gemma3-270m", 1, 0.5, 2500.0)
    return catalog


def test_select_json_contract_and_human_output(measured: Catalog) -> None:
    code, out, _ = run("select", "--task", "qa", "--max-latency-ms", "2000", "--min-samples", "10", "--json")
    assert code == 0
    payload = json.loads(out)
    assert set(payload) >= {"primary", "fallback", "candidates", "excluded", "criteria", "reasoning"}
    assert payload["primary"]["ref"] == "smollm2-135m/1" and payload["fallback"]["ref"] == "smollm2-135m/2"
    assert set(payload["primary"]["parts"]) == {"quality", "latency", "memory", "success"}
    assert {e["ref"]: e["reasons"] for e in payload["excluded"]} == {
        "gemma3-270m/1": ["too slow: p50 2500 ms over the 2000 ms limit"],
        "gemma3-270m/2": ["too few samples: 0 on qa, 10 required"],
    }
    assert payload["criteria"]["max_latency_ms"] == 2000

    code, out, _ = run("select", "--task", "qa", "--max-latency-ms", "2000")
    assert code == 0 and "smollm2-135m/1" in out and "primary" in out
    assert "excluded gemma3-270m/1: too slow" in out and out.strip().endswith(".")


def test_learnings_set_show_learn_and_their_effect_on_select(measured: Catalog) -> None:
    code, out, _ = run("learnings", "set", "qa", "--prefer", "fast", "--max-latency-ms", "1000", "--json")
    assert code == 0 and json.loads(out)["sources"] == {"prefer": "manual", "max_latency_ms": "manual"}
    code, out, _ = run("learnings", "learn", "qa", "--json")
    learned = json.loads(out)
    assert code == 0 and learned["patterns"]["versions"] == 3 and learned["prefer"] == "fast"
    assert learned["latency_target_ms"] == 1400.0
    code, out, _ = run("learnings", "show", "qa")
    assert code == 0 and "prefer: fast  (manual" in out

    payload = json.loads(run("select", "--task", "qa", "--min-samples", "10", "--json")[1])
    assert payload["primary"]["ref"] == "smollm2-135m/2"  # the task's 1,000 ms target excludes v1
    assert payload["criteria"]["prefer"] == "fast" and payload["criteria"]["max_latency_ms"] == 1000


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("select", "--task", "qa", "--capability", "telepathy"), "unknown capabilities ['telepathy']"),
        (("select", "--task", "qa", "--max-latency-ms", "-1"), "max_latency_ms: must be a number of milliseconds > 0"),
        (("select", "--task", "Q&A"), "'Q&A' is not a task name"),
        (("select", "--task", "qa", "--prefer", "cheap"), "unknown preference 'cheap'"),
        (("select", "--task", "qa", "--max-latency-ms", "10", "--min-samples", "1"), "no version can serve qa under these criteria — "),
        (("learnings", "set", "qa", "--complexity", "extreme"), "unknown complexity 'extreme'"),
        (("learnings", "learn", "classify"), "nothing measured on 'classify' yet"),
    ],
)
def test_bad_input_is_one_clean_line(measured: Catalog, args: tuple[str, ...], expected: str) -> None:
    code, _, stderr = run(*args)
    assert code == 2
    assert stderr.startswith("error: ") and expected in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
