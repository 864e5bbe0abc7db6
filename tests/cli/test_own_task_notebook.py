"""The own-task notebook runs top to bottom on a fresh ARBITER_HOME, as a user's Jupyter would: a task
from a DataFrame, two SmolLM2 versions benchmarked with real llama.cpp through the Python API, the
per-item table and the quality/latency/energy plot.

Executed with nbclient on the ``python3`` kernel, which jupyter_client runs with this venv's python
(tests/cli/test_notebook.py checks that). The kernel inherits the test's ``ARBITER_HOME``. The models
the run already prepared are linked into that home's ``models/``, so the notebook's
``prepare_shipped_models`` finds them instead of quantizing again.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from registry.catalog.shipped import ShippedModel
from registry.results.store import ResultsStore

pytestmark = pytest.mark.e2e

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "own-task.ipynb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COUNTRIES = ("France", "Japan", "Italy", "Egypt", "Germany", "Spain", "Canada", "Australia")
VERSIONS = ("smollm2-135m/1", "smollm2-135m/2")


def _outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [output for cell in notebook.cells for output in cell.get("outputs", [])]


def _text(notebook: nbformat.NotebookNode) -> str:
    """What the cells showed as text: printed streams and the plain-text form of displays."""
    parts = []
    for output in _outputs(notebook):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "text/plain" in output.get("data", {}):
            parts.append(output.data["text/plain"])
    return "\n".join(parts)


def test_the_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_a_dataframe_task_benchmarked_and_compared_per_item_and_in_a_plot(home: Path, shipped: list[ShippedModel]) -> None:
    models = home / "models"
    models.mkdir()
    for model in shipped:
        if not (models / model.path.name).exists():
            (models / model.path.name).symlink_to(model.path)
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    NotebookClient(notebook, timeout=300, startup_timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # a failing cell raises

    text = _text(notebook)
    assert f"ARBITER_HOME: {home.resolve()}" in text
    assert "task capitals/1: 8 items" in text
    table = text[text.index("per-item comparison:"):]
    for country in COUNTRIES:
        assert country in table
    for ref in VERSIONS:
        assert f"{ref} answer" in table and f"{ref} quality" in table
    assert "mean quality:" in text
    runs = ResultsStore(home / "results").query("select model || '/' || version as ref, task, n from runs order by ref")
    assert runs == [{"ref": ref, "task": "capitals", "n": 8} for ref in VERSIONS]
    figure = home / "results" / "own-task.png"
    assert figure.is_file() and figure.read_bytes().startswith(PNG_MAGIC)
    assert any("image/png" in output.get("data", {}) for output in _outputs(notebook)), "the plot was saved but not shown"
