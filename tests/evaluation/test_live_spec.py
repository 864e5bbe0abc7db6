"""A task file's ``live:`` section: read, or refused in one line naming the scorer that could never
score a live call; its scorer modules part of the task's version; and the shipped tasks' live
scorers measuring something — every validation item's reference answer, sent as a live call would
be, scores high, and clearly wrong answers score low."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry.errors import DatasetError
from registry.evaluation.tasks import TaskCatalog, TaskVersion
from registry.evaluation.taskspec import LIVE_FIELDS, parse_spec
from registry.settings import Settings

SPEC: dict[str, Any] = {
    "name": "support",
    "description": "Route a support ticket to the team that handles it.",
    "data": {"path": "support.jsonl", "fields": {"id": "text", "ticket": "text", "team": "text"}},
    "prompt": {"template": "Which team handles this ticket? {{ ticket }}"},
    "scoring": {"scorers": [{"scorer": "label", "reference": "team", "labels": ["billing", "bugs"]}]},
}
ROWS = [{"id": "t1", "ticket": "I was charged twice", "team": "billing"},
        {"id": "t2", "ticket": "The app crashes", "team": "bugs"}]
LIVE_MODULE = '''
def terse(item, answer):
    return 1.0 if len(answer.split()) <= 2 and item["prompt"] else 0.0
'''


def with_live(live: Any) -> dict[str, Any]:
    return {**SPEC, "live": live}


def refusal(live: Any) -> str:
    with pytest.raises(DatasetError) as excinfo:
        parse_spec(with_live(live), "tasks/support.yaml")
    message = str(excinfo.value)
    assert message.startswith("tasks/support.yaml: live") and "\n" not in message
    return message


# --------------------------------------------------------------------------- the section


@pytest.mark.unit
def test_a_live_section_reads_and_its_scorers_are_a_scoring() -> None:
    spec = parse_spec(with_live({
        "combine": "max",
        "scorers": [{"scorer": "json"}, {"scorer": "label", "labels": ["billing", "bugs"]},
                    {"scorer": "regex", "pattern": "^\\w+$"},
                    {"scorer": "python", "function": "m:f", "needs_reference": False, "reads": list(LIVE_FIELDS)}],
        "judge": ["relevance"],
    }), "s")
    assert spec.live is not None and spec.live.judge == ("relevance",)
    scoring = spec.live.scoring
    assert scoring is not None and scoring.combine == "max"
    assert [s.label for s in scoring.scorers] == ["json", "label", "regex", "python"]
    judge_only = parse_spec(with_live({"judge": ["faithfulness"]}), "s").live
    assert judge_only is not None and judge_only.scoring is None
    assert parse_spec(SPEC, "s").live is None  # the section is optional


@pytest.mark.unit
@pytest.mark.parametrize(("live", "says"), [
    ({"scorers": [{"scorer": "exact", "reference": "team"}]},
     "live: scorer 1 (exact) needs a reference answer, which a live call has not; use a reference-free scorer"),
    ({"scorers": [{"scorer": "json"}, {"scorer": "label", "reference": "team", "labels": ["billing", "bugs"]}]},
     "live: scorer 2 (label) needs a reference answer"),
    ({"scorers": [{"scorer": "python", "function": "m:f"}]}, "live: scorer 1 (python) needs a reference answer"),
    ({"scorers": [{"scorer": "python", "function": "m:f", "needs_reference": False, "reads": ["ticket"]}]},
     "live: scorer 1 (python) reads item fields ['ticket']; a live call has only prompt and system: read only those"),
    ({"scorers": [{"scorer": "label", "labels_field": "prompt"}]},
     "live: scorer 1 (label) reads item fields ['prompt']; a live call has only prompt and system: give it labels:"),
    ({"scorers": [{"scorer": "judge", "criteria": ["relevance"]}]},
     "live: scorer 1 (judge): the judge is not a live scorer; name its criteria in live.judge instead"),
    ({"judge": ["honesty"]}, "live.judge: unknown criteria ['honesty']; the judge knows faithfulness"),
    ({}, "live: name at least one scorer or judge criterion, or leave live out"),
    ({"scorer": [{"scorer": "json"}]}, "live.scorer: not a known key; check its spelling"),
    ({"scorers": [{"scorer": "jsn"}]}, "live.scorers: scorer 1: 'jsn' is not a scorer; use one of exact"),
    ({"scorers": [{"scorer": "json"}, {"scorer": "json"}]}, "live.scorers: two scorers share a label"),
    ({"scorers": [{"scorer": "regex", "pattern": "("}]}, "live.scorers.1.pattern: not a valid regular expression"),
    ({"scorers": [{"scorer": "json"}], "combine": "median"}, "live.combine"),
])
def test_a_section_that_could_never_score_a_live_call_is_refused_naming_the_scorer(live: Any, says: str) -> None:
    assert says in refusal(live)


@pytest.mark.data
def test_a_live_scorer_module_is_part_of_the_version_and_must_import(settings: Settings, tmp_path: Path) -> None:
    tasks = TaskCatalog(settings)
    live = {"scorers": [{"scorer": "python", "function": "livecheck:terse", "needs_reference": False,
                         "reads": ["prompt"]}]}
    path = _write(tmp_path / "work", with_live(live), livecheck=LIVE_MODULE)
    task, _ = tasks.add(path)
    assert sorted(p.name for p in task.directory.iterdir()) == ["data.jsonl", "livecheck.py", "task.yaml",
                                                                 "version.json"]
    assert task.live is not None
    assert task.live.score({"prompt": "Which team?", "system": ""}, "Which team?", "billing").quality == 1.0
    assert task.summary()["live"] == {"scorers": [{"scorer": "python", "label": "python", "weight": 1.0}],
                                      "combine": "mean", "judge": []}

    (tmp_path / "work" / "livecheck.py").write_text(LIVE_MODULE.replace("<= 2", "<= 3"))
    with pytest.raises(DatasetError, match="already exists as version 1"):
        tasks.add(path)  # the module changed: different content
    assert tasks.add(path, new_version=True)[0].ref == "support/2"

    (tmp_path / "work" / "livecheck.py").unlink()
    with pytest.raises(DatasetError, match=r"scorer 'livecheck:terse' cannot be imported"):
        tasks.add(path, new_version=True)
    assert tasks.get("support").ref == "support/2"  # nothing recorded


def _write(folder: Path, spec: dict[str, Any], **modules: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "support.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "support.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    for name, text in modules.items():
        (folder / f"{name}.py").write_text(text)
    return folder / "support.yaml"


# --------------------------------------------------------------------------- the shipped tasks


@pytest.fixture
def shipped_tasks(settings: Settings) -> TaskCatalog:
    return TaskCatalog(settings)


def live_score(task: TaskVersion, prompt: str, answer: str) -> float | None:
    """An answer scored as a live call to route ``task.name`` would be: no item, only its prompt."""
    assert task.live is not None
    return task.live.score({"prompt": prompt, "system": ""}, prompt, answer).quality


@pytest.mark.data
def test_the_shipped_tasks_declare_their_live_scoring(shipped_tasks: TaskCatalog) -> None:
    live = {name: shipped_tasks.get(name).spec.live for name in ("qa", "extract", "classify", "summarize")}
    assert live["qa"] is None  # feedback only: a short answer cannot be checked without its reference
    assert [s.label for s in live["extract"].scorers] == ["asked_keys"] and live["extract"].judge == ()
    assert [s.label for s in live["classify"].scorers] == ["one_label"] and live["classify"].judge == ()
    assert live["summarize"].scorers == () and live["summarize"].judge == ("faithfulness", "relevance", "minimality")


@pytest.mark.data
def test_extract_live_scores_every_reference_high_and_missing_or_mistyped_keys_low(shipped_tasks: TaskCatalog) -> None:
    task = shipped_tasks.get("extract")
    assert len(task.items) >= 20
    for item in task.items:
        prompt = task.messages(item)[-1]["content"]
        fields = item.data["fields"]
        assert live_score(task, prompt, json.dumps(fields)) >= 0.99, item.id
        assert live_score(task, prompt, f"Sure! ```json\n{json.dumps(fields)}\n```") >= 0.99, item.id  # form is free
        first, *rest = fields
        assert live_score(task, prompt, json.dumps({k: fields[k] for k in rest})) < 0.8, item.id  # a key missing
        assert live_score(task, prompt, json.dumps({"answer": "unknown"})) == pytest.approx(0.3), item.id
        assert live_score(task, prompt, "I could not find those facts.") == 0.0, item.id
        integers = [k for k, v in fields.items() if isinstance(v, int)]
        if integers:
            mistyped = {**fields, integers[0]: "about thirty"}
            assert live_score(task, prompt, json.dumps(mistyped)) < 0.8, item.id


@pytest.mark.data
def test_classify_live_scores_every_reference_high_and_no_label_or_a_hedge_low(shipped_tasks: TaskCatalog) -> None:
    task = shipped_tasks.get("classify")
    assert len(task.items) >= 20
    for item in task.items:
        prompt = task.messages(item)[-1]["content"]
        labels, label = item.data["labels"], item.data["label"]
        assert live_score(task, prompt, label) == 1.0, item.id
        assert live_score(task, prompt, f"The label is: {label.upper()}.") == 1.0, item.id
        assert live_score(task, prompt, "I am not sure.") == 0.0, item.id
        assert live_score(task, prompt, ", ".join(labels)) == 0.0, item.id  # echoing the choices is no choice
        assert live_score(task, prompt, f"{labels[0]} or {labels[1]}") == 0.0, item.id
    spam = next(i for i in task.items if "not spam" in i.data["labels"])
    assert live_score(task, task.messages(spam)[-1]["content"], "not spam") == 1.0  # not `spam` as well


@pytest.mark.data
def test_a_prompt_not_in_the_tasks_form_is_unscored_not_guessed(shipped_tasks: TaskCatalog) -> None:
    for name, answer in (("extract", '{"name": "Ana"}'), ("classify", "positive")):
        task = shipped_tasks.get(name)
        assert task.live is not None
        result = task.live.score({"prompt": "Tell me about Ana.", "system": ""}, "Tell me about Ana.", answer)
        assert result.quality is None
        (problem,) = result.problems
        assert "raised ValueError: the prompt" in problem and "cannot be checked against it" in problem
