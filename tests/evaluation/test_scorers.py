"""The scorer library, one scorer at a time, and how a task's scoring combines them: each built-in
scorer on answers a tiny model gives, weights and ``combine: mean|max``, which scorers need no
reference, and a user's own function that raises or answers out of range leaving one item unscored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from registry.errors import DatasetError
from registry.evaluation.scorers import ScorerBase, ScorerConfig
from registry.evaluation.scoring import TaskScoring
from registry.evaluation.taskspec import ScoringSpec

pytestmark = pytest.mark.unit

_SCORER = TypeAdapter(ScorerConfig)


def scorer(**config: Any) -> ScorerBase:
    """A scorer as a task file's ``scoring.scorers`` entry declares it."""
    return _SCORER.validate_python(config)


def scoring(*scorers: dict[str, Any], combine: str = "mean", task_dir: Path | None = None) -> TaskScoring:
    return TaskScoring(ScoringSpec.model_validate({"combine": combine, "scorers": list(scorers)}), task_dir, "t.yaml")


# --------------------------------------------------------------------------- reference scorers


@pytest.mark.parametrize(
    ("normalized", "answer", "expected"),
    [
        (True, "the Eiffel Tower!", 1.0),  # case, article and punctuation dropped
        (True, "Eiffel  tower", 1.0),
        (True, "It is the Eiffel Tower", 0.0),  # extra words: not exact
        (False, "  Eiffel Tower ", 1.0),  # only trimmed
        (False, "eiffel tower", 0.0),
        (False, "Eiffel Tower.", 0.0),
    ],
)
def test_exact_normalized_or_only_trimmed(normalized: bool, answer: str, expected: float) -> None:
    exact = scorer(scorer="exact", reference="ref", normalized=normalized)
    assert exact.score({"ref": "Eiffel Tower"}, answer) == expected


def test_exact_accepts_any_reference_of_a_list() -> None:
    exact = scorer(scorer="exact", reference="refs")
    assert exact.score({"refs": ["4", "four"]}, "Four.") == 1.0
    assert exact.score({"refs": ["4", "four"]}, "five") == 0.0


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("It is Paris, France.", 1.0), ("PARIS", 1.0), ("Parisian food", 0.0), ("Lyon", 0.0), ("", 0.0)],
)
def test_contains_whole_words_only(answer: str, expected: float) -> None:
    assert scorer(scorer="contains", reference="ref").score({"ref": "Paris"}, answer) == expected


def test_contains_a_multiword_reference_in_order() -> None:
    contains = scorer(scorer="contains", reference="refs")
    data = {"refs": ["New York", "NYC"]}
    assert contains.score(data, "In new york, I think") == 1.0
    assert contains.score(data, "York is new") == 0.0
    assert contains.score(data, "nyc.") == 1.0


def test_token_f1_gives_partial_credit_against_the_best_reference() -> None:
    f1 = scorer(scorer="token_f1", reference="refs")
    data = {"refs": ["William Shakespeare", "the Bard"]}
    assert f1.score(data, "William Blake") == pytest.approx(0.5)  # P = R = 1/2
    assert f1.score(data, "Bard") == 1.0  # the article is dropped from the reference
    assert f1.score(data, "William Shakespeare wrote it") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1.score(data, "nobody") == 0.0


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence() -> None:
    rouge = scorer(scorer="rouge_l", reference="summary")
    data = {"summary": "The council voted to build a bridge"}  # normalized: council voted to build bridge
    assert rouge.score(data, "council voted to build bridge") == 1.0
    # "council build bridge" is a subsequence of 3 words: P = 3/3, R = 3/5.
    assert rouge.score(data, "Council, build bridge!") == pytest.approx(2 * 1 * 0.6 / 1.6)
    # Order matters, unlike token F1: only one of "bridge ... council" survives in order.
    assert rouge.score(data, "bridge council") == pytest.approx(2 * 0.5 * 0.2 / 0.7)
    assert rouge.score(data, "") == 0.0


# --------------------------------------------------------------------------- label


