"""The selector, profiles, task learnings and the compatibility check over a real Parquet/DuckDB store.

Catalog versions are built as ``VersionRecord``s directly (no MLflow): the selector takes any
callable that lists versions, and no registration path sets accelerators other than cpu/remote.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from registry.errors import SelectionError, UserError
from registry.results.store import ResultsStore
from registry.rollout.compatibility import check_compatibility
from registry.selection.criteria import Criteria, Weights
from registry.selection.learnings import TaskLearnings
from registry.selection.profiles import ProfileCache
from registry.selection.selector import LocalModelSelector
from registry.spec import Hardware, ModelSpec, VersionRecord

pytestmark = pytest.mark.unit
HW = "hw-test"


def version(name: str, number: int = 1, *, capabilities: tuple[str, ...] = ("chat", "text-generation"),
            accelerators: tuple[str, ...] = ("cpu",), min_memory_mb: int = 100, status: str = "active",
            context_window: int = 2048, quantization: str = "Q4_0") -> VersionRecord:
    spec = ModelSpec(name=name, kind="gguf", source=f"/models/{name}.gguf", sha256=uuid.uuid4().hex * 2,
                     capabilities=capabilities, context_window=context_window, family=name.split("-")[0],
                     quantization=quantization, hardware=Hardware(accelerators=accelerators, min_memory_mb=min_memory_mb))
    return VersionRecord(name, number, status, spec, datetime.now(UTC), None)


def benchmark(store: ResultsStore, task: str, record: VersionRecord, *, quality: float, p50_ms: float,
              n: int = 20, n_ok: int | None = None, memory_mb: float = 200.0, load_ms: float | None = 1000.0,
              age_s: int = 0, task_version: int | None = None) -> None:
    """A ``runs`` row as the benchmark writes it (without its calls rows: p50 then comes from the run)."""
    store.append("runs", [{
        "run_id": uuid.uuid4().hex, "ts": datetime.now(UTC) - timedelta(seconds=age_s), "task": task,
        "task_version": task_version,
        "model": record.name, "version": record.version, "n": n, "n_ok": n if n_ok is None else n_ok,
        "quality": quality, "p50_ms": p50_ms, "peak_rss_mb": memory_mb, "load_ms": load_ms, "hardware_id": HW,
    }])


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path)


def selector(store: ResultsStore, versions: list[VersionRecord], **kwargs) -> LocalModelSelector:
    return LocalModelSelector(lambda: versions, ProfileCache(store), hardware_id=HW, **kwargs)


# --- profiles ------------------------------------------------------------------------------------------


def test_profile_combines_the_latest_run_with_live_calls(store: ResultsStore) -> None:
    a = version("a")
    benchmark(store, "qa", a, quality=0.1, p50_ms=900, age_s=60)  # superseded by the next run
    benchmark(store, "qa", a, quality=0.8, p50_ms=100, n=10, n_ok=9)
    live = {"run_id": None, "source": "gateway", "route": "qa", "model": "a", "version": 1, "hardware_id": HW}
    store.append("calls", [{**live, "ok": True, "wall_ms": 300.0, "quality": 0.5},
                           {**live, "ok": True, "wall_ms": 500.0},
                           {**live, "ok": False, "wall_ms": 5.0}])
    profile = ProfileCache(store).get("a", 1, "qa", HW)
    assert profile is not None
    assert profile.samples == 13                                   # 10 benchmark + 3 live
    assert profile.success_rate == pytest.approx(11 / 13)          # 9 + 2 ok
    assert profile.quality == pytest.approx((0.8 * 10 + 0.5) / 11)  # only rows with a score
    assert profile.p50_ms == 400.0                                 # median of the successful live walls
    assert profile.load_ms == 1000.0 and profile.ref == "a/1"
    assert ProfileCache(store).get("a", 1, "extract", HW) is None


def test_profile_takes_the_run_on_the_newest_task_version(store: ResultsStore) -> None:
    a = version("a")
    benchmark(store, "qa", a, quality=0.3, p50_ms=100, task_version=2, age_s=60)
    benchmark(store, "qa", a, quality=0.9, p50_ms=100, task_version=1)  # newer, but of the older task version
    assert ProfileCache(store).get("a", 1, "qa", HW).quality == 0.3


def test_profile_cache_rereads_only_when_stale(store: ResultsStore) -> None:
    now = [0.0]
    cache = ProfileCache(store, max_age_s=5, clock=lambda: now[0])
    assert cache.get("a", 1, "qa") is None
    benchmark(store, "qa", version("a"), quality=0.5, p50_ms=100)
    assert cache.get("a", 1, "qa") is None        # cached read
    now[0] = 6
    assert cache.get("a", 1, "qa").quality == 0.5  # older than max_age_s: re-read
    benchmark(store, "qa", version("a"), quality=0.9, p50_ms=100)
    assert cache.refresh().get("a", 1, "qa").quality == 0.9


# --- scoring -------------------------------------------------------------------------------------------


def test_score_is_the_weighted_formula(store: ResultsStore) -> None:
    a = version("a")
    benchmark(store, "qa", a, quality=0.8, p50_ms=500, n=20, n_ok=19, memory_mb=256)
    chosen = selector(store, [a]).select(Criteria(task="qa", max_latency_ms=2000, max_memory_mb=1024))
    expected = 0.4 * 0.8 + 0.3 * (1 - 500 / 2000) + 0.2 * (1 - 256 / 1024) + 0.1 * (19 / 20)
    assert chosen.primary.score == pytest.approx(expected)
    assert chosen.primary.parts._asdict() == pytest.approx(
        {"quality": 0.8, "latency": 0.75, "memory": 0.75, "success": 0.95})
    assert chosen.primary.conservative is False and chosen.fallback is None


def test_without_limits_the_scale_is_twice_the_worst_candidate(store: ResultsStore) -> None:
    a, b = version("a"), version("b")
    benchmark(store, "qa", a, quality=0.5, p50_ms=100, memory_mb=100)
    benchmark(store, "qa", b, quality=0.5, p50_ms=400, memory_mb=300)
    chosen = selector(store, [a, b]).select(Criteria(task="qa"))
    assert chosen.scale["latency_ms"] == 800 and chosen.scale["memory_mb"] == 600
    slow = next(c for c in chosen.candidates if c.ref == "b/1")
    assert slow.parts.latency == pytest.approx(0.5) and slow.parts.memory == pytest.approx(0.5)
    assert chosen.primary.ref == "a/1"


def test_fewer_than_10_samples_scores_the_conservative_half(store: ResultsStore) -> None:
    few, unmeasured, good = version("few"), version("new"), version("good")
    benchmark(store, "qa", few, quality=1.0, p50_ms=1, n=9)
    benchmark(store, "qa", good, quality=0.9, p50_ms=100)
    chosen = selector(store, [few, unmeasured, good]).select(Criteria(task="qa", max_latency_ms=1000))
    by_ref = {c.ref: c for c in chosen.candidates}
    assert by_ref["few/1"].score == 0.5 and by_ref["few/1"].conservative and by_ref["few/1"].samples == 9
    assert by_ref["new/1"].score == 0.5 and by_ref["new/1"].parts is None
    assert chosen.primary.ref == "good/1" and chosen.primary.score > 0.5
    assert [c.ref for c in chosen.candidates] == ["good/1", "few/1", "new/1"]  # ties: by name


def test_primary_and_fallback_best_first(store: ResultsStore) -> None:
    versions = [version("a"), version("b"), version("c")]
    for record, quality in zip(versions, (0.5, 0.9, 0.7), strict=True):
        benchmark(store, "qa", record, quality=quality, p50_ms=100)
    chosen = selector(store, versions).select(Criteria(task="qa", max_latency_ms=1000))
    assert (chosen.primary.ref, chosen.fallback.ref) == ("b/1", "c/1")
    assert "b/1 scores" in chosen.reasoning and "ahead of c/1" in chosen.reasoning


def test_a_cold_version_loses_a_near_tie_but_not_a_clear_win(store: ResultsStore) -> None:
    warm, cold = version("warm"), version("cold")
    benchmark(store, "qa", warm, quality=0.80, p50_ms=100, load_ms=4000)
    benchmark(store, "qa", cold, quality=0.81, p50_ms=100, load_ms=4000)  # +0.004 on score
    is_warm = {"warm/1": True, "cold/1": False}
    chosen = selector(store, [warm, cold], is_warm=lambda r: is_warm[r.ref]).select(Criteria(task="qa"))
    assert chosen.primary.ref == "warm/1"
    assert chosen.fallback.swap_penalty == pytest.approx(0.02 * 4000 / 5000)
    assert "would need a load" in chosen.reasoning
    assert selector(store, [warm, cold]).select(Criteria(task="qa")).primary.ref == "cold/1"  # no pool: no cost
    benchmark(store, "qa", cold, quality=0.95, p50_ms=100, load_ms=4000)
    chosen = selector(store, [warm, cold], is_warm=lambda r: is_warm[r.ref]).select(Criteria(task="qa"))
    assert chosen.primary.ref == "cold/1"


def test_the_next_selection_sees_a_catalog_change_and_a_profile_reread(store: ResultsStore) -> None:
    """The selector keeps per-task columns between calls; each kind of change must still show at once."""
    a, b = version("a"), version("b")
    benchmark(store, "qa", a, quality=0.9, p50_ms=100)
    benchmark(store, "qa", b, quality=0.5, p50_ms=100)
    listing, profiles = [a], ProfileCache(store, max_age_s=3600)
    pick = LocalModelSelector(lambda: listing, profiles, hardware_id=HW)
    assert [c.ref for c in pick.select(Criteria(task="qa")).candidates] == ["a/1"]
    listing.append(b)  # the same list, edited in place
    assert [c.ref for c in pick.select(Criteria(task="qa")).candidates] == ["a/1", "b/1"]
    listing = [version("a", status="deprecated"), b]  # a new listing: a/1 deprecated since
    chosen = pick.select(Criteria(task="qa"))
    assert chosen.primary.ref == "b/1" and chosen.primary.record is b and chosen.excluded[0].ref == "a/1"
    listing = [a, b]
    benchmark(store, "qa", b, quality=1.0, p50_ms=50)
    assert pick.select(Criteria(task="qa")).primary.ref == "a/1"  # the cached read, until re-read
    profiles.refresh()
    assert pick.select(Criteria(task="qa")).primary.ref == "b/1"


# --- exclusions ----------------------------------------------------------------------------------------


def test_each_exclusion_names_its_reason_and_figures(store: ResultsStore) -> None:
    ok = version("ok")
    no_json = version("nojson")
    coreml = version("coreml", accelerators=("ane",))
    big = version("big")
    huge = version("huge", min_memory_mb=10**9)
    slow = version("slow")
    old = version("old", status="deprecated")
    for record in (ok, no_json, coreml, huge, old):
        benchmark(store, "qa", record, quality=0.5, p50_ms=100)
    benchmark(store, "qa", big, quality=0.5, p50_ms=100, memory_mb=900)
    benchmark(store, "qa", slow, quality=0.5, p50_ms=2500)
    ok_json = version("ok", capabilities=("chat", "json"))
    chosen = selector(store, [ok_json, no_json, coreml, big, huge, slow, old]).select(
        Criteria(task="qa", capabilities=("json",), max_latency_ms=2000, max_memory_mb=512))
    reasons = {e.ref: e.reasons for e in chosen.excluded}
    assert chosen.primary.ref == "ok/1"
    assert reasons["nojson/1"] == ("missing capability json",)
    assert reasons["coreml/1"][-1] == "needs ane (macOS on Apple Silicon); this machine has cpu"
    assert reasons["big/1"][-1] == "needs 900 MB (measured peak RSS), over the 512 MB budget"
    assert reasons["huge/1"][-1].startswith(f"needs {10**9} MB to load;") and "available on this machine" in reasons["huge/1"][-1]
    assert reasons["slow/1"][-1] == "too slow: p50 2500 ms over the 2000 ms limit"
    assert reasons["old/1"][0].startswith("deprecated; `arbiter models activate old/1`")
    assert all(len(r) >= 1 for r in reasons.values()) and "nojson/1" in reasons  # every version accounted for
    assert len(chosen.candidates) + len(chosen.excluded) == 7


def test_one_version_can_have_several_reasons_and_too_few_samples_only_when_asked(store: ResultsStore) -> None:
    bad = version("bad", capabilities=("chat",), accelerators=("ane",))
    benchmark(store, "qa", bad, quality=0.5, p50_ms=3000, n=4)
    with pytest.raises(SelectionError) as caught:
        selector(store, [bad]).select(Criteria(task="qa", capabilities=("code",), max_latency_ms=1000, min_samples=5))
    message = str(caught.value)
    assert message.startswith("no version can serve qa under these criteria — bad/1: ")
    for part in ("missing capability code", "needs ane", "too slow: p50 3000 ms", "too few samples: 4 on qa, 5 required"):
        assert part in message
    assert "\n" not in message
    assert selector(store, [version("fresh")]).select(Criteria(task="qa")).primary.ref == "fresh/1"  # no min: kept


def test_remote_models_run_anywhere(store: ResultsStore) -> None:
    remote = version("served", accelerators=("remote",), min_memory_mb=0)
    assert selector(store, [remote]).select(Criteria(task="qa")).primary.ref == "served/1"


def test_nothing_registered_says_how_to_register(store: ResultsStore) -> None:
    with pytest.raises(SelectionError, match="arbiter models register"):
        selector(store, []).select(Criteria(task="qa"))


# --- criteria --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"task": "QA!"}, "'QA!' is not a task name"),
        ({"task": "qa", "capabilities": ("telepathy",)}, "unknown capabilities ['telepathy']; known: chat"),
        ({"task": "qa", "max_latency_ms": -5}, "max_latency_ms: must be a number of milliseconds > 0 (got -5)"),
        ({"task": "qa", "max_memory_mb": 0}, "max_memory_mb: must be a number of MB > 0"),
        ({"task": "qa", "prefer": "cheap"}, "unknown preference 'cheap'; use one of: fast, quality, low-memory"),
        ({"task": "qa", "weights": {"quality": 0.9}}, "weights must sum to 1"),
    ],
)
def test_bad_criteria_are_one_line_user_errors(fields: dict, expected: str) -> None:
    with pytest.raises(UserError) as caught:
        Criteria(**fields)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_prefer_moves_weight_to_its_part_and_keeps_the_sum() -> None:
    fast = Criteria(task="qa", prefer="fast").effective_weights
    assert fast.latency == pytest.approx(0.5)
    assert fast.quality == pytest.approx(0.4 * 0.5 / 0.7)
    assert fast.quality + fast.latency + fast.memory + fast.success == pytest.approx(1)
    assert Criteria(task="qa").effective_weights == Weights()


# --- learnings ---------------------------------------------------------------------------------------------


def test_learnings_change_the_choice(store: ResultsStore) -> None:
    accurate, quick = version("accurate"), version("quick")
    benchmark(store, "qa", accurate, quality=0.95, p50_ms=1200)
    benchmark(store, "qa", quick, quality=0.6, p50_ms=300)
    learnings = TaskLearnings(store)
    pick = LocalModelSelector(lambda: [accurate, quick], ProfileCache(store), learnings, hardware_id=HW)
    assert pick.select(Criteria(task="qa")).primary.ref == "accurate/1"
    learnings.set("qa", prefer="fast", max_latency_ms=1000)
    chosen = pick.select(Criteria(task="qa"))
    assert chosen.primary.ref == "quick/1"
    assert chosen.criteria.prefer == "fast" and chosen.criteria.max_latency_ms == 1000
    assert [e.ref for e in chosen.excluded] == ["accurate/1"]  # the task's latency target excludes it
    assert pick.select(Criteria(task="qa", prefer="quality", max_latency_ms=2000)).primary.ref == "accurate/1"
    assert pick.select(Criteria(task="extract")).criteria == Criteria(task="extract")  # other tasks untouched


def test_enhance_rules_latency_target_and_complexity(store: ResultsStore) -> None:
    learnings = TaskLearnings(store)
    for record, quality, p50 in ((version("a"), 0.5, 100.0), (version("b"), 0.6, 300.0), (version("c"), 0.7, 900.0)):
        benchmark(store, "qa", record, quality=quality, p50_ms=p50)
    learnings.learn("qa")
    assert learnings.get("qa").latency_target_ms == 300.0 and learnings.get("qa").prefer is None
    assert learnings.enhance(Criteria(task="qa")).max_latency_ms is None  # no preference: no limit imposed
    learnings.set("qa", prefer="fast")
    assert learnings.enhance(Criteria(task="qa")).max_latency_ms == 300.0
    learnings.set("qa", complexity="high")
    assert learnings.enhance(Criteria(task="qa")).max_latency_ms == 450.0
    assert learnings.enhance(Criteria(task="qa", max_latency_ms=1000)).max_latency_ms == 1500.0
    learnings.set("qa", complexity="low")
    assert learnings.enhance(Criteria(task="qa", max_latency_ms=1000)).max_latency_ms == 750.0


def test_learnings_survive_a_restart_entirely(store: ResultsStore) -> None:
    written = TaskLearnings(store)
    settings = {
        "qa": {"prefer": "fast", "complexity": "high", "quality_threshold": 0.7, "max_latency_ms": 1500.0},
        "extract": {"prefer": "quality", "complexity": "low", "quality_threshold": 0.8, "max_latency_ms": 4000.0},
        "classify": {"prefer": "low-memory", "complexity": "medium", "quality_threshold": 0.6, "max_latency_ms": 900.0},
    }
    for task, values in settings.items():
        written.set(task, **values)
    benchmark(store, "qa", version("a"), quality=0.5, p50_ms=100)
    learned = written.learn("qa").patterns
    restarted = TaskLearnings(store)  # a new process reads only the store
    for task, values in settings.items():
        read = restarted.get(task)
        assert {key: getattr(read, key) for key in values} == values
        assert set(read.sources.values()) <= {"manual", "learned"}
    assert restarted.get("qa").patterns == learned
    assert restarted.get("qa").as_json() == written.get("qa").as_json()


def test_learning_never_overwrites_a_manual_setting_and_infers_only_clear_cases(store: ResultsStore) -> None:
    learnings = TaskLearnings(store)
    same_quality = [(version("a"), 0.80, 100.0), (version("b"), 0.82, 400.0)]
    for record, quality, p50 in same_quality:
        benchmark(store, "qa", record, quality=quality, p50_ms=p50)
    learned = learnings.learn("qa")
    assert learned.prefer == "fast" and learned.sources["prefer"] == "learned"
    assert learned.patterns["quality"] == {"min": 0.8, "mean": pytest.approx(0.81), "max": 0.82}
    assert learned.patterns["samples"] == 40 and learned.patterns["versions"] == 2
    learnings.set("qa", prefer="quality")
    assert learnings.learn("qa").prefer == "quality"
    assert learnings.get("qa").sources["prefer"] == "manual"

    for record, quality, p50 in ((version("c"), 0.5, 100.0), (version("d"), 0.6, 120.0)):
        benchmark(store, "extract", record, quality=quality, p50_ms=p50)
    assert learnings.learn("extract").prefer is None  # neither clearly faster nor clearly better


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda l: l.set("qa", prefer="slow"), "unknown preference 'slow'"),
        (lambda l: l.set("qa", complexity="extreme"), "unknown complexity 'extreme'; use one of: low, medium, high"),
        (lambda l: l.set("qa", quality_threshold=1.5), "quality threshold must be between 0 and 1"),
        (lambda l: l.set("qa", max_latency_ms=0), "max latency must be milliseconds > 0"),
        (lambda l: l.set("qa"), "nothing to set"),
        (lambda l: l.get("Q A"), "invalid task 'Q A'"),
        (lambda l: l.learn("qa"), "nothing measured on 'qa' yet; run `arbiter benchmark --task qa` first"),
    ],
)
def test_bad_learnings_input_is_refused_and_writes_nothing(store: ResultsStore, call, expected: str) -> None:
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        call(TaskLearnings(store))
    assert store.query("select count(*) as n from learnings") == [{"n": 0}]


# --- compatibility -------------------------------------------------------------------------------------------


def test_compatibility_rules(store: ResultsStore) -> None:
    champion = version("champ", context_window=4096, capabilities=("chat", "json"), quantization="Q4_1")
    benchmark(store, "qa", champion, quality=0.8, p50_ms=100, n=20, n_ok=20)
    profiles = ProfileCache(store)

    good = version("champ", 2, context_window=4096, capabilities=("chat", "json", "code"), quantization="Q4_0")
    benchmark(store, "qa", good, quality=0.77, p50_ms=100, n=20, n_ok=19)
    result = check_compatibility("qa", champion, good, ProfileCache(store), HW)
    assert result.can_replace and result.reasons == ()
    assert result.warnings == ("different quantization: Q4_1 → Q4_0",)
    assert result.figures["quality"] == {"current": 0.8, "candidate": 0.77}
    assert result.as_json()["can_replace"] is True

    small = version("small", context_window=2048, capabilities=("chat",))
    benchmark(store, "qa", small, quality=0.70, p50_ms=100, n=20, n_ok=14)
    result = check_compatibility("qa", champion, small, ProfileCache(store), HW)
    assert not result.can_replace
    assert result.reasons == (
        "context window 2048 is smaller than champ/1's 4096",
        "lacks champ/1's capability json",
        "success rate on qa 70.0% is under 0.9 × champ/1's 100.0%",
        "quality on qa 0.700 is under 0.95 × champ/1's 0.800",
    )
    assert "different family: champ → small" in result.warnings

    unmeasured = version("champ", 3, context_window=4096, capabilities=("chat", "json"))
    result = check_compatibility("qa", champion, unmeasured, profiles, HW)
    assert result.reasons == (
        "champ/3 has no measured data on qa; benchmark it first: `arbiter benchmark --model champ/3 --task qa`",)

    noisy = version("champ", 4, context_window=4096, capabilities=("chat", "json"), quantization="Q4_1")
    benchmark(store, "qa", noisy, quality=0.9, p50_ms=100, n=5)
    new_route = version("first", context_window=4096, capabilities=("chat", "json"), quantization="Q4_1")
    result = check_compatibility("qa", new_route, noisy, ProfileCache(store), HW)
    assert result.can_replace
    assert "first/1 has no measured data on qa: success and quality not compared" in result.warnings
    assert "champ/4 has only 5 samples on qa (< 10): noisy figures" in result.warnings
