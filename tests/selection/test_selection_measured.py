"""Selection on real benchmark runs of the shipped models, and task learnings across a route swap."""

from __future__ import annotations

import pytest

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.evaluation.benchmark import benchmark_version, record_result
from registry.evaluation.tasks import TaskCatalog
from registry.machine.hardware import fingerprint
from registry.rollout.compatibility import check_compatibility
from registry.selection.criteria import Criteria
from registry.selection.learnings import TaskLearnings
from registry.selection.profiles import ProfileCache
from registry.selection.selector import LocalModelSelector

pytestmark = pytest.mark.integration
TASK = "extract"  # where SmolLM2's two quantizations differ most in quality (README: 0.825 vs 0.618)


@pytest.fixture
def measured(catalog: Catalog, registered, session_pool):
    """SmolLM2 Q4_1 (v1) and Q4_0 (v2) benchmarked for real on 10 extract items each; Gemma left unmeasured."""
    validation_set = TaskCatalog(catalog.settings).get(TASK)
    smollm2 = [r for r in registered if r.name == "smollm2-135m"]
    for record in smollm2:
        record_result(catalog, benchmark_version(session_pool, record, validation_set, limit=10))
    return smollm2


def test_select_picks_by_the_measured_figures(catalog: Catalog, measured) -> None:
    hardware_id = fingerprint().hardware_id
    profiles = ProfileCache(catalog.store)
    selector = LocalModelSelector(catalog.list_versions, profiles, hardware_id=hardware_id)

    chosen = selector.select(Criteria(task=TASK, min_samples=10))
    assert {c.ref for c in chosen.candidates} == {"smollm2-135m/1", "smollm2-135m/2"}
    assert {e.ref: e.reasons for e in chosen.excluded} == {
        "gemma3-270m/1": (f"too few samples: 0 on {TASK}, 10 required",),
        "gemma3-270m/2": (f"too few samples: 0 on {TASK}, 10 required",),
    }
    runs = {f"{r['model']}/{r['version']}": r for r in catalog.store.leaderboard(TASK)}
    for candidate in chosen.candidates:
        assert candidate.samples == 10 and not candidate.conservative
        assert candidate.profile.quality == pytest.approx(runs[candidate.ref]["quality"])
        assert candidate.profile.memory_mb == pytest.approx(runs[candidate.ref]["peak_rss_mb"])
    assert chosen.primary.score >= chosen.fallback.score

    figures = {c.ref: c.profile for c in chosen.candidates}
    faster = min(figures, key=lambda ref: figures[ref].p50_ms)
    only_latency = Criteria(task=TASK, min_samples=10, weights={"quality": 0, "latency": 1, "memory": 0, "success": 0})
    assert selector.select(only_latency).primary.ref == faster
    if figures["smollm2-135m/1"].quality != figures["smollm2-135m/2"].quality:
        better = max(figures, key=lambda ref: figures[ref].quality)
        only_quality = Criteria(task=TASK, min_samples=10,
                                weights={"quality": 1, "latency": 0, "memory": 0, "success": 0})
        assert selector.select(only_quality).primary.ref == better

    slower = max(figures, key=lambda ref: figures[ref].p50_ms)
    between = (figures[faster].p50_ms + figures[slower].p50_ms) / 2
    limited = selector.select(Criteria(task=TASK, min_samples=10, max_latency_ms=between))
    assert limited.primary.ref == faster and limited.fallback is None
    assert any(r.startswith("too slow: p50") for e in limited.excluded if e.ref == slower for r in e.reasons)

    current, candidate = catalog.get_ref("smollm2-135m/1"), catalog.get_ref("smollm2-135m/2")
    compatibility = check_compatibility(TASK, current, candidate, profiles, hardware_id)
    assert compatibility.figures["quality"] == {"current": figures["smollm2-135m/1"].quality,
                                                "candidate": figures["smollm2-135m/2"].quality}
    assert compatibility.can_replace == (
        figures["smollm2-135m/2"].quality >= 0.95 * figures["smollm2-135m/1"].quality
        and figures["smollm2-135m/2"].success_rate >= 0.9 * figures["smollm2-135m/1"].success_rate
    )
    assert "different quantization: Q4_1 → Q4_0" in compatibility.warnings


def test_learnings_are_unchanged_by_route_swaps_and_restarts(catalog: Catalog, measured) -> None:
    learnings = TaskLearnings(catalog.store)
    learnings.set(TASK, prefer="quality", complexity="high", quality_threshold=0.6, max_latency_ms=5000)
    learnings.learn(TASK)
    before = learnings.get(TASK).as_json()
    assert before["patterns"]["samples"] == 20 and before["patterns"]["versions"] == 2
    assert before["prefer"] == "quality" and before["sources"]["prefer"] == "manual"

    routes = Routes(catalog)
    routes.promote(TASK, "smollm2-135m", 1, force=True)
    routes.promote(TASK, "smollm2-135m", 2, force=True)
    routes.rollback(TASK)
    assert routes.show(TASK).champion.version == 1

    assert learnings.get(TASK).as_json() == before
    assert TaskLearnings(catalog.store).get(TASK).as_json() == before  # a new process: everything read back
