"""``arbiter demo``: the main job on the embedded default, end to end and idempotent.

Registers the models PyPI packages ship (plus a derived version of each), trains the demo's own
text classifier for ``ticket-topic`` from the shipped training set and registers it with its
provenance, benchmarks every version × task not yet measured on this hardware with this data,
prints the leaderboard, promotes each task's best version, answers one prompt through a route (and
one support message through route ``ticket-topic`` when the classifier won it), and says how to
look at everything in the MLflow UI and with DuckDB.
"""

from __future__ import annotations

import shlex

import click

from registry.catalog.routes import Routes
from registry.catalog.shipped import prepare_shipped_models, shipped_embedder
from registry.catalog.versions import Catalog
from registry.cli import context
from registry.cli.prefect_server import prefect_api
from registry.cli.progress import terminal_progress
from registry.cli.results import print_leaderboard
from registry.evaluation.tasks import TaskCatalog, TaskVersion
from registry.machine.hardware import fingerprint
from registry.results.store import ResultsStore
from registry.settings import Settings
from registry.spec import VersionRecord
from registry.training.data import check_training_data
from registry.training.text_classifier import FOLDS, train_text_classifier

DEMO_PROMPT = "In one sentence, what is the capital of France?"
EMBEDDING_ROUTE = "embed"
CUSTOM_TASK = "ticket-topic"  # datasets/ticket-topic.yaml, its training set beside it
CUSTOM_MODEL = "ticket-clf"  # short, so the leaderboard's model column fits 80 columns
# Written for the demo, in neither of ticket-topic's sets.
TICKET = "I ordered a desk lamp on Monday and the tracking page still says label created. When will it ship?"
_JUDGED_ITEMS = 4  # each item costs a generation and three judgements: about 10 s here


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N items of each set.")
@click.option("--rebenchmark", is_flag=True, help="Benchmark again even where a run on this hardware exists.")
def demo(limit: int | None, rebenchmark: bool) -> None:
    """Register, benchmark, rank, promote and serve the shipped small models."""
    catalog = context.catalog()
    settings = catalog.settings
    click.echo("1/7 registering the models PyPI packages ship (a Q4_0 version of each made here, and SmolLM2 "
               "as an embedding model)…")
    for shipped in [*prepare_shipped_models(settings.models_dir, settings.n_threads), shipped_embedder()]:
        record, created = catalog.register(
            shipped.path, name=shipped.name, capabilities=list(shipped.capabilities),
            chat_format=shipped.chat_format, provenance=shipped.provenance,
        )
        click.echo(f"    {'new' if created else 'have'} {record.ref}: {record.spec.quantization}, "
                   f"{record.spec.size_bytes / 2**20:.0f} MiB, sha256 {record.spec.sha256[:12]}…")
    embedder = record  # the last one registered

    tasks = TaskCatalog(settings)
    _custom_model(catalog, tasks)
    records = catalog.list_versions()
    names = tasks.default_names()
    sets = [tasks.get(name) for name in names]
    todo = [r.ref for r in records if rebenchmark or _needs_run(catalog, r, sets, limit)]
    click.echo(f"3/7 benchmarking {len(todo)} of {len(records)} versions on {', '.join(names)} with a Prefect flow…")
    if todo:
        # One Prefect server for the whole demo (step 6 reuses it), stopped when the command ends.
        click.get_current_context().with_resource(prefect_api(settings))
        from flows.benchmark import benchmark_flow

        with terminal_progress():  # minutes of work: a bar per version × task, or a line as each ends
            benchmark_flow(models=todo, tasks=names, limit=limit, home=str(settings.home))

    click.echo("4/7 leaderboard (latest run per version on this hardware):")
    board = [row for row in catalog.store.leaderboard() if row["hardware_id"] == fingerprint().hardware_id]
    print_leaderboard(board)

    click.echo("5/7 promoting the best version of each task's route:")
    routes = context.routes()
    for name in names:
        best = next((r for r in board if r["task"] == name), None)  # ordered by quality, then p50
        if best is None:
            click.echo(f"    route {name}: no benchmark on this hardware, nothing to promote")
            continue
        state = routes.promote(name, best["model"], int(best["version"]), contract=tasks.contract(name))
        previous = state.previous
        click.echo(f"    route {name}: champion {best['model']}/{best['version']} (quality {best['quality']:.3f})"
                   + (f", previous {previous.model}/{previous.version}" if previous else ""))
    _embedding_route(routes, embedder)
    classifier_champion = _classifier_champion(routes)

    _judged_task(catalog, limit)
    click.echo(f"7/7 serving the routes with the gateway, one question through the ollama client: {DEMO_PROMPT!r}")
    _ask_through_the_gateway(settings, ask_classifier=classifier_champion)
    mlruns = settings.mlruns_dir
    click.echo(
        "\nNext:\n"
        "  Serve every route to Ollama and OpenAI clients (port 11434, Ollama's):\n"
        "    .venv/bin/arbiter serve\n"
        "  Then vectors from route embed, as OpenAI's API answers them:\n"
        "    curl -s http://127.0.0.1:11434/v1/embeddings -d '{\"model\": \"embed\", \"input\": [\"a cat\", \"a dog\"]}'\n"
        f"  And a support message's team from route {CUSTOM_TASK} (its champion's label):\n"
        f"    curl -s http://127.0.0.1:11434/api/generate -d '{{\"model\": \"{CUSTOM_TASK}\", \"prompt\": "
        "\"My card was charged twice\", \"stream\": false}'\n"
        f"  MLflow UI (promote by moving the 'champion' alias of route.<task>):\n"
        f"    .venv/bin/mlflow ui --backend-store-uri sqlite:///{mlruns / 'mlflow.db'} --port 5000\n"
        "  Results with DuckDB (views calls, runs, events), or as pandas DataFrames (docs/results.md):\n"
        "    .venv/bin/arbiter results sql \"select task, model, version, quality, p50_ms from runs order by ts desc\"\n"
        f"    ARBITER_HOME={shlex.quote(str(settings.home))} .venv/bin/python -c \"from registry import "
        "ArbiterModelManager; m = ArbiterModelManager(); print(m.leaderboard()[['task', 'ref', 'quality', 'p50_ms']]); "
        "m.close()\""
    )


