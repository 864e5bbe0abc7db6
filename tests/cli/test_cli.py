"""The ``arbiter`` command as a user runs it: JSON contracts, clean one-line errors, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support import ARBITER, assert_clean_error, run

from registry.catalog.versions import Catalog

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_register_list_show_and_status(smollm2, shipped) -> None:
    code, out, _ = run("models", "register", str(smollm2.path), "--name", "smollm2-135m", "--capability", "chat", "--json")
    assert code == 0 and json.loads(out)["created"] is True
    code, out, _ = run("models", "register", str(smollm2.path), "--name", "smollm2-135m", "--json")
    assert code == 0 and json.loads(out)["created"] is False and json.loads(out)["version"] == 1
    gemma = shipped[2]
    code, _, _ = run("models", "register", str(gemma.path), "--name", "gemma3-270m", "--chat-format", "gemma")
    assert code == 0

    code, out, _ = run("models", "list", "--json")
    listed = json.loads(out)
    assert [(m["name"], m["version"]) for m in listed] == [("gemma3-270m", 1), ("smollm2-135m", 1)]
    for item in listed:
        assert {"name", "version", "kind", "sha256", "status", "capabilities", "context_window"} <= set(item)

    assert run("models", "activate", "smollm2-135m/1")[0] == 0
    code, out, _ = run("models", "list", "--status", "active", "--capability", "chat", "--json")
    assert [m["name"] for m in json.loads(out)] == ["smollm2-135m"]
    code, out, _ = run("models", "show", "smollm2-135m", "--json")
    assert json.loads(out)["status"] == "active"
    assert run("models", "deprecate", "smollm2-135m/1")[0] == 0
    assert json.loads(run("models", "show", "smollm2-135m/1", "--json")[1])["status"] == "deprecated"


@pytest.mark.parametrize(
    ("args", "expected", "exit_code"),
    [
        (("models", "register", "/no/such/file.gguf", "--name", "x"), "no such file", 2),
        (("models", "show", "ghost"), "unknown model 'ghost'", 3),
        (("models", "show", "ghost/x"), "invalid version", 2),
        (("routes", "show", "qa"), "unknown route 'qa'", 3),
        (("routes", "rollback", "qa"), "unknown route 'qa'", 3),
        (("routes", "promote", "qa", "--model", "ghost", "--version", "1"), "unknown model", 3),
        (("generate", "--route", "qa", "hello"), "unknown route 'qa'", 3),
        (("results", "sql", "select * from nowhere"), "query failed", 2),
        (("results", "matrix", "--model", "ghost"), "unknown model 'ghost'", 3),
    ],
)
def test_user_errors_are_one_clean_line(args: tuple[str, ...], expected: str, exit_code: int) -> None:
    code, _, err = run(*args)
    assert_clean_error(code, err, expected, exit_code)


def test_bad_files_and_unbenchmarked_promotion_leave_everything_unchanged(home: Path, smollm2, tmp_path: Path) -> None:
    assert run("models", "register", str(smollm2.path), "--name", "smollm2-135m")[0] == 0
    before = run("models", "list", "--json")[1]
    text = tmp_path / "readme.gguf"
    text.write_text("not a model")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(smollm2.path.read_bytes()[: 10 * 1024 * 1024])
    for path, expected in ((text, "not a GGUF file"), (truncated, "truncated")):
        code, _, err = run("models", "register", str(path), "--name", "smollm2-135m")
        assert_clean_error(code, err, expected)
    code, _, err = run("routes", "promote", "qa", "--model", "smollm2-135m", "--version", "1")
    assert_clean_error(code, err, "no benchmark on task 'qa'")
    code, _, err = run("routes", "promote", "qa", "--model", "smollm2-135m", "--version", "7")
    assert_clean_error(code, err, "has no version 7", 3)
    assert run("models", "list", "--json")[1] == before
    assert json.loads(run("results", "sql", "select count(*) as n from events where kind <> 'register'", "--json")[1]) == [{"n": 0}]


def test_changed_file_is_refused_when_serving(home: Path, smollm2, tmp_path: Path) -> None:
    copy = tmp_path / "smol.gguf"
    shutil.copy(smollm2.path, copy)
    assert run("models", "register", str(copy), "--name", "smollm2-135m")[0] == 0
    assert run("routes", "promote", "qa", "--model", "smollm2-135m", "--version", "1", "--force")[0] == 0
    with copy.open("ab") as handle:
        handle.write(b"extra")
    code, _, err = run("generate", "--route", "qa", "What is 2+2?")
    assert_clean_error(code, err, "changed since it was registered")


def test_promote_show_rollback_and_generate(home: Path, catalog: Catalog, registered) -> None:
    assert run("routes", "promote", "qa", "--model", "smollm2-135m", "--version", "1", "--force")[0] == 0
    assert run("routes", "promote", "qa", "--model", "smollm2-135m", "--version", "2", "--force")[0] == 0
    shown = json.loads(run("routes", "show", "qa", "--json")[1])
    assert shown["route"] == "qa"
    assert (shown["champion"]["model"], shown["champion"]["version"]) == ("smollm2-135m", 2)
    assert shown["previous"]["version"] == 1
    rolled = json.loads(run("routes", "rollback", "qa", "--json")[1])
    assert rolled["champion"]["version"] == 1 and rolled["previous"]["version"] == 2

    code, out, _ = run("generate", "--route", "qa", "--max-tokens", "12", "--json", "What is the capital of France?")
    answer = json.loads(out)
    assert code == 0 and answer["text"].strip() and answer["version"] == 1
    assert answer["completion_tokens"] > 0 and answer["wall_ms"] > 0
    assert answer["energy_mwh"] > 0 and answer["energy_source"] in ("estimate", "rapl") and answer["energy_model"]
    assert answer["n_threads"] >= 1 and answer["avg_rss_mb"] <= answer["peak_rss_mb"]
    calls = catalog.store.query("select source, route, model, version, ok, hardware_id from calls")
    assert len(calls) == 1 and calls[0]["source"] == "cli" and calls[0]["route"] == "qa" and calls[0]["ok"]
    code, _, err = run("generate", "--route", "qa", "   ")
    assert_clean_error(code, err, "the prompt is empty")


def test_rollback_without_previous_and_a_bad_dataset_are_clean_errors(home: Path, smollm2) -> None:
    assert run("models", "register", str(smollm2.path), "--name", "smollm2-135m")[0] == 0
    assert run("routes", "promote", "qa", "--model", "smollm2-135m", "--version", "1", "--force")[0] == 0
    code, _, err = run("routes", "rollback", "qa")
    assert_clean_error(code, err, "no previous version to roll back to")

    (home / "datasets").mkdir()
    shutil.copy(REPO / "datasets" / "qa.yaml", home / "datasets" / "qa.yaml")
    (home / "datasets" / "qa.jsonl").write_text('{"id": "qa-1", "question": 42, "references": ["x"]}\n{"id": "qa-2"}\n')
    code, _, err = run("benchmark", "--task", "qa", "--limit", "1")
    assert_clean_error(code, err, "qa.jsonl")
    assert "qa-1" in err and "qa-2" in err
    assert json.loads(run("results", "sql", "select count(*) as n from runs", "--json")[1]) == [{"n": 0}]
    assert json.loads(run("routes", "show", "qa", "--json")[1])["champion"]["version"] == 1


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--capability", "telepathy"), "unknown capabilities ['telepathy']"),
        (("--chat-format", "klingon"), "unknown chat format 'klingon'"),
    ],
)
def test_bad_capability_or_chat_format_is_refused_before_anything_is_stored(smollm2, extra, expected) -> None:
    code, _, err = run("models", "register", str(smollm2.path), "--name", "smollm2-135m", *extra)
    assert_clean_error(code, err, expected)
    assert json.loads(run("models", "list", "--json")[1]) == []


def test_status_commands_need_a_version() -> None:
    code, _, err = run("models", "activate", "smollm2-135m")
    assert_clean_error(code, err, "activate needs NAME/VERSION")


def test_an_unusable_home_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ARBITER_HOME", str(blocker / "home"))  # mkdir under a file fails for real
    code, _, err = run("models", "list", "--json")
    assert_clean_error(code, err, "check the path and its permissions", exit_code=1)
    assert str(blocker) in err


def test_a_judged_task_without_a_judge_is_refused_before_anything_runs(smollm2) -> None:
    run("models", "register", str(smollm2.path), "--name", "smollm2-135m", "--capability", "chat")
    code, _, err = run("benchmark", "--model", "smollm2-135m/1", "--task", "summarize")
    assert_clean_error(code, err, "no judge: route 'judgment' has no champion", exit_code=3)


@pytest.mark.parametrize("args", [("hardware",), ("tasks", "list")])  # click.echo text, and a rich table
def test_a_reader_that_stops_early_gets_no_error(home: Path, args: tuple[str, ...]) -> None:
    """`arbiter … | head`: the pipe closes before arbiter writes; that is no error of the user's path
    ("cannot use: Broken pipe; check the path") and no trace, just a quiet exit."""
    command = subprocess.Popen([ARBITER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    command.stdout.close()  # closed before arbiter has started: its first write meets a broken pipe
    stderr = command.stderr.read().decode()
    assert command.wait(timeout=120) == 1 and stderr == ""
