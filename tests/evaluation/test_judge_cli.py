"""``arbiter judge`` and ``arbiter judge calibrate|leaderboard`` on the embedded default, as a user runs them."""

from __future__ import annotations

import json

import pytest
from support import assert_clean_error, run

from registry.catalog.versions import Catalog

pytestmark = pytest.mark.e2e
TASK = "Summarize: The bridge closed on Monday for repairs and will reopen in June."


def test_judge_and_calibrate_work_on_the_embedded_default(catalog: Catalog, smollm2) -> None:
    assert run("models", "register", str(smollm2.path), "--name", "smollm2-135m", "--capability", "chat")[0] == 0
    assert run("routes", "promote", "judgment", "--model", "smollm2-135m", "--version", "1", "--force")[0] == 0

    code, out, _ = run("judge", "--criterion", "faithfulness", "--criterion", "safety", "--task", TASK,
                       "--output", "The bridge is closed until June for repairs.", "--json")
    assert code == 0
    judgements = json.loads(out)
    assert [j["criterion"] for j in judgements] == ["faithfulness", "safety"]
    for j in judgements:
        assert j["score"] in (0, 0.25, 0.5, 0.75, 1) and j["reason"] and j["judge"] == "smollm2-135m/1"
        assert j["figures"]["wall_ms"] > 0 and j["figures"]["completion_tokens"] > 0

    code, out, _ = run("judge", "calibrate", "--limit", "3", "--json")
    assert code == 0
    rows = json.loads(out)
    overall = next(r for r in rows if r["criterion"] == "all")
    assert (overall["model"], overall["version"], overall["n"]) == ("smollm2-135m", 1, 3)
    assert 0 <= overall["accuracy"] <= 1

    code, out, _ = run("judge", "leaderboard", "--json")
    board = json.loads(out)
    assert any(r["criterion"] == "all" and r["verdict"] and r["accuracy"] == overall["accuracy"] for r in board)
    experiment = catalog.client.get_experiment_by_name("arbiter-judges")
    runs = catalog.client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["all.accuracy"] == pytest.approx(overall["accuracy"])
    assert runs[0].data.tags["arbiter.model_version"] == "smollm2-135m/1"


@pytest.mark.parametrize(
    ("args", "expected", "exit_code"),
    [
        (("judge", "--task", TASK), "give --task", 2),
        (("judge", "--task", TASK, "--output", "   "), "empty", 2),
        (("judge", "--task", TASK, "--output", "x", "--judge", "ghost/1"), "unknown model 'ghost'", 3),
        (("judge", "--task", TASK, "--output", "x"), "route 'judgment' has no champion", 3),
        (("judge", "calibrate", "--judge", "ghost/1"), "unknown model 'ghost'", 3),
    ],
)
def test_bad_judge_input_is_one_clean_line(args: tuple[str, ...], expected: str, exit_code: int) -> None:
    code, _, err = run(*args)
    assert_clean_error(code, err, expected, exit_code)


def test_an_unknown_criterion_is_refused_with_the_known_ones() -> None:
    code, _, err = run("judge", "--criterion", "humour", "--task", TASK, "--output", "x")
    assert code == 2 and "humour" in err and "faithfulness" in err and "Traceback" not in err
