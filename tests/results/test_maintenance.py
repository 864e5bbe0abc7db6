"""The maintenance pass, step by step in one process: commit exactly once, the staged grace period,
files a listing missed, quarantine, the one-time conversion of an old home, compaction, retention,
and snapshots that answer at their own version. (Killed processes: test_faults.py.)"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from registry.results import delta, maintenance, staging
from registry.results.maintenance import STALE_TEMPORARY_S, Maintainer, Maintenance
from registry.results.schemas import SCHEMAS
from registry.results.store import ResultsStore, now_utc

pytestmark = pytest.mark.unit

COUNT = "select count(*) as n, count(distinct call_id) as ids from calls"


def _call(call_id: str, ts: datetime) -> dict:
    """A row whose every value follows from its id, so what was read can be checked against what was written."""
    digest = int(hashlib.sha256(call_id.encode()).hexdigest()[:6], 16)
    return {"call_id": call_id, "ts": ts, "route": "qa", "model": "m", "version": 1, "ok": True,
            "prompt_tokens": digest % 1000, "wall_ms": digest / 7, "answer": f"answer to {call_id}"}


def _content(store: ResultsStore) -> list[tuple]:
    """Every calls row as written (ts in microseconds): equal lists mean equal content, ids once each."""
    rows = store.query("select call_id, epoch_us(ts) as ts, prompt_tokens, wall_ms, answer from calls order by call_id")
    return [tuple(r.values()) for r in rows]


def _expected(calls: list[dict]) -> list[tuple]:
    return sorted((c["call_id"], int(c["ts"].timestamp() * 1_000_000), c["prompt_tokens"], c["wall_ms"], c["answer"])
                  for c in calls)


def _staged_files(home: Path, table: str = "calls") -> list[Path]:
    return sorted((home / "_staging" / table).glob("*.parquet"))


def test_a_commit_killed_before_its_staged_files_are_deleted_is_not_made_twice(tmp_path: Path) -> None:
    """A long grace period leaves the staged files beside the commit that holds their rows: the state a
    kill between the commit and the deletion leaves. Readers and later passes must see each row once."""
    store = ResultsStore(tmp_path)
    calls = [_call(f"c{i}{j}", now_utc()) for i in range(3) for j in range(2)]
    for i in range(3):
        store.append("calls", calls[2 * i:2 * i + 2], may_commit=False)
    first = Maintenance(store, staged_grace_s=3600).run()
    assert first.committed_rows == {"calls": 6} and len(_staged_files(tmp_path)) == 3
    version = store.delta("calls").snapshot().version
    again = Maintenance(store, staged_grace_s=3600).run()
    assert again.committed_rows == {} and store.delta("calls").snapshot().version == version
    assert store.query(COUNT) == [{"n": 6, "ids": 6}] and _content(store) == _expected(calls)
    Maintenance(store, staged_grace_s=0).run()
    assert _staged_files(tmp_path) == [] and _content(store) == _expected(calls)


def test_a_committed_staged_file_stays_for_the_grace_period(tmp_path: Path) -> None:
    """A reader that listed a staged file just before its commit can still open it for a minute."""
    store = ResultsStore(tmp_path)
    written = store.append("calls", [_call("a", now_utc())], may_commit=False)
    assert written is not None
    Maintenance(store).run()
    assert written.exists()
    past = time.time() - 61
    os.utime(written, (past, past))
    Maintenance(store).run()
    assert not written.exists() and store.query(COUNT) == [{"n": 1, "ids": 1}]


def test_a_file_the_listing_missed_is_found_by_its_number(tmp_path: Path) -> None:
    """A directory listing may miss a file renamed in while it is read, yet see a later one. Its number
    is looked up by name; a number whose file is gone (quarantined) is passed over."""
    store = ResultsStore(tmp_path)
    for i in range(4):
        store.append("calls", [_call(f"c{i}", now_utc())], may_commit=False)
    listed = staging.staged(tmp_path, "calls")
    missed = [f for f in listed if f.seq != 2]
    assert [f.seq for f in staging.pending(missed, lambda writer: 0)] == [1, 2, 3, 4]
    assert [f.seq for f in staging.pending(missed, lambda writer: 2)] == [3, 4]
    listed[2].path.unlink()  # number 3 moved out, as a quarantined file is
    assert [f.seq for f in staging.pending(listed[:2] + listed[3:], lambda writer: 1)] == [2, 4]
    stray = staging.StagedFile("wstray", 999_999_999_999, tmp_path / "_staging" / "calls" / "x")
    started = time.monotonic()
    assert staging.pending([stray], lambda writer: 0) == [stray]  # a few look-ups, not a trillion
    assert time.monotonic() - started < 1


def test_garbage_foreign_and_corrupt_staged_files_are_quarantined_and_the_rest_committed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "READ_CHUNK", 1)  # the corrupt file fails the commit mid-way, its second chunk
    store = ResultsStore(tmp_path)
    good = [_call(f"good{i}", now_utc()) for i in range(3)]
    store.append("calls", good[:2], may_commit=False)
    corrupt = store.append("calls", [_call(f"bad{i}", now_utc()) | {"answer": "x" * 2000} for i in range(50)],
                           may_commit=False)
    store.append("calls", good[2:], may_commit=False)
    assert corrupt is not None
    data = bytearray(corrupt.read_bytes())
    data[200:2000] = bytes(b ^ 0x5A for b in data[200:2000])  # the pages; the footer stays sound
    corrupt.write_bytes(bytes(data))
    folder = tmp_path / "_staging" / "calls"
    (folder / "wgarbage-000000000001.parquet").write_bytes(os.urandom(300))
    (folder / "wtruncated-000000000001.parquet").write_bytes(corrupt.read_bytes()[:150])
    pq.write_table(pa.table({"colour": ["red"]}), folder / "wforeign-000000000001.parquet")
    pq.write_table(pa.table({"call_id": [1, 2], "ts": [now_utc()] * 2}), folder / "wmistyped-000000000001.parquet")
    pq.write_table(pa.table({"call_id": ["no-ts"]}), folder / "wnots-000000000001.parquet")
    (folder / "notes.txt").write_text("not ours")

    with caplog.at_level(logging.ERROR, logger="registry.results.maintenance"):
        report = Maintenance(store).run()

    quarantined = sorted(Path(p).name for p in report.quarantined)
    assert quarantined == sorted([corrupt.name, "wgarbage-000000000001.parquet", "wtruncated-000000000001.parquet",
                                  "wforeign-000000000001.parquet", "wmistyped-000000000001.parquet",
                                  "wnots-000000000001.parquet"])
    assert sorted(p.name for p in (tmp_path / "_quarantine" / "calls").iterdir()) == quarantined
    assert report.committed_rows == {"calls": 3} and _content(store) == _expected(good)
    assert (folder / "notes.txt").exists()  # not ours to move: never read, never touched
    assert len(caplog.records) == 6
    assert all("\n" not in r.getMessage() and "is not a readable calls file" in r.getMessage() for r in caplog.records)
    assert Maintenance(store).run().quarantined == []


def _legacy(home: Path, table: str, name: str, rows: list[dict], drop: tuple[str, ...], version: int) -> Path:
    """A file as the store wrote it before Delta: ``results/<table>/part-*.parquet``, snappy, the
    columns of its schema version (``drop``: the ones added since)."""
    schema = SCHEMAS[table]
    fields = [f for f in schema if f.name not in drop]
    columns = {f.name: [r.get(f.name) for r in rows] for f in fields} | {"schema_version": [version] * len(rows)}
    folder = home / table
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{name}.parquet"
    pq.write_table(pa.table(columns, schema=pa.schema(fields)), path)
    return path


CALLS_SINCE_4 = ("answer", "scores", "score_problems")
RUNS_SINCE_4 = ("task_version", "task_sha256")


def test_an_old_home_is_converted_once_and_a_rerun_changes_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "READ_CHUNK", 1)  # rows stream into the one commit a file at a time
    store = ResultsStore(tmp_path)
    old = now_utc() - timedelta(days=3)
    v4 = [_call(f"v4-{i}", old) | {"answer": None} for i in range(5)]
    v5 = [_call(f"v5-{i}", now_utc()) for i in range(5)]
    legacy = [_legacy(tmp_path, "calls", "20260101T000000000000-aaaaaaaa", v4, CALLS_SINCE_4, 4),
              _legacy(tmp_path, "calls", "20260101T000001000000-bbbbbbbb", v5, (), 5),
              _legacy(tmp_path, "runs", "20260101T000000000000-cccccccc",
                      [{"run_id": "r1", "ts": old, "task": "qa", "model": "m", "version": 1, "quality": 0.5}],
                      RUNS_SINCE_4, 4)]
    written = [p.stat().st_mtime_ns for p in legacy]
    before = _content(store)
    assert before == _expected(v4 + v5)  # read as they are before any pass

    report = Maintenance(store).run()
    assert report.committed_rows == {"calls": 10, "runs": 1}
    assert not any(p.exists() for p in legacy)
    assert _content(store) == before
    runs = store.query("select run_id, task_version, task_sha256, schema_version from runs")
    assert runs == [{"run_id": "r1", "task_version": None, "task_sha256": None, "schema_version": 4}]
    days = {Path(f).parent.name for f in store.delta("calls").snapshot().files()}
    assert days == {f"day={old.date().isoformat()}", f"day={v5[0]['ts'].date().isoformat()}"}

    # Killed after the commit, before the deletion: the file is back as it was (its time too), already in
    # the table: read once, and moved aside for a person rather than deleted (it could be an old copy).
    back = _legacy(tmp_path, "calls", "20260101T000000000000-aaaaaaaa", v4, CALLS_SINCE_4, 4)
    os.utime(back, ns=(written[0], written[0]))
    assert _content(store) == before
    rerun = Maintenance(store).run()
    assert rerun.committed_rows == {} and [Path(p).name for p in rerun.quarantined] == [back.name]
    assert not list((tmp_path / "calls").glob("part-*.parquet")) and _content(store) == before

    # An old-layout file written after the conversion (an older arbiter still serving): converted, not lost.
    late = [_call("late-0", now_utc()) | {"answer": None}]
    _legacy(tmp_path, "calls", "20260102T000000000000-dddddddd", late, CALLS_SINCE_4, 4)
    assert sorted(_content(store)) == sorted(before + _expected(late))  # read before it is converted
    assert Maintenance(store).run().committed_rows == {"calls": 1}
    assert sorted(_content(store)) == sorted(before + _expected(late))


def test_compaction_leaves_fewer_files_and_the_same_rows(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    days = [now_utc() - timedelta(days=d) for d in (3, 2, 1, 0)]
    calls = []
    for i in range(5):
        batch = [_call(f"c{i}-{d}", day) for d, day in enumerate(days)]
        calls += batch
        store.append("calls", batch, may_commit=False)
        Maintenance(store).commit()
    assert len(store.files("calls")) == 20
    report = Maintenance(store, staged_grace_s=0).run(compact=True)
    assert report.compacted["calls"] == {"files_removed": 20, "files_added": 4}
    assert len(store.files("calls")) == 4 and _content(store) == _expected(calls)
    assert Maintenance(store).run(compact=True).compacted == {}  # nothing small left to merge


def test_retention_drops_old_calls_and_feedback_days_and_nothing_else(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    now = now_utc()
    old, recent = now - timedelta(days=10), now - timedelta(days=2)
    store.append("calls", [_call("old", old), _call("recent", recent), _call("now", now)], may_commit=False)
    store.append("runs", [{"run_id": "r", "ts": old, "task": "qa", "model": "m", "version": 1}], may_commit=False)
    store.append("events", [{"event_id": "e", "ts": old, "kind": "register"}], may_commit=False)
    store.append("learnings", [{"ts": old, "task": "qa", "key": "k", "value": "v"}], may_commit=False)
    store.append("judge_calibration", [{"calibration_id": "j", "ts": old, "model": "m"}], may_commit=False)
    store.append("feedback", [{"feedback_id": f, "ts": ts, "call_id": f, "signal": "scorer", "source": "arbiter:scorer",
                               "score": 1.0} for f, ts in (("f-old", old), ("f-now", now))], may_commit=False)
    assert Maintenance(store).run().dropped_rows == 0  # no retention unless asked for

    report = Maintenance(store, retain_days=7).run()
    assert report.dropped_rows == 2
    assert [r["call_id"] for r in store.query("select call_id from feedback")] == ["f-now"]
    assert sorted(r["call_id"] for r in store.query("select call_id from calls")) == ["now", "recent"]
    for table in ("runs", "events", "learnings", "judge_calibration"):
        assert store.query(f"select count(*) as n from {table}") == [{"n": 1}], table
    store.append("calls", [_call("late", old)], may_commit=False)  # an old row staged late: dropped as it lands
    assert Maintenance(store, retain_days=7).run().dropped_rows == 1
    assert sorted(r["call_id"] for r in store.query("select call_id from calls")) == ["now", "recent"]


def test_a_snapshot_answers_at_its_version_after_the_table_moved_on(tmp_path: Path) -> None:
    """serve's reads and its maintainer share one handle per table: another process's commit, seen by
    a later snapshot, must not change what an earlier one says (a writer's number from one version and
    the files of the next would count a row twice)."""
    store = ResultsStore(tmp_path)
    store.append("calls", [_call("a", now_utc())], may_commit=False)
    Maintenance(store).commit()
    staged = store.append("calls", [_call("b", now_utc())], may_commit=False)
    assert staged is not None
    writer = staging.staged(tmp_path, "calls")[-1].writer
    before = store.delta("calls").snapshot()
    files = before.files()
    Maintenance(ResultsStore(tmp_path)).commit()  # another process's store commits "b"
    after = store.delta("calls").snapshot()  # brings the shared handle to the new version
    assert after.version == before.version + 1 and after.committed(writer) == 2 and len(after.files()) == 2
    assert before.committed(writer) == 1 and before.files() == files
    assert store.query(COUNT) == [{"n": 2, "ids": 2}]


def test_temporary_files_of_a_killed_writer_are_removed_after_an_hour(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append("calls", [_call("a", now_utc())], may_commit=False)
    folder = tmp_path / "_staging" / "calls"
    stale, fresh = folder / ".wdead-0123abcd.tmp", folder / ".wlive-4567ef01.tmp"
    stale.write_bytes(b"half a file")
    fresh.write_bytes(b"being written")
    past = time.time() - STALE_TEMPORARY_S - 1
    os.utime(stale, (past, past))
    Maintenance(store).run()
    assert not stale.exists() and fresh.exists()


def test_a_due_compaction_skipped_for_the_lock_runs_as_soon_as_the_lock_is_free(tmp_path: Path) -> None:
    """Two gateways' maintainers take turns at the lock; a compaction that fell due while the other
    held it must not wait a whole period more (with busy neighbours it could wait for ever)."""
    store = ResultsStore(tmp_path)
    for i in range(3):
        store.append("calls", [_call(f"c{i}", now_utc())], may_commit=False)
        Maintenance(store).commit()
    maintainer = Maintainer(Maintenance(store), commit_s=0.05, compact_s=1.5)
    with (tmp_path / "_staging" / ".lock").open("a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process's pass, from before the compaction is due to after
        maintainer.start()
        time.sleep(1.7)
        fcntl.flock(lock, fcntl.LOCK_UN)
    released = time.monotonic()
    try:
        while len(store.files("calls")) > 1 and time.monotonic() - released < 1.0:
            time.sleep(0.02)
    finally:
        maintainer.close()
    assert time.monotonic() - released < 1.0, "the compaction waited for its next period"


def test_writers_numbers_survive_checkpoints_and_log_cleanup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exactly once rests on each writer's number in the Delta log: after the JSON commits that
    recorded them are checkpointed and cleaned up, a staged file still there is still known as committed."""
    monkeypatch.setattr(delta, "CHECKPOINT_EVERY", 4)
    store = ResultsStore(tmp_path)
    maintenance = Maintenance(store, staged_grace_s=3600)
    calls = [_call(f"c{i}", now_utc()) for i in range(10)]
    for call in calls:
        store.append("calls", [call], may_commit=False)
        maintenance.commit()
    log = tmp_path / "calls" / "_delta_log"
    assert len(list(log.glob("*.checkpoint.parquet"))) == 2
    past = time.time() - 2 * 3600  # older than the log's retention (an hour)
    for commit in log.glob("*.json"):
        os.utime(commit, (past, past))
    store.delta("calls").tidy()
    assert not (log / f"{0:020d}.json").exists()
    fresh = ResultsStore(tmp_path)  # a new process: the writers' numbers come from the checkpoint
    assert len(_staged_files(tmp_path)) == 10 and _content(fresh) == _expected(calls)
    assert Maintenance(fresh).run().committed_rows == {}
