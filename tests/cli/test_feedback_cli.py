"""`arbiter feedback CALL_ID`: a score for one live answer from the command line — the same checks and
the same row as `POST /arbiter/feedback`; bad input is one `error:` line and writes nothing."""

from __future__ import annotations

import json

import pytest
from support import assert_clean_error, run

from registry.machine.hardware import fingerprint
from registry.results.feedback import feedback_id
from registry.results.store import ResultsStore, new_id, now_utc
from registry.settings import Settings

pytestmark = pytest.mark.integration


def _live_call(store: ResultsStore) -> str:
    call_id = new_id()
    store.append("calls", [{"call_id": call_id, "ts": now_utc(), "source": "gateway", "route": "extract",
                            "task": "extract", "model": "smollm2-135m", "version": 1, "ok": True,
                            **fingerprint().as_row()}])
    return call_id


def test_feedback_from_the_command_line_is_recorded_and_replaced_per_source(settings: Settings) -> None:
    store = ResultsStore(settings.results_dir)
    call_id = _live_call(store)
    code, out, _ = run("feedback", call_id, "--score", "0.3", "--source", "ops", "--json")
    assert code == 0
    assert json.loads(out) == {"feedback_id": feedback_id(call_id, "ops"), "call_id": call_id, "route": "extract",
                               "model": "smollm2-135m", "version": 1, "source": "ops", "score": 0.3}
    code, out, _ = run("feedback", f"chatcmpl-{call_id}", "--thumbs", "up", "--source", "ops", "--comment", "fixed")
    assert code == 0 and out.startswith(f"feedback 1 from ops on call {call_id} (smollm2-135m/1 on route extract)")
    assert store.query("select count(distinct feedback_id) as ids, arg_max(score, ts) as score from feedback") == [
        {"ids": 1, "score": 1.0}]


@pytest.mark.parametrize(("args", "says"), [
    (["--score", "2"], "score must be a number from 0 to 1"),
    ([], "give exactly one of score"),
    (["--score", "1", "--source", "arbiter:scorer"], "arbiter's own signals"),
])
def test_bad_feedback_is_one_line_and_writes_nothing(settings: Settings, args: list[str], says: str) -> None:
    store = ResultsStore(settings.results_dir)
    code, _, err = run("feedback", _live_call(store), *args)
    assert_clean_error(code, err, says)
    assert store.query("select count(*) as n from feedback") == [{"n": 0}]


def test_an_unknown_call_is_a_clear_not_found(settings: Settings) -> None:
    code, _, err = run("feedback", new_id(), "--score", "1")
    assert code != 0 and err.startswith("error: no live call") and "Traceback" not in err