def _custom_model(catalog: Catalog, tasks: TaskCatalog) -> None:
    """Train the demo's own model, a text classifier for ``ticket-topic``, from the training set the
    project ships beside the task (checked against the task's expectations and kept apart from its
    validation set), and register the ONNX file with its provenance. Training is deterministic, so
    a second demo trains the same bytes and finds the version it registered (``have``); other
    training data makes other bytes, a new version."""
    settings = catalog.settings
    task = tasks.find(CUSTOM_TASK)
    training_file = settings.datasets_dir / f"{CUSTOM_TASK}.train.jsonl"
    if task is None or not training_file.is_file():
        click.echo(f"2/7 no {CUSTOM_TASK} task and training set in {settings.datasets_dir}: no custom model trained")
        return
    click.echo(f"2/7 training the demo's own model: a text classifier for {CUSTOM_TASK} from {training_file.name} "
               "(scikit-learn, exported to ONNX)…")
    data = check_training_data(training_file, task)
    trained = train_text_classifier(data, task, settings.models_dir / "trained")
    # The same bytes are the same version, whatever else changed since it was registered (the task's
    # version, the code's comments, where the checkout lives): its provenance is that first training's.
    same = [r for r in catalog.list_versions(name=CUSTOM_MODEL) if r.spec.sha256 == trained.sha256]
    record, created = (same[0], False) if same else catalog.register_onnx(
        trained.path, name=CUSTOM_MODEL, labels=list(task.classification.labels), provenance=trained.provenance())
    click.echo(f"    {'new' if created else 'have'} {record.ref}: ONNX text classifier "
               f"({', '.join(record.spec.labels)}), {record.spec.size_bytes / 2**10:.0f} KiB, "
               f"sha256 {record.spec.sha256[:12]}…")
    click.echo(f"    trained on {data.rows} rows (sha256 {data.sha256[:12]}…), {FOLDS}-fold cross-validated accuracy "
               f"{trained.metrics['cv_accuracy']:.3f}, macro F1 {trained.metrics['cv_macro_f1']:.3f}; "
               f"`arbiter models show {record.ref}` lists its provenance")


def _embedding_route(routes: Routes, record: VersionRecord) -> None:
    """Route ``embed`` serves the embedding version, so the embeddings examples in docs/clients.md run
    after the demo. Promoted without a benchmark (``force``): no task measures embeddings."""
    state = routes.promote(EMBEDDING_ROUTE, record.name, record.version, force=True)
    click.echo(f"    route {EMBEDDING_ROUTE}: champion {state.champion.model}/{state.champion.version} "
               "(embeddings: POST /v1/embeddings, /api/embed; not benchmarked)")


def _classifier_champion(routes: Routes) -> bool:
    """Whether route ``ticket-topic``'s champion is a text classifier, said in a line either way."""
    if CUSTOM_TASK not in routes.list():
        return False
    if routes.champion(CUSTOM_TASK).spec.is_classifier:
        click.echo(f"    route {CUSTOM_TASK}'s champion is the trained classifier: step 7 asks it through the gateway")
        return True
    click.echo(f"    route {CUSTOM_TASK}'s champion is an LLM, not the trained classifier: the leaderboard above says why")
    return False


