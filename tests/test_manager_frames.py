"""The Python API a data scientist uses: a task from a DataFrame, a real benchmark of two versions in
this process, and the runs, leaderboard and per-item answers handed back as DataFrames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from registry.catalog.versions import Catalog
from registry.errors import DatasetError, NotFoundError, UserError
from registry.manager import ArbiterModelManager
from registry.settings import Settings

pytestmark = pytest.mark.integration

ITEMS = pd.DataFrame([
    {"id": "fr", "country": "France", "capital": "Paris"},
    {"id": "jp", "country": "Japan", "capital": "Tokyo"},
    {"id": "it", "country": "Italy", "capital": "Rome"},
    {"id": "eg", "country": "Egypt", "capital": "Cairo"},
])
SPEC = {
    "name": "capitals",
    "description": "Name the capital city of a country.",
    "data": {"fields": {"id": "text", "country": "text", "capital": "text"}},
    "prompt": {"template": "What is the capital of {{ country }}? Answer with the city only."},
    "generation": {"max_tokens": 8},
    "scoring": {"scorers": [{"scorer": "contains", "reference": "capital"},
                            {"scorer": "token_f1", "reference": "capital"}]},
}
VERSIONS = ["smollm2-135m/1", "smollm2-135m/2"]


@pytest.fixture
def manager(settings: Settings, catalog: Catalog, shipped) -> Iterator[ArbiterModelManager]:
    for model in shipped[:2]:  # smollm2-135m: the shipped Q4_1 file, then the Q4_0 derived from it
        catalog.register(model.path, name=model.name, capabilities=list(model.capabilities))
    with ArbiterModelManager(settings) as running:
        yield running


def test_a_frame_task_benchmarked_on_two_versions_comes_back_as_frames(manager: ArbiterModelManager) -> None:
    task = manager.add_task_frame(ITEMS, SPEC)
    assert (task.ref, len(task.items)) == ("capitals/1", 4)
    assert manager.add_task_frame(ITEMS, SPEC).ref == "capitals/1"  # the same rows and spec: the same version

    runs = manager.benchmark(VERSIONS, "capitals", limit=3)

    assert list(runs["ref"]) == VERSIONS and list(runs["version"]) == [1, 2]
    assert set(runs["task"]) == {"capitals"} and set(runs["task_version"]) == {1} and set(runs["n"]) == {3}
    assert runs["quality"].between(0, 1).all() and (runs["p50_ms"] > 0).all()
    assert pd.api.types.is_datetime64_any_dtype(runs["ts"])
    assert manager.runs("capitals").equals(runs) and manager.runs("capitals/1").equals(runs)
    assert list(manager.runs(model="smollm2-135m/2")["run_id"]) == [runs["run_id"].iloc[1]]
    assert manager.runs("capitals/2").empty and "quality" in manager.runs("capitals/2").columns

    board = manager.leaderboard("capitals")
    assert sorted(board["ref"]) == VERSIONS and board["quality"].is_monotonic_decreasing
    assert manager.leaderboard("capitals/7").empty

    answers = manager.answers("capitals")
    assert len(answers) == 6 and set(answers["ref"]) == set(VERSIONS)
    assert list(answers["item_id"][:3]) == ["fr", "jp", "it"]  # the items in the run's order
    assert answers["answer"].str.len().gt(0).all() and answers["quality"].between(0, 1).all()
    assert answers[["score_contains", "score_token_f1"]].notna().all().all()
    # combine: mean of two equally weighted scorers
    assert ((answers["score_contains"] + answers["score_token_f1"]) / 2).round(9).equals(answers["quality"].round(9))
    assert (answers["wall_ms"] > 0).all() and (answers["completion_tokens"] > 0).all()
    assert answers.groupby("ref")["quality"].mean().round(9).to_dict() == runs.set_index("ref")["quality"].round(9).to_dict()
    table = answers.pivot(index="item_id", columns="ref", values="answer")
    assert table.shape == (3, 2)

    first = runs["run_id"].iloc[0]
    assert set(manager.answers("capitals", run_ids=[first])["run_id"]) == {first}
    assert set(manager.answers("capitals", models="smollm2-135m/2")["ref"]) == {"smollm2-135m/2"}


def test_the_latest_run_per_version_on_the_newest_task_version(manager: ArbiterModelManager) -> None:
    manager.add_task_frame(ITEMS, SPEC)
    manager.benchmark("smollm2-135m/1", "capitals", limit=1)
    again = manager.benchmark("smollm2-135m/1", "capitals", limit=2)
    second = manager.add_task_frame(ITEMS.iloc[::-1], SPEC, new_version=True)
    assert second.ref == "capitals/2"
    assert manager.answers("capitals")["run_id"].unique().tolist() == [again["run_id"].iloc[0]]

    newest = manager.benchmark("smollm2-135m/1", "capitals", limit=1)

    answers = manager.answers("capitals")
    assert answers["run_id"].tolist() == [newest["run_id"].iloc[0]] and answers["item_id"].tolist() == ["eg"]
    assert set(manager.answers("capitals/1")["run_id"]) == {again["run_id"].iloc[0]}
    assert len(manager.runs("capitals")) == 3 and len(manager.runs("capitals/1")) == 2


def test_nothing_benchmarked_yet_gives_empty_frames_with_their_columns(manager: ArbiterModelManager) -> None:
    answers = manager.answers("capitals")
    assert answers.empty and {"ref", "item_id", "answer", "quality", "score_problems", "wall_ms", "energy_mwh"} <= set(answers.columns)
    assert manager.runs().empty and manager.leaderboard().empty


def test_a_task_file_and_bad_names(manager: ArbiterModelManager, tmp_path: Path) -> None:
    folder = tmp_path / "own"
    folder.mkdir()
    ITEMS.to_csv(folder / "capitals.csv", index=False)
    (folder / "capitals.yaml").write_text(
        "name: capitals\ndescription: Capitals.\ndata:\n  path: capitals.csv\n"
        "  fields: {id: text, country: text, capital: text}\n"
        "prompt: {template: 'Capital of {{ country }}?'}\n"
        "scoring: {scorers: [{scorer: exact, reference: capital}]}\n"
    )
    assert manager.add_task(folder / "capitals.yaml").ref == "capitals/1"
    with pytest.raises(DatasetError, match="already exists as version 1"):
        manager.add_task_frame(ITEMS, SPEC)

    with pytest.raises(NotFoundError, match="no-such-model"):  # resolved before anything runs
        manager.benchmark(["smollm2-135m/1", "no-such-model/1"], "capitals")
    with pytest.raises(NotFoundError, match="unknown task"):
        manager.benchmark(["smollm2-135m/1"], "no-such-task")
    needs_json = manager.add_task_frame(ITEMS, {**SPEC, "name": "capitals-json", "capabilities": ["chat", "json"]})
    with pytest.raises(UserError, match=r"smollm2-135m/1 lacks \['json'\], which task capitals-json/1 needs"):
        manager.benchmark(["smollm2-135m/1"], needs_json.name)
    assert manager.runs().empty  # nothing was recorded
