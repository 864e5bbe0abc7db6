"""The results store under faults, with real processes: SIGKILL during a flush, a compaction and the
conversion of an old home; two gateways, a benchmark flow and a reader at once; corrupt and foreign
files; a full disk during compaction. After each, a maintenance pass and exact checks: every row
acknowledged as written is there exactly once, with the values it was written with.

The children are this file run as a script (``python test_faults.py <child> <json args>``), each
printing ``ready`` when its imports are done, so a kill lands in the work and not in start-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from registry.errors import StoreError
from registry.results.maintenance import Maintainer, Maintenance
from registry.results.recorder import Recorder
from registry.results.schemas import SCHEMAS
from registry.results.store import ResultsStore, now_utc

pytestmark = pytest.mark.integration  # real processes and signals; no model, no MLflow

ARBITER = str(Path(sys.executable).with_name("arbiter"))


# --- rows whose every value follows from their id: what was read is checked against what was written --

def _call(call_id: str, ts: datetime | None = None) -> dict[str, Any]:
    digest = int(hashlib.sha256(call_id.encode()).hexdigest()[:8], 16)
    return {"call_id": call_id, "ts": ts or now_utc(), "route": "qa", "model": "m", "version": 1, "ok": True,
            "prompt_tokens": digest % 1000, "wall_ms": digest / 7, "answer": _answer(call_id)}


def _answer(call_id: str) -> str:
    """Short; 4 KB of hex for an id starting with ``fat``: files whose size their rows decide, not
    their footers (the full-disk tests need a compacted file larger than any one it merges)."""
    if not call_id.startswith("fat"):
        return f"answer to {call_id}"
    chain = [hashlib.sha256(call_id.encode()).hexdigest()]
    while len(chain) < 64:
        chain.append(hashlib.sha256(chain[-1].encode()).hexdigest())
    return "".join(chain)


def _check_calls(store: ResultsStore, must: set[str], may: set[str] = frozenset()) -> int:
    """Every id in ``must`` once, none outside ``must | may``, each row's values as written; the row count."""
    rows = store.query("select call_id, prompt_tokens, wall_ms, answer from calls")
    ids = [r["call_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows counted twice"
    assert must <= set(ids), f"{len(must - set(ids))} acknowledged rows lost, e.g. {sorted(must - set(ids))[:3]}"
    assert set(ids) <= must | may, f"rows nobody wrote: {sorted(set(ids) - must - may)[:3]}"
    for r in rows:
        expected = _call(r["call_id"])
        assert (r["prompt_tokens"], r["wall_ms"], r["answer"]) == (
            expected["prompt_tokens"], expected["wall_ms"], expected["answer"]), r["call_id"]
    return len(ids)


# --- children ---------------------------------------------------------------------------------------

def _ready() -> None:
    print("ready", flush=True)


def child_writer(home: str, tag: str, acks: str) -> None:
    """Append batches of 5 calls in a loop, as a benchmark flow does (committing itself every 32
    files); a batch's number goes to ``acks`` once append has returned: the acknowledgement."""
    store = ResultsStore(Path(home))
    ack = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    _ready()
    for batch in range(1, 1_000_000):
        store.append("calls", [_call(f"{tag}-{batch}-{j}") for j in range(5)])
        os.write(ack, f"{batch}\n".encode())


def child_maintain(home: str, compact: bool, passes: int) -> None:
    """Maintenance passes (serve's, or `arbiter results compact`'s when ``compact``), one after the other."""
    maintenance = Maintenance(ResultsStore(Path(home)), staged_grace_s=0)
    _ready()
    for _ in range(passes):
        maintenance.run(compact=compact)


def child_gateway(home: str, tag: str, stop: str, out: str) -> None:
    """A gateway's recording: a Recorder flushing every 0.1 s (never committing) and a Maintainer
    committing every 0.2 s and compacting every half second, as `serve` does with longer periods;
    until ``stop`` exists."""
    store = ResultsStore(Path(home))
    recorder = Recorder(store, flush_s=0.1)
    maintainer = Maintainer(Maintenance(store, min_small_files=2, staged_grace_s=1.0), commit_s=0.2, compact_s=0.5)
    recorder.start()
    maintainer.start()
    _ready()
    written = 0
    while not Path(stop).exists():
        for _ in range(5):
            written += 1
            recorder.add("calls", _call(f"{tag}-{written}"))
        recorder.add("events", {"event_id": f"{tag}-e{written}", "ts": now_utc(), "kind": "request"})
        time.sleep(0.01)
    recorder.close()
    maintainer.close()
    Path(out).write_text(json.dumps({"written": written, "failed_flushes": recorder.failed_flushes,
                                     "failed_passes": maintainer.failures, "last_error": maintainer.last_error}))


def child_benchmark(home: str, stop: str, out: str) -> None:
    """A benchmark flow: a run row and its 20 calls per item batch, appended directly (auto-commit on),
    until ``stop`` exists; 20 ms between batches, as generating them would take at least."""
    store = ResultsStore(Path(home))
    _ready()
    runs = 0
    while not Path(stop).exists():
        runs += 1
        store.append("calls", [_call(f"bench-{runs}-{i}") for i in range(20)])
        store.append("runs", [{"run_id": f"bench-{runs}", "ts": now_utc(), "task": "qa", "model": "m", "version": 1}])
        time.sleep(0.02)
    Path(out).write_text(json.dumps({"runs": runs}))


def child_reader(home: str, stop: str, out: str) -> None:
    """Query counts in a loop until ``stop`` exists; every error and every read where a row is counted
    twice goes to ``out``."""
    store = ResultsStore(Path(home))
    _ready()
    reads, errors, doubled = 0, [], []
    while not Path(stop).exists():
        try:
            calls = store.query("select count(*) as n, count(distinct call_id) as ids from calls")[0]
            runs = store.query("select count(*) as n, count(distinct run_id) as ids from runs")[0]
        except Exception as exc:  # noqa: BLE001 — any error at all is what this child reports
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        reads += 1
        doubled += [r for r in (calls, runs) if r["n"] != r["ids"]]
    Path(out).write_text(json.dumps({"reads": reads, "errors": errors[:5], "doubled": doubled[:5]}))


def child_compact_within(home: str, max_file_bytes: int) -> None:
    """A compaction that may write no file past ``max_file_bytes`` (RLIMIT_FSIZE: a write beyond fails
    with EFBIG, as a full disk fails with ENOSPC); prints the error, exit 1, if it fails."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of the process being killed
    # Only the soft limit: lifted again after the compaction, so what the process writes on its way out
    # (coverage's data file, when the suite runs under coverage) is not cut short by it.
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, hard))
    store = ResultsStore(Path(home))
    _ready()
    try:
        Maintenance(store).run(compact=True)
    except StoreError as exc:
        print(f"error: {exc}", flush=True)
        sys.exit(1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


CHILDREN: dict[str, Callable[..., None]] = {
    "writer": child_writer, "maintain": child_maintain, "gateway": child_gateway, "benchmark": child_benchmark,
    "reader": child_reader, "compact_within": child_compact_within}


_STDERR: dict[int, Any] = {}  # a child's pid -> the file its stderr goes to (a pipe nobody reads could fill and block it)


@contextlib.contextmanager
def _children() -> Iterator[Callable[..., list[subprocess.Popen]]]:
    """``start((name, *args), …)`` starts children together and returns once each is ready (start-up
    is a second of imports: side by side, not one after the other); whatever still runs at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(*children: tuple[Any, ...]) -> list[subprocess.Popen]:
        processes = []
        for name, *args in children:
            log = tempfile.TemporaryFile("w+")
            processes.append(subprocess.Popen([sys.executable, __file__, name, json.dumps(args)], text=True,
                                              stdout=subprocess.PIPE, stderr=log))
            _STDERR[processes[-1].pid] = log
        started.extend(processes)
        for (name, *_), process in zip(children, processes, strict=True):
            line = process.stdout.readline() if process.stdout else ""
            if line.strip() != "ready":
                process.kill()
                process.wait()
                raise AssertionError(f"child {name} did not start: {line}{_stderr(process)}")
        return processes

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.communicate()
            _STDERR.pop(process.pid).close()


def _stderr(process: subprocess.Popen) -> str:
    """The last of what a child wrote to stderr."""
    log = _STDERR[process.pid]
    log.seek(0)
    return log.read()[-3000:]


def _kill(process: subprocess.Popen) -> bool:
    """SIGKILL; True when it was still running (the kill landed mid-work)."""
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return running


# --- SIGKILL ------------------------------------------------------------------------------------------

def test_writers_killed_mid_flush_lose_only_what_they_had_not_acknowledged(tmp_path: Path) -> None:
    """Writers appending (and committing every 32 files) are killed at random moments, some of them
    inside a commit; a maintenance child is killed too. Every acknowledged batch is there once; the
    batch in flight is there whole or not at all; nothing else."""
    rng = random.Random(15)
    must: set[str] = set()
    may: set[str] = set()
    kills = 0
    with _children() as start:
        for round_, target in enumerate((10, 40)):  # past 32 staged files a writer commits them itself
            tags = [f"r{round_}w{i}" for i in range(2)]
            processes = start(*[("writer", str(tmp_path), tag, str(tmp_path / tag)) for tag in tags],
                              ("maintain", str(tmp_path), False, 10_000))
            _wait_until(lambda: len(_acked(tmp_path / tags[0])) >= target, processes)  # noqa: B023 — called now
            time.sleep(rng.uniform(0, 0.05))
            kills += sum(_kill(p) for p in processes)
            for tag in tags:
                acked = _acked(tmp_path / tag)
                last = max(acked, default=0)
                assert acked == list(range(1, last + 1))
                must |= {f"{tag}-{b}-{j}" for b in acked for j in range(5)}
                may |= {f"{tag}-{last + 1}-{j}" for j in range(5)}
    assert kills >= 4 and len(must) > 0
    store = ResultsStore(tmp_path)
    _check_calls(store, must, may)  # before maintenance: staged and committed files, each row once
    Maintenance(store, staged_grace_s=0).run(compact=True)
    Maintenance(store, staged_grace_s=0).run()  # deletes what the pass before committed
    _check_calls(store, must, may)
    in_flight = {i.rsplit("-", 1)[0] for i in may} & {i.rsplit("-", 1)[0] for i in _ids(store)}
    for batch in in_flight:  # a batch is one file: whole or absent
        assert {f"{batch}-{j}" for j in range(5)} <= _ids(store)
    assert not list((tmp_path / "_staging" / "calls").glob("*.parquet"))


def _acked(path: Path) -> list[int]:
    return [int(n) for n in path.read_text().split()] if path.exists() else []


def _wait_until(done: Callable[[], bool], processes: list[subprocess.Popen], timeout_s: float = 90) -> None:
    """Poll ``done`` while the children run: progress, not wall time, decides (the suite runs on 2 busy cores)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"not done within {timeout_s:.0f} s"
        exited = [p for p in processes if p.poll() is not None]
        assert not exited, f"a child exited with {exited[0].returncode}: {_stderr(exited[0])}"
        time.sleep(0.05)


def _ids(store: ResultsStore) -> set[str]:
    return {r["call_id"] for r in store.query("select call_id from calls")}


def _small_files_over_past_days(home: Path, commits: int, days: int, prefix: str = "") -> set[str]:
    """``commits`` commits of one small file on each of ``days`` past days: what compaction merges."""
    store = ResultsStore(home)
    ids: set[str] = set()
    for c in range(commits):
        rows = [_call(f"{prefix}c{c}-d{d}-{i}", now_utc() - timedelta(days=d + 1)) for d in range(days) for i in range(3)]
        store.append("calls", rows, may_commit=False)
        Maintenance(store).commit()
        ids |= {r["call_id"] for r in rows}
    return ids


def test_a_compaction_killed_mid_way_leaves_every_row_once(tmp_path: Path) -> None:
    rng = random.Random(7)
    ids = _small_files_over_past_days(tmp_path, commits=8, days=16)
    store = ResultsStore(tmp_path)
    files_before = len(store.files("calls"))
    landed = 0
    with _children() as start:
        for delay in (rng.uniform(0.1, 0.4), rng.uniform(0.4, 1.0)):
            [child] = start(("maintain", str(tmp_path), True, 1))
            time.sleep(delay)
            landed += _kill(child)
            assert _check_calls(store, ids) == len(ids)  # a reader after each kill: all there, once
    assert landed >= 1, "every compaction finished before its kill: make it longer"
    report = Maintenance(store).run(compact=True)
    assert _check_calls(store, ids) == len(ids)
    assert len(store.files("calls")) == 16 < files_before, report.as_dict()


def _old_home(home: Path, files: int) -> tuple[set[str], set[str]]:
    """A home as the store wrote it before Delta: ``results/<table>/part-*.parquet``, calls of schema 4
    (before answer, scores, score_problems) and 5, runs of schema 4 (before task_version)."""
    calls, runs = set(), set()
    for n in range(files):
        version = 4 if n % 3 else 5
        drop = ("answer", "scores", "score_problems") if version == 4 else ()
        rows = [_call(f"old{n}-{i}", now_utc() - timedelta(days=n % 4)) for i in range(4)]
        _write_legacy(home, "calls", f"{n:06d}", rows, drop, version)
        calls |= {r["call_id"] for r in rows}
        if n % 5 == 0:
            run = {"run_id": f"run{n}", "ts": now_utc(), "task": "qa", "model": "m", "version": 1, "quality": 0.5}
            _write_legacy(home, "runs", f"{n:06d}", [run], ("task_version", "task_sha256"), 4)
            runs.add(run["run_id"])
    return calls, runs


def _write_legacy(home: Path, table: str, stamp: str, rows: list[dict], drop: tuple[str, ...], version: int) -> None:
    fields = [f for f in SCHEMAS[table] if f.name not in drop]
    columns = {f.name: [r.get(f.name) for r in rows] for f in fields} | {"schema_version": [version] * len(rows)}
    (home / table).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=pa.schema(fields)), home / table / f"part-{stamp}-0000abcd.parquet")


def test_a_conversion_killed_mid_way_resumes_and_loses_nothing(tmp_path: Path) -> None:
    calls, runs = _old_home(tmp_path, files=240)
    store = ResultsStore(tmp_path)
    # Old files read as they are (answer as written in schema 5, NULL in schema 4) before any pass.
    answers = {r["call_id"]: r["answer"] for r in store.query("select call_id, answer from calls")}
    assert len(answers) == len(calls)
    landed = 0
    with _children() as start:
        for delay in (0.05, 0.3, 0.8):
            [child] = start(("maintain", str(tmp_path), False, 1))
            time.sleep(delay)
            landed += _kill(child)
            now = {r["call_id"]: r["answer"] for r in store.query("select call_id, answer from calls")}
            assert now == answers  # whatever the kill left: every row once, as it was
    assert landed >= 1
    Maintenance(store).run()
    assert {r["call_id"]: r["answer"] for r in store.query("select call_id, answer from calls")} == answers
    rows = store.query("select run_id, task_version, schema_version from runs")
    assert sorted(r["run_id"] for r in rows) == sorted(runs)
    assert {(r["task_version"], r["schema_version"]) for r in rows} == {(None, 4)}
    assert not list(tmp_path.glob("*/part-*.parquet"))
    assert Maintenance(store).run().committed_rows == {}  # converted once


# --- everything at once ---------------------------------------------------------------------------------

def test_two_gateways_a_benchmark_and_a_reader_at_once(tmp_path: Path) -> None:
    """Two `serve` recorders with their maintainers (committing, compacting, deleting staged files),
    a benchmark flow appending and committing itself, and a reader querying throughout: no read
    fails or counts a row twice, and at the end every row written is there once. They write for at
    least 3 s and until a compaction has run among them."""
    stop = str(tmp_path / "stop")
    with _children() as start:
        [reader] = start(("reader", str(tmp_path), str(tmp_path / "stop-reader"), str(tmp_path / "reader.json")))
        writers = start(*[("gateway", str(tmp_path), f"g{i}", stop, str(tmp_path / f"g{i}.json")) for i in range(2)],
                        ("benchmark", str(tmp_path), stop, str(tmp_path / "bench.json")))
        at_least = time.monotonic() + 3
        _wait_until(lambda: time.monotonic() > at_least and _compacted(tmp_path / "calls"), [reader, *writers])
        Path(stop).touch()
        for process in [*writers, reader]:
            if process is reader:
                (tmp_path / "stop-reader").touch()
            assert process.wait(timeout=120) == 0, _stderr(process)
    gateways = [json.loads((tmp_path / f"g{i}.json").read_text()) for i in range(2)]
    bench = json.loads((tmp_path / "bench.json").read_text())
    read = json.loads((tmp_path / "reader.json").read_text())
    assert read["errors"] == [] and read["doubled"] == [] and read["reads"] >= 10, read
    for g in gateways:
        assert g["failed_flushes"] == 0 and g["failed_passes"] == 0, g
    must = {f"g{i}-{n}" for i, g in enumerate(gateways) for n in range(1, g["written"] + 1)}
    must |= {f"bench-{r}-{i}" for r in range(1, bench["runs"] + 1) for i in range(20)}
    store = ResultsStore(tmp_path)
    Maintenance(store, staged_grace_s=0).run()
    assert _check_calls(store, must) == len(must)
    runs = store.query("select count(*) as n, count(distinct run_id) as ids from runs")
    events = store.query("select count(*) as n, count(distinct event_id) as ids from events")
    assert runs == [{"n": bench["runs"], "ids": bench["runs"]}]
    assert events == [{"n": sum(g["written"] // 5 for g in gateways), "ids": sum(g["written"] // 5 for g in gateways)}]


def _compacted(table: Path) -> bool:
    """Whether a compaction (delta-rs's OPTIMIZE) is among the table's commits."""
    return (table / "_delta_log").is_dir() and any(h.get("operation") == "OPTIMIZE" for h in DeltaTable(table).history())


# --- corrupt and foreign files ------------------------------------------------------------------------

def test_corrupt_and_foreign_files_are_refused_by_name_or_skipped_never_counted(home: Path) -> None:
    results = home / "results"  # the CLI's, ARBITER_HOME being the test's home
    store = ResultsStore(results)
    committed = [_call(f"in-table-{i}") for i in range(4)]
    store.append("calls", committed, may_commit=False)
    Maintenance(store).run()
    staged = [_call(f"staged-{i}") for i in range(3)]
    store.append("calls", staged, may_commit=False)
    day_folder = next((results / "calls").glob("day=*"))
    # Foreign files where the table's files live: the Delta log does not list them, so no read sees them.
    pq.write_table(pa.table({"call_id": ["intruder"], "ts": [now_utc()]}), day_folder / "someone-elses.parquet")
    pq.write_table(pa.table({"call_id": ["intruder2"]}), results / "calls" / "export.parquet")
    (day_folder / "notes.txt").write_text("a note")
    (results / "_staging" / "calls" / "README.txt").write_text("a note")
    expected = {c["call_id"] for c in committed + staged}
    assert _check_calls(store, expected) == 7

    # Garbage with a staged file's name: every read refuses, in one line naming the file.
    garbage = results / "_staging" / "calls" / "wgarbage-000000000001.parquet"
    garbage.write_bytes(os.urandom(400))
    with pytest.raises(StoreError) as refused:
        store.query("select count(*) from calls")
    assert garbage.name in str(refused.value) and "\n" not in str(refused.value)
    cli = subprocess.run([ARBITER, "results", "sql", "select count(*) as n from calls", "--json"], text=True,
                         capture_output=True, timeout=120)
    assert cli.returncode != 0 and "Traceback" not in cli.stderr, cli
    assert garbage.name in cli.stderr and len(cli.stderr.strip().splitlines()) == 1, cli.stderr

    # A truncated copy of a good file, and a file of the table's names with other types: quarantined
    # by the next pass, with the garbage; the foreign files stay where they are, never read.
    good = next(p for p in (results / "_staging" / "calls").glob("w*.parquet") if p != garbage)
    (good.parent / "wtrunc-000000000001.parquet").write_bytes(good.read_bytes()[:-200])
    pq.write_table(pa.table({"call_id": [7], "ts": [now_utc()]}), good.parent / "wtypes-000000000001.parquet")
    report = Maintenance(store).run(compact=True)
    assert sorted(Path(p).name for p in report.quarantined) == [
        "wgarbage-000000000001.parquet", "wtrunc-000000000001.parquet", "wtypes-000000000001.parquet"]
    assert _check_calls(store, expected) == 7
    assert (day_folder / "someone-elses.parquet").exists() and (day_folder / "notes.txt").exists()

    # A table file itself corrupted: reads refuse it by name; the compaction fails in one line and
    # leaves the table as it was.
    table_file = Path(store.delta("calls").snapshot().files()[0])
    table_file.write_bytes(b"PAR1" + os.urandom(200))
    with pytest.raises(StoreError) as refused:
        store.query("select count(*) from calls")
    assert table_file.name in str(refused.value) and "\n" not in str(refused.value)


# --- full disk ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _tmpfs(size: str) -> Iterator[Path]:
    """A small tmpfs of its own: a filesystem this test can fill. Mounting needs root; elsewhere skipped."""
    folder = Path(tempfile.mkdtemp(prefix="arbiter-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True) if shutil.which("mount") else None
    if mounted is None or mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() if mounted else 'no mount'}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        folder.rmdir()


def _totals(store: ResultsStore) -> dict:
    """Count, distinct ids and a checksum of the content (a sum of row hashes: the same in any order)."""
    return store.query("select count(*) as n, count(distinct call_id) as ids, "
                       "sum(hash(call_id, ts, prompt_tokens, wall_ms, answer)) as checksum from calls")[0]


def test_a_full_filesystem_fails_the_compaction_in_one_line_and_the_table_stays_valid() -> None:
    with _tmpfs("6m") as home:
        ids = _small_files_over_past_days(home, commits=8, days=2, prefix="fat")
        store = ResultsStore(home)
        before, files = _totals(store), store.files("calls")
        stat = os.statvfs(home)
        (home / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 32 * 1024))
        with pytest.raises(StoreError) as failed:
            Maintenance(store).run(compact=True)
        message = str(failed.value)
        assert "\n" not in message and "compaction of" in message and "No space left on device" in message
        assert _totals(store) == before and store.files("calls") == files
        (home / "filler").unlink()
        Maintenance(store).run(compact=True)
        assert _totals(store) == before and len(store.files("calls")) == 2
        _check_calls(store, ids)


def test_a_file_size_limit_fails_the_compaction_in_one_line_and_a_later_pass_succeeds(tmp_path: Path) -> None:
    """Where no filesystem can be mounted: RLIMIT_FSIZE, a real limit of the OS (writes past it fail
    with EFBIG), in a child running the compaction. (delta-rs may also print a panic of its object
    store's background writer after the failed write, arrow-rs-object-store#810: noise, not a traceback.)"""
    ids = _small_files_over_past_days(tmp_path, commits=8, days=2, prefix="fat")
    store = ResultsStore(tmp_path)
    before, files = _totals(store), store.files("calls")
    largest = max(os.path.getsize(f) for f in files)
    with _children() as start:
        [child] = start(("compact_within", str(tmp_path), largest * 2))
        out, _ = child.communicate(timeout=120)
        err = _stderr(child)
    assert child.returncode == 1 and "Traceback" not in err, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "compaction of" in lines[0] and "File too large" in lines[0], out
    assert _totals(store) == before and store.files("calls") == files
    Maintenance(store).run(compact=True)
    assert _totals(store) == before and len(store.files("calls")) == 2
    _check_calls(store, ids)


if __name__ == "__main__":
    CHILDREN[sys.argv[1]](*json.loads(sys.argv[2]))
