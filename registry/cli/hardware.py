"""``arbiter hardware``: what this machine has, and which registered versions can run on it (or on
any machine of a hardware class) and why not — by the rule the selector uses (docs/hardware.md)."""

from __future__ import annotations

from typing import Any

import click

from registry.cli import context
from registry.cli.output import emit_json, print_table
from registry.hardware import (
    HARDWARE_CLASSES,
    available_memory_mb,
    class_machine,
    machine_report,
    this_machine,
    version_verdicts,
)

VERSION_COLUMNS = ("ref", "kind", "status", "can_run", "runs_on", "fits_now")


@click.command("hardware")
@click.option("--class", "for_class", default=None, metavar="CLASS",
              help=f"Judge the versions for any machine of this class instead of this one: "
                   f"{', '.join(HARDWARE_CLASSES)} (only accelerators are judged then).")
@click.option("--json", "as_json", is_flag=True)
def hardware(for_class: str | None, as_json: bool) -> None:
    """What this machine has (CPU and flags, RAM, GPUs, Apple Silicon, llama.cpp build) and which
    registered versions can run here, with every reason why not."""
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
    judged = report["judged"]
    print_table(f"versions on {judged['machine']}", report["versions"], VERSION_COLUMNS)
    for verdict in report["versions"]:
        if verdict["reasons"]:
            click.echo(f"  cannot run {verdict['ref']}: {'; '.join(verdict['reasons'])}")
    if judged["not_judged"]:
        click.echo(f"not judged for {judged['machine']}: {', '.join(judged['not_judged'])} (they depend on the machine)")
