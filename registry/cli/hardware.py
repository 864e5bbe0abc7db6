"""``arbiter hardware``: what this machine has, and which registered versions can run on it (or on
any machine of a hardware class) and why not — by the rule the selector uses (docs/hardware.md)."""

from __future__ import annotations

import platform
from typing import Any

import click
import psutil

from registry.cli import context
from registry.cli.output import emit_json, print_table
from registry.machine.gpu import gpu_devices, gpu_driver
from registry.machine.hardware import (
    HARDWARE_CLASSES,
    RUNS_ANYWHERE,
    Machine,
    accelerators_available,
    apple_silicon,
    available_memory_mb,
    class_machine,
    cpu_flags,
    fingerprint,
    shortfalls,
    this_machine,
)
from registry.providers.llamacpp import llama_build, offload_here
from registry.providers.onnx import ort_build
from registry.spec import VersionRecord

VERSION_COLUMNS = ("ref", "kind", "status", "can_run", "runs_on", "fits_now")


@click.command("hardware")
@click.option("--class", "for_class", default=None, metavar="CLASS",
              help=f"Judge the versions for any machine of this class instead of this one: "
                   f"{', '.join(HARDWARE_CLASSES)} (only accelerators are judged then).")
@click.option("--json", "as_json", is_flag=True)
def hardware(for_class: str | None, as_json: bool) -> None:
    """What this machine has (CPU and flags, RAM, GPUs, Apple Silicon, llama.cpp and onnxruntime
    builds) and which registered versions can run here, with every reason why not."""
    machine = this_machine() if for_class is None else class_machine(for_class)  # bad class: one line, before any read
    report = machine_report()
    records = context.catalog().list_versions()
    report["judged"] = {"machine": machine.label, "hardware_class": machine.hardware_class,
                        "accelerators": sorted(machine.accelerators), "not_judged": machine.not_judged}
    report["versions"] = version_verdicts(records, machine, available_memory_mb() if for_class is None else None)
    if as_json:
        emit_json(report)
    else:
        _print(report)


def _print(report: dict[str, Any]) -> None:
    cpu, memory, build, offload = report["cpu"], report["memory"], report["llama_cpp"], report["gpu_offload"]
    click.echo(f"machine {report['hardware_id']}  class {report['hardware_class']}  {report['os']}")
    click.echo(f"cpu     {cpu['model']}: {cpu['physical_cores']} physical / {cpu['logical_cores']} logical cores; "
               f"flags {' '.join(cpu['flags']) or 'none detected'}")
    click.echo(f"memory  {memory['total_mb']} MB total, {memory['available_mb']} MB available")
    for gpu in report["gpus"]:
        memory = ("memory unknown (NVML would not say)" if gpu["memory_total_mb"] is None
                  else f"{gpu['memory_used_mb']} / {gpu['memory_total_mb']} MB used")
        click.echo(f"gpu {gpu['index']}   {gpu['name']}: {memory}")
    if report["gpu_driver"]:
        driver = report["gpu_driver"]
        click.echo(f"driver  NVIDIA {driver['driver_version']} (CUDA {driver['cuda_version']})")
    if not report["gpus"]:
        click.echo("gpu     none (no NVIDIA GPU found through NVML)")
    apple = report["apple"]
    if apple["apple_silicon"]:
        click.echo(f"apple   {apple['chip'] or 'Apple Silicon'} with Neural Engine")
    click.echo(f"llama.cpp {build['version']}: backends {', '.join(build['backends']) or 'none listed'}; "
               f"GPU offload {'built in' if build['gpu_offload'] else 'not built in'}; "
               f"n_gpu_layers {offload['n_gpu_layers']} ({offload['why']})")
    ort = report["onnxruntime"]
    click.echo(f"onnxruntime {ort['version']}: execution providers {', '.join(ort['available_providers'])}; "
               f"an ONNX model runs on {ort['model_runs_on']} ({ort['why']})")
    judged = report["judged"]
    print_table(f"versions on {judged['machine']}", report["versions"], VERSION_COLUMNS)
    for verdict in report["versions"]:
        if verdict["reasons"]:
            click.echo(f"  cannot run {verdict['ref']}: {'; '.join(verdict['reasons'])}")
    if judged["not_judged"]:
        click.echo(f"not judged for {judged['machine']}: {', '.join(judged['not_judged'])} (they depend on the machine)")


def machine_report() -> dict[str, Any]:
    """Everything ``arbiter hardware`` says about this machine (the JSON contract, docs/hardware.md)."""
    here = fingerprint()
    return {
        "hardware_id": here.hardware_id,
        "hardware_class": here.hardware_class,
        "os": here.os,
        "cpu": {
            "model": here.cpu_model,
            "architecture": platform.machine(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": here.cpu_cores,
            "flags": sorted(cpu_flags()),
        },
        "memory": {"total_mb": here.ram_mb, "available_mb": available_memory_mb()},
        "gpus": [device.as_json() for device in gpu_devices()],
        "gpu_driver": gpu_driver(),
        "apple": apple_silicon(),
        "accelerators": sorted(accelerators_available()),
        "llama_cpp": llama_build().as_json(),
        "gpu_offload": offload_here().as_json(),
        "onnxruntime": ort_build().as_json(),
        "fingerprint": here.as_row(),
    }


def version_verdicts(
    records: list[VersionRecord], machine: Machine, free_mb: int | None = None
) -> list[dict[str, Any]]:
    """Per version: can it run on ``machine``, on what (``runs_on``, empty when it cannot), and
    every reason why not.

    Given the memory free now (``free_mb``, for this machine), ``fits_now`` says whether a
    version that can run here would also load now (the selector's load rule); else ``None``."""
    verdicts = []
    for record in records:
        needs = record.spec.hardware
        reasons = shortfalls(needs, machine)
        remote = RUNS_ANYWHERE in needs.accelerators
        verdicts.append({
            "ref": record.ref,
            "kind": record.spec.kind,
            "status": record.status,
            "can_run": not reasons,
            "runs_on": [] if reasons else [RUNS_ANYWHERE] if remote else sorted(
                machine.accelerators.intersection(needs.accelerators)),
            "reasons": list(reasons),
            "fits_now": None if free_mb is None or reasons else (remote or needs.min_memory_mb <= free_mb),
            "needs": needs.model_dump(mode="json"),
        })
    return verdicts
