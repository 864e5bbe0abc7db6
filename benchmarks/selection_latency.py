"""selection_latency: LocalModelSelector.select and Router.resolve with 1,000 versions and 1M result rows,
next to a direct MLflow alias lookup measured in the same run.

Set-up, in a throwaway ARBITER_HOME: a few versions registered through ``Catalog.register`` (SmolLM2's
file under several names: the real path, timed per version), the rest created with ``MlflowClient``
in the catalog's exact tag format (spec tag, status, sha256, identity, kind, capabilities, context
window, quantization; no ``spec.json`` run, which only provenance reads) because the real path costs
a run, an artifact and a hash per version; routes ``qa``, ``extract``, ``classify`` promoted through
``Routes``; ``runs`` and ``calls`` rows written as Parquet through ``ResultsStore`` in batches.

Measured: the profile cache's full read over all rows; ``select()`` on cached profiles with task
learnings applied (criteria rotate over tasks, limits, capabilities, a preference); ``Router.resolve``
on a router started with ``follow=False`` (its champions are synthetic versions with no file, so the
pool's warm-up fails at once and nothing loads — resolution never touches the pool); and
``MlflowClient.get_model_version_by_alias``. Goal: select p95 ≤ 1 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import harness

DEFAULT_OUT = harness.RESULTS_DIR / "selection_latency.json"
TASKS = ("qa", "extract", "classify")
CAPABILITY_SETS = (("chat", "text-generation"), ("chat", "json", "text-generation"), ("code", "text-generation"))
ACCELERATORS = (("cpu",),) * 17 + (("cuda", "cpu"), ("cuda",), ("ane",))
BATCH_ROWS = 100_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000, help="catalog versions (default 1000)")
    parser.add_argument("--models", type=int, default=50, help="catalog models they are spread over (default 50)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="calls + runs rows (default 1,000,000)")
    parser.add_argument("--real", type=int, default=3, help="versions registered through Catalog.register (default 3)")
    parser.add_argument("--iterations", type=int, default=2000, help="timed select() calls (default 2000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON output (default {DEFAULT_OUT.relative_to(harness.REPO)})")
    parser.add_argument("--home", type=Path, default=None, help="ARBITER_HOME to use and keep (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.versions < args.real + 2 or args.models < 1 or args.rows < 1 or args.iterations < 1:
        parser.error("--versions must exceed --real by 2; --models, --rows, --iterations at least 1")
    return args


def register_versions(catalog: Any, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """``args.real`` versions the real way, then the rest straight through MlflowClient."""
    from registry.catalog.mlflow_client import registered_model_or_none
    from registry.catalog.shipped import smollm2_path
    from registry.catalog.versions import TAG_IDENTITY, TAG_ROLE, TAG_SHA, TAG_SPEC, TAG_STATUS
    from registry.spec import Hardware, ModelSpec

    real_ms = []
    for n in range(args.real):
        started = time.perf_counter()
        catalog.register(smollm2_path(), name=f"real-{n}", capabilities=["chat", "text-generation"])
        real_ms.append((time.perf_counter() - started) * 1000)

    client = catalog.client
    created_ms = []
    for n in range(args.versions - args.real):
        name = f"bench-{n % args.models:03d}"
        spec = ModelSpec(
            name=name, kind="gguf", source=f"/nonexistent/{name}-{n}.gguf", sha256=uuid.uuid4().hex * 2,
            size_bytes=rng.randint(50, 4000) * 2**20, capabilities=rng.choice(CAPABILITY_SETS),
            context_window=rng.choice((2048, 4096, 8192)), architecture="llama", quantization=rng.choice(("Q4_0", "Q8_0")),
            family=name, hardware=Hardware(accelerators=rng.choice(ACCELERATORS), min_memory_mb=rng.randint(100, 4000)),
        )
        started = time.perf_counter()
        if n < args.models and registered_model_or_none(client, name) is None:
            client.create_registered_model(name, tags={TAG_ROLE: "catalog"})
        client.create_model_version(name, source=f"file:///nonexistent/{name}", tags={
            TAG_SPEC: spec.model_dump_json(), TAG_STATUS: "deprecated" if rng.random() < 0.05 else "active",
            TAG_SHA: spec.sha256 or "", TAG_IDENTITY: spec.identity, "arbiter.kind": str(spec.kind),
            "arbiter.capabilities": ",".join(spec.capabilities), "arbiter.context_window": str(spec.context_window),
            "arbiter.quantization": spec.quantization or "",
        })
        created_ms.append((time.perf_counter() - started) * 1000)
    return {
        "catalog_register_ms": [round(x, 1) for x in real_ms],
        "mlflow_client_create_ms_mean": round(statistics.fmean(created_ms), 2),
        "mlflow_client_create_s_total": round(sum(created_ms) / 1000, 1),
        "catalog_register_s_projected_for_all": round(statistics.median(real_ms) * args.versions / 1000, 1),
    }


def write_results(store: Any, versions: list[Any], rows: int, rng: random.Random) -> dict[str, Any]:
    """One benchmark run (20 calls) per version × task, then live gateway calls up to ``rows`` in all."""
    from registry.machine.hardware import fingerprint
    from registry.results.store import now_utc

    hardware = fingerprint().as_row()
    started = time.perf_counter()
    runs, calls = [], []
    for record in versions:
        for task in TASKS:
            run_id = uuid.uuid4().hex
            quality, p50 = rng.random(), rng.uniform(100, 4000)
            runs.append({"run_id": run_id, "ts": now_utc(), "task": task, "model": record.name,
                         "version": record.version, "n": 20, "n_ok": rng.randint(17, 20), "quality": quality,
                         "p50_ms": p50, "peak_rss_mb": float(record.spec.hardware.min_memory_mb + 200),
                         "load_ms": rng.uniform(200, 6000), "tokens_per_s": rng.uniform(10, 120), **hardware})
            calls += [_call(record, task, run_id, "benchmark", p50, rng, hardware) for _ in range(20)]
    store.append("runs", runs)
    written = len(runs)
    while written < rows:
        count = min(BATCH_ROWS - len(calls), rows - written - len(calls))
        for _ in range(max(0, count)):
            record, task = rng.choice(versions), rng.choice(TASKS)
            calls.append(_call(record, task, None, "gateway", rng.uniform(100, 4000), rng, hardware))
        store.append("calls", calls)
        written += len(calls)
        calls = []
    return {"runs_rows": len(runs), "calls_rows": written - len(runs), "write_s": round(time.perf_counter() - started, 1)}


def _call(record: Any, task: str, run_id: str | None, source: str, p50: float, rng: random.Random,
          hardware: dict[str, Any]) -> dict[str, Any]:
    from registry.results.store import now_utc

    ok = rng.random() > 0.03
    return {"call_id": uuid.uuid4().hex, "ts": now_utc(), "source": source, "task": task,
            "route": task if source == "gateway" else None, "model": record.name, "version": record.version,
            "run_id": run_id, "ok": ok, "wall_ms": p50 * rng.uniform(0.7, 1.4),
            "quality": rng.random() if run_id else None, "peak_rss_mb": 900.0, **hardware}


def timed_us(call: Any, rounds: int) -> dict[str, Any]:
    timings = []
    for n in range(rounds):
        started = time.perf_counter()
        call(n)
        timings.append((time.perf_counter() - started) * 1e6)
    return {"n": rounds, "p50": round(statistics.median(timings), 1),
            "p95": round(harness.percentile(timings, 95), 1), "max": round(max(timings), 1)}


def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from registry.catalog.routes import Routes
    from registry.catalog.versions import Catalog
    from registry.machine.hardware import fingerprint
    from registry.selection.criteria import Criteria
    from registry.selection.learnings import TaskLearnings
    from registry.selection.profiles import ProfileCache
    from registry.selection.selector import LocalModelSelector
    from registry.serving.pool import WarmPool
    from registry.serving.router import Router
    from registry.settings import get_settings

    rng = random.Random(0)
    result: dict[str, Any] = {"machine": harness.machine_facts()}
    settings = get_settings(home=home)
    catalog = Catalog(settings)
    result["registration"] = register_versions(catalog, args, rng)
    started = time.perf_counter()
    versions = catalog.list_versions()
    result["catalog_list_versions_ms"] = round((time.perf_counter() - started) * 1000, 1)
    if len(versions) != args.versions:
        raise harness.BenchmarkError(f"{len(versions)} versions listed, {args.versions} registered")
    result["results"] = write_results(catalog.store, versions, args.rows, rng)

    profiles = ProfileCache(catalog.store, max_age_s=3600)  # refreshed by hand below, never during timing
    refresh_ms = []
    for _ in range(5):
        started = time.perf_counter()
        table = profiles.refresh()
        refresh_ms.append((time.perf_counter() - started) * 1000)
    result["profile_refresh_ms"] = {"n": 5, "median": round(statistics.median(refresh_ms), 1),
                                    "max": round(max(refresh_ms), 1), "profiles": len(table)}

    learnings = TaskLearnings(catalog.store, max_age_s=3600)
    learnings.set("extract", prefer="quality", complexity="high")
    selector = LocalModelSelector(lambda: versions, profiles, learnings, hardware_id=fingerprint().hardware_id)
    criteria = [
        Criteria(task="qa"),
        Criteria(task="extract", max_latency_ms=2500),
        Criteria(task="classify", capabilities=("json",), max_memory_mb=2000),
        Criteria(task="qa", prefer="fast", max_latency_ms=3000, min_samples=10),
    ]
    last = [selector.select(c) for c in criteria]  # warm: facts cached, profile indexes built
    result["select_us"] = timed_us(lambda n: selector.select(criteria[n % len(criteria)]), args.iterations)
    result["select_shape"] = [{"task": s.criteria.task, "candidates": len(s.candidates), "excluded": len(s.excluded),
                               "primary": s.primary.ref} for s in last]

    routes = Routes(catalog)
    for task, record in zip(TASKS, [v for v in versions if v.status == "active"][:3], strict=True):
        routes.promote(task, record.name, record.version, force=True)
    alias_target = next(v for v in versions if v.name.startswith("bench-"))
    catalog.client.set_registered_model_alias(alias_target.name, "stable", str(alias_target.version))
    names = ["qa", "qa@champion", f"{alias_target.name}@stable", versions[len(versions) // 2].ref]
    with WarmPool(settings) as pool:
        router = Router(catalog, pool)
        router.start(follow=False)
        result["resolve_us"] = timed_us(lambda n: router.resolve(names[n % len(names)]), 20_000)
        result["resolve_us"]["names"] = names
    client = catalog.client
    result["mlflow_alias_lookup_us"] = timed_us(lambda n: client.get_model_version_by_alias("route.qa", "champion"), 200)
    p95 = result["select_us"]["p95"]
    result["goal"] = {"select_p95_us": 1000, "met": p95 <= 1000}
    result["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return result


def summary_line(result: dict[str, Any], out: Path) -> str:
    s, r, m = result["select_us"], result["resolve_us"], result["mlflow_alias_lookup_us"]
    rows = result["results"]["runs_rows"] + result["results"]["calls_rows"]
    return (
        f"selection_latency: select p50 {s['p50']:.0f} us p95 {s['p95']:.0f} us (goal <= 1000), "
        f"resolve p50 {r['p50']:.1f} us p95 {r['p95']:.1f} us, MLflow alias lookup p50 {m['p50']:.0f} us "
        f"p95 {m['p95']:.0f} us; profile refresh {result['profile_refresh_ms']['median']:.0f} ms over {rows:,} rows; "
        f"{result['settings']['versions']} versions -> {harness.shown(out)}" + harness.busy_warning(result)
    )


def main(argv: list[str] | None = None) -> int:
    return harness.run_main("selection_latency", parse_args(argv), measure, summary_line)


if __name__ == "__main__":
    sys.exit(main())
