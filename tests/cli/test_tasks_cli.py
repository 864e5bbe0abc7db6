"""``arbiter tasks add|validate|list|show`` as a user runs them: tables for people, ``--json`` for
scripts, and bad input as one ``error:`` line with exit code 2 (3 for an unknown task), no traceback,
nothing recorded."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ARBITER, assert_clean_error, run

pytestmark = pytest.mark.e2e

SPEC: dict[str, Any] = {
    "name": "support",
    "description": "Route a support ticket to the team that handles it.",
    "data": {"path": "support.jsonl", "fields": {"id": "text", "ticket": "text", "team": "text"}},
    "prompt": {"template": "Which team handles this ticket? Answer in JSON. {{ ticket }}"},
    "generation": {"max_tokens": 16},
    "scoring": {
        "combine": "mean",
        "scorers": [
            {"scorer": "label", "reference": "team", "labels": ["billing", "bugs"], "weight": 3},
            {"scorer": "json", "name": "is_json"},
            {"scorer": "regex", "pattern": "^\\{", "name": "starts_with_brace"},
        ],
    },
}
ROWS = [
    {"id": "t1", "ticket": "I was charged twice this month", "team": "billing"},
    {"id": "t2", "ticket": "The app crashes when I log in", "team": "bugs"},
]


@pytest.fixture
def own_datasets(home: Path) -> Path:
    """An empty datasets folder of this home's own, so only tasks added by hand are listed."""
    (home / "datasets").mkdir()
    return home / "datasets"


