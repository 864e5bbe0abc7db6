"""The compatibility matrix view over real Parquet rows read through DuckDB (no model, no MLflow)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from registry.evaluation.compat_matrix import COLUMNS, compatibility_tag, matrix
from registry.results.store import ResultsStore

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
CPU = {"hardware_id": "aaaa11112222", "hardware_class": "cpu", "llama_cpp_version": "0.3.36"}
CUDA = {"hardware_id": "bbbb33334444", "hardware_class": "cuda", "llama_cpp_version": "0.3.36"}


def call(model: str, version: int, machine: dict[str, Any], *, ok: bool, minutes: int, tokens_per_s: float | None = None,
         error: str | None = None) -> dict[str, Any]:
    return {"call_id": f"{model}-{version}-{minutes}-{ok}", "ts": T0 + timedelta(minutes=minutes), "source": "benchmark",
            "model": model, "version": version, "ok": ok, "error": error, "tokens_per_s": tokens_per_s, **machine}


def run(model: str, version: int, machine: dict[str, Any], *, task: str, quality: float, tokens_per_s: float,
        minutes: int) -> dict[str, Any]:
    return {"run_id": f"{model}-{task}-{minutes}", "ts": T0 + timedelta(minutes=minutes), "task": task, "model": model,
            "version": version, "n": 2, "n_ok": 2, "quality": quality, "tokens_per_s": tokens_per_s, **machine}


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "results")
    store.append("calls", [
        call("smollm2-135m", 1, CPU, ok=True, minutes=0, tokens_per_s=100.0),
        call("smollm2-135m", 1, CPU, ok=True, minutes=1, tokens_per_s=120.0),
        call("smollm2-135m", 1, CUDA, ok=True, minutes=2, tokens_per_s=400.0),
        # The same version after a llama.cpp upgrade on the cpu class: its own runtime row.
        call("smollm2-135m", 1, {**CPU, "llama_cpp_version": "0.3.40"}, ok=True, minutes=3, tokens_per_s=130.0),
        call("tiny-coreml", 1, CPU, ok=False, minutes=4, error="needs macOS on Apple Silicon"),
        call("llama3-remote", 2, CPU, ok=True, minutes=5, tokens_per_s=30.0),
    ])
    store.append("runs", [
        # An older qa run is superseded by the newer one; classify is averaged with the newest qa.
        run("smollm2-135m", 1, CPU, task="qa", quality=0.2, tokens_per_s=90.0, minutes=0),
        run("smollm2-135m", 1, CPU, task="qa", quality=0.6, tokens_per_s=110.0, minutes=1),
        run("smollm2-135m", 1, CPU, task="classify", quality=0.8, tokens_per_s=120.0, minutes=1),
        run("smollm2-135m", 1, CUDA, task="qa", quality=0.6, tokens_per_s=400.0, minutes=2),
    ])
    return store


KINDS = {("smollm2-135m", 1): "gguf", ("tiny-coreml", 1): "coreml", ("llama3-remote", 2): "openai"}


def test_one_row_per_version_runtime_and_class_with_latest_runs(store: ResultsStore) -> None:
    rows = matrix(store, KINDS)
    assert all(tuple(r) == COLUMNS for r in rows)
    keyed = {(r["model"], r["version"], r["runtime"], r["hardware_class"]): r for r in rows}
    assert set(keyed) == {
        ("smollm2-135m", 1, "llama.cpp 0.3.36", "cpu"),
        ("smollm2-135m", 1, "llama.cpp 0.3.40", "cpu"),
        ("smollm2-135m", 1, "llama.cpp 0.3.36", "cuda"),
        ("tiny-coreml", 1, "coreml", "cpu"),
        ("llama3-remote", 2, "openai", "cpu"),
    }
    cpu = keyed[("smollm2-135m", 1, "llama.cpp 0.3.36", "cpu")]
    assert cpu["works"] is True and cpu["n_calls"] == 2 and cpu["n_ok"] == 2 and cpu["machines"] == 1
    assert cpu["quality"] == pytest.approx((0.6 + 0.8) / 2)  # the stale qa run (0.2) is not in the mean
    assert cpu["tokens_per_s"] == pytest.approx((110.0 + 120.0) / 2)
    assert cpu["tasks"] == "classify,qa"
    assert cpu["last_measured"] == (T0 + timedelta(minutes=1)).isoformat()

    upgraded = keyed[("smollm2-135m", 1, "llama.cpp 0.3.40", "cpu")]
    assert upgraded["quality"] is None and upgraded["tokens_per_s"] == pytest.approx(130.0)  # calls only

    coreml = keyed[("tiny-coreml", 1, "coreml", "cpu")]
    assert coreml["works"] is False and coreml["last_error"] == "needs macOS on Apple Silicon"
    assert keyed[("llama3-remote", 2, "openai", "cpu")]["works"] is True


def test_one_model_only_and_unknown_versions(store: ResultsStore) -> None:
    assert {r["model"] for r in matrix(store, KINDS, model="tiny-coreml")} == {"tiny-coreml"}
    # A version the catalog no longer knows still shows, with its runtime as 'unknown'.
    rows = matrix(store, {})
    assert {r["runtime"] for r in rows} == {"unknown"}


def test_empty_store_gives_no_rows(tmp_path: Path) -> None:
    assert matrix(ResultsStore(tmp_path / "results"), KINDS) == []


def test_tag_is_compact_json_per_class_newest_runtime_first(store: ResultsStore) -> None:
    rows = [r for r in matrix(store, KINDS) if r["model"] == "smollm2-135m"]
    tag = compatibility_tag(rows)
    assert " " not in tag.replace("llama.cpp ", "")
    decoded = json.loads(tag)
    assert list(decoded) == ["cpu", "cuda"]
    assert [e["runtime"] for e in decoded["cpu"]] == ["llama.cpp 0.3.40", "llama.cpp 0.3.36"]
    assert decoded["cuda"] == [{"runtime": "llama.cpp 0.3.36", "works": True, "quality": 0.6, "tokens_per_s": 400.0,
                                "tasks": "qa", "last_measured": (T0 + timedelta(minutes=2)).isoformat()}]


def test_works_follows_the_newest_attempt_and_ever_worked_remembers(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    store.append("calls", [
        # Worked at first (a benchmark run and its calls), then the deployed flow could not load it.
        {**call("broke", 1, CPU, ok=True, minutes=0, tokens_per_s=100.0), "run_id": "r0"},
        call("broke", 1, CPU, ok=False, minutes=5, error="sha256 mismatch"),
        # Failed once, then worked again after a fix: the newest run says it works.
        call("fixed", 1, CPU, ok=False, minutes=0, error="file missing"),
        {**call("fixed", 1, CPU, ok=True, minutes=5, tokens_per_s=90.0), "run_id": "r1"},
        # One item of the newest run failed (its last call): the run answered, so it works.
        {**call("flaky", 1, CPU, ok=True, minutes=4, tokens_per_s=80.0), "run_id": "r2"},
        {**call("flaky", 1, CPU, ok=False, minutes=5, error="timed out"), "run_id": "r2"},
    ])
    store.append("runs", [
        {**run("broke", 1, CPU, task="qa", quality=0.5, tokens_per_s=100.0, minutes=0), "run_id": "r0"},
        {**run("fixed", 1, CPU, task="qa", quality=0.4, tokens_per_s=90.0, minutes=5), "run_id": "r1"},
        {**run("flaky", 1, CPU, task="qa", quality=0.3, tokens_per_s=80.0, minutes=5), "run_id": "r2"},
    ])
    kinds = {("broke", 1): "gguf", ("fixed", 1): "gguf", ("flaky", 1): "gguf"}
    cells = {r["model"]: r for r in matrix(store, kinds)}
    assert (cells["broke"]["works"], cells["broke"]["ever_worked"]) == (False, True)
    assert cells["broke"]["last_error"] == "sha256 mismatch"
    assert (cells["fixed"]["works"], cells["fixed"]["ever_worked"]) == (True, True)
    assert cells["flaky"]["works"] is True

    # A newer run where nothing answered: it no longer works, though it once did.
    store.append("runs", [{**run("fixed", 1, CPU, task="qa", quality=0.0, tokens_per_s=0.0, minutes=9), "n_ok": 0}])
    cell = next(r for r in matrix(store, kinds) if r["model"] == "fixed")
    assert (cell["works"], cell["ever_worked"]) == (False, True)


def test_tag_keeps_the_newest_runtimes_per_class_and_fits_mlflow() -> None:
    rows = [
        {"model": "m", "version": 1, "runtime": f"llama.cpp 0.3.{n}", "hardware_class": "cpu", "works": True,
         "quality": 0.5, "tokens_per_s": 100.0, "tasks": "classify,extract,qa,summarize",
         "last_measured": (T0 + timedelta(days=n)).isoformat()}
        for n in range(80)
    ]
    tag = compatibility_tag(rows)
    decoded = json.loads(tag)
    assert [e["runtime"] for e in decoded["cpu"]] == [f"llama.cpp 0.3.{n}" for n in (79, 78, 77, 76, 75)]
    assert decoded["_note"].startswith("75 older runtime(s) left out")
    # A tighter limit drops more of the oldest, and the value always fits.
    small = compatibility_tag(rows, max_chars=600)
    assert len(small) <= 600 and json.loads(small)["cpu"][0]["runtime"] == "llama.cpp 0.3.79"
    assert len(compatibility_tag(rows, per_class=1000)) <= 5000
    # Even one runtime too long for the limit gives valid JSON with a note, not a failed write.
    assert "too long" in json.loads(compatibility_tag(rows[:1], max_chars=50))["_note"]
