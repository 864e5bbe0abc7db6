"""Live scoring off the request path: the shipped tasks' live scorers write one ``feedback`` row per
call into a real store; a full queue drops (counted) and never blocks the caller; a scorer that
raises, a judge that fails or times out each leave a NULL row saying why; a new task version is
picked up; and the real judge on the shipped SmolLM2 scores one summarize answer."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from support import Clock

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.errors import NotFoundError
from registry.evaluation.judge import ModelBasedJudge
from registry.evaluation.tasks import TaskCatalog
from registry.providers.base import GenerationRequest
from registry.quality.judge_gate import JudgeGate
from registry.quality.live_scoring import JUDGE_SOURCE, SCORER_SOURCE, LiveCall, LiveScorer
from registry.results.feedback import feedback_id
from registry.results.store import ResultsStore, new_id
from registry.serving.pool import WarmPool
from registry.settings import Settings

pytestmark = pytest.mark.data

PROBE = '''
import time
from pathlib import Path


def score(item, answer):
    """Waits for the file the prompt names ("wait"), raises ("boom"), returns 1.5 ("big"); else 1.0."""
    if answer == "wait":
        release = Path(item["prompt"])
        deadline = time.monotonic() + 120
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return 1.0
    if answer == "boom":
        raise ValueError("no verdict for this answer")
    if answer == "big":
        return 1.5
    return 1.0
'''
PROBE_SPEC: dict[str, Any] = {
    "name": "probe",
    "description": "A task whose live scorer waits, raises or misbehaves on demand.",
    "data": {"path": "probe.jsonl", "fields": {"id": "text", "text": "text"}},
    "prompt": {"template": "{{ text }}"},
    "scoring": {"scorers": [{"scorer": "regex", "pattern": "."}]},
    "live": {"scorers": [{"scorer": "python", "function": "probe:score", "needs_reference": False,
                          "reads": ["prompt"]}]},
}


@pytest.fixture
def store(settings: Settings) -> ResultsStore:
    return ResultsStore(settings.results_dir)


@pytest.fixture
def tasks(settings: Settings) -> TaskCatalog:
    return TaskCatalog(settings)


@pytest.fixture
def probe(tasks: TaskCatalog, tmp_path: Path) -> Path:
    """Task ``probe`` recorded; returns the file whose existence releases a waiting scorer."""
    folder = tmp_path / "probe-task"
    folder.mkdir()
    (folder / "probe.yaml").write_text(yaml.safe_dump(PROBE_SPEC, sort_keys=False))
    (folder / "probe.jsonl").write_text(json.dumps({"id": "p1", "text": "anything"}) + "\n")
    (folder / "probe.py").write_text(PROBE)
    tasks.add(folder / "probe.yaml")
    return tmp_path / "release"


def live_scorer(tasks: TaskCatalog, store: ResultsStore, **options: Any) -> LiveScorer:
    scorer = LiveScorer(tasks, lambda row: store.append("feedback", [row]), **options)
    scorer.start()
    return scorer


def call(route: str, prompt: str, answer: str, *, model: str = "smollm2-135m", version: int = 1) -> LiveCall:
    return LiveCall(new_id(), route, model, version, prompt, "", answer)


def feedback(store: ResultsStore) -> dict[str, dict[str, Any]]:
    """Every feedback row by call id, ``detail`` parsed."""
    rows = store.query("select * from feedback order by ts")
    return {row["call_id"]: {**row, "detail": json.loads(row["detail"])} for row in rows}


def wait_until(done: Any, what: str) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.01)


def prompt_of(tasks: TaskCatalog, task: str, index: int = 0) -> tuple[str, dict[str, Any]]:
    """The rendered last user message of one validation item, as a client would send it, and the item."""
    version = tasks.get(task)
    item = version.items[index]
    return version.messages(item)[-1]["content"], item.data


# --------------------------------------------------------------------------- the shipped tasks


def test_shipped_extract_and_classify_answers_get_one_scorer_row_each(tasks: TaskCatalog, store: ResultsStore) -> None:
    extract, item = prompt_of(tasks, "extract")
    classify, labelled = prompt_of(tasks, "classify")
    fields = item["fields"]
    calls = {
        "right": call("extract", extract, json.dumps(fields)),
        "a key short": call("extract", extract, json.dumps(dict(list(fields.items())[1:])), version=2),
        "prose": call("extract", extract, "Sorry, I cannot tell."),
        "a label": call("classify", classify, labelled["label"]),
        "a hedge": call("classify", classify, " or ".join(labelled["labels"])),
    }
    scorer = live_scorer(tasks, store)
    assert all(scorer.offer(c) for c in calls.values())
    scorer.stop(drain=True)

    rows = feedback(store)
    scores = {name: rows[c.call_id]["score"] for name, c in calls.items()}
    assert scores["right"] == 1.0 and scores["a key short"] < 0.8 and scores["prose"] == 0.0
    assert scores["a label"] == 1.0 and scores["a hedge"] == 0.0
    row = rows[calls["a key short"].call_id]
    assert (row["signal"], row["source"], row["route"], row["model"], row["version"]) == (
        "scorer", SCORER_SOURCE, "extract", "smollm2-135m", 2)
    assert row["feedback_id"] == feedback_id(row["call_id"], SCORER_SOURCE) and row["comment"] is None
    assert row["detail"] == {"task": tasks.get("extract").ref, "scores": {"asked_keys": row["score"]}}
    assert scorer.counters() == {"offered": 5, "dropped": 0, "skipped": 0, "discarded": 0, "scored": 5,
                                 "failed": 0, "judged": 0, "judge_failed": 0}


def test_a_route_without_live_scoring_is_skipped_and_then_refused_at_offer(tasks: TaskCatalog, store: ResultsStore) -> None:
    extract, _ = prompt_of(tasks, "extract")
    scorer = live_scorer(tasks, store)
    assert scorer.offer(call("qa", "What is the capital of France?", "Paris"))  # not known yet: queued
    assert scorer.offer(call("no-such-task", "Hi", "Hello"))
    assert scorer.offer(call("extract", extract, "{}"))
    wait_until(lambda: scorer.counters()["scored"] == 1, "the extract call")  # in order: the others were looked up
    assert not scorer.offer(call("qa", "What is 2 plus 2?", "4"))  # known now: refused at once
    scorer.stop(drain=True)
    assert [r["route"] for r in feedback(store).values()] == ["extract"]
    assert scorer.counters()["skipped"] == 3 and scorer.counters()["offered"] == 4


def test_a_live_call_is_read_from_the_request_as_the_gateway_got_it() -> None:
    chat = GenerationRequest(messages=(
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ))
    made = LiveCall.of("c1", "extract", "smollm2-135m", 1, chat, "answer")
    assert (made.prompt, made.system, made.answer) == ("second", "Be brief.", "answer")
    completion = LiveCall.of("c2", "extract", "smollm2-135m", 1, GenerationRequest(prompt="Complete: a b"), "c")
    assert (completion.prompt, completion.system) == ("Complete: a b", "")


# --------------------------------------------------------------------------- bounded, never blocking


def test_a_full_queue_drops_and_counts_and_offer_never_waits_for_the_scorer(
        tasks: TaskCatalog, store: ResultsStore, probe: Path) -> None:
    scorer = live_scorer(tasks, store, max_queue=2)
    # The scorer waits until `probe` exists: every offer below returns while the worker is stuck.
    accepted = [scorer.offer(call("probe", str(probe), "wait")) for _ in range(20)]
    counters = scorer.counters()
    assert counters["offered"] == 20 and counters["dropped"] == accepted.count(False)
    assert accepted[:2] == [True, True]
    assert 2 <= accepted.count(True) <= 3  # the queue's two, and one more if the worker took one meanwhile

    probe.touch()
    scorer.stop(drain=True)
    assert scorer.counters()["scored"] == accepted.count(True) == len(feedback(store))


def test_stop_without_drain_discards_the_queue_with_a_count(tasks: TaskCatalog, store: ResultsStore, probe: Path) -> None:
    scorer = live_scorer(tasks, store, max_queue=8)
    assert all(scorer.offer(call("probe", str(probe), "wait")) for _ in range(4))
    scorer.stop(timeout_s=0.05)  # the worker is still waiting on its call: the rest are discarded
    assert not scorer.offer(call("probe", str(probe), "ok"))  # stopped: refused, counted as dropped
    probe.touch()
    scorer.stop()  # the call in hand ends; the worker takes the stop
    counters = scorer.counters()
    assert counters["discarded"] in (3, 4) and counters["discarded"] + counters["scored"] == 4
    assert counters["dropped"] == 1 and len(feedback(store)) == counters["scored"]


# --------------------------------------------------------------------------- failures: counted, never a pass


def test_a_scorer_that_raises_or_misbehaves_leaves_a_null_row_saying_why(
        tasks: TaskCatalog, store: ResultsStore, probe: Path) -> None:
    calls = {answer: call("probe", "Say something.", answer) for answer in ("boom", "big", "fine")}
    scorer = live_scorer(tasks, store)
    for c in calls.values():
        scorer.offer(c)
    scorer.stop(drain=True)

    rows = feedback(store)
    boom, big, fine = (rows[calls[a].call_id] for a in ("boom", "big", "fine"))
    assert boom["score"] is None and boom["signal"] == "scorer"
    assert boom["detail"]["error"] == "python: probe:score raised ValueError: no verdict for this answer"
    assert big["score"] is None and big["detail"]["error"] == "python: probe:score returned 1.5, not a number in [0, 1]"
    assert fine["score"] == 1.0 and "error" not in fine["detail"]
    assert scorer.counters()["failed"] == 2 and scorer.counters()["scored"] == 1


def test_a_new_task_version_is_picked_up_after_the_recheck(tasks: TaskCatalog, store: ResultsStore, probe: Path,
                                                           tmp_path: Path) -> None:
    clock = Clock()
    scorer = live_scorer(tasks, store, clock=clock)
    first = call("probe", "Say something.", "fine")
    scorer.offer(first)
    wait_until(lambda: scorer.counters()["scored"] == 1, "the first call")
    (tmp_path / "probe-task" / "probe.py").write_text(PROBE.rsplit("return 1.0", 1)[0] + "return 0.5\n")
    tasks.add(tmp_path / "probe-task" / "probe.yaml", new_version=True)
    same = call("probe", "Say something.", "fine")
    scorer.offer(same)
    wait_until(lambda: scorer.counters()["scored"] == 2, "the second call")
    clock.advance(31)
    later = call("probe", "Say something.", "fine")
    scorer.offer(later)
    scorer.stop(drain=True)

    rows = feedback(store)
    assert [rows[c.call_id]["detail"]["task"] for c in (first, same, later)] == ["probe/1", "probe/1", "probe/2"]
    assert [rows[c.call_id]["score"] for c in (first, same, later)] == [1.0, 1.0, 0.5]


class StuckJudge:
    """A fake judge, named as such: its judgement hangs until released. A hung generation cannot be
    caused on demand with a real model, and the timeout is what is under test."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked = 0

    def judge_version(self) -> Any:
        return SimpleNamespace(ref="stuck-judge/1")

    def evaluate(self, task: str, output: str, criteria: Any) -> list[Any]:
        self.asked += 1
        self.release.wait(120)
        raise RuntimeError("released")


