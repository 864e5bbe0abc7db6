"""MLflow shows which task version and which data every benchmark figure came from: the run's
dataset input (name, digest, source, context), the task version's prompt in MLflow's prompt
registry (registered once, linked to the run), and neither confusing the catalog or the routes."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from registry.catalog.prompts import PromptRef
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.cli.main import cli
from registry.errors import UserError
from registry.evaluation.benchmark import benchmark_and_record, log_to_mlflow
from registry.evaluation.task_mlflow import register_task_prompt
from registry.evaluation.tasks import TaskCatalog, TaskVersion
from registry.machine.hardware import fingerprint
from registry.results.store import new_id
from registry.serving.pool import WarmPool

pytestmark = pytest.mark.integration

SUPPORT = """\
name: support
description: Route a support ticket to the team that handles it.
data:
  path: support.jsonl
  fields: {id: text, ticket: text, team: text, tags: "list[text]", priority: integer}
prompt:
  system: You route tickets.
  template: "Which team handles this ticket? {{ ticket }}"
  examples:
    - item: {ticket: "I was charged twice"}
      answer: billing
generation: {max_tokens: 8, stop: ["\\n"]}
scoring:
  scorers:
    - {scorer: label, reference: team, labels: [billing, bugs]}
"""


def write_support(folder: Path, teams: list[str]) -> Path:
    folder.mkdir(exist_ok=True)
    rows = [{"id": f"t{i}", "ticket": f"ticket number {i}", "team": team, "tags": ["web"], "priority": i}
            for i, team in enumerate(teams)]
    (folder / "support.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = folder / "support.yaml"
    path.write_text(SUPPORT)
    return path


def runs_row(task: TaskVersion) -> dict:
    """A ``runs`` row as ``benchmark.summarize`` writes one, for logging without a model."""
    return {
        "run_id": new_id(), "task": task.name, "task_version": task.version, "task_sha256": task.sha256,
        "model": "smollm2-135m", "version": 1, "dataset_sha256": task.data_sha256, "quality": 0.5, "n": 2, "n_ok": 2,
        "p50_ms": 10.0, "energy_source": "estimate", **fingerprint().as_row(),
    }


@pytest.fixture
def tasks(catalog: Catalog) -> TaskCatalog:
    return TaskCatalog(catalog.settings)


def test_a_runs_dataset_input_names_the_task_version_and_its_datas_digest(catalog: Catalog, tasks: TaskCatalog) -> None:
    task = tasks.get("qa")

    run = catalog.client.get_run(log_to_mlflow(catalog, runs_row(task), task))

    [logged] = run.inputs.dataset_inputs
    dataset = logged.dataset
    assert dataset.name == "qa/1" and dataset.digest == task.data_sha256[:36]  # MLflow keeps 36 characters
    assert {t.key: t.value for t in logged.tags} == {"mlflow.data.context": "validation",
                                                    "arbiter.dataset_sha256": task.data_sha256}
    assert dataset.source_type == "local"
    assert json.loads(dataset.source) == {"uri": task.data_path.as_uri()}
    assert task.data_path.is_relative_to(catalog.settings.home / "tasks" / "qa" / "1")  # the snapshot's file
    assert json.loads(dataset.profile) == {"num_rows": len(task.items)}
    assert run.data.tags["arbiter.dataset_sha256"] == task.data_sha256


def test_every_shipped_tasks_schema_is_one_mlflow_reads(catalog: Catalog, tasks: TaskCatalog, tmp_path: Path) -> None:
    from mlflow.types import Schema

    task = tasks.add(write_support(tmp_path / "support", ["billing", "bugs"]))[0]
    for each in [*tasks.latest(), task]:
        logged = catalog.client.get_run(log_to_mlflow(catalog, runs_row(each), each)).inputs.dataset_inputs[0].dataset
        schema = Schema.from_json(json.dumps(json.loads(logged.schema)["mlflow_colspec"]))
        assert schema.input_names() == list(each.spec.data.fields)
    assert [repr(c.type) for c in schema.inputs] == ["string", "string", "string", "Array(string)", "long"]


def test_the_task_versions_prompt_is_registered_once_and_linked_to_each_run(catalog: Catalog, tasks: TaskCatalog,
                                                                             tmp_path: Path) -> None:
    task = tasks.add(write_support(tmp_path / "support", ["billing", "bugs"]))[0]

    first = catalog.client.get_run(log_to_mlflow(catalog, runs_row(task), task))
    second = catalog.client.get_run(log_to_mlflow(catalog, runs_row(task), task))

    assert register_task_prompt(catalog, task) == PromptRef("task.support", 1)
    for run in (first, second):
        assert run.data.tags["arbiter.prompt"] == "prompts:/task.support/1"
        assert json.loads(run.data.tags["mlflow.linkedPrompts"]) == [{"name": "task.support", "version": "1"}]
    assert len(catalog.client.search_prompt_versions("task.support")) == 1
    prompt = catalog.client.load_prompt("prompts:/task.support/1")
    assert prompt.tags == {"arbiter.task": "support", "arbiter.task_version": "1", "arbiter.task_sha256": task.sha256}
    assert prompt.template == [
        {"role": "system", "content": "You route tickets."},
        {"role": "user", "content": "Which team handles this ticket? I was charged twice"},
        {"role": "assistant", "content": "billing"},
        {"role": "user", "content": "Which team handles this ticket? {{ ticket }}"},
    ]
    assert prompt.model_config == {"max_tokens": 8, "temperature": 0.0, "stop_sequences": ["\n"]}
    item = task.items[0]
    assert prompt.format(**item.data) == task.messages(item)  # a plain template: MLflow renders it as we do


def test_a_new_task_version_gets_a_new_prompt_version(catalog: Catalog, tasks: TaskCatalog, tmp_path: Path) -> None:
    path = write_support(tmp_path / "support", ["billing", "bugs"])
    old = tasks.add(path)[0]
    write_support(tmp_path / "support", ["bugs", "billing", "bugs"])  # the data changed, the template did not
    new = tasks.add(path, new_version=True)[0]

    refs = [register_task_prompt(catalog, t) for t in (old, new, old)]

    assert [r.uri for r in refs] == ["prompts:/task.support/1", "prompts:/task.support/2", "prompts:/task.support/1"]
    assert catalog.client.load_prompt(refs[1].uri).tags["arbiter.task_version"] == "2"


def test_registering_at_once_from_many_threads_leaves_one_version(catalog: Catalog, tasks: TaskCatalog) -> None:
    task = tasks.get("classify")

    with ThreadPoolExecutor(4) as pool:
        refs = set(pool.map(lambda _: register_task_prompt(catalog, task), range(4)))

    assert refs == {PromptRef("task.classify", 1)}
    assert [v.version for v in catalog.client.search_prompt_versions("task.classify")] == [1]


def test_a_model_holding_the_prompts_name_is_a_clear_error(catalog: Catalog, tasks: TaskCatalog) -> None:
    catalog.client.create_registered_model("task.qa")

    with pytest.raises(UserError, match="holds a model named 'task.qa'.*rename or delete that model"):
        register_task_prompt(catalog, tasks.get("qa"))


def test_prompts_are_neither_models_nor_routes(catalog: Catalog, tasks: TaskCatalog, smollm2) -> None:
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    for task in tasks.latest():
        register_task_prompt(catalog, task)

    runner = CliRunner()
    models = json.loads(runner.invoke(cli, ["models", "list", "--json"], catch_exceptions=False).stdout)
    routes = json.loads(runner.invoke(cli, ["routes", "list", "--json"], catch_exceptions=False).stdout)

    assert [(m["name"], m["version"]) for m in models] == [("smollm2-135m", 1)]
    assert routes == ["qa"]
    assert {p.name for p in catalog.client.search_prompts()} == {f"task.{n}" for n in tasks.names()}


def test_a_real_benchmark_run_shows_its_data_and_prompt(catalog: Catalog, tasks: TaskCatalog, smollm2,
                                                        session_pool: WarmPool) -> None:
    record = catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))[0]
    task = tasks.get("extract")

    row = benchmark_and_record(catalog, session_pool, record, task, limit=2)

    run = catalog.client.get_run(row["mlflow_run_id"])
    [logged] = run.inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("extract/1", row["dataset_sha256"][:36])
    assert run.data.tags["arbiter.prompt"] == "prompts:/task.extract/1"
    prompt = catalog.client.load_prompt(run.data.tags["arbiter.prompt"])
    assert prompt.tags["arbiter.task_sha256"] == row["task_sha256"] == task.sha256
    assert prompt.template[-1] == {"role": "user", "content": task.spec.prompt.template}
