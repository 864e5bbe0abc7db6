"""What a machine has and whether a version's hardware needs are met: CPU flags as each OS spells
them, the shared ``shortfalls`` rule (selector and ``arbiter hardware``), spec needs old and new,
llama.cpp's build description and the GPU offload decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.errors import UserError
from registry.machine.hardware import (
    Machine,
    class_machine,
    cpu_flags,
    normalize_cpu_flags,
    parse_hardware_class,
    shortfalls,
    this_machine,
)
from registry.providers.llamacpp import llama_build, parse_system_info, plan_offload
from registry.spec import KNOWN_CPU_FLAGS, Hardware, ModelSpec

pytestmark = pytest.mark.unit

CPU_BOX = Machine("this machine", "cpu", frozenset({"cpu"}), frozenset({"avx", "avx2", "fma"}), 8000, 0)
GPU_BOX = Machine("this machine", "cuda", frozenset({"cpu", "cuda"}), frozenset({"avx2"}), 64000, 16000)


# --- CPU flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Linux x86 /proc/cpuinfo: SSE3 is "pni"; words that do not matter for inference are dropped
        ("fpu vme pni ssse3 fma sse4_1 avx f16c avx2 bmi2 avx512f avx512_vnni sha_ni",
         {"sse3", "ssse3", "fma", "sse4_1", "avx", "f16c", "avx2", "bmi2", "avx512f", "avx512_vnni"}),
        # Linux aarch64 "Features": asimd is NEON
        ("fp asimd evtstrm aes crc32 fphp asimdhp asimddp i8mm bf16 sve", {"asimd", "neon", "fphp", "asimdhp",
                                                                         "asimddp", "i8mm", "bf16", "sve"}),
        # macOS Intel sysctl machdep.cpu.features / leaf7_features
        ("FPU SSE3 SSSE3 FMA SSE4.1 SSE4.2 AVX1.0 F16C AVX2 BMI2 AVX512F AVX512VNNI",
         {"sse3", "ssse3", "fma", "sse4_1", "sse4_2", "avx", "f16c", "avx2", "bmi2", "avx512f", "avx512_vnni"}),
        # Apple Silicon hw.optional.* keys set to 1
        ("neon AdvSIMD FEAT_DotProd FEAT_I8MM FEAT_BF16 FEAT_FP16 FEAT_AES",
         {"neon", "asimd", "asimddp", "i8mm", "bf16", "fphp", "asimdhp"}),
    ],
)
def test_cpu_flags_are_named_one_way_whatever_the_os_calls_them(raw: str, expected: set[str]) -> None:
    assert normalize_cpu_flags(raw.split()) == expected


def test_this_cpus_flags_come_from_the_os() -> None:
    flags = cpu_flags()
    assert flags <= KNOWN_CPU_FLAGS
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo here: the sysctl path is what runs on macOS")
    line = next(x for x in cpuinfo.read_text().splitlines() if x.split(":")[0].strip() in ("flags", "Features"))
    assert flags == normalize_cpu_flags(line.split(":", 1)[1].split())
    assert flags, "an x86-64 or aarch64 CPU has at least SSE3 or ASIMD"


# --- the shortfalls rule -------------------------------------------------------------------------


def test_a_version_that_fits_has_no_shortfall() -> None:
    assert shortfalls(Hardware(min_memory_mb=400, cpu_flags=("avx2",)), CPU_BOX) == ()


def test_missing_accelerator_names_what_it_needs_and_what_is_here() -> None:
    needs = Hardware(accelerators=("ane",), min_memory_mb=100)
    assert shortfalls(needs, CPU_BOX) == ("needs ane (macOS on Apple Silicon); this machine has cpu",)
    assert shortfalls(Hardware(accelerators=("metal", "cuda"), min_memory_mb=1), CPU_BOX) == (
        "needs metal (macOS on Apple Silicon) or cuda (an NVIDIA GPU with its driver); this machine has cpu",)


def test_memory_over_the_machines_total_is_excluded_with_both_figures() -> None:
    needs = Hardware(min_memory_mb=9000)
    assert shortfalls(needs, CPU_BOX) == ("needs 9000 MB (spec min_memory_mb); this machine has 8000 MB total",)
    assert shortfalls(needs, CPU_BOX, memory=False) == ()  # the selector judges RAM by what is free now


def test_missing_cpu_flags_are_listed() -> None:
    needs = Hardware(min_memory_mb=1, cpu_flags=("avx512f", "avx2", "avx512_vnni"))
    assert shortfalls(needs, CPU_BOX) == ("needs CPU flags avx512_vnni, avx512f; this machine's CPU lacks them",)


def test_gpu_memory_counts_only_where_the_gpu_is_the_only_way() -> None:
    gpu_only = Hardware(accelerators=("cuda",), min_memory_mb=1000, min_gpu_memory_mb=24000)
    assert shortfalls(gpu_only, GPU_BOX) == (
        "needs 24000 MB of GPU memory; this machine's largest GPU has 16000 MB",)
    either = Hardware(accelerators=("cuda", "cpu"), min_memory_mb=1000, min_gpu_memory_mb=24000)
    assert shortfalls(either, GPU_BOX) == ()  # runs on the CPU instead
    assert shortfalls(Hardware(accelerators=("cuda",), min_memory_mb=1, min_gpu_memory_mb=16000), GPU_BOX) == ()


def test_an_onnx_version_runs_on_any_machine_cuda_or_not() -> None:
    """The needs ``Catalog.register_onnx`` writes: onnxruntime runs it on the CPU, or CUDA where built for it."""
    onnx = Hardware(accelerators=("cpu", "cuda"), min_memory_mb=65)
    assert shortfalls(onnx, CPU_BOX) == () and shortfalls(onnx, GPU_BOX) == ()
    assert all(shortfalls(onnx, class_machine(name)) == () for name in ("cpu", "cuda", "apple"))


def test_every_shortfall_is_reported_at_once() -> None:
    needs = Hardware(accelerators=("cuda",), min_memory_mb=10**6, cpu_flags=("amx_int8",))
    reasons = shortfalls(needs, CPU_BOX)
    assert len(reasons) == 3
    assert reasons[0].startswith("needs cuda") and reasons[1].startswith("needs CPU flags amx_int8;")
    assert reasons[2] == "needs 1000000 MB (spec min_memory_mb); this machine has 8000 MB total"


def test_a_remote_version_runs_anywhere_whatever_its_spec_says() -> None:
    served = Hardware(accelerators=("remote",), min_memory_mb=10**9, cpu_flags=("amx_int8",))
    assert shortfalls(served, CPU_BOX) == () and shortfalls(served, class_machine("apple")) == ()


def test_a_class_judges_only_accelerators() -> None:
    cuda = class_machine("cuda")
    assert cuda.label == "a cuda machine" and cuda.accelerators == {"cpu", "cuda"}
    assert cuda.not_judged == ["cpu_flags", "min_memory_mb", "min_gpu_memory_mb"]
    assert shortfalls(Hardware(accelerators=("cuda",), min_memory_mb=10**9, cpu_flags=("amx_int8",),
                               min_gpu_memory_mb=10**6), cuda) == ()
    assert shortfalls(Hardware(accelerators=("ane",), min_memory_mb=1), cuda) == (
        "needs ane (macOS on Apple Silicon); a cuda machine has cpu, cuda",)
    assert shortfalls(Hardware(accelerators=("ane",), min_memory_mb=1), class_machine("apple")) == ()
    assert this_machine().not_judged == []  # this machine's own figures are all known


@pytest.mark.parametrize("name", ["gpu", "CUDA", "", "tpu"])
def test_unknown_hardware_class_lists_the_known_ones(name: str) -> None:
    with pytest.raises(UserError, match=f"unknown hardware class {name!r}: use one of cpu, cuda, apple"):
        parse_hardware_class(name)
    with pytest.raises(UserError, match="unknown hardware class"):
        class_machine(name)


# --- spec needs ----------------------------------------------------------------------------------

OLD_SPEC = ('{"name":"old","kind":"gguf","source":"/m/old.gguf","sha256":"' + "a" * 64 + '","size_bytes":1,'
            '"capabilities":["chat"],"context_window":2048,"hardware":{"accelerators":["cpu"],"min_memory_mb":150}}')


def test_a_spec_written_before_the_new_needs_loads_with_none_of_them() -> None:
    spec = ModelSpec.model_validate_json(OLD_SPEC)
    assert spec.hardware == Hardware(min_memory_mb=150)
    assert spec.hardware.cpu_flags == () and spec.hardware.min_gpu_memory_mb == 0
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec  # and round-trips with them


def test_declared_needs_raise_the_spec_but_never_lower_its_memory() -> None:
    base = Hardware(min_memory_mb=250)
    declared = base.declared({"cpu_flags": ["AVX2", "fma", "avx2"], "min_memory_mb": 100, "min_gpu_memory_mb": 4000})
    assert declared == Hardware(min_memory_mb=250, cpu_flags=("avx2", "fma"), min_gpu_memory_mb=4000)
    assert base.declared({"min_memory_mb": 9000}).min_memory_mb == 9000
    assert base.declared(None) is base


@pytest.mark.parametrize(
    ("needs", "message"),
    [
        ({"cpu_flags": ["avx-2"]}, "invalid hardware needs: cpu_flags: unknown CPU flag avx-2; known (as /proc/cpuinfo"),
        ({"gpu_memory": 8000}, "unknown hardware need gpu_memory; use accelerators, min_memory_mb, cpu_flags"),
        ({"accelerators": ["tpu"]}, "unknown accelerator tpu; use ane, cpu, cuda, metal, remote"),
        ({"min_memory_mb": -1}, "invalid hardware needs: min_memory_mb: Input should be greater than or equal to 0"),
        ({"min_gpu_memory_mb": "lots"}, "invalid hardware needs: min_gpu_memory_mb: Input should be a valid integer"),
    ],
)
def test_bad_declared_needs_are_one_line_with_the_fix(needs: dict, message: str) -> None:
    with pytest.raises(UserError) as caught:
        Hardware(min_memory_mb=1).declared(needs)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


# --- llama.cpp build and GPU offload -------------------------------------------------------------

# As a CUDA build of llama.cpp prints it (llama.cpp's CI logs); the CPU-only one is read from this build.
CUDA_INFO = ("CUDA : ARCHS = 700 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : SSE3 = 1 | SSSE3 = 1 | "
             "AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | LLAMAFILE = 1 | OPENMP = 1 | AARCH64_REPACK = 1 | ")


def test_system_info_is_read_into_backends_and_their_flags() -> None:
    backends = parse_system_info(CUDA_INFO)
    assert list(backends) == ["CUDA", "CPU"]
    assert backends["CUDA"] == {"ARCHS": "700", "USE_GRAPHS": "1", "PEER_MAX_BATCH_SIZE": "128"}
    assert backends["CPU"]["AVX2"] == "1" and len(backends["CPU"]) == 9


def test_this_builds_description_agrees_with_llama_cpp() -> None:
    import llama_cpp

    build = llama_build()
    assert build.gpu_offload == llama_cpp.llama_supports_gpu_offload()
    assert "CPU" in build.backends and build.backends == parse_system_info(build.system_info)
    assert build.version == llama_cpp.__version__


@pytest.mark.parametrize(
    ("requested", "build_offloads", "gpus", "layers", "why"),
    [
        (None, True, ["NVIDIA H100"], -1, "all layers: the build offloads and NVIDIA H100 is here"),
        (None, True, [], 0, "none: the build can offload but no GPU is here"),
        (None, False, ["NVIDIA H100"], 0, "none: this llama.cpp build has no GPU backend (a CPU-only build)"),
        (20, True, ["NVIDIA H100"], 20, "as asked: n_gpu_layers=20"),
        (0, True, ["NVIDIA H100"], 0, "as asked: n_gpu_layers=0"),
        (-1, False, [], 0, "none: this llama.cpp build has no GPU backend (a CPU-only build); n_gpu_layers=-1 was "
                           "asked for and has no effect"),
    ],
)
def test_offload_decision(requested: int | None, build_offloads: bool, gpus: list[str], layers: int, why: str) -> None:
    offload = plan_offload(requested, build_offloads=build_offloads, gpus=gpus)
    assert offload.n_gpu_layers == layers and offload.why.startswith(why)
