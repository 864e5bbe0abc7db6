"""What each version costs per task on each machine, from the ``calls`` rows, and where hardware sits idle.

One group per version × task × hardware (``hardware_id``, with its ``hardware_class``), over the
successful calls. Each figure gets its mean and p95 (nearest rank, as the benchmark's p95). Rules:

- **CPU**: ``cpu_ms`` of calls that ran alone (``cpu_overlapped`` false); when every call
  overlapped another, of all of them, and ``cpu_basis`` says ``overlapped`` (an upper bound).
- **CPU utilisation** = Σ cpu_ms / Σ (wall_ms × cores) over the same calls: the share of the
  machine's cores the calls kept busy.
- **Energy** (``energy_mwh`` mean and p95, and per 1,000 tokens = Σ energy_mwh / Σ completion_tokens
  × 1000) by the same rule, over the calls with an energy figure: those that ran alone, else all of
  them, and ``energy_basis`` says which. An overlapped call's energy is an upper bound: the estimate
  uses the process's CPU time and RAPL/NVML count the whole package/device, so two calls at once
  each record roughly both. ``energy_sources``/``energy_models`` name the rows used (``estimate`` is
  a model, ``rapl``/``nvml`` counters); any estimate keeps the figures to two significant digits.
- **Hints**: CPU utilisation under 50 % of the cores while llama.cpp ran fewer threads than cores →
  more threads; a GPU on the machine that no call put layers on (every ``n_gpu_layers`` 0:
  ``no_call_offloaded``), or left (nearly) idle → offload layers. A served model gets neither: its
  hardware is its server's. ``n_gpu_layers`` in the profile is the latest call's.

Example::

    cost_profiles(store, model="smollm2-135m", task="qa")
    # [{"model": "smollm2-135m", "version": 1, "task": "qa", "hardware_class": "cpu", "calls": 8,
    #   "wall_ms": {"avg": 410.2, "p95": 630.0}, …, "energy_mwh_per_1k_tokens": 21.0,
    #   "energy_sources": ["estimate"], "hints": ["CPU busy 48% of 2 cores: …"]}]
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from registry.machine.energy import as_precise_as
from registry.results.store import LIVE_DAYS, ResultsStore, now_utc

FIGURES = ("wall_ms", "cpu_ms", "cpu_thread_ms", "gpu_ms", "gpu_utilization_pct", "peak_rss_mb", "avg_rss_mb",
           "tokens_per_s", "energy_mwh", "prompt_tokens", "completion_tokens")
LOW_CPU_UTILIZATION = 0.5
IDLE_GPU_PCT = 5.0


def _stat(column: str, where: str = "true") -> str:
    return (f"avg({column}) filter (where {where}) as {column}__avg, "
            f"quantile_disc({column}, 0.95) filter (where {where}) as {column}__p95")


_CPU_ROWS = "not coalesce(cpu_overlapped, false) or clean = 0"  # alone, or all of them when none ran alone
_ENERGY_ROWS = "energy_mwh is not null and (not coalesce(cpu_overlapped, false) or clean_energy = 0)"  # the same rule

_SQL = f"""
with ok_calls as (
    select *, coalesce(task, route) as profile_task,
           count(*) filter (where not coalesce(cpu_overlapped, false)) over profile_group as clean,
           count(*) filter (where not coalesce(cpu_overlapped, false) and energy_mwh is not null)
             over profile_group as clean_energy
    from calls
    where ok and coalesce(task, route) is not null and ($4 is null or run_id is not null or ts >= $4)
      and ($1 is null or model = $1) and ($2 is null or version = $2) and ($3 is null or coalesce(task, route) = $3)
    window profile_group as (partition by model, version, coalesce(task, route), hardware_id)
)
select model, version, profile_task as task, hardware_id,
       any_value(hardware_class) as hardware_class, any_value(cpu_cores) as cpu_cores, any_value(gpu) as gpu,
       count(*) as calls,
       count(*) filter (where coalesce(cpu_overlapped, false)) as cpu_overlapped_calls,
       any_value(clean) > 0 as cpu_alone,
       any_value(clean_energy) > 0 as energy_alone,
       count(*) filter (where energy_mwh is not null) > 0 as has_energy,
       max(n_threads) as n_threads,
       arg_max(n_gpu_layers, ts) as n_gpu_layers,
       bool_and(n_gpu_layers = 0) as no_call_offloaded,
       {', '.join(_stat(f) for f in FIGURES if f not in ('cpu_ms', 'energy_mwh'))},
       {_stat('cpu_ms', _CPU_ROWS)},
       {_stat('energy_mwh', _ENERGY_ROWS)},
       sum(cpu_ms) filter (where {_CPU_ROWS})
         / nullif(sum(wall_ms * cpu_cores) filter (where {_CPU_ROWS}), 0) as cpu_utilization,
       sum(energy_mwh) filter (where {_ENERGY_ROWS}) * 1000
         / nullif(sum(completion_tokens) filter (where {_ENERGY_ROWS}), 0) as energy_mwh_per_1k_tokens,
       list(distinct energy_source order by energy_source) filter (where {_ENERGY_ROWS} and energy_source is not null)
         as energy_sources,
       list(distinct energy_model order by energy_model) filter (where {_ENERGY_ROWS} and energy_model is not null)
         as energy_models
