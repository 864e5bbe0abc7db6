"""`arbiter demo` as `make demo` runs it, twice: the second run adds no version and no benchmark.

The demo's own model rides along: trained from datasets/ticket-topic.train.jsonl at set-up (the
same bytes the second time, so the same version), benchmarked beside the LLMs on ticket-topic,
shown in the leaderboard and, as champion of its route, asked through the gateway by the ollama
client. ``--limit 2`` keeps the LLMs' share small: ticket-topic adds 4 versions × 2 items."""

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
    assert out.count("    new ") == 6 and "benchmarking 5 of 6 versions" in out  # the embedding version: no task
    for header in ("quality", "p50_ms", "p95_ms", "tok/s", "mWh/1k", "mWh/ans", "smollm2-135m/1", "gemma3-270m/2"):
        assert header in out  # the leaderboard tables
    for task in ("qa", "extract", "classify", "ticket-topic"):
        assert f"route {task}: champion" in out
    # The custom model: trained, registered with its provenance, benchmarked on its task only.
    assert "2/7 training the demo's own model: a text classifier for ticket-topic" in out
    assert "    new ticket-clf/1: ONNX text classifier (account, billing, shipping, technical)" in out
    assert "trained on 240 rows" in out and "5-fold cross-validated accuracy 0." in out
    (clf_row,) = [line for line in out.splitlines() if line.startswith("│ ticket-clf/1 ")]
    assert clf_row.split("│")[5].strip() == "—"  # tok/s: a classifier decodes nothing
    assert "route embed: champion smollm2-embed/1 (embeddings" in out  # for docs/clients.md's embeddings examples
    assert "tok/s" in out and "→ route qa → " in out  # answered through the gateway by the ollama client
    assert "the qa call's cost: CPU " in out and " mWh (" in out  # the gateway call's measured cost, energy with its source
    assert "feedback on it (POST /arbiter/feedback, call " in out  # the answer's call id, as an application uses it
    assert "arbiter serve" in out
    assert "mlflow ui --backend-store-uri" in out and "arbiter results sql" in out
    assert "Traceback" not in first.stderr

    listed = json.loads(arbiter("models", "list", "--json", home=home).stdout)
    assert len(listed) == 6
    assert {m["name"] for m in listed} == {"smollm2-135m", "gemma3-270m", "smollm2-embed", "ticket-clf"}
    assert all(len(m["sha256"]) == 64 for m in listed)
    (clf,) = [m for m in listed if m["name"] == "ticket-clf"]
    assert clf["labels"] == ["account", "billing", "shipping", "technical"]
    assert clf["provenance"]["training_data_rows"] == "240" and clf["provenance"]["exporter"] == "skl2onnx"
    assert clf["provenance"]["trained_for_task"].startswith("ticket-topic/")
    route = json.loads(arbiter("routes", "show", "qa", "--json", home=home).stdout)
    assert route["champion"]["model"] in {"smollm2-135m", "gemma3-270m"}
    board = json.loads(arbiter("results", "leaderboard", "--json", home=home).stdout)
    assert len(board) == 18 and all(r["n"] == 2 for r in board)  # 4 tasks × 4 LLMs + the classifier + the judged task
    assert {r["model"] for r in board if r["task"] == "ticket-topic"} == {"smollm2-135m", "gemma3-270m", "ticket-clf"}
    assert all(r["model"] != "ticket-clf" for r in board if r["task"] != "ticket-topic")  # it fits its task alone
    assert all(r["energy_mwh_per_answer"] > 0 for r in board)
    (judged,) = [r for r in board if r["task"] == "summarize"]
    assert judged["quality_source"] == f"judge:{route['champion']['model']}/{route['champion']['version']}"
    assert "a judged open-ended task" in out and "quality" in out.split("a judged open-ended task")[1]
    assert all(r["quality_source"] == "reference" for r in board if r["task"] != "summarize")
    assert all(r["energy_mwh_per_1k_tokens"] > 0 and r["energy_source"] for r in board)  # every run says its energy

    second = arbiter("demo", "--limit", "2", home=home)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("    have ") == 6 and "    new " not in second.stdout  # retrained: the same bytes
    assert "benchmarking 0 of 6 versions" in second.stdout
    runs = json.loads(arbiter("results", "sql", "--json", "select count(*) as n from runs where task = 'summarize'",
                              home=home).stdout)
    assert runs[0]["n"] == 1  # the judged task was not run again either
    assert len(json.loads(arbiter("models", "list", "--json", home=home).stdout)) == 6
    embed = json.loads(arbiter("routes", "show", "embed", "--json", home=home).stdout)
    assert (embed["champion"]["model"], embed["champion"]["version"], embed["previous"]) == ("smollm2-embed", 1, None)
    again = json.loads(arbiter("routes", "show", "qa", "--json", home=home).stdout)
    assert again["champion"] == route["champion"]
    served = json.loads(arbiter("results", "sql", "--json",
                                "select route, count(*) as n from calls where source = 'gateway' and api = 'ollama' "
                                "and ok group by route order by route", home=home).stdout)
    # One call per route asked per demo run, flushed when the gateway stopped; ticket-topic only if the classifier won.
    topic = json.loads(arbiter("routes", "show", "ticket-topic", "--json", home=home).stdout)
    if topic["champion"]["model"] == "ticket-clf":
        assert "→ route ticket-topic → ticket-clf/1 (ONNX): " in out
        answered = [line for line in out.splitlines() if "→ route ticket-topic → " in line][0]
        assert answered.split(" → ")[-1].split("'")[1] in {"billing", "technical", "account", "shipping"}
        assert served == [{"route": "qa", "n": 2}, {"route": "ticket-topic", "n": 2}]
    else:
        assert "champion is an LLM, not the trained classifier" in out and served == [{"route": "qa", "n": 2}]
    # The demo's results meet every table's Great Expectations suite (`results check` in CI, on this home).
    checked = arbiter("results", "check", "--json", home=home)
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["ok"], report["problems"]
    assert report["tables"]["calls"]["rows"] > 0 and report["tables"]["runs"]["rows"] >= 13
