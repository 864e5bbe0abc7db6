"""The compatibility matrix: which version runs on which runtime and hardware class, and how well.

Benchmarks deployed on one Prefect work pool per hardware class (flows/deploy.py) leave their
``calls`` and ``runs`` rows, each with the machine's fingerprint, in the results store. This
module reads them back as one DuckDB view, ``compat_matrix``, one row per version × runtime ×
hardware class:

- ``works``: the newest attempt there succeeded — the newest benchmark run (some item answered)
  or call outside a run (a gateway call, or the deployed flow's failed row for a version that
  cannot run on the class), whichever is newer. So a version that broke after an upgrade of its
  file or machine reads ``false`` again; ``ever_worked`` keeps whether it ever succeeded there;
- ``quality`` and ``tokens_per_s``: the mean over tasks of each task's *latest* run there, so an
  old measurement does not dilute a new one (``tasks`` says which tasks that mean covers);
- ``last_measured``: the newest row of either table.

The runtime is how the version ran: ``llama.cpp <version>`` for a GGUF file (the llama.cpp build
recorded on the row, since an upgrade can break or speed up a model), otherwise the provider kind
(``ollama``, ``openai``, ``coreml``). The kind is not on the rows, so it comes from the catalog.

The same rows, per class, become the version's ``arbiter.compatibility`` tag in MLflow, so a
person browsing the registry sees where a version works without running SQL. The tag is a
measurement summary rewritten after each benchmark, not part of the immutable spec.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import pyarrow as pa

from registry.catalog.versions import Catalog
from registry.errors import UserError
from registry.results.store import ResultsStore

TAG_COMPATIBILITY = "arbiter.compatibility"

# How a row ran: the GGUF kind runs in llama.cpp, whose build is on every row; other kinds are
# named by their provider. A version the catalog does not know (deleted since) reads 'unknown'.
_RUNTIME = """
    case when k.kind is null then 'unknown'
         when k.kind = 'gguf' then 'llama.cpp ' || coalesce(t.llama_cpp_version, 'unknown')
         else k.kind end
"""

_VIEW = f"""
create or replace temp view compat_matrix as
with call_rows as (
    select t.model, t.version, {_RUNTIME} as runtime, coalesce(t.hardware_class, 'unknown') as hardware_class,
           t.ok, t.error, t.tokens_per_s, t.ts, t.hardware_id, t.run_id
    from calls t left join arbiter_versions k on k.model = t.model and k.version = t.version
),
run_rows as (
    select t.model, t.version, {_RUNTIME} as runtime, coalesce(t.hardware_class, 'unknown') as hardware_class,
           t.task, t.quality, t.tokens_per_s, t.ts, t.n_ok
    from runs t left join arbiter_versions k on k.model = t.model and k.version = t.version
),
latest_runs as (
    select * from (
        select *, row_number() over (
            partition by model, version, runtime, hardware_class, task order by ts desc) as rank
        from run_rows)
    where rank = 1
),
by_calls as (
    select model, version, runtime, hardware_class,
           count(*) as n_calls, count(*) filter (where ok) as n_ok,
           median(tokens_per_s) filter (where ok) as call_tokens_per_s,
           arg_max(error, ts) filter (where not ok) as last_error,
           count(distinct hardware_id) as machines, max(ts) as last_call, arg_max(ok, ts) as last_ok,
           -- a call inside a benchmark run is judged with its run (one failed item is not a failure)
           max(ts) filter (where run_id is null) as last_attempt,
           arg_max(ok, ts) filter (where run_id is null) as last_attempt_ok
    from call_rows group by all
),
by_runs as (
    select model, version, runtime, hardware_class,
           avg(quality) as quality, avg(tokens_per_s) as run_tokens_per_s,
           string_agg(task, ',' order by task) as tasks, max(ts) as last_run, sum(n_ok) as run_ok,
           arg_max(coalesce(n_ok, 0) > 0, ts) as last_run_ok
    from latest_runs group by all
)
select model, version, runtime, hardware_class,
       coalesce(case when c.last_attempt is null and r.last_run is null then c.last_ok  -- a run's calls, no run row
                     when r.last_run is null or c.last_attempt >= r.last_run then c.last_attempt_ok
                     else r.last_run_ok end, false) as works,
       coalesce(c.n_ok, 0) > 0 or coalesce(r.run_ok, 0) > 0 as ever_worked,
       r.quality, coalesce(r.run_tokens_per_s, c.call_tokens_per_s) as tokens_per_s, r.tasks,
       coalesce(c.n_calls, 0) as n_calls, coalesce(c.n_ok, 0) as n_ok, coalesce(c.machines, 0) as machines,
       c.last_error, greatest(c.last_call, r.last_run) as last_measured