def test_a_judge_that_times_out_leaves_null_rows_and_is_not_asked_again_while_stuck(
        tasks: TaskCatalog, store: ResultsStore) -> None:
    judge = StuckJudge()
    summarize, _ = prompt_of(tasks, "summarize")
    calls = [call("summarize", summarize, "The library closes for repairs in March."),
             call("summarize", summarize, "The library closes; return books at the town hall."),
             call("summarize", summarize, "   ")]
    scorer = live_scorer(tasks, store, judge=lambda: judge, judge_timeout_s=0.1, gate=JudgeGate(store))
    for c in calls:
        scorer.offer(c)
    scorer.stop(drain=True)
    judge.release.set()

    rows = feedback(store)
    timed_out, stuck, empty = (rows[c.call_id] for c in calls)
    source = JUDGE_SOURCE + "stuck-judge/1"
    assert {r["source"] for r in (timed_out, stuck, empty)} == {source}
    assert timed_out["score"] is None and timed_out["detail"]["error"] == "the judge timed out after 0.3 s (0.1 s per criterion)"
    assert stuck["score"] is None and stuck["detail"]["error"] == "not judged: the judge is still on a judgement that timed out"
    assert empty["score"] == 0.0 and empty["detail"]["empty_answer"]  # nothing to judge: as a benchmark scores it
    assert timed_out["detail"]["criteria"] == ["faithfulness", "relevance", "minimality"]
    assert timed_out["detail"]["gate_allowed"] is False  # never calibrated: diagnostic only
    assert judge.asked == 1
    assert scorer.counters()["judge_failed"] == 2 and scorer.counters()["judged"] == 1


