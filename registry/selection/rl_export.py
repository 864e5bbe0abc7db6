"""RL training data: one row per task execution, with the choice made and what it earned.

Schema (Parquet, written to a temporary name and renamed, so a reader never sees half a file):

| column | type | meaning |
|---|---|---|
| execution_id | string | the ``calls`` row's id |
| ts | timestamp (UTC) | when it finished |
| source | string | ``tracker`` (an application's report), ``gateway`` or ``manager`` |
| task | string | the task (route) — the decision's context |
| features | string | JSON object: the task features the application reported (``{}`` when none) |
| model, version | string, int32 | the version chosen — the action |
| latency_ms | float64 | wall time of the execution |
| cpu_ms | float64 | CPU time, when measured |
| prompt_tokens, completion_tokens | int32 | when known |
| success | bool | |
| quality | float64 | in [0, 1], when measured (null otherwise) |
| reward | float64 | ``q − latency_weight · latency_s − cost_weight · cpu_s``, where ``q`` is the quality, or 1/0 for success/failure when no quality was measured; a failure is ``−1 −`` the same costs |

The weights are arguments (defaults 0.05 per second of latency, 0.05 per CPU second) and are
written into the file's metadata with the formula, so a trainer knows what the reward meant.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from registry.errors import UserError
from registry.results.store import ResultsStore, new_id

SCHEMA = pa.schema([
    ("execution_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")), ("source", pa.string()),
    ("task", pa.string()), ("features", pa.string()), ("model", pa.string()), ("version", pa.int32()),
    ("latency_ms", pa.float64()), ("cpu_ms", pa.float64()), ("prompt_tokens", pa.int32()),
    ("completion_tokens", pa.int32()), ("success", pa.bool_()), ("quality", pa.float64()), ("reward", pa.float64()),
])


def export_rl(store: ResultsStore, out: Path, *, since: datetime | None = None, latency_weight: float = 0.05,
              cost_weight: float = 0.05) -> int:
    """Write the executions since ``since`` to ``out``; returns the number of rows."""
    if latency_weight < 0 or cost_weight < 0:
        raise UserError("reward weights must be 0 or more (they subtract a cost)")
    out = Path(out)
    if out.suffix != ".parquet":
        raise UserError(f"--out {out}: give a file name ending in .parquet")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist")
    rows = store.query(
        """
        select call_id as execution_id, ts, source, coalesce(route, task) as task, coalesce(features, '{}') as features,
               model, version, wall_ms as latency_ms, cpu_ms, prompt_tokens, completion_tokens, ok as success, quality,
               (case when ok then coalesce(quality, 1.0) else -1.0 end)
                 - $2 * wall_ms / 1000 - $3 * coalesce(cpu_ms, 0) / 1000 as reward
        from calls
        where source in ('tracker', 'gateway', 'manager') and coalesce(route, task) is not null
          and ($1 is null or ts >= $1)
        order by ts
        """,
        [since, latency_weight, cost_weight],
    )
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata({
        "arbiter.reward": "q - latency_weight * latency_s - cost_weight * cpu_s; q = quality, else 1 (success) / -1 (failure)",
        "arbiter.latency_weight": str(latency_weight), "arbiter.cost_weight": str(cost_weight),
        "arbiter.since": since.isoformat() if since else "",
    })
    temporary = out.with_name(f".{out.name}.{new_id()[:8]}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, out)
    return len(rows)


def read_schema_metadata(path: Path) -> dict[str, str]:
    """The reward formula and weights a file was written with."""
    metadata = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in metadata.items() if k.startswith(b"arbiter.")}
