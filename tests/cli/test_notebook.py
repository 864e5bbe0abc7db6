"""The leaderboard notebook runs top to bottom, as a user's Jupyter would run it, on real Parquet results.

Executed with nbclient on the ``python3`` kernel. jupyter_client swaps the kernelspec's ``python``
for the running interpreter, so the kernel is this venv's python; a cell added to the in-memory
copy checks that, because a notebook that silently ran in another environment proves nothing.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from registry.results.maintenance import Maintenance
from registry.results.store import ResultsStore

pytestmark = pytest.mark.e2e

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "leaderboard.ipynb"
VERSIONS = [("smollm2-135m", 1, 0.62, 118.0), ("gemma3-270m", 2, 0.48, 61.0)]
TASKS = ["qa", "classify"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _execute() -> tuple[nbformat.NotebookNode, str]:
    """Run the notebook from its own folder (as Jupyter does); returns it and the kernel's sys.prefix."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint('kernel prefix:', sys.prefix)"))
    client = NotebookClient(
        notebook, timeout=300, startup_timeout=120, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails
    prefix = next(line for line in _texts(notebook) if line.startswith("kernel prefix: "))
    return notebook, prefix.removeprefix("kernel prefix: ")


def _texts(notebook: nbformat.NotebookNode) -> list[str]:
    """Every line of text the cells showed: printed streams and the plain-text form of displays."""
    lines = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                lines += output.text.splitlines()
            elif "data" in output and "text/plain" in output.data:
                lines += output.data["text/plain"].splitlines()
    return lines


def _images(notebook: nbformat.NotebookNode) -> list[str]:
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    return [output.data["image/png"] for output in outputs if "image/png" in output.get("data", {})]


def test_the_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_leaderboard_table_and_plot_from_real_results(home: Path) -> None:
    now = datetime.now(UTC)
    rows = [
        {"run_id": f"{model}-{version}-{task}", "ts": now - timedelta(minutes=1), "task": task, "model": model,
         "version": version, "quality": quality - 0.1 * i, "p50_ms": 1000 / speed * 20, "p95_ms": 1000 / speed * 30,
         "tokens_per_s": speed, "n": 10, "n_ok": 10, "hardware_id": "test-hw"}
        for i, task in enumerate(TASKS) for model, version, quality, speed in VERSIONS
    ]
    store = ResultsStore(home / "results")
    store.append("runs", [row for row in rows if row["task"] == "qa"])
    assert Maintenance(store).commit().committed_rows == {"runs": 2}  # one task's runs in the Delta table,
    store.append("runs", [row for row in rows if row["task"] != "qa"])  # the other's staged: both are read

    notebook, kernel_prefix = _execute()

    assert kernel_prefix == sys.prefix  # the venv's interpreter ran the cells
    text = "\n".join(_texts(notebook))
    assert f"ARBITER_HOME: {home.resolve()}" in text
    for model, version, _, _ in VERSIONS:
        assert f"{model}/{version}" in text
    for task in TASKS:
        assert f"task: {task}" in text
        assert re.search(rf"\b{task}\s+2\s+2\s", text)  # the SQL cell: runs and versions per task
    assert "no benchmark runs yet" not in text
    figure = home / "results" / "leaderboard.png"
    assert figure.is_file() and figure.stat().st_size > 1000
    assert figure.read_bytes().startswith(PNG_MAGIC)
    assert _images(notebook), "the figure was saved but not shown"


def test_without_results_the_notebook_says_how_to_get_some(home: Path) -> None:
    notebook, _ = _execute()

    assert "no benchmark runs yet: run `make demo`" in "\n".join(_texts(notebook))
    assert not (home / "results" / "leaderboard.png").exists()
    assert not _images(notebook)