def write_task(folder: Path, spec: dict[str, Any] = SPEC, rows: list[dict[str, Any]] = ROWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "support.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "support.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "support.yaml"


def versions_on_disk(home: Path) -> list[str]:
    root = home / "tasks"
    return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*")) if root.is_dir() else []


def test_validate_add_list_and_show(home: Path, tmp_path: Path, own_datasets: Path) -> None:
    path = write_task(tmp_path / "work")

    code, out, _ = run("tasks", "validate", str(path))
    assert code == 0 and out.startswith("valid: task support (2 items, sha256 ") and "nothing recorded" in out
    assert "scoring (mean): label×3, is_json×1 (no reference needed), starts_with_brace×1 (no reference needed)" in out
    code, out, _ = run("tasks", "validate", str(path), "--json")
    validated = json.loads(out)
    assert code == 0 and validated["valid"] is True and "version" not in validated
    assert versions_on_disk(home) == []

    code, out, _ = run("tasks", "add", str(path))
    assert code == 0 and out.startswith(f"added task support/1 (2 items, sha256 {validated['sha256'][:12]}")
    assert "next: arbiter benchmark --task support" in out
    code, out, _ = run("tasks", "add", str(path), "--json")
    added = json.loads(out)
    assert code == 0 and added["created"] is False and added["ref"] == "support/1"
    assert added["sha256"] == validated["sha256"] and added["n_items"] == 2
    code, out, _ = run("tasks", "add", str(path))
    assert code == 0 and out.startswith("unchanged: already recorded as task support/1") and "next:" not in out

    code, out, _ = run("tasks", "list", "--json")
    assert code == 0 and [t["ref"] for t in json.loads(out)] == ["support/1"]
    code, out, _ = run("tasks", "list")
    assert code == 0 and "support" in out and "sha256" in out  # a table, its cells wrapped to the terminal

    code, out, _ = run("tasks", "show", "support", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["ref"] == "support/1" and shown["source"] == str(path)
    assert shown["fields"] == {"id": "text", "ticket": "text", "team": "text"} and shown["max_tokens"] == 16
    assert shown["scorers"] == [
        {"scorer": "label", "label": "label", "weight": 3.0, "reference_free": False},
        {"scorer": "json", "label": "is_json", "weight": 1.0, "reference_free": True},
        {"scorer": "regex", "label": "starts_with_brace", "weight": 1.0, "reference_free": True},
    ]
    assert shown["reference_free_scorers"] == ["is_json", "starts_with_brace"] and shown["judge_criteria"] == []
    assert [v["version"] for v in shown["versions"]] == [1]
    code, out, _ = run("tasks", "show", "support/1")
    assert code == 0 and out.startswith(f"task support/1: {SPEC['description']}") and "versions of support" in out


def test_a_new_version_must_be_asked_for(home: Path, tmp_path: Path, own_datasets: Path) -> None:
    assert run("tasks", "add", str(write_task(tmp_path / "a")))[0] == 0
    changed = write_task(tmp_path / "b", rows=ROWS[:1])
    code, _, err = run("tasks", "add", str(changed))
    assert_clean_error(code, err, "task 'support' already exists as version 1")
    assert "--new-version" in err and versions_on_disk(home) == ["support/1"]

    code, out, _ = run("tasks", "add", str(changed), "--new-version", "--json")
    assert code == 0 and json.loads(out)["ref"] == "support/2" and json.loads(out)["created"] is True
    shown = json.loads(run("tasks", "show", "support", "--json")[1])
    assert shown["ref"] == "support/2" and [v["n_items"] for v in shown["versions"]] == [2, 1]
    assert json.loads(run("tasks", "show", "support/1", "--json")[1])["n_items"] == 2


@pytest.mark.parametrize(
    ("spec", "rows", "expected"),
    [
        ({**SPEC, "prompt": {"template": "{{ ticket }} {{ customer }}"}}, ROWS,
         "support.yaml: prompt.template names customer, which data.fields does not declare"),
        ({**SPEC, "prompt": {"template": "{{ ticket.__class__ }}"}}, ROWS,
         "support.yaml: prompt.template for item t1: the template reaches outside its sandbox"),
        ({**SPEC, "scoring": {"scorers": [{"scorer": "bleu"}]}}, ROWS, "'bleu' is not a scorer; use one of exact"),
        ({**SPEC, "scoring": {"scorers": [{"scorer": "python", "function": "nowhere_at_all:f"}]}}, ROWS,
         "scorer 'nowhere_at_all:f' cannot be imported"),
        (SPEC, [ROWS[0], {**ROWS[1], "id": "t1"}], "support.jsonl fails 1 expectation: "
                                                   "expect_column_values_to_be_unique(id) at rows t1 (line 1), t1 (line 2)"),
        (SPEC, [ROWS[0], {**ROWS[1], "team": "sales"}], "expect_column_values_to_be_in_set(team) at rows t2"),
        (SPEC, [], "support.jsonl is empty; add at least one item"),
    ],
)
@pytest.mark.parametrize("command", ["add", "validate"])
def test_bad_input_is_one_line_with_exit_code_2_and_nothing_recorded(
    home: Path, tmp_path: Path, command: str, spec: dict[str, Any], rows: list[dict[str, Any]], expected: str
) -> None:
    path = write_task(tmp_path / "work", spec, rows)
    code, out, err = run("tasks", command, str(path), "--json")
    assert_clean_error(code, err, expected)
    assert str(path.parent) in err and out == ""  # nothing for a script to mistake for a result
    assert versions_on_disk(home) == []


def test_a_spec_that_is_not_yaml_names_its_line(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "support.yaml"
    path.write_text("name: support\ndescription: [oops\nprompt: x\n")
    code, _, err = run("tasks", "add", str(path))
    assert_clean_error(code, err, f"{path} line 3 is not valid YAML")
    code, _, err = run("tasks", "add", str(tmp_path / "missing.yaml"))
    assert_clean_error(code, err, f"no task file at {tmp_path / 'missing.yaml'}")
    assert versions_on_disk(home) == []


def test_an_unknown_task_or_version_exits_3_naming_what_exists(tmp_path: Path, own_datasets: Path) -> None:
    code, _, err = run("tasks", "show", "support")
    assert_clean_error(code, err, "unknown task 'support'; known tasks: none (add yours with", exit_code=3)
    assert run("tasks", "add", str(write_task(tmp_path / "work")))[0] == 0
    code, _, err = run("tasks", "show", "support/4", "--json")
    assert_clean_error(code, err, "task 'support' has no version '4'; its versions: 1", exit_code=3)


def test_the_installed_command_prints_no_traceback(home: Path, tmp_path: Path) -> None:
    """The same contract from the real ``arbiter`` executable, as a shell script sees it."""
    path = write_task(tmp_path / "work", rows=[ROWS[0], {"id": "t2", "team": "bugs"}])
    done = subprocess.run([ARBITER, "tasks", "validate", str(path)], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "ARBITER_HOME": str(home)})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: {tmp_path / 'work' / 'support.jsonl'} fails 1 expectation: ")
    assert "not_be_null(ticket) at rows t2" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
