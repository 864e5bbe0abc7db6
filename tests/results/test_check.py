"""`arbiter results check` and `arbiter results compact` on a real store with real rows.

Good rows (calls built by the code that builds them, measured by the real meter) pass every
expectation, staged, committed and compacted alike; each kind of bad row is caught and named with
its exact count; the SQL each expectation compiles to and Great Expectations agree row for row;
files no reader reads (quarantined, foreign, untracked) are named; an unreadable table is one line.
`results compact` commits and merges, and waits on a maintenance lock another process holds.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from registry.cli.main import cli
from registry.machine.costs import measure
from registry.machine.energy import EnergyMeter
from registry.providers import Generation
from registry.results.check import ENERGY_SOURCES, Expectation, check, expectations
from registry.results.events import event_row
from registry.results.maintenance import Maintenance
from registry.results.schemas import SCHEMA_VERSION, SCHEMAS, new_id, now_utc
from registry.results.store import ResultsStore
from registry.serving.calls import call_row
from registry.spec import Hardware, ModelSpec, VersionRecord

pytestmark = [pytest.mark.unit, pytest.mark.data]

SPEC = ModelSpec(name="smollm2-135m", kind="gguf", source="/models/smollm2.gguf", sha256="ab" * 32,
                 capabilities=("chat",), context_window=2048, family="smollm2", quantization="Q4_1",
                 hardware=Hardware(accelerators=("cpu",), min_memory_mb=200))
RECORD = VersionRecord("smollm2-135m", 1, "active", SPEC, datetime.now(UTC), None)


def call(**changes: Any) -> dict[str, Any]:
    """A gateway ``calls`` row as the gateway builds it, its cost measured by this machine's meter."""
    with measure() as cost:
        sum(range(2000))
    generation = Generation(text="4", prompt_tokens=12, completion_tokens=3, time_to_first_token_ms=8.0,
                            generation_ms=20.0)
    row = call_row(RECORD, generation, cost, error=None, source="gateway", route="qa", api="openai",
                   queue_ms=0.4, overhead_ms=1.2)
    return {**row, **changes}


def run(**changes: Any) -> dict[str, Any]:
    return {"run_id": new_id(), "ts": now_utc(), "task": "qa", "task_version": 1, "model": "smollm2-135m",
            "version": 1, "n": 20, "n_ok": 20, "quality": 0.8, "n_unscored": 0, "p50_ms": 120.0, "p95_ms": 180.0,
            "tokens_per_s": 90.0, "cpu_ms_per_token": 4.0, "load_ms": 300.0, "warmup_ms": 50.0,
            "energy_mwh": 1.5, "energy_mwh_per_1k_tokens": 3.1, "energy_source": "estimate,rapl", **changes}


def learning(**changes: Any) -> dict[str, Any]:
    return {"ts": now_utc(), "task": "qa", "key": "max_tokens", "value": "64", "source": "user", **changes}


def calibration(**changes: Any) -> dict[str, Any]:
    return {"calibration_id": new_id(), "ts": now_utc(), "model": "smollm2-135m", "version": 1,
            "criterion": "faithfulness", "n": 48, "n_failed": 0, "accuracy": 0.7, "seconds_per_item": 0.9, **changes}


def feedback(**changes: Any) -> dict[str, Any]:
    return {"feedback_id": new_id(), "ts": now_utc(), "call_id": new_id(), "route": "qa", "model": "smollm2-135m",
            "version": 1, "signal": "feedback", "source": "user", "score": 1.0, **changes}


def good_home(store: ResultsStore) -> None:
    """Every table with good rows: some committed and compacted, some still staged; an alias change
    finished twice after a kill (one event id, two rows at two moments), which is not a duplicate."""
    retried = event_row("promote", route="qa", model="smollm2-135m", version=1, detail={"forced": False})
    store.append("calls", [call() for _ in range(3)])
    store.append("calls", [call(energy_source=None, energy_mwh=None)])  # a call the meter did not measure
    store.append("runs", [run(), run(energy_source="estimate+nvml")])
    store.append("events", [retried])
    store.append("learnings", [learning()])
    store.append("judge_calibration", [calibration()])
    store.append("feedback", [feedback(), feedback(signal="scorer", source="arbiter:scorer", score=None)])
    Maintenance(store, staged_grace_s=0).run(compact=True)
    store.append("calls", [call() for _ in range(2)])
    store.append("events", [{**retried, "ts": now_utc()}])


