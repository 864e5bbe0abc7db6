"""What the deployed flow decides, on real parts: which versions it measures, a version that cannot
load on this machine becoming a failed row, and the matrix and version tag that follow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.scheduled import loads_here
from registry.catalog import Catalog
from registry.cli.main import cli
from registry.compat_matrix import TAG_COMPATIBILITY, matrix, tag_versions, version_kinds
from registry.deploy import default_tasks, resolve_versions
from registry.errors import NotFoundError
from registry.hardware import fingerprint
from registry.routes import CHALLENGER, Routes, route_model_name
from registry.spec import Status
from registry.tasks import TASKS

pytestmark = pytest.mark.integration


def test_a_version_that_cannot_load_here_is_a_failed_row_the_matrix_and_tag_show(
    tmp_path: Path, catalog: Catalog, smollm2
) -> None:
    copy = tmp_path / "smollm2-copy.gguf"
    shutil.copy(smollm2.path, copy)
    record, _ = catalog.register(copy, name="changed-after-registration")
    with copy.open("r+b") as handle:  # a real fault: the file under the version is no longer the one registered
        handle.seek(-64, 2)
        handle.write(b"\xff" * 64)

    error = loads_here.fn(catalog, record)

    assert error is not None and "sha256" in error
    [row] = catalog.store.query("select * from calls")
    assert (row["source"], row["ok"], row["error"]) == ("deployment", False, error)
    assert row["hardware_id"] == fingerprint().hardware_id and row["wall_ms"] > 0
    [cell] = matrix(catalog.store, version_kinds(catalog))
    assert cell["works"] is False and cell["last_error"] == error and cell["quality"] is None
    assert cell["runtime"] == f"llama.cpp {fingerprint().llama_cpp_version}"

    written = tag_versions(catalog, [(record.name, record.version)])
    tag = json.loads(catalog.client.get_model_version(record.name, "1").tags[TAG_COMPATIBILITY])
    assert written == {record.ref: catalog.client.get_model_version(record.name, "1").tags[TAG_COMPATIBILITY]}
    assert tag[fingerprint().hardware_class][0]["works"] is False

    result = CliRunner().invoke(cli, ["results", "matrix", "--json"], catch_exceptions=False)
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["works"] is False


def test_a_version_that_loads_leaves_no_row(catalog: Catalog, smollm2) -> None:
    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    assert loads_here.fn(catalog, record) is None
    assert catalog.store.query("select count(*) as n from calls") == [{"n": 0}]
    assert tag_versions(catalog, [(record.name, record.version)]) == {}  # nothing measured: no tag


def test_versions_are_resolved_when_the_run_starts(catalog: Catalog, registered) -> None:
    first, second, third, fourth = registered
    assert [r.ref for r in resolve_versions(catalog, [second.ref], None)] == [second.ref]

    catalog.set_status(fourth.name, fourth.version, Status.DEPRECATED)
    every = {r.ref for r in resolve_versions(catalog, None, None)}
    assert every == {first.ref, second.ref, third.ref}  # a deprecated version is not measured nightly

    routes = Routes(catalog)
    routes.promote("qa", first.name, first.version, force=True)
    assert [r.ref for r in resolve_versions(catalog, None, "qa")] == [first.ref]
    copy = routes.route_copy(route_model_name("qa"), second)
    catalog.client.set_registered_model_alias(route_model_name("qa"), CHALLENGER, str(copy))
    assert [r.ref for r in resolve_versions(catalog, None, "qa")] == [first.ref, second.ref]
    with pytest.raises(NotFoundError, match="unknown route 'extract'"):
        resolve_versions(catalog, None, "extract")


def test_default_tasks_follow_the_route() -> None:
    assert default_tasks("qa") == ["qa"]
    assert default_tasks("judgment") == list(TASKS)  # a route that is not a task: every reference task
    assert default_tasks(None) == list(TASKS)