from ok_calls
group by all
order by model, version, task, hardware_id
"""


def cost_profiles(
    store: ResultsStore, *, model: str | None = None, version: int | None = None, task: str | None = None,
    days: int | None = LIVE_DAYS,
) -> list[dict[str, Any]]:
    """One profile per version × task × hardware over the successful calls, hints included: every
    benchmark call, and live calls of the last ``days`` days (None: all of them; a month of a busy
    gateway is tens of millions of rows, and eleven exact p95s over them take seconds)."""
    since = None if days is None else now_utc() - timedelta(days=days)
    return [_profile(row) for row in store.query(_SQL, [model, version, task, since])]


def tasks_with_calls(store: ResultsStore) -> list[str]:
    """Every task (or route) some call was made for: what ``--task`` can name."""
    rows = store.query("select distinct coalesce(task, route) as task from calls where coalesce(task, route) "
                       "is not null order by task")
    return [r["task"] for r in rows]


def _profile(row: dict[str, Any]) -> dict[str, Any]:
    profile = {key: row[key] for key in ("model", "version", "task", "hardware_id", "hardware_class", "cpu_cores",
                                         "gpu", "calls", "cpu_overlapped_calls", "n_threads", "n_gpu_layers",
                                         "no_call_offloaded")}
    for figure in FIGURES:
        profile[figure] = {"avg": row[f"{figure}__avg"], "p95": row[f"{figure}__p95"]}
    profile["cpu_basis"] = "alone" if row["cpu_alone"] else "overlapped"
    profile["energy_basis"] = ("alone" if row["energy_alone"] else "overlapped") if row["has_energy"] else None
    profile["cpu_utilization"] = row["cpu_utilization"]
    sources = row["energy_sources"] or []
    profile["energy_mwh"] = {k: as_precise_as(v, sources) for k, v in profile["energy_mwh"].items()}
    profile["energy_mwh_per_1k_tokens"] = as_precise_as(row["energy_mwh_per_1k_tokens"], sources)
    profile["energy_sources"] = sources
    profile["energy_models"] = row["energy_models"] or []
    profile["hints"] = hints(profile)
    return profile


def hints(profile: dict[str, Any]) -> list[str]:
    """Where the hardware sat idle while this version ran, and what to change."""
    found = []
    cores = profile["cpu_cores"] or 1
    threads = profile["n_threads"]  # None: a served model, whose CPU is its server's (not ours to tune)
    utilization = profile["cpu_utilization"]
    if threads is not None and utilization is not None and threads < cores and utilization < LOW_CPU_UTILIZATION:
        found.append(
            f"CPU busy {utilization:.0%} of {cores} cores during calls, llama.cpp ran {threads} thread(s): more "
            f"threads may be faster (ARBITER_N_THREADS, default cores - 1 = {cores - 1}; leave one free if other "
            "work shares the machine)")
    gpu = profile["gpu"]
    has_gpu = profile["hardware_class"] == "cuda" or (gpu not in (None, "", "none"))
    gpu_pct = profile["gpu_utilization_pct"]["avg"]
    if has_gpu and profile["no_call_offloaded"]:  # every call: one that offloaded makes it not "no layers"
        found.append(
            f"a GPU ({gpu}) is here but llama.cpp put no layers on it in any call (n_gpu_layers 0): offload them with "
            f"ARBITER_N_GPU_LAYERS=-1 (needs a llama.cpp build with CUDA; `arbiter hardware` says whether this one has it)")
    elif has_gpu and threads is not None and (gpu_pct is None or gpu_pct < IDLE_GPU_PCT):
        used = "no GPU figure recorded" if gpu_pct is None else f"GPU {gpu_pct:.0f}% busy"
        found.append(
            f"a GPU ({gpu}) is here but this version left it idle ({used}): offload layers with "
            f"ARBITER_N_GPU_LAYERS=-1 (needs a llama.cpp build with CUDA; `arbiter hardware` says whether this one has it)")
    return found