def test_without_a_judge_a_judged_route_gets_no_rows(tasks: TaskCatalog, store: ResultsStore) -> None:
    class NoChampion:
        """A judge whose route has no champion, as ``route_judge`` reports it."""

        def judge_version(self) -> Any:
            raise NotFoundError("no judge: route 'judgment' has no champion")

    summarize, _ = prompt_of(tasks, "summarize")
    for judge in (lambda: None, NoChampion):
        scorer = live_scorer(tasks, store, judge=judge)
        scorer.offer(call("summarize", summarize, "The library closes in March."))
        scorer.stop(drain=True)
    assert feedback(store) == {}


# --------------------------------------------------------------------------- the real judge


@pytest.mark.integration
def test_the_real_judge_scores_a_live_summary_and_a_failed_judgement_is_a_null_row(
        catalog: Catalog, shipped, session_pool: WarmPool, tasks: TaskCatalog, store: ResultsStore) -> None:
    smollm2 = shipped[0]
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    Routes(catalog).promote("judgment", "smollm2-135m", 1, force=True)
    summarize = tasks.get("summarize")
    prompt = summarize.messages(summarize.items[0])[-1]["content"]
    judged = call("summarize", prompt, "A short summary of the text.", model="gemma3-270m")
    broken = call("summarize", prompt, "A short summary of the text.", model="gemma3-270m")

    judge = ModelBasedJudge(catalog, session_pool)
    scorer = live_scorer(tasks, store, judge=lambda: judge)
    started = time.perf_counter()
    scorer.offer(judged)
    scorer.stop(drain=True, timeout_s=600)  # three judgements of seconds each, the model loaded first
    seconds = time.perf_counter() - started
    tiny = ModelBasedJudge(catalog, session_pool, max_tokens=3)  # JSON cut off after three tokens
    scorer = live_scorer(tasks, store, judge=lambda: tiny)
    scorer.offer(broken)
    scorer.stop(drain=True, timeout_s=600)

    rows = feedback(store)
    good, bad = rows[judged.call_id], rows[broken.call_id]
    assert good["source"] == bad["source"] == JUDGE_SOURCE + "smollm2-135m/1" and good["signal"] == "judge"
    assert (good["model"], good["route"]) == ("gemma3-270m", "summarize")
    scores = good["detail"]["scores"]
    assert set(scores) == {"faithfulness", "relevance", "minimality"}
    assert good["score"] == pytest.approx(sum(scores.values()) / 3)
    assert bad["score"] is None and "gave no valid faithfulness judgement after 2 attempts" in bad["detail"]["error"]
    print(f"live judge: {seconds:.1f} s for one call (3 criteria), judge wall {good['detail']['wall_ms']:.0f} ms")