def _judged_task(catalog: Catalog, limit: int | None) -> None:
    """An open-ended task scored by a judge: route qa's champion summarizes, and the same small model,
    made champion of route ``judgment``, scores each summary on faithfulness, relevance and
    minimality. The run says which judge gave its quality."""
    routes = context.routes()
    champion = routes.show("qa").champion
    if champion is None:
        click.echo("6/7 judged task skipped: route qa has no champion")
        return
    record = catalog.get(champion.model, champion.version)
    judge = routes.promote("judgment", record.name, record.version, force=True).champion
    summarize = TaskCatalog(catalog.settings).get("summarize")
    items = min(limit or _JUDGED_ITEMS, _JUDGED_ITEMS)
    click.echo(f"6/7 a judged open-ended task: {record.ref} summarizes {items} texts, judged by route judgment's "
               f"champion {judge.model}/{judge.version} (the judge is a routed model too)…")
    if _needs_run(catalog, record, [summarize], items):
        click.get_current_context().with_resource(prefect_api(catalog.settings))  # step 2's server, if it ran
        from flows.benchmark import benchmark_flow

        with terminal_progress():
            benchmark_flow(models=[record.ref], tasks=["summarize"], limit=items, home=str(catalog.settings.home))
    run = catalog.store.latest_run("summarize", record.name, record.version, fingerprint().hardware_id)
    click.echo(f"    {record.ref} summarize: quality {run['quality']:.3f} from {run['quality_source']} "
               f"({run['n']} items, {run['n_unscored'] or 0} without a valid judgement); "
               f"`arbiter judge calibrate` says how far to trust this judge")


def _needs_run(catalog: Catalog, record: VersionRecord, tasks: list[TaskVersion], limit: int | None) -> bool:
    """True when some task has no run of this version on this hardware, of the task's current version
    and with as many items as asked (a quick ``--limit`` run does not stand in for a full one)."""
    hardware = fingerprint().hardware_id
    for task in tasks:
        if task.missing_capabilities(record):
            continue  # the flow skips it: no run will ever come
        run = catalog.store.latest_run(task.name, record.name, record.version, hardware)
        wanted = min(limit, len(task.items)) if limit else len(task.items)
        if (
            run is None
            or run["hardware_id"] != hardware
            or run.get("task_sha256") != task.sha256
            or run["n"] != wanted
        ):
            return True
    return False


def _ask_through_the_gateway(settings: Settings, *, ask_classifier: bool) -> None:
    """Start the gateway on a free loopback port, ask route ``qa`` with the real ``ollama`` client
    (what any application would do), print the answer and its figures, post feedback on it as an
    application would (its ``x-arbiter-call-id``); when ``ask_classifier``, send route
    ``ticket-topic``'s classifier one support message through the same unchanged client; stop the
    gateway."""
    import httpx
    import ollama

    from registry.gateway.background import free_loopback_port, gateway_in_background

    call_ids: list[str] = []
    seen = {"response": [lambda response: call_ids.append(response.headers.get("x-arbiter-call-id", ""))]}
    with gateway_in_background(settings.model_copy(update={"port": free_loopback_port()})) as (url, gateway):
        answer = ollama.Client(host=url, event_hooks=seen).chat(
            model="qa", messages=[{"role": "user", "content": DEMO_PROMPT}], options={"num_predict": 48, "temperature": 0}
        )
        champion = gateway.router.resolve("qa").record.ref
        click.echo(f"    {url} → route qa → {champion}: {answer.message.content.strip()!r}")
        decode_s = (answer.eval_duration or 0) / 1e9
        rate = f"{answer.eval_count / decode_s:.1f} tok/s" if decode_s else "n/a"
        click.echo(f"    {answer.prompt_eval_count} prompt + {answer.eval_count} generated tokens, "
                   f"{(answer.total_duration or 0) / 1e6:.0f} ms, decode {rate}; the call is a row in results/calls")
        stored = httpx.post(f"{url}/arbiter/feedback", json={"call_id": call_ids[-1], "thumbs": "up", "source": "demo"})
        stored.raise_for_status()
        click.echo(f"    feedback on it (POST /arbiter/feedback, call {call_ids[-1][:12]}…): thumbs up from 'demo', "
                   "a row in results/feedback that rollouts of route qa count")
        if ask_classifier:
            label = ollama.Client(host=url).chat(model=CUSTOM_TASK, messages=[{"role": "user", "content": TICKET}])
            champion = gateway.router.resolve(CUSTOM_TASK).record.ref
            click.echo(f"    {url} → route {CUSTOM_TASK} → {champion} (ONNX): {TICKET!r} → "
                       f"{label.message.content!r}, {(label.total_duration or 0) / 1e6:.1f} ms")
    # The gateway has written its rows on the way out: the call's measured cost, as `arbiter costs profile` reads it.
    [row] = ResultsStore(settings.results_dir).query(
        "select cpu_ms, peak_rss_mb, energy_mwh, energy_model from calls where source = 'gateway' and route = 'qa' "
        "order by ts desc limit 1")
    click.echo(f"    the qa call's cost: CPU {row['cpu_ms']:.0f} ms, peak RSS {row['peak_rss_mb']:.0f} MB, "
               f"{row['energy_mwh']:.2g} mWh ({row['energy_model']})")
