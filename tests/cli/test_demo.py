"""`arbiter demo` as `make demo` runs it, twice: the second run adds no version and no benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ARBITER = Path(sys.executable).with_name("arbiter")


def arbiter(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARBITER_HOME": str(home)}
    env.pop("PREFECT_HOME", None)  # the command keeps Prefect's state under ARBITER_HOME itself
    return subprocess.run([str(ARBITER), *args], env=env, capture_output=True, text=True, timeout=1500, check=False)


def test_demo_runs_end_to_end_and_is_idempotent(home: Path) -> None:
    first = arbiter("demo", "--limit", "2", home=home)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert out.count("    new ") == 5 and "benchmarking 4 of 5 versions" in out  # the embedding version: no task
    for header in ("quality", "p50_ms", "p95_ms", "tok/s", "mWh/1k", "smollm2-135m", "gemma3-270m"):
        assert header in out  # the leaderboard tables
    for task in ("qa", "extract", "classify"):
        assert f"route {task}: champion" in out
    assert "route embed: champion smollm2-embed/1 (embeddings" in out  # for docs/clients.md's embeddings examples
    assert "tok/s" in out and "→ route qa → " in out  # answered through the gateway by the ollama client
    assert "its cost: CPU " in out and " mWh (" in out  # the gateway call's measured cost, energy with its source
    assert "feedback on it (POST /arbiter/feedback, call " in out  # the answer's call id, as an application uses it
    assert "arbiter serve" in out
    assert "mlflow ui --backend-store-uri" in out and "arbiter results sql" in out
    assert "Traceback" not in first.stderr

    listed = json.loads(arbiter("models", "list", "--json", home=home).stdout)
    assert len(listed) == 5 and {m["name"] for m in listed} == {"smollm2-135m", "gemma3-270m", "smollm2-embed"}
    assert all(len(m["sha256"]) == 64 for m in listed)
    route = json.loads(arbiter("routes", "show", "qa", "--json", home=home).stdout)
    assert route["champion"]["model"] in {"smollm2-135m", "gemma3-270m"}
    board = json.loads(arbiter("results", "leaderboard", "--json", home=home).stdout)
    assert len(board) == 13 and all(r["n"] == 2 for r in board)  # 3 tasks × 4 versions + the judged task
    (judged,) = [r for r in board if r["task"] == "summarize"]
    assert judged["quality_source"] == f"judge:{route['champion']['model']}/{route['champion']['version']}"
    assert "a judged open-ended task" in out and "quality" in out.split("a judged open-ended task")[1]
    assert all(r["quality_source"] == "reference" for r in board if r["task"] != "summarize")
    assert all(r["energy_mwh_per_1k_tokens"] > 0 and r["energy_source"] for r in board)  # every run says its energy

    second = arbiter("demo", "--limit", "2", home=home)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("    have ") == 5 and "    new " not in second.stdout
    assert "benchmarking 0 of 5 versions" in second.stdout
    runs = json.loads(arbiter("results", "sql", "--json", "select count(*) as n from runs where task = 'summarize'",
                              home=home).stdout)
    assert runs[0]["n"] == 1  # the judged task was not run again either
    assert len(json.loads(arbiter("models", "list", "--json", home=home).stdout)) == 5
    embed = json.loads(arbiter("routes", "show", "embed", "--json", home=home).stdout)
    assert (embed["champion"]["model"], embed["champion"]["version"], embed["previous"]) == ("smollm2-embed", 1, None)
    again = json.loads(arbiter("routes", "show", "qa", "--json", home=home).stdout)
    assert again["champion"] == route["champion"]
    served = json.loads(arbiter("results", "sql", "--json",
                                "select count(*) as n from calls where source = 'gateway' and api = 'ollama' and ok",
                                home=home).stdout)
    assert served[0]["n"] == 2  # one gateway call per demo run, flushed when the gateway stopped
    # The demo's results meet every table's Great Expectations suite (`results check` in CI, on this home).
    checked = arbiter("results", "check", "--json", home=home)
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["ok"], report["problems"]
    assert report["tables"]["calls"]["rows"] > 0 and report["tables"]["runs"]["rows"] >= 13
