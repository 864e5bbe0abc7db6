"""The task catalog: a task file recorded as immutable versions named by the sha256 of everything it
reads, every bad input refused in one line with nothing recorded, a clashing name refused unless a new
version is asked for, the datasets folder tracked, concurrent adds of one task ending as one version,
and a task made from a pandas DataFrame."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from registry.errors import DatasetError, NotFoundError
from registry.evaluation.tasks import TaskCatalog, TaskVersion
from registry.selection.criteria import Criteria
from registry.settings import Settings, get_settings

pytestmark = pytest.mark.data

BUNDLED = Path(__file__).resolve().parents[2] / "datasets"

SPEC: dict[str, Any] = {
    "name": "support",
    "description": "Route a support ticket to the team that handles it.",
    "capabilities": ["chat", "json"],
    "data": {"path": "support.jsonl", "fields": {"id": "text", "ticket": "text", "team": "text"}},
    "prompt": {"template": "Which team handles this ticket? {{ ticket }}"},
    "generation": {"max_tokens": 8},
    "scoring": {"scorers": [{"scorer": "label", "reference": "team", "labels": ["billing", "bugs", "accounts"]}]},
}
ROWS = [
    {"id": "t1", "ticket": "I was charged twice this month", "team": "billing"},
    {"id": "t2", "ticket": "The app crashes when I log in", "team": "bugs"},
    {"id": "t3", "ticket": "Please merge my two accounts", "team": "accounts"},
]
SCORER_MODULE = '''
def short_and_right(item, answer):
    if answer == "boom":
        raise RuntimeError("the scorer broke")
    if answer == "big":
        return 1.5
    if answer == "text":
        return "x"
    return 1.0 if item["team"] in answer.lower() else 0.0
'''


def write_task(folder: Path, spec: dict[str, Any] | None = None, rows: list[Any] | None = None,
               **files: str) -> Path:
    """A task folder: ``support.yaml``, its JSONL data, and any other file (``name=text``)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = SPEC if spec is None else spec
    (folder / "support.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / spec["data"]["path"]).write_text("".join(json.dumps(r) + "\n" for r in (ROWS if rows is None else rows)))
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(text)
    return folder / "support.yaml"


def with_scorers(*scorers: dict[str, Any]) -> dict[str, Any]:
    return {**SPEC, "scoring": {"scorers": list(scorers)}}


def recorded(settings: Settings) -> list[str]:
    """Every recorded version and anything left half-written, as paths under ``tasks/``."""
    root = settings.home / "tasks"
    return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*")) if root.is_dir() else []


@pytest.fixture
def tasks(settings: Settings) -> TaskCatalog:
    return TaskCatalog(settings)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """Where the user keeps task files (ARBITER_HOME is ``tmp_path`` itself)."""
    return tmp_path / "work"


# --------------------------------------------------------------------------- versions


def test_add_records_a_snapshot_and_the_same_content_is_the_same_version(tasks: TaskCatalog, work: Path) -> None:
    path = write_task(work / "a")
    task, created = tasks.add(path)
    assert created and task.ref == "support/1" and task.source == str(path)
    assert [item.id for item in task.items] == ["t1", "t2", "t3"]
    assert sorted(p.name for p in task.directory.iterdir()) == ["data.jsonl", "task.yaml", "version.json"]
    assert (task.directory / "task.yaml").read_bytes() == path.read_bytes()
    record = json.loads((task.directory / "version.json").read_text())
    assert record["sha256"] == task.sha256 and record["n_items"] == 3 and record["version"] == 1

    again, created = tasks.add(write_task(work / "b"))  # the same bytes from another folder
    assert not created and again.ref == "support/1" and again.sha256 == task.sha256
    assert [v["version"] for v in tasks.versions("support")] == [1]


def test_the_version_covers_spec_data_and_a_local_scorer_module(tasks: TaskCatalog, work: Path) -> None:
    spec = with_scorers({"scorer": "label", "reference": "team", "labels": ["billing", "bugs", "accounts"]},
                        {"scorer": "python", "function": "myscorer:short_and_right", "reads": ["team"]})
    path = write_task(work, spec, myscorer__py=SCORER_MODULE)
    first, _ = tasks.add(path)
    assert (first.directory / "myscorer.py").read_text() == SCORER_MODULE
    edits = [
        lambda: (work / "myscorer.py").write_text(SCORER_MODULE + "\n# a comment changes the version too\n"),
        lambda: (work / "support.jsonl").write_text((work / "support.jsonl").read_text().replace("twice", "2x")),
        lambda: path.write_text(path.read_text().replace("max_tokens: 8", "max_tokens: 9")),
    ]
    shas = [first.sha256]
    for number, edit in enumerate(edits, start=2):
        edit()
        task, created = tasks.add(path, new_version=True)
        assert created and task.version == number
        shas.append(task.sha256)
    assert len(set(shas)) == 4
    assert first.data_sha256 == tasks.get("support/2").data_sha256 != tasks.get("support/3").data_sha256
    assert tasks.get("support/1").spec.generation.max_tokens == 8 and tasks.get("support").spec.generation.max_tokens == 9


def test_a_clashing_name_is_refused_unless_a_new_version_is_asked_for(
    tasks: TaskCatalog, settings: Settings, work: Path
) -> None:
    tasks.add(write_task(work / "mine"))
    theirs = write_task(work / "theirs", rows=ROWS[:2])
    with pytest.raises(DatasetError) as excinfo:
        tasks.add(theirs)
    message = str(excinfo.value)
    assert message.startswith("task 'support' already exists as version 1 (sha256 ")
    assert f"from {work / 'mine' / 'support.yaml'}) with different content; add with --new-version" in message
    assert "\n" not in message
    assert recorded(settings) == ["support/1"]

    second, created = tasks.add(theirs, new_version=True)
    assert created and second.ref == "support/2" and len(second.items) == 2
    assert len(tasks.get("support/1").items) == 3  # version 1 kept as it was
    assert tasks.get("support").ref == "support/2"
    assert tasks.add(theirs) == (tasks.get("support/2"), False)  # the same content again: no clash


def test_get_resolves_name_or_name_slash_version_and_names_what_exists(tasks: TaskCatalog, work: Path) -> None:
    tasks.add(write_task(work / "a"))
    tasks.add(write_task(work / "b", rows=ROWS[:1]), new_version=True)
    assert tasks.get("support/1").ref == "support/1" and tasks.get("support").ref == "support/2"
    with pytest.raises(NotFoundError, match=r"^task 'support' has no version '3'; its versions: 1, 2$"):
        tasks.get("support/3")
    with pytest.raises(NotFoundError, match=r"has no version 'latest'; its versions: 1, 2$"):
        tasks.get("support/latest")
    with pytest.raises(NotFoundError) as excinfo:
        tasks.get("tickets")
    assert str(excinfo.value) == ("unknown task 'tickets'; known tasks: classify, extract, qa, summarize, support, ticket-topic "
                                  "(add yours with `arbiter tasks add PATH`)")


# --------------------------------------------------------------------------- bad input records nothing

BAD_INPUTS: dict[str, tuple[dict[str, Any], str]] = {
    # name: (write_task arguments, what the one line names)
    "not yaml": ({"support__yaml": "name: support\ndescription: [oops\ndata: {}\n"}, "line 3 is not valid YAML"),
    "not a mapping": ({"support__yaml": "- name\n- support\n"}, "is not a task spec: it must be a mapping"),
    "missing key": ({"spec": {k: v for k, v in SPEC.items() if k != "prompt"}}, "prompt: required; add it"),
    "undeclared field": ({"spec": {**SPEC, "prompt": {"template": "{{ ticket }} by {{ customer }}"}}},
                         "prompt.template names customer, which data.fields does not declare"),
    "outside the sandbox": ({"spec": {**SPEC, "prompt": {"template": "{{ ticket.__class__.__mro__ }}"}}},
                            "prompt.template for item t1: the template reaches outside its sandbox"),
    "unknown scorer": ({"spec": with_scorers({"scorer": "bleu", "reference": "team"})}, "'bleu' is not a scorer"),
    "scorer not importable": ({"spec": with_scorers({"scorer": "python", "function": "nowhere_to_be_found:f"})},
                              "scorer 'nowhere_to_be_found:f' cannot be imported"),
    "scorer module raises": ({"spec": with_scorers({"scorer": "python", "function": "bad:f"}),
                              "bad__py": "import nothing_here\n"}, "scorer 'bad:f' cannot be imported"),
    "missing field": ({"rows": [ROWS[0], {"id": "t2", "team": "bugs"}]}, "not_be_null(ticket) at rows t2"),
    "wrong type": ({"rows": [ROWS[0], {**ROWS[1], "ticket": ["a", "list"]}]}, "be_in_set(ticket_is_text) at rows t2"),
    "duplicate ids": ({"rows": [ROWS[0], {**ROWS[1], "id": "t1"}]}, "be_unique(id) at rows t1 (line 1), t1 (line 2)"),
    "label outside a fixed set": ({"rows": [ROWS[0], {**ROWS[1], "team": "sales"}]}, "be_in_set(team) at rows t2"),
    "label outside the item's labels": (
        {"spec": {**SPEC, "data": {**SPEC["data"], "fields": {**SPEC["data"]["fields"], "teams": "list[text]"}},
                  "scoring": {"scorers": [{"scorer": "label", "reference": "team", "labels_field": "teams"}]}},
         "rows": [{**ROWS[0], "teams": ["billing", "bugs"]}, {**ROWS[1], "teams": ["billing", "accounts"]}]},
        "be_in_set(team_in_teams) at rows t2",
    ),
    "empty set": ({"rows": []}, "support.jsonl is empty; add at least one item"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_records_nothing(tasks: TaskCatalog, settings: Settings, work: Path,
                                                   case: str) -> None:
    arguments, expected = BAD_INPUTS[case]
    path = write_task(work, **arguments)
    with pytest.raises(DatasetError) as excinfo:
        tasks.add(path)
    message = str(excinfo.value)
    assert expected in message and "\n" not in message
    assert str(work) in message  # the file: the task file, or its data beside it
    assert recorded(settings) == []


def test_a_scorer_that_fails_on_one_item_leaves_only_that_item_unscored(tasks: TaskCatalog, work: Path) -> None:
    spec = with_scorers({"scorer": "python", "function": "myscorer:short_and_right", "reads": ["team"]},
                        {"scorer": "regex", "pattern": r"\w"})
    task, _ = tasks.add(write_task(work, spec, myscorer__py=SCORER_MODULE))  # a scorer is run per item, not at add
    item = task.items[0]
    messages = task.messages(item)
    assert task.score(item, messages, "billing").quality == 1.0
    for answer, problem in [("boom", "raised RuntimeError: the scorer broke"),
                            ("big", "returned 1.5, not a number in [0, 1]"),
                            ("text", "returned 'x', not a number in [0, 1]")]:
        scored = task.score(item, messages, answer)
        assert scored.quality is None and scored.scores == {"python": None, "regex": 1.0}
        assert scored.problems == (f"python: myscorer:short_and_right {problem}",)
    qualities = [task.score(i, task.messages(i), a).quality for i, a in zip(task.items, ["boom", "bugs", "x"],
                                                                           strict=True)]
    assert qualities == [None, 1.0, 0.5]  # what a run counts as one unscored item of three


# --------------------------------------------------------------------------- the datasets folder


@pytest.fixture
def datasets(settings: Settings) -> Path:
    """``ARBITER_HOME/datasets`` with a copy of the shipped qa task: the folder the catalog tracks."""
    folder = settings.home / "datasets"
    folder.mkdir()
    for name in ("qa.yaml", "qa.jsonl"):
        shutil.copy(BUNDLED / name, folder / name)
    return folder


def _edit_first_question(datasets: Path, question: str) -> None:
    lines = (datasets / "qa.jsonl").read_text().splitlines(keepends=True)
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "question": question}) + "\n"
    (datasets / "qa.jsonl").write_text("".join(lines))


def test_a_task_file_in_the_datasets_folder_is_tracked(tasks: TaskCatalog, datasets: Path) -> None:
    assert tasks.names() == ["qa"]  # listed before anything is recorded
    first = tasks.get("qa")
    assert first.ref == "qa/1" and first.source == str((datasets / "qa.yaml").resolve())
    assert tasks.get("qa").ref == "qa/1"  # unchanged: no new version
    _edit_first_question(datasets, "What is the capital city of France?")
    second = tasks.get("qa")
    assert second.ref == "qa/2" and second.items[0].data["question"] == "What is the capital city of France?"
    assert TaskCatalog(tasks.settings).get("qa").ref == "qa/2"  # another process sees the same
    assert tasks.get("qa/1").items[0].data["question"] == "What is the capital of France?"


def test_a_hand_added_version_is_not_overridden_by_the_folder(tasks: TaskCatalog, datasets: Path, work: Path) -> None:
    assert tasks.get("qa").ref == "qa/1"
    work.mkdir()
    shutil.copy(datasets / "qa.yaml", work / "qa.yaml")
    (work / "qa.jsonl").write_text('{"id": "mine-1", "question": "Who am I?", "references": ["you"]}\n')
    mine, created = tasks.add(work / "qa.yaml", new_version=True)
    assert created and mine.ref == "qa/2"
    _edit_first_question(datasets, "What is the capital city of France?")
    assert tasks.get("qa").ref == "qa/2"  # the hand-added version stands
    assert [v["version"] for v in tasks.versions("qa")] == [1, 2]


def test_a_home_that_gains_its_own_datasets_folder_follows_it(tasks: TaskCatalog, settings: Settings) -> None:
    """A shipped task recorded first (a promote asks for the route's contract), then the user makes
    ``ARBITER_HOME/datasets``: its qa.yaml is the one tracked from then on, not the shipped copy."""
    assert tasks.get("qa").source == str((BUNDLED / "qa.yaml").resolve())
    (settings.home / "datasets").mkdir()
    for name in ("qa.yaml", "qa.jsonl"):
        shutil.copy(BUNDLED / name, settings.home / "datasets" / name)
    _edit_first_question(settings.home / "datasets", "What is the capital city of France?")
    mine = TaskCatalog(get_settings()).get("qa")  # a later command reads the home's folder
    assert mine.ref == "qa/2" and mine.items[0].data["question"] == "What is the capital city of France?"


def test_a_folder_file_named_after_another_task_is_refused(tasks: TaskCatalog, datasets: Path) -> None:
    (datasets / "qa.yaml").rename(datasets / "quiz.yaml")
    with pytest.raises(DatasetError, match=r"quiz\.yaml declares name 'qa'; a task file in the datasets folder must "
                                           r"be named after its task \(qa\.yaml\)"):
        tasks.get("quiz")


def test_latest_and_default_names_cover_the_shipped_tasks(tasks: TaskCatalog) -> None:
    """With no datasets folder of its own, a home tracks the repository's five shipped tasks."""
    assert tasks.names() == ["classify", "extract", "qa", "summarize", "ticket-topic"]
    assert [t.ref for t in tasks.latest()] == ["classify/1", "extract/1", "qa/1", "summarize/1", "ticket-topic/1"]
    assert tasks.default_names() == ["classify", "extract", "qa", "ticket-topic"]  # the judged one runs when asked for


def test_criteria_gain_the_capabilities_a_known_task_needs(tasks: TaskCatalog, work: Path) -> None:
    tasks.add(write_task(work))
    assert tasks.criteria_for(Criteria(task="support")).capabilities == ("chat", "json")
    unknown = Criteria(task="nobody-knows")
    assert tasks.criteria_for(unknown) is unknown


# --------------------------------------------------------------------------- concurrency and DataFrames


def test_two_threads_adding_one_new_task_end_with_one_version(settings: Settings, work: Path) -> None:
    path = write_task(work)
    start = threading.Barrier(2)
    results: list[TaskVersion] = []
    errors: list[BaseException] = []

    def add() -> None:
        start.wait()
        try:
            results.append(TaskCatalog(settings).add(path)[0])
        except BaseException as exc:  # a failure in the thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and [t.ref for t in results] == ["support/1", "support/1"]
    assert recorded(settings) == ["support/1"]  # no second version, no staging folder left


def test_a_task_from_a_dataframe(tasks: TaskCatalog, settings: Settings) -> None:
    frame = pd.DataFrame(ROWS)
    spec = {k: v for k, v in SPEC.items() if k != "data"} | {"data": {"fields": SPEC["data"]["fields"]}}
    task, created = tasks.add_frame(frame, spec)
    assert created and task.ref == "support/1"
    assert [item.data for item in task.items] == ROWS
    assert task.source == str(settings.home / "task-files" / "support" / "support.yaml")
    assert tasks.add_frame(frame, spec) == (task, False)
    changed, created = tasks.add_frame(frame.head(2), spec, new_version=True)
    assert created and changed.ref == "support/2" and len(changed.items) == 2


def test_a_refused_dataframe_leaves_the_last_good_folder_as_it_was(tasks: TaskCatalog, settings: Settings) -> None:
    spec = {k: v for k, v in SPEC.items() if k != "data"} | {"data": {"fields": SPEC["data"]["fields"]}}
    task, _ = tasks.add_frame(pd.DataFrame(ROWS), spec)
    folder = settings.home / "task-files"
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(DatasetError, match="already exists as version 1"):
        tasks.add_frame(pd.DataFrame(ROWS).head(2), spec)  # different content, no new_version
    bad = [{**row, "id": ROWS[0]["id"]} for row in ROWS]  # duplicate ids
    with pytest.raises(DatasetError, match="be_unique"):
        tasks.add_frame(pd.DataFrame(bad), spec, new_version=True)
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert recorded(settings) == [task.ref]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({**SPEC, "name": "Not A Name"}, "spec name 'Not A Name' is not a task name; use a lowercase slug"),
        ({**SPEC, "data": {**SPEC["data"], "path": "support.csv"}}, "add_frame writes the rows as JSON Lines"),
    ],
)
def test_a_dataframe_with_a_bad_spec_is_refused(tasks: TaskCatalog, settings: Settings, spec: dict[str, Any],
                                                expected: str) -> None:
    with pytest.raises(DatasetError, match=expected):
        tasks.add_frame(pd.DataFrame(ROWS), spec)
    assert recorded(settings) == []
