"""The rollout notebook draws a real rollout: a twin of the champion ramped to 100 % on a real gateway
under steady load (real llama.cpp, real MLflow, the results tables as serve writes them), then the
notebook run top to bottom as Jupyter would, on the python3 kernel of this venv.

The rollout is the cheapest real one there is (tests/rollout/test_rollout.py's short steps): the
notebook's job is to read what any rollout records — ``rollout.*`` and ``check.rollout`` events —
not to judge it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from support import free_port, steady_load

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.gateway.background import gateway_in_background
from registry.rollout.policy import RolloutPolicy
from registry.rollout.promotion import Rollout
from registry.settings import get_settings

pytestmark = pytest.mark.e2e

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "rollout.ipynb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Two steps, not four: at 50 % the challenger has its 3 calls within ~6 answers (at 10 % it needs ~30).
FAST = {"ramp": (50, 100), "step_seconds": 1.0, "min_samples": 3, "check_every_s": 0.3, "benchmark_limit": 2,
        "speed_ratio": 0.5}


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


def test_the_notebook_is_stored_without_outputs_and_names_its_parameters() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    parameters = code[0]
    assert parameters.metadata.get("tags") == ["parameters"]  # papermill's -p sets them
    assert "ROUTE = None" in parameters.source and "ROLLOUT = None" in parameters.source


def test_a_real_rollout_is_drawn_share_signals_and_decisions(shipped, home: Path) -> None:
    settings = get_settings(port=free_port(), alias_poll_s=0.2, calls_flush_s=0.2, keep_alive_s=600)
    catalog = Catalog(settings)
    smollm2 = shipped[0]
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-twin", capabilities=list(smollm2.capabilities))
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    with gateway_in_background(settings) as (url, _gateway), steady_load(url, "qa"):
        state = Rollout(catalog).promote("qa", "smollm2-twin/1", RolloutPolicy(**FAST))
    assert state.phase == "done", (state.outcome, state.last_check)
    checks = catalog.store.query("select count(*) as n from events where kind = 'check.rollout'")[0]["n"]

    notebook, kernel_prefix = _execute()

    assert kernel_prefix == sys.prefix  # the venv's interpreter ran the cells
    text = "\n".join(_texts(notebook))
    assert f"ARBITER_HOME: {home.resolve()}" in text
    assert f"rollout {state.id} on route qa: candidate smollm2-twin/1 against champion smollm2-135m/1" in text
    assert f"outcome: rollout.done, {checks} recorded checks" in text
    for event in ("rollout.start", "rollout.benchmarked", "rollout.step", "rollout.promoting", "rollout.done"):
        assert event in text
    assert "last check: advance" in text
    for signal in ("success", "speed", "quality:feedback"):  # qa has no live scorers: feedback only, absent
        assert signal in text
    figure = home / "results" / f"rollout-{state.id}.png"
    assert figure.is_file() and figure.stat().st_size > 1000
    assert figure.read_bytes().startswith(PNG_MAGIC)
    assert len(_images(notebook)) == 1, "the figure was saved but not shown"


def test_without_a_rollout_the_notebook_says_how_to_start_one(home: Path) -> None:
    notebook, _ = _execute()

    assert "no rollout yet: run `arbiter routes promote ROUTE --candidate NAME/VERSION`" in "\n".join(_texts(notebook))
    assert not list(home.glob("results/rollout-*.png"))
    assert not _images(notebook)