from by_calls c full outer join by_runs r using (model, version, runtime, hardware_class)
order by model, version, hardware_class, runtime
"""

COLUMNS = ("model", "version", "runtime", "hardware_class", "works", "ever_worked", "quality", "tokens_per_s", "tasks",
           "n_calls", "n_ok", "machines", "last_error", "last_measured")


def connect(store: ResultsStore, kinds: Mapping[tuple[str, int], str]) -> duckdb.DuckDBPyConnection:
    """The store's views plus ``compat_matrix``; ``kinds`` maps (model, version) to its spec kind."""
    connection = store.connect()
    add_view(connection, kinds)
    return connection


def add_view(connection: duckdb.DuckDBPyConnection, kinds: Mapping[tuple[str, int], str]) -> None:
    """Create ``compat_matrix`` on a connection that has the store's views (``arbiter results sql``
    uses it too, so the view a person queries is the one ``arbiter results matrix`` prints)."""
    connection.execute("set TimeZone = 'UTC'")  # last_measured reads the same on every machine
    versions = pa.table(
        {
            "model": [model for model, _ in kinds],
            "version": pa.array([version for _, version in kinds], type=pa.int32()),
            "kind": list(kinds.values()),
        }
    )
    connection.register("arbiter_versions", versions)
    connection.execute(_VIEW)


def version_kinds(catalog: Catalog) -> dict[tuple[str, int], str]:
    """Every registered version's kind (``gguf``, ``ollama``, …): the runtime half of the matrix."""
    return {(r.name, r.version): str(r.spec.kind) for r in catalog.list_versions()}


def matrix(store: ResultsStore, kinds: Mapping[tuple[str, int], str], model: str | None = None) -> list[dict[str, Any]]:
    """The matrix rows (of ``model`` only, when given), timestamps as ISO text for JSON."""
    connection = connect(store, kinds)
    try:
        cursor = connection.execute("select * from compat_matrix where $1 is null or model = $1", [model])
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except duckdb.Error as exc:
        raise UserError(f"compatibility matrix query failed: {str(exc).splitlines()[0]}") from exc
    finally:
        connection.close()
    for row in rows:
        row["last_measured"] = row["last_measured"].isoformat() if row["last_measured"] is not None else None
    return rows


# MLflow refuses a tag value over 5,000 characters. Every llama.cpp build a class ever ran is a
# runtime of its own, so the tag keeps the newest few per class and says how many it left out
# (``arbiter results matrix`` has them all).
TAG_RUNTIMES_PER_CLASS = 5
TAG_MAX_CHARS = 5000
NOTE_KEY = "_note"


def compatibility_tag(rows: Iterable[Mapping[str, Any]], *, per_class: int = TAG_RUNTIMES_PER_CLASS,
                      max_chars: int = TAG_MAX_CHARS) -> str:
    """One version's rows as compact JSON per hardware class, newest runtime first, e.g.
    ``{"cpu":[{"runtime":"llama.cpp 0.3.36","works":true,"quality":0.6,"tokens_per_s":112.4,…}]}``.

    At most ``per_class`` runtimes per class, and never more than ``max_chars`` (older runtimes
    go first); when any is left out, ``"_note"`` says how many and where to see them."""
    classes: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: r["last_measured"] or "", reverse=True):
        classes.setdefault(row["hardware_class"], []).append(
            {
                "runtime": row["runtime"],
                "works": bool(row["works"]),
                "quality": None if row["quality"] is None else round(row["quality"], 3),
                "tokens_per_s": None if row["tokens_per_s"] is None else round(row["tokens_per_s"], 1),
                "tasks": row["tasks"],
                "last_measured": row["last_measured"],
            }
        )
    total = sum(len(entries) for entries in classes.values())
    kept = {name: entries[:per_class] for name, entries in sorted(classes.items())}
    while True:
        left_out = total - sum(len(entries) for entries in kept.values())
        tag = dict(kept)
        if left_out:
            tag[NOTE_KEY] = f"{left_out} older runtime(s) left out; `arbiter results matrix --model NAME` lists all"
        value = json.dumps(tag, separators=(",", ":"))
        longest = max(kept.values(), key=len, default=[])
        if len(value) <= max_chars:
            return value
        if len(longest) <= 1:  # one runtime per class and still too long: a note, never a failed write
            return json.dumps({NOTE_KEY: f"too long for an MLflow tag ({len(value)} characters); "
                               "`arbiter results matrix --model NAME` lists it"}, separators=(",", ":"))
        longest.pop()  # the oldest runtime of the class with the most


def tag_versions(catalog: Catalog, refs: Iterable[tuple[str, int]]) -> dict[str, str]:
    """Write ``arbiter.compatibility`` on each version from the matrix as it is now; returns the
    tags written by ``NAME/VERSION``. A version with no rows yet gets no tag."""
    kinds = version_kinds(catalog)
    rows = matrix(catalog.store, kinds)
    written = {}
    for name, version in dict.fromkeys(refs):
        mine = [r for r in rows if r["model"] == name and r["version"] == version]
        if not mine:
            continue
        value = compatibility_tag(mine)
        catalog.set_version_tag(name, version, TAG_COMPATIBILITY, value)
        written[f"{name}/{version}"] = value
    return written
