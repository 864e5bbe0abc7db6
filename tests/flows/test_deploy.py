"""``arbiter deploy`` against a real Prefect server and a real process worker (issue 7's acceptance).

The server and worker are the ones ``make workers`` starts (flows/workers.py), on a free
loopback port with their own PREFECT_HOME; the deployment runs once through ``prefect deployment
run --watch``, the worker runs the shipped SmolLM2 on two qa items, and the rows, the matrix and
the MLflow tags must carry this machine's fingerprint and lead back to that flow run. Each
process runs in its own process group and is killed at the end, even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from support import ARBITER, free_port

from flows.deploy import pool_name
from flows.deployed_run import FLOW_NAME
from flows.workers import PREFECT, prefect_server, prefect_worker
from registry.catalog.versions import Catalog
from registry.evaluation.compat_matrix import TAG_COMPATIBILITY, matrix, version_kinds
from registry.machine.hardware import fingerprint

pytestmark = pytest.mark.e2e


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def test_deployment_runs_on_the_worker_and_results_carry_its_fingerprint(
    tmp_path: Path, catalog: Catalog, smollm2
) -> None:
    record, _ = catalog.register(smollm2.path, name="smollm2-135m")
    machine = fingerprint()
    pool = pool_name(machine.hardware_class)
    # Every process started from here inherits the marker: the server, the worker, and the flow-run
    # subprocess the worker starts in a session of its own (outside the worker's process group).
    marker = uuid.uuid4().hex
    env = {**os.environ, "ARBITER_HOME": str(catalog.settings.home), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_WORKER_QUERY_SECONDS": "2", "ARBITER_TEST_MARKER": marker}
    port = free_port()
    with prefect_server(port, env, log=tmp_path / "server.log") as url, \
            prefect_worker(pool, url, env, log=tmp_path / "worker.log", name="test-worker") as worker:
        env["PREFECT_API_URL"] = url
        deploy_args = (ARBITER, "deploy", "--class", machine.hardware_class, "--models", record.ref,
                       "--tasks", "qa", "--limit", "2", "--json")
        done = cli(env, *deploy_args)
        assert done.returncode == 0, done.stderr
        [row] = json.loads(done.stdout)
        assert row["work_pool"] == pool and row["deployment"] == f"{FLOW_NAME}/nightly-{machine.hardware_class}"
        assert row["parameters"] == {"models": [record.ref], "route": None, "tasks": ["qa"], "limit": 2}

        deployment = httpx.get(f"{url}/deployments/{row['deployment_id']}").json()
        assert deployment["work_pool_name"] == pool
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 2 * * *"]  # nightly by default

        ran = cli(env, PREFECT, "deployment", "run", row["deployment"], "--watch", "--watch-timeout", "540", timeout=600)
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:] + _tail(tmp_path / "worker.log")

        # Deploying again changes nothing: same deployment, one pool, and now the worker is seen.
        again = cli(env, *deploy_args)
        assert again.returncode == 0, again.stderr
        [second] = json.loads(again.stdout)
        assert second["deployment_id"] == row["deployment_id"] and "test-worker" in second["workers_online"]
        pools = httpx.post(f"{url}/work_pools/filter", json={}).json()
        assert [p["name"] for p in pools if p["name"].startswith("arbiter-")] == [pool]
        assert httpx.post(f"{url}/deployments/count", json={}).json() == 1

        # The results: rows written by the worker, with this machine's fingerprint and class.
        calls = catalog.store.query("select * from calls")
        runs = catalog.store.query("select * from runs")
        assert len(calls) == 2 and all(c["ok"] and c["task"] == "qa" for c in calls)
        assert [(r["model"], r["version"], r["task"], r["n"]) for r in runs] == [("smollm2-135m", 1, "qa", 2)]
        for result in (*calls, *runs):
            assert result["hardware_id"] == machine.hardware_id
            assert result["hardware_class"] == machine.hardware_class

        # The MLflow run leads back to the Prefect flow run that made it, on this pool.
        tags = catalog.client.get_run(runs[0]["mlflow_run_id"]).data.tags
        assert tags["arbiter.prefect_work_pool"] == pool
        assert tags["arbiter.prefect_deployment"] == row["deployment"]
        flow_run = httpx.get(f"{url}/flow_runs/{tags['arbiter.prefect_flow_run_id']}").json()
        assert flow_run["deployment_id"] == row["deployment_id"] and flow_run["state_type"] == "COMPLETED"
        assert worker.pid in marked(marker)  # the marker is readable where it is set

    # Stopped with the block: the server, the worker and anything they started.
    assert worker.poll() is not None
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if f"--port {port}" in " ".join(p.info["cmdline"] or [])]
    assert marked(marker) == []  # nor the worker's flow-run subprocess, nor anything else they started

    # The matrix row and the version's tag say it works here, with the run's figures.
    [cell] = matrix(catalog.store, version_kinds(catalog))
    assert (cell["model"], cell["version"], cell["hardware_class"]) == ("smollm2-135m", 1, machine.hardware_class)
    assert cell["runtime"] == f"llama.cpp {machine.llama_cpp_version}" and cell["works"] is True
    assert cell["quality"] == pytest.approx(runs[0]["quality"]) and cell["tasks"] == "qa"
    tag = json.loads(catalog.client.get_model_version("smollm2-135m", "1").tags[TAG_COMPATIBILITY])
    assert list(tag) == [machine.hardware_class]
    assert tag[machine.hardware_class][0]["works"] is True
    assert tag[machine.hardware_class][0]["tokens_per_s"] == pytest.approx(runs[0]["tokens_per_s"], abs=0.05)


def marked(marker: str) -> list[int]:
    """The processes whose environment carries ``ARBITER_TEST_MARKER=marker``."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("ARBITER_TEST_MARKER") == marker:
                found.append(process.pid)
    return found


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.mark.parametrize(
    ("args", "api_url", "expected"),
    [
        (("--class", "cpu,tpu"), None, "unknown hardware class 'tpu': use one of cpu, cuda, apple"),
        (("--class", "cpu"), None, "no Prefect server configured (PREFECT_API_URL is unset)"),
        (("--class", "cpu"), "unreachable", "no Prefect server answers at PREFECT_API_URL="),
        (("--cron", "every night"), None, "invalid schedule 'every night'"),
    ],
)
def test_deploy_refuses_bad_input_in_one_line(tmp_path: Path, args: tuple[str, ...], api_url: str | None,
                                              expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # a profile with no API URL in it
    if api_url:
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    done = cli(env, ARBITER, "deploy", *args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    if api_url is None and "server" in expected:
        assert "make workers" in done.stderr
