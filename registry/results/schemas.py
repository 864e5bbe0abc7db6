"""The results tables' columns, and the small helpers every writer of a row uses (ids, UTC times).

Each row carries ``schema_version``; a column added later reads as NULL in rows written before it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pyarrow as pa

SCHEMA_VERSION = 7  # 2: calls gained api, requested, queue_ms, overhead_ms (the gateway's)
# 3: calls gained features and metadata (JSON text: what an application reports through the tracker);
#    runs gained quality_source ("reference" or "judge:NAME/VERSION") and n_unscored
# 4: every table with the machine's fingerprint gained hardware_class (cpu, cuda, apple: the work pool);
#    calls gained cpu_thread_ms, cpu_overlapped, avg_rss_mb, gpu_ms, energy_mwh, energy_source, energy_model,
#    n_threads, n_gpu_layers;
#    runs gained avg_rss_mb, energy_mwh, energy_mwh_per_1k_tokens, energy_source (docs/costs.md)
# 5: runs gained task_version and task_sha256 (the task file's recorded version, docs/tasks.md);
#    calls gained answer, scores (JSON: each scorer's score) and score_problems (why an item went unscored:
#    a custom scorer that raised, a judge with no valid judgement), kept for benchmark calls only
# 6: calls gained shadow_of (a shadow copy's user call, docs/rollout.md); the feedback table (every live
#    quality observation of a call: an application's feedback, a reference-free scorer, the judge)
# 7: calls gained tool_calls (how many tool calls the answer made; null for a row with no generation)

_HARDWARE = [
    ("hardware_id", pa.string()),
    ("cpu_model", pa.string()),
    ("cpu_cores", pa.int32()),
    ("ram_mb", pa.int64()),
    ("gpu", pa.string()),
    ("os", pa.string()),
    ("llama_cpp_version", pa.string()),
    ("hardware_class", pa.string()),
]

SCHEMAS: dict[str, pa.Schema] = {
    "calls": pa.schema(
        [
            ("call_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("source", pa.string()),
            ("route", pa.string()),
            ("task", pa.string()),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("run_id", pa.string()),
            ("item_id", pa.string()),
            ("prompt_tokens", pa.int32()),
            ("completion_tokens", pa.int32()),
            ("wall_ms", pa.float64()),
            ("ttft_ms", pa.float64()),
            ("tokens_per_s", pa.float64()),
            ("cpu_ms", pa.float64()),
            ("peak_rss_mb", pa.float64()),
            ("gpu_memory_mb", pa.float64()),
            ("gpu_utilization_pct", pa.float64()),
            ("cpu_thread_ms", pa.float64()),
            ("cpu_overlapped", pa.bool_()),
            ("avg_rss_mb", pa.float64()),
            ("gpu_ms", pa.float64()),
            ("energy_mwh", pa.float64()),
            ("energy_source", pa.string()),
            ("energy_model", pa.string()),
            ("n_threads", pa.int32()),  # what llama.cpp ran with (null for a served model)
            ("n_gpu_layers", pa.int32()),
            ("ok", pa.bool_()),
            ("error", pa.string()),
            ("quality", pa.float64()),
            ("api", pa.string()),
            ("requested", pa.string()),
            ("queue_ms", pa.float64()),
            ("overhead_ms", pa.float64()),
            ("features", pa.string()),
            ("metadata", pa.string()),
            ("answer", pa.string()),
            ("scores", pa.string()),
            ("score_problems", pa.string()),
            ("shadow_of", pa.string()),  # source 'shadow': the call_id of the user call this copy mirrors
            ("tool_calls", pa.int32()),  # tool calls in the answer (0: a text answer); null without a generation
            *_HARDWARE,
            ("schema_version", pa.int32()),
        ]
    ),
    "runs": pa.schema(
        [
            ("run_id", pa.string()),
            ("mlflow_run_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("task", pa.string()),
            ("task_version", pa.int32()),
            ("task_sha256", pa.string()),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("dataset_sha256", pa.string()),
            ("n", pa.int32()),
            ("n_ok", pa.int32()),
            ("quality", pa.float64()),
            ("quality_source", pa.string()),
            ("n_unscored", pa.int32()),
            ("p50_ms", pa.float64()),
            ("p95_ms", pa.float64()),
            ("ttft_p50_ms", pa.float64()),
            ("tokens_per_s", pa.float64()),
            ("cpu_ms_per_token", pa.float64()),
            ("peak_rss_mb", pa.float64()),
            ("load_ms", pa.float64()),
            ("warmup_ms", pa.float64()),
            ("avg_rss_mb", pa.float64()),
            ("energy_mwh", pa.float64()),
            ("energy_mwh_per_1k_tokens", pa.float64()),
            ("energy_source", pa.string()),
            *_HARDWARE,
            ("schema_version", pa.int32()),
        ]
    ),
    "events": pa.schema(
        [
            ("event_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("kind", pa.string()),
            ("route", pa.string()),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("detail", pa.string()),
            ("schema_version", pa.int32()),
        ]
    ),
    # Task learnings (registry/selection/learnings.py): append-only; the latest row per (task, key) wins.
    "learnings": pa.schema(
        [
            ("ts", pa.timestamp("us", tz="UTC")),
            ("task", pa.string()),
            ("key", pa.string()),
            ("value", pa.string()),
            ("source", pa.string()),
            ("schema_version", pa.int32()),
        ]
    ),
    # Live quality of a call (registry/quality/): one row per observation; the latest row per
    # (call_id, source) wins, so posting the same feedback again changes nothing (feedback_id is
    # derived from call_id and source). ``signal`` is what kind of evidence it is: 'feedback' (an
    # application or a person), 'scorer' (the task's reference-free live scorers) or 'judge' (the
    # judgment route's judge). ``score`` null: the scorer or judge failed, ``detail`` says why.
    "feedback": pa.schema(
        [
            ("feedback_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("call_id", pa.string()),
            ("route", pa.string()),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("signal", pa.string()),
            ("source", pa.string()),
            ("score", pa.float64()),
            ("comment", pa.string()),
            ("detail", pa.string()),
            ("schema_version", pa.int32()),
        ]
    ),
    "judge_calibration": pa.schema(
        [
            ("calibration_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("criterion", pa.string()),
            ("n", pa.int32()),
            ("n_failed", pa.int32()),
            ("accuracy", pa.float64()),
            ("spearman", pa.float64()),
            ("mean_abs_error", pa.float64()),
            ("dataset_sha256", pa.string()),
            ("seconds_per_item", pa.float64()),
            ("mlflow_run_id", pa.string()),
            *_HARDWARE,
            ("schema_version", pa.int32()),
        ]
    ),
}


DUCKDB_TYPES = {"string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN",
                 "timestamp[us, tz=UTC]": "TIMESTAMPTZ"}


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: float | datetime | None) -> str | None:
    """A moment (epoch seconds or an aware datetime) as ISO 8601 in UTC, ``+00:00`` suffix: the
    form every ``--json`` answer uses for times; None stays None (a step not started yet)."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat()


def new_id() -> str:
    return uuid.uuid4().hex
