"""The task file and its prompt: a spec is read, or refused with one line naming the file, the line
or field and the fix; templates see only declared fields and stay in Jinja2's sandbox; and the shipped
tasks' prompts are, item for item, the prompts the four tasks had in code before they became files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry.errors import DatasetError
from registry.evaluation.taskspec import TaskSpec, parse_spec, read_spec
from registry.evaluation.templates import PromptTemplate

pytestmark = pytest.mark.unit

BUNDLED = Path(__file__).resolve().parents[2] / "datasets"

SPEC: dict[str, Any] = {
    "name": "support",
    "description": "Route a support ticket to the team that handles it.",
    "data": {"path": "support.jsonl", "fields": {"id": "text", "ticket": "text", "team": "text"}},
    "prompt": {"template": "Which team handles this ticket? {{ ticket }}"},
    "generation": {"max_tokens": 8},
    "scoring": {"scorers": [{"scorer": "label", "reference": "team", "labels": ["billing", "bugs", "accounts"]}]},
}


def spec_with(**changes: Any) -> dict[str, Any]:
    """``SPEC`` with ``changes`` at dotted paths written ``a__b`` (None deletes the key)."""
    spec = json.loads(json.dumps(SPEC))
    for path, value in changes.items():
        *parents, key = path.split("__")
        node = spec
        for parent in parents:
            node = node[parent]
        if value is None:
            del node[key]
        else:
            node[key] = value
    return spec


def refusal(document: Any) -> str:
    with pytest.raises(DatasetError) as excinfo:
        parse_spec(document, "tasks/support.yaml")
    message = str(excinfo.value)
    assert message.startswith("tasks/support.yaml") and "\n" not in message
    return message


def test_a_spec_reads_with_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "support.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    spec, raw = read_spec(path)
    assert raw == path.read_bytes()
    assert spec.capabilities == ("chat",) and spec.data.id == "id"
    assert spec.data.fields["ticket"].type == "text" and spec.data.fields["ticket"].required
    assert spec.generation.temperature == 0.0 and spec.generation.max_tokens == 8
    assert spec.scoring.combine == "mean" and spec.judge_criteria == ()
    assert spec.reference_free_scorers == ()


def test_a_json_spec_is_a_yaml_spec(tmp_path: Path) -> None:
    path = tmp_path / "support.json"
    path.write_text(json.dumps(SPEC))
    assert read_spec(path)[0] == TaskSpec.model_validate(SPEC)


def test_reference_free_scorers_and_judge_criteria_are_named() -> None:
    scorers = [
        {"scorer": "json", "name": "is_json"},
        {"scorer": "exact", "reference": "team"},
        {"scorer": "judge", "criteria": ["relevance", "minimality"]},
    ]
    spec = parse_spec(spec_with(scoring__scorers=scorers), "s")
    assert spec.reference_free_scorers == ("is_json", "judge")
    assert spec.judge_criteria == ("relevance", "minimality")


# --------------------------------------------------------------------------- refused specs


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "support.yaml"
    path.write_text("name: support\ndescription: [unclosed\nprompt: x\n")
    with pytest.raises(DatasetError, match=rf"^{path} line 3 is not valid YAML \(.*\); fix that line and run again$"):
        read_spec(path)


def test_a_missing_or_binary_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=rf"^no task file at {tmp_path / 'nope.yaml'}; write one"):
        read_spec(tmp_path / "nope.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe")
    with pytest.raises(DatasetError, match=rf"^{binary} is not UTF-8 text"):
        read_spec(binary)


@pytest.mark.parametrize("document", [None, "just a sentence", ["name", "support"], 42])
def test_a_document_that_is_not_a_mapping_is_refused(document: Any) -> None:
    assert "is not a task spec: it must be a mapping with name, description" in refusal(document)


@pytest.mark.parametrize("key", ["name", "description", "data", "prompt", "scoring"])
def test_a_missing_required_key_is_named(key: str) -> None:
    assert refusal(spec_with(**{key: None})) == f"tasks/support.yaml: {key}: required; add it (see docs/tasks.md)"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"data__fields": None}, "data.fields: required; add it"),
        ({"prompt__template": None}, "prompt.template: required; add it"),
        ({"scoring__scorers": None}, "scoring.scorers: required; add it"),
        ({"prompt__tempalte": "x"}, "prompt.tempalte: not a known key; check its spelling"),
        ({"name": "Support Tickets"}, "name: 'Support Tickets' is not a task name; use a lowercase slug"),
        ({"name": "route.qa"}, "name: 'route.qa' is not a task name"),
        ({"name": "judgment"}, "name: 'judgment' is the judge's route, not a task"),
        ({"generation__json_schema": {"type": "nope"}}, "generation.json_schema: not a valid JSON Schema"),
        ({"capabilities": ["chat", "telepathy"]}, "capabilities: unknown capabilities ['telepathy']; known: "),
        ({"data__path": "support.txt"}, "data.path: 'support.txt' is not a .jsonl, .csv or .parquet file"),
        ({"data__id": "ticket_id"}, "data: the id field 'ticket_id' is not among fields; declare it"),
        ({"data__fields__team": "colour"}, "data.fields.team.type: Input should be 'text', 'string'"),
        ({"generation__max_tokens": 0}, "generation.max_tokens: Input should be greater than or equal to 1"),
        ({"scoring__combine": "min"}, "scoring.combine: Input should be 'mean' or 'max'"),
        ({"scoring__scorers": []}, "scoring.scorers: Tuple should have at least 1 item"),
        ({"scoring__scorers": [{"scorer": "regex", "pattern": "a"}, {"scorer": "regex", "pattern": "b"}]},
         "scoring.scorers: two scorers share a label; give them distinct `name:` keys"),
    ],
)
def test_a_wrong_key_is_named_with_its_fix(changes: dict[str, Any], expected: str) -> None:
    assert f"tasks/support.yaml: {expected}" in refusal(spec_with(**changes))


def test_an_unknown_scorer_lists_the_known_ones() -> None:
    message = refusal(spec_with(scoring__scorers=[{"scorer": "bleu", "reference": "team"}]))
    assert message == ("tasks/support.yaml: scoring.scorers: scorer 1: 'bleu' is not a scorer; use one of exact, "
                       "contains, token_f1, rouge_l, label, regex, numeric, json, python, judge")


@pytest.mark.parametrize(
    ("scorer", "expected"),
    [
        ({"scorer": "regex", "pattern": "("}, "scoring.scorers.1.pattern: not a valid regular expression"),
        ({"scorer": "label", "reference": "team"}, "scoring.scorers.1: give exactly one of labels"),
        ({"scorer": "label", "labels": ["only"]}, "scoring.scorers.1.labels: Tuple should have at least 2 items"),
        ({"scorer": "json", "schema": {"type": "thing"}}, "scoring.scorers.1.schema: not a valid JSON Schema"),
        ({"scorer": "judge", "criteria": ["wit"]}, "scoring.scorers.1.criteria: unknown criteria ['wit']"),
        ({"scorer": "python", "function": "no colon"}, "scoring.scorers.1.function: String should match pattern"),
        ({"scorer": "exact", "reference": "team", "weight": 0}, "scoring.scorers.1.weight: Input should be greater"),
        ({"scorer": "exact", "refrence": "team"}, "scoring.scorers.1.reference: required"),
    ],
)
def test_a_bad_scorer_setting_is_named_once(scorer: dict[str, Any], expected: str) -> None:
    message = refusal(spec_with(scoring__scorers=[scorer]))
    assert expected in message
    assert "at least 1 item" not in message  # the bad entry, not an echo saying the list is empty


def test_a_scorer_reading_an_undeclared_field_is_refused() -> None:
    message = refusal(spec_with(scoring__scorers=[{"scorer": "exact", "reference": "answer"}]))
    assert message == ("tasks/support.yaml: spec: scoring.scorers.1 (exact) reads ['answer'], which data.fields does "
                       "not declare; declare it there or name a declared field")


def test_several_problems_share_one_line() -> None:
    message = refusal(spec_with(description=None, generation__temperature=5))
    assert "description: required" in message and "; generation.temperature: " in message


# --------------------------------------------------------------------------- templates

FIELDS = {"id", "ticket", "team"}


def template(text: str, **prompt: Any) -> PromptTemplate:
    return PromptTemplate(TaskSpec.model_validate(spec_with(prompt={"template": text, **prompt})).prompt, FIELDS,
                          "tasks/support.yaml")


def test_a_template_renders_the_system_message_examples_then_the_item() -> None:
    prompt = template("Ticket: {{ ticket | upper }}", system="You route tickets for {{ team }}.",
                      examples=[{"item": {"ticket": "refund please"}, "answer": "billing"}])
    assert prompt.messages({"id": "t1", "ticket": "app crash", "team": "ops"}) == [
        {"role": "system", "content": "You route tickets for ops."},
        {"role": "user", "content": "Ticket: REFUND PLEASE"},
        {"role": "assistant", "content": "billing"},
        {"role": "user", "content": "Ticket: APP CRASH"},
    ]


def test_a_template_naming_an_undeclared_field_is_refused_at_compile() -> None:
    with pytest.raises(DatasetError) as excinfo:
        template("{{ ticket }} from {{ customer }} ({{ plan }})")
    assert str(excinfo.value) == ("tasks/support.yaml: prompt.template names customer, plan, which data.fields does "
                                  "not declare; declare it or use one of id, team, ticket")


def test_a_template_that_does_not_parse_names_its_line() -> None:
    with pytest.raises(DatasetError, match=r"^tasks/support\.yaml: prompt\.template line 2 is not a valid Jinja2 "):
        template("Ticket:\n{{ ticket }\n")
    with pytest.raises(DatasetError, match=r"^tasks/support\.yaml: prompt\.system .*not a valid Jinja2"):
        template("{{ ticket }}", system="{% if team %}")


@pytest.mark.parametrize(
    "text",
    [
        "{{ ticket.__class__.__mro__ }}",
        "{{ ticket.__class__.__base__.__subclasses__() }}",
        "{{ ticket.format.__globals__ }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_a_template_reaching_outside_the_sandbox_is_refused(text: str) -> None:
    prompt = template(text)
    with pytest.raises(DatasetError) as excinfo:
        prompt.messages({"id": "t1", "ticket": "x", "team": "y"}, where="item t1")
    message = str(excinfo.value)
    assert message.startswith("tasks/support.yaml: prompt.template for item t1: the template reaches outside its sandbox")
    assert "\n" not in message and "<class" not in message


@pytest.mark.parametrize("text", ["{{ ticket * 10**9 }}", "{{ [ticket] * 200000 }}", "{{ 10 ** 1000 }}"])
def test_a_template_cannot_make_a_huge_value(text: str) -> None:
    prompt = template(text)
    with pytest.raises(DatasetError, match="reaches outside its sandbox .*larger than a prompt needs"):
        prompt.messages({"id": "t1", "ticket": "x", "team": "y"}, where="item t1")


def test_small_products_and_powers_still_render() -> None:
    prompt = template("{{ ticket * 3 }} {{ 10 ** 9 }} {{ 1000 * 1000 }}")
    assert prompt.messages({"id": "t1", "ticket": "ab", "team": "y"})[-1]["content"] == "ababab 1000000000 1000000"


def test_a_template_cannot_change_the_item() -> None:
    prompt = template("{% set _ = ticket.append('x') %}{{ ticket }}")
    with pytest.raises(DatasetError, match="reaches outside its sandbox"):
        prompt.messages({"ticket": ["a"]}, where="item t1")


def test_a_worked_example_that_fails_names_the_example() -> None:
    with pytest.raises(DatasetError, match=r"^tasks/support\.yaml: prompt\.examples\.1: the template failed"):
        template("{{ ticket }}", examples=[{"item": {"team": "billing"}, "answer": "billing"}])


# --------------------------------------------------------------------------- the shipped prompts

# The prompts the four tasks had in code (registry/evaluation/prompts.py before the task files): the
# shipped files must ask every model exactly the same, or the demo's figures would move.
_OLD_PROMPTS = {
    "qa": lambda d: f"Answer the question in a few words, with no explanation.\n\nQuestion: {d['question']}",
    "extract": lambda d: (
        "Extract facts from the text. Reply with ONLY a JSON object with exactly these keys: "
        + ", ".join(f"{k} ({'integer' if isinstance(v, int) else 'string'})" for k, v in d["fields"].items())
        + f".\n\nText: {d['text']}"
    ),
    "classify": lambda d: (
        f"Classify the text. Reply with exactly one of these labels: {', '.join(d['labels'])}.\n\nText: {d['text']}"
    ),
    "summarize": lambda d: f"Summarize the text in one short sentence, using only facts it states.\n\nText: {d['text']}",
}

PINNED = {
    "qa-001": [
        "Answer the question in a few words, with no explanation.\n\nQuestion: What is the capital of England?",
        "London",
        "Answer the question in a few words, with no explanation.\n\nQuestion: What is the capital of France?",
    ],
    "extract-001": [
        "Extract facts from the text. Reply with ONLY a JSON object with exactly these keys: name (string), "
        "age (integer), city (string).\n\nText: Ali Khan, 27, lives in Dubai.",
        '{"name": "Ali Khan", "age": 27, "city": "Dubai"}',
        "Extract facts from the text. Reply with ONLY a JSON object with exactly these keys: name (string), "
        "age (integer), city (string).\n\nText: Maria Lopez, 34, lives in Madrid.",
    ],
    "classify-001": [
        "Classify the text. Reply with exactly one of these labels: animal, plant, vehicle.\n\n"
        "Text: A red car drove past.",
        "vehicle",
        "Classify the text. Reply with exactly one of these labels: positive, negative, neutral.\n\n"
        "Text: I love this phone, works great!",
    ],
}


def shipped(task: str) -> tuple[PromptTemplate, list[dict[str, Any]]]:
    spec = read_spec(BUNDLED / f"{task}.yaml")[0]
    lines = (BUNDLED / spec.data.path).read_text().splitlines()
    prompt = PromptTemplate(spec.prompt, set(spec.data.fields), task)
    return prompt, [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("item_id", sorted(PINNED))
def test_pinned_shipped_prompts(item_id: str) -> None:
    prompt, rows = shipped(item_id.split("-")[0])
    messages = prompt.messages(next(r for r in rows if r["id"] == item_id))
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [m["content"] for m in messages] == PINNED[item_id]


@pytest.mark.parametrize("task", sorted(_OLD_PROMPTS))
def test_every_shipped_item_is_asked_as_before(task: str) -> None:
    prompt, rows = shipped(task)
    *_, example = read_spec(BUNDLED / f"{task}.yaml")[0].prompt.examples
    old = _OLD_PROMPTS[task]
    assert len(rows) >= 8
    for row in rows:
        assert prompt.messages(row) == [
            {"role": "user", "content": old(example.item)},
            {"role": "assistant", "content": example.answer},
            {"role": "user", "content": old(row)},
        ], row["id"]