def test_label_from_a_fixed_set_scores_the_earliest_label_named() -> None:
    label = scorer(scorer="label", reference="team", labels=["billing", "bugs", "accounts"])
    data = {"team": "bugs"}
    assert label.score(data, "Bugs.") == 1.0
    assert label.score(data, "bugs, not billing") == 1.0
    assert label.score(data, "billing, not bugs") == 0.0
    assert label.score(data, "debugs") == 0.0  # not the whole word
    assert label.score(data, "no idea") == 0.0
    assert label.value_sets() == {"team": ("billing", "bugs", "accounts")}
    assert not label.reference_free and label.reads() == ("team",)


def test_label_from_a_field_per_item_prefers_the_longer_label_at_a_tie() -> None:
    label = scorer(scorer="label", reference="label", labels_field="labels")
    data = {"labels": ["spam", "not spam"], "label": "not spam"}
    assert label.score(data, "Not spam.") == 1.0
    assert label.score(data, "spam") == 0.0
    assert label.reads() == ("label", "labels") and not label.reference_free
    assert label.value_sets() == {}  # per item: a derived check, not one value set
    assert set(label.checks()) == {"labels_has_2_or_more_distinct_labels", "label_in_labels"}


def test_label_without_a_reference_is_reference_free_and_checks_the_form_only() -> None:
    label = scorer(scorer="label", labels=["positive", "negative"])
    assert label.reference_free and label.reads() == ()
    assert label.score({}, "Negative, clearly") == 1.0
    assert label.score({}, "It is fine") == 0.0
    per_item = scorer(scorer="label", labels_field="labels")
    assert per_item.reference_free  # the item's labels are part of the request, not a reference answer
    assert per_item.score({"labels": ["cat", "dog"]}, "a dog") == 1.0


def test_label_row_checks_catch_a_label_outside_the_item_labels() -> None:
    checks = scorer(scorer="label", reference="label", labels_field="labels").checks()
    _, within = checks["label_in_labels"]
    _, distinct = checks["labels_has_2_or_more_distinct_labels"]
    assert within({"label": "cat", "labels": ["cat", "dog"]})
    assert not within({"label": "cow", "labels": ["cat", "dog"]})
    assert not distinct({"labels": ["cat", "cat"]}) and not distinct({"labels": ["cat"]})


# --------------------------------------------------------------------------- regex, numeric


@pytest.mark.parametrize(
    ("settings", "answer", "expected"),
    [
        ({}, "The ticket is ABC-123.", 1.0),  # found anywhere
        ({}, "abc-123", 0.0),
        ({"ignore_case": True}, "abc-123", 1.0),
        ({"fullmatch": True}, "The ticket is ABC-123.", 0.0),
        ({"fullmatch": True}, "  ABC-123\n", 1.0),  # the trimmed answer
        ({"fullmatch": True, "ignore_case": True}, "abc-123", 1.0),
    ],
)
def test_regex_search_fullmatch_and_case(settings: dict[str, Any], answer: str, expected: float) -> None:
    regex = scorer(scorer="regex", pattern=r"[A-Z]{3}-\d+", **settings)
    assert regex.reference_free
    assert regex.score({}, answer) == expected


@pytest.mark.parametrize(
    ("settings", "answer", "expected"),
    [
        ({}, "The total is 1,250 dollars.", 1.0),  # thousands separators ignored
        ({}, "1250.0", 1.0),
        ({}, "1251", 0.0),
        ({"abs_tol": 2}, "1251", 1.0),
        ({"abs_tol": 2}, "1253", 0.0),
        ({"rel_tol": 0.01}, "1262", 1.0),  # within 1 %
        ({"rel_tol": 0.01}, "1263", 0.0),
        ({}, "about twelve hundred", 0.0),  # no number at all
        ({}, "1.25e3", 1.0),
    ],
)
def test_numeric_tolerances_and_separators(settings: dict[str, Any], answer: str, expected: float) -> None:
    numeric = scorer(scorer="numeric", reference="total", **settings)
    assert numeric.score({"total": 1250}, answer) == expected


def test_numeric_scores_the_first_number_and_checks_the_reference_is_a_number() -> None:
    numeric = scorer(scorer="numeric", reference="n")
    assert numeric.score({"n": [3, 4]}, "4 or 5") == 1.0  # any reference of a list
    assert numeric.score({"n": 5}, "4 or 5") == 0.0  # only the first number counts
    assert numeric.score({"n": -2.5}, "It is -2.5 degrees") == 1.0
    _, is_numeric = numeric.checks()["n_is_numeric"]
    assert is_numeric({"n": 3}) and is_numeric({"n": [1.5, 2]})
    assert not is_numeric({"n": "3"}) and not is_numeric({"n": True}) and not is_numeric({"n": float("nan")})


