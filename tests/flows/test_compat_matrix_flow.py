"""What the deployed flow decides, on real parts: which versions it measures, a version whose
declared needs this machine lacks or that cannot load here becoming a failed row, and the matrix,
version tag and `arbiter results sql` view that follow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.deployed_run import default_tasks, record_shortfalls, resolve_versions
from registry.catalog.route_model import CHALLENGER, RouteModel
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.cli.main import cli
from registry.errors import NotFoundError
from registry.evaluation.compat_matrix import TAG_COMPATIBILITY, matrix, tag_versions, version_kinds
from registry.evaluation.tasks import TaskCatalog
from registry.machine.hardware import cpu_flags, fingerprint, this_machine
from registry.settings import get_settings
from registry.spec import KNOWN_CPU_FLAGS, Status

pytestmark = pytest.mark.integration


def lacking_flag() -> str:
    """A CPU flag a spec can name that this machine's CPU does not have (an x86 CPU lacks the ARM
    ones and the reverse, so there is always one)."""
    return sorted(KNOWN_CPU_FLAGS - cpu_flags())[0]


def test_declared_needs_this_machine_lacks_are_a_failed_row_without_loading(catalog: Catalog, smollm2) -> None:
    flag = lacking_flag()
    record, _ = catalog.register(smollm2.path, name="needs-a-flag", needs={"cpu_flags": [flag]})

    error = record_shortfalls(catalog, record, this_machine())

    assert error == f"needs CPU flags {flag}; this machine's CPU lacks them"
    [row] = catalog.store.query("select * from calls")
    assert (row["source"], row["ok"], row["error"]) == ("deployment", False, error)
    assert row["hardware_class"] == fingerprint().hardware_class
    [cell] = matrix(catalog.store, version_kinds(catalog))
    assert (cell["hardware_class"], cell["works"], cell["last_error"]) == (fingerprint().hardware_class, False, error)

    # The same view through `arbiter results sql` (the README's example), with the catalog's kinds.
    result = CliRunner().invoke(cli, ["results", "sql", "select model, runtime, works from compat_matrix", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"model": "needs-a-flag", "runtime": f"llama.cpp {fingerprint().llama_cpp_version}", "works": False}]
    bad = CliRunner().invoke(cli, ["results", "sql", "select * from compat_matrx"])
    assert bad.exit_code == 2 and "compat_matrix" in bad.stderr.split("tables are:")[1]


def test_needs_this_machine_meets_write_nothing(catalog: Catalog, smollm2) -> None:
    record, _ = catalog.register(smollm2.path, name="smollm2-135m", needs={"cpu_flags": sorted(cpu_flags())[:1]})
    assert record_shortfalls(catalog, record, this_machine()) is None
    assert catalog.store.query("select count(*) as n from calls") == [{"n": 0}]
    assert tag_versions(catalog, [(record.name, record.version)]) == {}  # nothing measured: no tag


def test_the_flow_records_what_cannot_run_here_and_benchmarks_the_rest_loading_each_once(
    prefect_harness, tmp_path: Path, catalog: Catalog, smollm2
) -> None:
    from flows.scheduled import scheduled_benchmark_flow

    good, _ = catalog.register(smollm2.path, name="smollm2-135m")
    flag = lacking_flag()
    needy, _ = catalog.register(smollm2.path, name="needs-a-flag", needs={"cpu_flags": [flag]})
    copy = tmp_path / "smollm2-copy.gguf"
    shutil.copy(smollm2.path, copy)
    changed, _ = catalog.register(copy, name="changed-after-registration")
    with copy.open("r+b") as handle:  # a real fault: the file under the version is no longer the one registered
        handle.seek(-64, 2)
        handle.write(b"\xff" * 64)

    result = scheduled_benchmark_flow(models=[needy.ref, changed.ref, good.ref], tasks=["qa", "classify"], limit=1)

    assert set(result["not_loadable"]) == {needy.ref, changed.ref}
    assert result["not_loadable"][needy.ref] == f"needs CPU flags {flag}; this machine's CPU lacks them"
    assert "sha256" in result["not_loadable"][changed.ref]
    # The good version ran both tasks on one load: the first run paid the load, the second did not.
    assert [(r["model"], r["task"]) for r in result["runs"]] == [(good.name, "qa"), (good.name, "classify")]
    assert result["runs"][0]["load_ms"] > 0 and result["runs"][1]["load_ms"] is None
    benchmarked = catalog.store.query("select cpu_overlapped from calls where source = 'benchmark'")
    assert benchmarked and not any(r["cpu_overlapped"] for r in benchmarked)  # the flow's own timing opened no window

    failed = catalog.store.query("select model, error, wall_ms from calls where source = 'deployment' order by model")
    assert [(f["model"], f["error"]) for f in failed] == [
        (changed.name, result["not_loadable"][changed.ref]), (needy.name, result["not_loadable"][needy.ref])]
    assert failed[0]["wall_ms"] > 0 and failed[1]["wall_ms"] == 0  # a load was attempted; a shortfall loads nothing
    cells = {c["model"]: c for c in matrix(catalog.store, version_kinds(catalog))}
    assert {name: cell["works"] for name, cell in cells.items()} == {
        good.name: True, needy.name: False, changed.name: False}

    tags = {name: json.loads(catalog.client.get_model_version(name, "1").tags[TAG_COMPATIBILITY])
            for name in cells}
    here = fingerprint().hardware_class
    assert result["compatibility"] == {f"{name}/1": catalog.client.get_model_version(name, "1").tags[TAG_COMPATIBILITY]
                                       for name in cells}
    assert {name: tag[here][0]["works"] for name, tag in tags.items()} == {
        good.name: True, needy.name: False, changed.name: False}

    result = CliRunner().invoke(cli, ["results", "matrix", "--json"], catch_exceptions=False)
    assert result.exit_code == 0 and {r["model"]: r["works"] for r in json.loads(result.stdout)}[needy.name] is False


def test_versions_are_resolved_when_the_run_starts(catalog: Catalog, registered) -> None:
    first, second, third, fourth = registered
    assert [r.ref for r in resolve_versions(catalog, [second.ref], None)] == [second.ref]

    catalog.set_status(fourth.name, fourth.version, Status.DEPRECATED)
    every = {r.ref for r in resolve_versions(catalog, None, None)}
    assert every == {first.ref, second.ref, third.ref}  # a deprecated version is not measured nightly

    Routes(catalog).promote("qa", first.name, first.version, force=True)
    assert [r.ref for r in resolve_versions(catalog, None, "qa")] == [first.ref]
    route = RouteModel(catalog, "qa")
    route.set_alias(CHALLENGER, route.copy_of(second))
    assert [r.ref for r in resolve_versions(catalog, None, "qa")] == [first.ref, second.ref]
    with pytest.raises(NotFoundError, match="unknown route 'extract'"):
        resolve_versions(catalog, None, "extract")


def test_default_tasks_follow_the_route(tmp_path) -> None:
    tasks = TaskCatalog(get_settings(home=tmp_path))
    reference_tasks = ["classify", "extract", "qa", "ticket-topic"]  # every shipped task file that needs no judge
    assert default_tasks(tasks, "qa") == ["qa"]
    assert default_tasks(tasks, "summarize") == ["summarize"]
    assert default_tasks(tasks, "judgment") == reference_tasks  # a route that is not a task
    assert default_tasks(tasks, None) == reference_tasks