def test_good_rows_pass_every_expectation_committed_or_staged(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    good_home(store)
    report = check(store)
    assert report.ok, report.lines()
    assert {t: r.rows for t, r in report.tables.items()} == {
        "calls": 6, "runs": 2, "events": 2, "learnings": 1, "judge_calibration": 1, "feedback": 2}
    assert report.pending["calls"] == 1 and report.pending["runs"] == 0  # staged after the commit: read, not a fault
    assert report.tables["calls"].expectations == len(expectations("calls", now_utc()))


def bad_rows() -> list[tuple[str, dict[str, Any], str, str]]:
    """Table, row, the expectation it fails, the name it is reported by."""
    return [
        ("calls", call(call_id="neg-wall", wall_ms=-1.0), "expect_column_values_to_be_between(wall_ms, min_value=0)",
         "neg-wall"),
        ("calls", call(call_id="neg-tokens", completion_tokens=-3),
         "expect_column_values_to_be_between(completion_tokens, min_value=0)", "neg-tokens"),
        ("calls", call(call_id="neg-energy", energy_mwh=-0.5),
         "expect_column_values_to_be_between(energy_mwh, min_value=0)", "neg-energy"),
        ("calls", call(call_id="guessed", energy_source="guess"), "expect_column_values_to_be_in_set(energy_source",
         "guessed"),
        ("calls", call(call_id="ahead", ts=now_utc() + timedelta(hours=2)),
         "expect_column_values_to_be_between(ts, max_value=", "ahead"),
        ("calls", call(call_id="twice"), "expect_column_values_to_be_unique(call_id)", "twice"),
        ("calls", call(call_id="twice"), "expect_column_values_to_be_unique(call_id)", "twice"),
        ("calls", call(call_id=None), "expect_column_values_to_not_be_null(call_id)", "(no call_id) at "),
        ("runs", run(run_id="sum-source", energy_source="estimate,guess"),
         "expect_column_values_to_match_regex(energy_source", "sum-source"),
        ("runs", run(run_id="neg-p95", p95_ms=-2.0), "expect_column_values_to_be_between(p95_ms, min_value=0)",
         "neg-p95"),
        ("runs", run(run_id="r-twice"), "expect_column_values_to_be_unique(run_id)", "r-twice"),
        ("runs", run(run_id="r-twice"), "expect_column_values_to_be_unique(run_id)", "r-twice"),
        ("learnings", learning(key="doubled", ts=datetime(2026, 11, 1, tzinfo=UTC)),
         "expect_compound_columns_to_be_unique(task, key, ts)", "qa/doubled at 2026-11-01T00:00:00.000000Z"),
        ("learnings", learning(key="doubled", ts=datetime(2026, 11, 1, tzinfo=UTC)),
         "expect_compound_columns_to_be_unique(task, key, ts)", "qa/doubled at 2026-11-01T00:00:00.000000Z"),
        ("judge_calibration", calibration(calibration_id="neg-n", n_failed=-1),
         "expect_column_values_to_be_between(n_failed, min_value=0)", "neg-n"),
        ("feedback", feedback(feedback_id="over-one", score=1.5),
         "expect_column_values_to_be_between(score, min_value=0, max_value=1)", "over-one"),
        ("feedback", feedback(feedback_id="no-signal", signal="vibes"), "expect_column_values_to_be_in_set(signal",
         "no-signal"),
    ]


def test_each_kind_of_bad_row_is_caught_and_named(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    good_home(store)
    bad = bad_rows()
    for table, row, _, _ in bad:
        store.append(table, [row])
    doubled = event_row("rollback", route="qa", model="smollm2-135m", version=1)
    store.append("events", [doubled, doubled])  # the same row twice: what the store must never do
    # A row another tool wrote with a schema this code does not know (a newer arbiter's).
    newer = store.append("events", [event_row("register", event_id="from-the-future")])
    assert newer is not None
    _rewrite(newer, schema_version=SCHEMA_VERSION + 1)
    report = check(store)
    failures = {(f.table, f.expectation): f for r in report.tables.values() for f in r.failures}
    for table, _, expectation, name in bad:
        (found,) = [f for (t, e), f in failures.items() if t == table and e.startswith(expectation)]
        assert any(example.startswith(name) for example in found.examples), (expectation, found)
    assert failures[("events", "expect_compound_columns_to_be_unique(event_id, ts)")].examples == (doubled["event_id"],)
    versions = failures[("events", f"expect_column_values_to_be_between(schema_version, min_value=1, "
                                   f"max_value={SCHEMA_VERSION})")]
    assert versions.examples == ("from-the-future",)
    assert len(report.lines()) == len(failures) == 16  # one line each, nothing else failed
    assert not report.ok


def _rewrite(path: Path, **values: Any) -> None:
    """Change a column of a staged file in place (what another tool writing into the folder would do)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for name, value in values.items():
        column = table.schema.get_field_index(name)
        table = table.set_column(column, table.schema.field(column), pa.array([value] * table.num_rows,
                                                                              table.schema.field(column).type))
    pq.write_table(table, path)


def test_counts_are_exact_and_the_names_bounded(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append("calls", [call(call_id=f"neg-{n:02d}", wall_ms=-float(n + 1)) for n in range(12)])
    store.append("calls", [call(call_id=f"dup-{n}") for n in range(4)] * 2)
    report = check(store, ["calls"], shown=3)
    duplicated, negative = report.lines()
    assert duplicated == "calls: 8 rows fail expect_column_values_to_be_unique(call_id): dup-0, dup-1, dup-2 and 1 more"
    assert negative.startswith("calls: 12 rows fail expect_column_values_to_be_between(wall_ms, min_value=0): neg-")
    assert negative.endswith(" and 9 more") and negative.count("neg-") == 3


def test_since_checks_only_the_rows_from_then_on(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append("calls", [call(call_id="old", wall_ms=-1.0, ts=now_utc() - timedelta(days=10)), call()])
    assert not check(store, ["calls"]).ok
    recent = check(store, ["calls"], since=now_utc() - timedelta(days=2))
    assert recent.ok and recent.tables["calls"].rows == 1


def judged_rows(table: str) -> list[dict[str, Any]]:
    """Rows with every kind of value each expectation judges: good, bad, missing, duplicated."""
    return {
        "calls": [call(call_id="a"), call(call_id="a"), call(call_id=None, ts=None),
                  call(call_id="b", wall_ms=-1.0, energy_source="guess", queue_ms=None),
                  call(call_id="c", ts=now_utc() + timedelta(days=1), prompt_tokens=-1, energy_source="rapl+nvml",
                       schema_version=0),
                  call(call_id="d", schema_version=None)],
        "runs": [run(run_id="a", energy_source="rapl"), run(run_id="b", energy_source="estimate,rapl+nvml"),
                 run(run_id="c", energy_source="estimate+gpu"), run(run_id="d", energy_source=",estimate"),
                 run(run_id="e", energy_source="rapl\nestimate", n_ok=-1), run(run_id="e", energy_source=None)],
        "events": [event_row("promote", event_id="x", ts=datetime(2026, 11, 1, tzinfo=UTC)),
                   event_row("promote", event_id="x", ts=datetime(2026, 11, 1, tzinfo=UTC)),
                   event_row("promote", event_id="x", ts=datetime(2026, 11, 2, tzinfo=UTC)),
                   event_row("promote", event_id=None, ts=datetime(2026, 11, 1, tzinfo=UTC)),
                   {**event_row("promote", event_id=None), "event_id": None, "ts": None}],
        "learnings": [learning(ts=datetime(2026, 11, 1, tzinfo=UTC)), learning(ts=datetime(2026, 11, 1, tzinfo=UTC)),
                      learning(key=None, ts=datetime(2026, 11, 1, tzinfo=UTC)),
                      learning(key=None, ts=datetime(2026, 11, 1, tzinfo=UTC)),
                      learning(key="later", ts=now_utc() + timedelta(days=1), schema_version=99)],
        "judge_calibration": [calibration(calibration_id="a", n=-1), calibration(calibration_id="a", n_failed=None),
                              calibration(calibration_id="b", seconds_per_item=-0.1, ts=None)],
        "feedback": [feedback(feedback_id="a", score=-0.1), feedback(feedback_id="a", signal="vibes"),
                     feedback(feedback_id="b", call_id=None, source=None), feedback(feedback_id="c", score=None)],
    }[table]


@pytest.mark.parametrize("table", list(SCHEMAS))
def test_the_sql_of_each_expectation_and_great_expectations_agree_row_for_row(table: str) -> None:
    """The scan trusts each expectation's SQL to pick exactly the rows GE fails: both judge the same rows."""
    from registry.results.check import _batch_definition

    rows = [{"schema_version": SCHEMA_VERSION, **r} for r in judged_rows(table)]
    frame = pa.Table.from_pylist(rows, schema=SCHEMAS[table]).to_pandas()
    now = now_utc()
    suite = expectations(table, now)
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    import great_expectations as gx

    result = batch.validate(gx.ExpectationSuite(name=f"agree-{table}", expectations=[e.to_gx() for e in suite]),
                            result_format="COMPLETE")
    connection = duckdb.connect()
    connection.register("checked", pa.Table.from_pylist(rows, schema=SCHEMAS[table]))
    disagreements = []
    failed_somewhere = 0
    outcomes = {(o.expectation_config.type, str(o.expectation_config.kwargs.get("column")
                                                 or o.expectation_config.kwargs.get("column_list"))): o
                for o in result.results}  # GE's results come in an order of its own
    for expectation in suite:
        outcome = outcomes[(expectation.type, str(expectation.column or list(expectation.column_list)))]
        by_ge = set(outcome.result.get("unexpected_index_list") or [])
        by_sql = _sql_rows(connection, expectation)
        failed_somewhere += bool(by_sql)
        if by_ge != by_sql:
            disagreements.append((expectation.describe(), sorted(by_ge), sorted(by_sql)))
    assert not disagreements
    assert failed_somewhere >= 3  # the frame does exercise the suite


def _sql_rows(connection: duckdb.DuckDBPyConnection, expectation: Expectation) -> set[int]:
    numbered = "(select row_number() over () - 1 as _position, * from checked)"
    if expectation.key is None:
        predicate = expectation.failing_sql()
    else:
        listed = ", ".join(expectation.key)
        present = " and ".join(f"{c} is not null" for c in expectation.key)
        predicate = (f"{present} and ({listed}) in (select {listed} from checked where {present} "
                     f"group by {listed} having count(*) > 1)")
    return {n for (n,) in connection.execute(f"select _position from {numbered} where {predicate}").fetchall()}


def test_the_energy_meter_writes_only_known_sources(tmp_path: Path) -> None:
    with measure() as cost:
        sum(range(1000))
    assert cost.energy is not None and cost.energy.source in ENERGY_SOURCES  # this machine's meter
    # A named fake of the kernel's RAPL tree (this machine has none), laid out as sysfs lays it out.
    package = tmp_path / "powercap" / "intel-rapl:0"
    package.mkdir(parents=True)
    (package / "name").write_text("package-0\n")
    (package / "energy_uj").write_text("1000\n")
    (package / "max_energy_range_uj").write_text("262143328850\n")
    meter = EnergyMeter(tmp_path / "powercap", gpus=(), watts=10)
    assert meter.finish(meter.start(), cpu_ms=1.0).source in ENERGY_SOURCES


def test_files_no_reader_reads_are_named(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    good_home(store)
    staged = tmp_path / "_staging" / "calls"
    (staged / "w1x0000000001-000000000007.parquet").write_bytes(b"not parquet")  # a writer's file, corrupt
    Maintenance(store).run()  # quarantines it
    (staged / "calls copy.parquet").write_bytes(b"a copy a sync tool made")
    day = next((tmp_path / "runs").glob("day=*"))
    old = day / "part-by-hand.parquet"
    old.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    (day / "part-being-written.parquet").write_bytes(b"x")  # a compaction's file before its commit: young
    report = check(store)
    assert report.quarantined == [str(tmp_path / "_quarantine" / "calls" / "w1x0000000001-000000000007.parquet")]
    assert report.foreign == [str(staged / "calls copy.parquet")]
    assert report.untracked == [str(old)]
    assert len(report.lines()) == 3 and all("move it out of results/" in line for line in report.lines())
    assert all(r.error is None and not r.failures for r in report.tables.values())


def test_an_unreadable_table_is_one_line_and_the_others_are_checked(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    good_home(store)
    (committed,) = (tmp_path / "runs").glob("day=*/*.parquet")
    committed.write_bytes(committed.read_bytes()[:40])  # truncated, as by a full disk or a bad copy
    report = check(store)
    (line,) = report.lines()
    assert line.startswith("runs: cannot be read: ") and "\n" not in line
    assert report.tables["calls"].rows == 6 and not report.tables["calls"].failures


# --------------------------------------------------------------------------- the commands


def arbiter(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_check_command_exits_0_when_whole_and_1_naming_each_failure(home: Path) -> None:
    store = ResultsStore(home / "results")
    good_home(store)
    code, out, _ = arbiter("results", "check")
    assert code == 0 and "ok: every row meets" in out
    store.append("calls", [call(call_id="neg", wall_ms=-5.0)])
    code, out, err = arbiter("results", "check")
    assert code == 1 and "Traceback" not in err
    assert "calls: 1 row fails expect_column_values_to_be_between(wall_ms, min_value=0): neg" in out
    code, out, _ = arbiter("results", "check", "--json", "--table", "calls", "--table", "runs")
    report = json.loads(out)
    assert code == 1 and not report["ok"] and set(report["tables"]) == {"calls", "runs"}
    assert report["tables"]["calls"]["failures"] == [{
        "expectation": "expect_column_values_to_be_between(wall_ms, min_value=0)", "rows": 1, "named": 1,
        "examples": ["neg"]}]
    tomorrow = (now_utc() + timedelta(days=1)).date().isoformat()
    assert arbiter("results", "check", "--since", tomorrow)[0] == 0
    code, _, err = arbiter("results", "check", "--table", "nope")
    assert code == 2 and "nope" in err


def test_compact_command_commits_and_merges_small_files(home: Path) -> None:
    store = ResultsStore(home / "results")
    for _ in range(3):  # three commits: three small files in today's partition
        store.append("calls", [call() for _ in range(5)], may_commit=False)
        Maintenance(store).commit()
    for _ in range(3):
        store.append("calls", [call()], may_commit=False)
    code, out, _ = arbiter("results", "compact", "--json")
    report = json.loads(out)
    assert code == 0 and report["ran"]
    assert report["committed_rows"] == {"calls": 3} and report["compacted"]["calls"]["files_removed"] == 4
    assert report["before"]["calls"]["files"] == 6 and report["after"]["calls"]["files"] == 1
    assert report["after"]["calls"]["bytes"] > 0 and report["retain_days"] is None
    assert store.query("select count(*) as n from calls") == [{"n": 18}]
    code, out, _ = arbiter("results", "compact")
    assert code == 0 and "1 → 1" in out and "retention: 0 calls rows dropped (none: " in out


def test_compact_command_waits_for_a_pass_another_process_runs(home: Path) -> None:
    store = ResultsStore(home / "results")
    store.append("events", [event_row("register", model="m", version=1)], may_commit=False)
    lock = home / "results" / "_staging" / ".lock"
    with lock.open("a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what `arbiter serve`'s maintenance holds during its pass
        threading.Timer(1.0, fcntl.flock, (held, fcntl.LOCK_UN)).start()
        started = time.monotonic()
        code, out, err = arbiter("results", "compact", "--json")
    assert code == 0 and time.monotonic() - started >= 0.9
    assert "waiting for it" in err and json.loads(out)["committed_rows"] == {"events": 1}