# --------------------------------------------------------------------------- json

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_json_with_a_schema_and_no_fields_is_reference_free() -> None:
    json_scorer = scorer(scorer="json", schema=PERSON)
    assert json_scorer.reference_free and json_scorer.reads() == ()
    assert json_scorer.score({}, 'Sure: ```json\n{"name": "Ann", "age": 3}\n```') == 1.0
    assert json_scorer.score({}, '{"name": "Ann", "age": "three"}') == 0.0  # fails the schema
    assert json_scorer.score({}, '{"name": "Ann"}') == 0.0
    assert json_scorer.score({}, "Ann, 3") == 0.0
    assert scorer(scorer="json").score({}, "{}") == 1.0  # no schema: any object


def test_json_with_fields_gives_valid_weight_plus_the_share_of_fields_matched() -> None:
    json_scorer = scorer(scorer="json", fields="expected", valid_weight=0.2)
    assert not json_scorer.reference_free and json_scorer.reads() == ("expected",)
    data = {"expected": {"name": "Ann Lee", "age": 30, "city": "Oslo"}}
    assert json_scorer.score(data, '{"name": "ann lee", "AGE": "30", "city": "Oslo"}') == 1.0  # exactly
    assert json_scorer.score(data, '{"name": "Ann Lee", "age": 31}') == pytest.approx(0.2 + 0.8 / 3)
    assert json_scorer.score(data, "{}") == pytest.approx(0.2)
    assert json_scorer.score(data, '["Ann Lee", 30]') == 0.0  # JSON, but not an object


def test_json_with_fields_and_a_schema_needs_both() -> None:
    json_scorer = scorer(scorer="json", schema=PERSON, fields="expected")
    data = {"expected": {"name": "Ann", "age": 3}}
    assert json_scorer.score(data, '{"name": "Ann", "age": 3}') == 1.0
    assert json_scorer.score(data, '{"name": "Ann"}') == 0.0  # the schema requires age
    _, nonempty = json_scorer.checks()["expected_is_nonempty_object"]
    assert nonempty(data) and not nonempty({"expected": {}}) and not nonempty({"expected": [1]})


# --------------------------------------------------------------------------- combining


def test_mean_is_weighted_and_max_takes_the_best() -> None:
    contains = {"scorer": "contains", "reference": "ref", "weight": 3}
    f1 = {"scorer": "token_f1", "reference": "ref", "weight": 1}
    data, answer = {"ref": "William Shakespeare"}, "William Blake"  # contains 0, token F1 0.5
    mean = scoring(contains, f1).score(data, "q", answer)
    assert mean.scores == {"contains": 0.0, "token_f1": pytest.approx(0.5)}
    assert mean.quality == pytest.approx(0.5 / 4) and mean.problems == ()
    assert scoring(contains, f1, combine="max").score(data, "q", answer).quality == pytest.approx(0.5)
    assert scoring(contains, f1).score(data, "q", "Shakespeare, William").quality == pytest.approx(1 / 4)  # order
    assert scoring(contains, f1).score(data, "q", "William Shakespeare!").quality == 1.0


def test_one_scorer_is_its_own_quality_whatever_its_weight() -> None:
    assert scoring({"scorer": "regex", "pattern": "yes", "weight": 0.25}).score({}, "q", "yes").quality == 1.0


def test_two_scorers_of_one_kind_need_distinct_names() -> None:
    regex = {"scorer": "regex", "pattern": "a"}
    with pytest.raises(ValidationError, match=r"two scorers share a label; give them distinct `name:` keys"):
        scoring(regex, {**regex, "pattern": "b"})
    named = scoring({**regex, "name": "has_a"}, {**regex, "pattern": "b", "name": "has_b"})
    assert named.score({}, "q", "a").scores == {"has_a": 1.0, "has_b": 0.0}


