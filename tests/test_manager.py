"""The application facade on real models: execute a task, get swapped past a champion the
criteria rule out, force a swap, roll back, read the summary and the statistics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.errors import SelectionError
from registry.manager import ArbiterModelManager
from registry.selection.criteria import Criteria
from registry.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def manager(settings: Settings, catalog: Catalog, shipped) -> Iterator[ArbiterModelManager]:
    smollm2 = shipped[0]
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-json", capabilities=[*smollm2.capabilities, "json"])
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    with ArbiterModelManager(settings) as running:
        yield running


def test_execute_task_runs_the_champion_and_measures_it(manager: ArbiterModelManager) -> None:
    result = manager.execute_task("What is the capital of France? One word.", Criteria(task="qa"))

    assert result.version == "smollm2-135m/1" and not result.swapped and result.swap_reason is None
    assert result.output.strip()
    assert result.figures["wall_ms"] > 0 and result.figures["completion_tokens"] > 0


def test_criteria_that_rule_out_the_champion_swap_this_request_and_say_why(manager: ArbiterModelManager) -> None:
    result = manager.execute_task("Answer in JSON: what colour is the sky?", Criteria(task="qa", capabilities=("json",)))

    assert result.version == "smollm2-json/1" and result.swapped
    assert "champion smollm2-135m/1 excluded" in result.swap_reason and "json" in result.swap_reason
    assert manager.routes.show("qa").champion.model == "smollm2-135m"  # one request moves no alias


def test_criteria_nothing_meets_are_a_selection_error(manager: ArbiterModelManager) -> None:
    with pytest.raises(SelectionError, match="code"):
        manager.execute_task("hi", Criteria(task="qa", capabilities=("code",)))


def test_force_swap_rollback_summary_and_statistics(manager: ArbiterModelManager) -> None:
    manager.execute_task("Say hello.", Criteria(task="qa"))
    swapped = manager.force_swap("qa", "smollm2-json/1")
    assert swapped["champion"]["model"] == "smollm2-json"
    assert manager.execute_task("Say hello.", Criteria(task="qa")).version == "smollm2-json/1"
    assert manager.rollback("qa")["champion"]["model"] == "smollm2-135m"

    summary = manager.task_summary("qa")
    assert {v["version"] for v in summary["versions"]} == {"smollm2-135m/1", "smollm2-json/1"}
    assert summary["route"]["champion"]["model"] == "smollm2-135m" and "learnings" in summary
    stats = manager.statistics()
    assert stats["swaps"]["promote"] == 2 and stats["swaps"]["rollback"] == 1 and stats["total_swaps"] == 3
    assert {t["task"]: t["calls"] for t in stats["tasks"]}["qa"] == 2


def test_a_champion_that_cannot_load_fails_over_to_the_selectors_next_choice(
    manager: ArbiterModelManager, catalog: Catalog, shipped, tmp_path
) -> None:
    doomed = tmp_path / "doomed.gguf"
    doomed.write_bytes(shipped[0].path.read_bytes())
    catalog.register(doomed, name="doomed", capabilities=list(shipped[0].capabilities))
    manager.force_swap("qa", "doomed/1")
    doomed.unlink()

    result = manager.execute_task("Say hello.", Criteria(task="qa"))

    assert result.swapped and result.version != "doomed/1" and result.output.strip()
    assert result.swap_reason.startswith("doomed/1 failed")
