"""Progress on long work: bars on a terminal, a line per finished version × task in a log, nothing
extra under --json. One real benchmark, as a user's shell or CI runs it; the rest renders the
reporters directly."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest
from rich.console import Console
from support import ARBITER, run

from registry.catalog.versions import Catalog
from registry.cli.progress import Bars, Lines, terminal_progress
from registry.evaluation import progress
from registry.evaluation.progress import reporting, tracked

_LINE = re.compile(r"^benchmarked smollm2-135m/1 · (qa|classify)/1: 2 items in \d+(\.\d)? s$")


@pytest.mark.e2e
def test_a_benchmark_without_a_terminal_prints_one_line_per_version_and_task(
    catalog: Catalog, smollm2, home: Path, prefect_api: str
) -> None:
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    done = subprocess.run(
        [ARBITER, "benchmark", "--model", "smollm2-135m/1", "--task", "qa", "--task", "classify", "--limit", "2"],
        env={**os.environ, "ARBITER_HOME": str(home), "PREFECT_API_URL": prefect_api},
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("benchmarked ")]
    assert [_LINE.match(line).group(1) for line in lines] == ["qa", "classify"], done.stderr
    assert "\x1b" not in done.stderr  # no bar redrawn into a log
    assert "smollm2-135m/1 qa/1: quality" in done.stdout and "benchmarked" not in done.stdout  # results on stdout


@pytest.mark.e2e
def test_a_benchmark_under_json_prints_only_json(catalog: Catalog, smollm2, prefect_harness) -> None:
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    code, out, err = run("benchmark", "--model", "smollm2-135m/1", "--task", "qa", "--limit", "1", "--json")
    assert code == 0, err
    assert [(r["model"], r["task"], r["n"]) for r in json.loads(out)] == [("smollm2-135m", "qa", 1)]
    assert err == ""


@pytest.mark.unit
def test_bars_show_done_of_total_with_time_left_and_the_time_taken() -> None:
    screen = io.StringIO()
    bars = Bars(Console(file=screen, force_terminal=True, width=120))
    with reporting(bars):
        with tracked("smollm2-135m/1 · qa/1", 2, "benchmarked") as on_item:
            on_item(1, 2)
            on_item(2, 2)
        with tracked("gemma3-270m/1 · qa/1", 30, "benchmarked") as on_item:
            for done in range(1, 13):
                on_item(done, 30)
        bars.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    last = text.rsplit("\r", 1)[-1]  # the final frame, as the terminal keeps it
    assert re.search(r"smollm2-135m/1 · qa/1 .* 2/2\s+in 0:00:0\d", last)
    assert re.search(r"gemma3-270m/1 · qa/1 .* 12/30\s+ETA \d:\d\d:\d\d", last)


@pytest.mark.unit
def test_lines_say_only_the_units_that_finished() -> None:
    log = io.StringIO()
    with reporting(Lines(log)):
        with tracked("smollm2-135m/1 · judge calibration", 3, "judged") as on_item:
            for done in (1, 2, 3):
                on_item(done, 3)
        with pytest.raises(RuntimeError), tracked("smollm2-135m/1 · qa/1", 3, "benchmarked") as on_item:
            on_item(1, 3)
            raise RuntimeError("cut short")  # the command's error line says it; no progress line does
    assert re.fullmatch(r"judged smollm2-135m/1 · judge calibration: 3 items in \d\.\d s\n", log.getvalue())


@pytest.mark.unit
def test_the_reporter_is_seen_from_every_thread_and_only_inside_its_block() -> None:
    silent = progress.current()
    seen = []
    with terminal_progress():  # pytest's stderr is no terminal: lines
        thread = threading.Thread(target=lambda: seen.append(progress.current()))
        thread.start()
        thread.join()
        assert isinstance(seen[0], Lines)
    with terminal_progress(enabled=False):  # --json
        assert progress.current() is silent
    assert progress.current() is silent