@pytest.mark.parametrize(
    ("config", "reference_free"),
    [
        ({"scorer": "exact", "reference": "r"}, False),
        ({"scorer": "contains", "reference": "r"}, False),
        ({"scorer": "token_f1", "reference": "r"}, False),
        ({"scorer": "rouge_l", "reference": "r"}, False),
        ({"scorer": "numeric", "reference": "r"}, False),
        ({"scorer": "regex", "pattern": "x"}, True),
        ({"scorer": "json"}, True),
        ({"scorer": "json", "fields": "r"}, False),
        ({"scorer": "python", "function": "m:f"}, False),
        ({"scorer": "python", "function": "m:f", "needs_reference": False}, True),
        ({"scorer": "judge", "criteria": ["relevance"]}, True),
    ],
)
def test_reference_free_flags(config: dict[str, Any], reference_free: bool) -> None:
    assert scorer(**config).reference_free is reference_free


# --------------------------------------------------------------------------- a user's own function

SCORER_MODULE = '''
def length_ok(item, answer):
    return 1.0 if len(answer) <= item["limit"] else 0.0

def picky(item, answer):
    if answer == "boom":
        raise ValueError("cannot score boom")
    return {"big": 1.5, "text": "x", "flag": True, "none": None}.get(answer, 0.5)
'''


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    (tmp_path / "myscorers.py").write_text(SCORER_MODULE)
    return tmp_path


def test_a_function_beside_the_task_file_scores_with_the_item(task_dir: Path) -> None:
    own = scoring({"scorer": "python", "function": "myscorers:length_ok", "reads": ["limit"]}, task_dir=task_dir)
    assert own.score({"limit": 5}, "q", "short").quality == 1.0
    assert own.score({"limit": 5}, "q", "far too long").quality == 0.0


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("boom", "myscorers:picky raised ValueError: cannot score boom"),
        ("big", "myscorers:picky returned 1.5, not a number in [0, 1]"),
        ("text", "myscorers:picky returned 'x', not a number in [0, 1]"),
        ("flag", "myscorers:picky returned True, not a number in [0, 1]"),
        ("none", "myscorers:picky returned None, not a number in [0, 1]"),
    ],
)
def test_a_function_that_raises_or_answers_out_of_range_leaves_the_item_unscored(
    task_dir: Path, answer: str, problem: str
) -> None:
    own = scoring({"scorer": "python", "function": "myscorers:picky"}, {"scorer": "regex", "pattern": "."},
                  task_dir=task_dir)
    result = own.score({}, "q", answer)
    assert result.quality is None
    assert result.scores == {"python": None, "regex": 1.0}
    assert result.problems == (f"python: {problem}",)
    assert own.score({}, "q", "fine").quality == pytest.approx(0.75)  # the next item is scored as usual


def test_an_installed_module_is_found_when_none_is_beside_the_task_file(tmp_path: Path) -> None:
    own = scoring({"scorer": "python", "function": "math:isqrt"}, task_dir=tmp_path)
    with pytest.raises(TypeError):  # the function was imported: math.isqrt(item, answer) is the user's bug
        own._functions["math:isqrt"]({}, "")


@pytest.mark.parametrize(
    ("function", "module", "expected"),
    [
        ("no_such_module_here:f", None, r"scorer 'no_such_module_here:f' cannot be imported \(ModuleNotFoundError: "
                                        r"No module named 'no_such_module_here'\); put no_such_module_here\.py beside"),
        ("broken:f", "raise RuntimeError('half written')\n",
         r"scorer 'broken:f' cannot be imported \(RuntimeError: half written\)"),
        ("broken:f", "def f(item, answer)\n", r"scorer 'broken:f' cannot be imported \(SyntaxError: "),
        ("broken:g", "def f(item, answer):\n    return 1\n", r"scorer 'broken:g': broken has no function 'g'$"),
    ],
)
def test_a_function_that_cannot_be_imported_is_refused_in_one_line(
    tmp_path: Path, function: str, module: str | None, expected: str
) -> None:
    if module is not None:
        (tmp_path / f"{function.split(':')[0]}.py").write_text(module)
    with pytest.raises(DatasetError, match=rf"^t\.yaml: {expected}") as excinfo:
        scoring({"scorer": "python", "function": function}, task_dir=tmp_path)
    assert "\n" not in str(excinfo.value)


def test_a_judge_scorer_without_a_judge_says_how_to_run_it() -> None:
    judged = scoring({"scorer": "judge", "criteria": ["relevance"]})
    assert judged.needs_judge
    with pytest.raises(DatasetError, match="scored by a judge; benchmark it with one"):
        judged.score({}, "q", "an answer")
