"""``arbiter hardware`` as a user runs it: the JSON contract, the versions that can and cannot run
here (with figures), a hardware class instead of this machine, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from onnx_models import text_classifier

from registry.catalog.versions import Catalog
from registry.cli.main import cli
from registry.machine.hardware import cpu_flags, fingerprint

pytestmark = pytest.mark.e2e


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def with_huge(catalog: Catalog, registered, smollm2) -> int:
    """The four shipped versions, and SmolLM2 again declared to need one MB more than this machine has."""
    total = fingerprint().ram_mb
    catalog.register(smollm2.path, name="smollm2-huge", needs={"min_memory_mb": total + 1})
    return total


def test_json_describes_this_machine(with_huge: int) -> None:
    code, out, _ = run("hardware", "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report) >= {"hardware_id", "hardware_class", "cpu", "memory", "gpus", "gpu_driver", "apple",
                           "accelerators", "llama_cpp", "gpu_offload", "onnxruntime", "fingerprint", "judged", "versions"}
    here = fingerprint()
    assert report["hardware_id"] == here.hardware_id and report["fingerprint"] == here.as_row()
    assert report["cpu"]["logical_cores"] == psutil.cpu_count() and report["cpu"]["flags"] == sorted(cpu_flags())
    assert report["cpu"]["physical_cores"] == psutil.cpu_count(logical=False)
    assert report["memory"]["total_mb"] == with_huge and 0 < report["memory"]["available_mb"] <= with_huge
    assert "cpu" in report["accelerators"] and "CPU" in report["llama_cpp"]["backends"]
    assert isinstance(report["llama_cpp"]["gpu_offload"], bool) and report["gpu_offload"]["why"]
    assert (report["gpu_driver"] is None) == (report["gpus"] == [])
    ort = report["onnxruntime"]
    assert "CPUExecutionProvider" in ort["available_providers"] and ort["why"]
    cuda_here = "CUDAExecutionProvider" in ort["available_providers"] and "cuda" in report["accelerators"]
    assert ort["model_runs_on"] == ("CUDAExecutionProvider" if cuda_here else "CPUExecutionProvider")
    assert report["judged"] == {"machine": "this machine", "hardware_class": here.hardware_class,
                                "accelerators": report["accelerators"], "not_judged": []}


def test_each_registered_version_says_whether_it_can_run_here(with_huge: int) -> None:
    versions = {v["ref"]: v for v in json.loads(run("hardware", "--json")[1])["versions"]}
    assert set(versions) == {"gemma3-270m/1", "gemma3-270m/2", "smollm2-135m/1", "smollm2-135m/2", "smollm2-huge/1"}
    for ref in ("gemma3-270m/1", "gemma3-270m/2", "smollm2-135m/1", "smollm2-135m/2"):
        assert versions[ref]["can_run"] and versions[ref]["reasons"] == [] and versions[ref]["fits_now"] is True
    huge = versions["smollm2-huge/1"]
    assert huge["can_run"] is False and huge["needs"]["min_memory_mb"] == with_huge + 1
    assert huge["reasons"] == [f"needs {with_huge + 1} MB (spec min_memory_mb); this machine has {with_huge} MB total"]

    code, out, _ = run("hardware")
    assert code == 0 and "versions on this machine" in out and "llama.cpp 0.3" in out
    assert "onnxruntime 1." in out and "an ONNX model runs on " in out
    assert f"cannot run smollm2-huge/1: needs {with_huge + 1} MB (spec min_memory_mb); this machine has" in out


def test_a_class_is_judged_on_its_accelerators_only(with_huge: int) -> None:
    code, out, _ = run("hardware", "--class", "apple", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["judged"] == {"machine": "an apple machine", "hardware_class": "apple",
                                "accelerators": ["ane", "cpu", "metal"],
                                "not_judged": ["cpu_flags", "min_memory_mb", "min_gpu_memory_mb"]}
    assert all(v["can_run"] and v["fits_now"] is None for v in report["versions"])  # RAM depends on the machine
    code, out, _ = run("hardware", "--class", "cuda")
    assert code == 0 and "not judged for a cuda machine: cpu_flags, min_memory_mb, min_gpu_memory_mb" in out


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("hardware", "--class", "tpu"), {}, "error: unknown hardware class 'tpu': use one of cpu, cuda, apple"),
        (("hardware", "--json"), {"ARBITER_N_GPU_LAYERS": "all"}, "error: invalid setting: ARBITER_N_GPU_LAYERS='all'"),
        (("hardware",), {"ARBITER_N_GPU_LAYERS": "-2"}, "error: invalid setting: ARBITER_N_GPU_LAYERS='-2'"),
    ],
)
def test_bad_input_is_one_line_with_the_fix(
    args: tuple[str, ...], env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = run(*args)
    assert code == 2 and out == ""
    assert err.startswith(expected) and err.count("\n") == 1


def test_needs_declared_at_the_command_line_decide_where_a_version_runs(smollm2) -> None:
    absent = sorted({"avx512f", "avx512_vnni", "amx_tile", "asimd"} - cpu_flags())[0]
    code, out, _ = run("models", "register", str(smollm2.path), "--name", "smollm2-wide", "--needs-cpu-flag", absent,
                       "--min-memory-mb", "1024", "--json")
    assert code == 0 and json.loads(out)["min_memory_mb"] == 1024
    versions = json.loads(run("hardware", "--json")[1])["versions"]
    wide = next(v for v in versions if v["ref"] == "smollm2-wide/1")
    assert wide["can_run"] is False and any(absent in reason for reason in wide["reasons"])

    again = ("models", "register", str(smollm2.path), "--name", "smollm2-wide", "--json")
    assert json.loads(run(*again)[1])["created"] is False  # the same file, nothing declared: the same version
    assert json.loads(run(*again, "--needs-cpu-flag", absent, "--min-memory-mb", "1024")[1])["created"] is False
    code, _, err = run(*again, "--needs-cpu-flag", "sse3")  # other needs cannot be slipped onto a version
    assert code == 2 and "smollm2-wide/1 is this file already" in err and absent in err and err.count("\n") == 1
    code, _, err = run("models", "register", str(smollm2.path), "--name", "smollm2-typo", "--needs-cpu-flag", "avx-2")
    assert code == 2 and "unknown CPU flag avx-2" in err and err.count("\n") == 1
    code, _, err = run("models", "register", "llama3", "--kind", "ollama", "--name", "remote", "--min-memory-mb", "9")
    assert code == 2 and "declare what a GGUF file needs" in err
    assert [m["name"] for m in json.loads(run("models", "list", "--json")[1])] == ["smollm2-wide"]  # nothing else kept


def test_an_onnx_version_can_run_here(catalog: Catalog, tmp_path: Path) -> None:
    catalog.register_onnx(text_classifier(tmp_path / "clf.onnx"), name="ticket-clf")
    report = json.loads(run("hardware", "--json")[1])
    (version,) = report["versions"]
    assert (version["ref"], version["kind"], version["can_run"], version["reasons"]) == ("ticket-clf/1", "onnx", True, [])
    assert version["runs_on"] == sorted({"cpu", "cuda"} & set(report["accelerators"]))
