"""``arbiter routes list|show|status|promote|rollback|abort``."""

from __future__ import annotations

import sys
from typing import Any

import click

from registry.catalog.routes import RouteState
from registry.cli import context
from registry.cli.output import emit_json
from registry.cli.prefect_server import prefect_api
from registry.errors import UserError
from registry.rollout.locks import route_lock
from registry.rollout.policy import RolloutPolicy
from registry.rollout.promotion import Rollout


@click.group()
def routes() -> None:
    """Routes: tasks whose MLflow aliases pick the serving version."""


def _print(state: RouteState, as_json: bool) -> None:
    if as_json:
        emit_json(state.as_json())
        return
    payload = state.as_json()
    click.echo(f"route {state.route}")
    for alias in ("champion", "previous", "challenger"):
        target = payload[alias]
        shown = f"{target['model']}/{target['version']}" if target else "—"
        click.echo(f"  {alias:>10}: {shown}")


@routes.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """List route names."""
    names = context.routes().list()
    emit_json(names) if as_json else click.echo("\n".join(names) or "no routes yet")


@routes.command("show")
@click.argument("route")
@click.option("--json", "as_json", is_flag=True)
def show(route: str, as_json: bool) -> None:
    """Show ROUTE's champion, previous and challenger (read live from MLflow)."""
    _print(context.routes().show(route), as_json)


@routes.command("promote")
@click.argument("route")
@click.option("--candidate", help="NAME/VERSION to roll out gradually (the promotion flow).")
@click.option("--model", help="Catalog model name, promoted at once (no ramp).")
@click.option("--version", "version", type=click.IntRange(min=1), help="Catalog version number (with --model).")
@click.option("--ramp", help="Challenger shares in per cent, increasing, ending at 100. Default 10,25,50,100.")
@click.option("--step-seconds", type=float, help="Length of each ramp step. Default 3600.")
@click.option("--min-samples", type=int, help="Calls per side before a step is judged. Default 10.")
@click.option("--min-ratio", type=float, help="Success and quality floor vs the champion's. Default 0.95.")
@click.option("--speed-ratio", type=float, help="Decode-speed floor vs the champion's. Default 0.8.")
@click.option("--check-every", "check_every_s", type=float, help="Seconds between checks. Default 5.")
@click.option("--benchmark-limit", type=int, help="Validation items to benchmark the candidate on. Default: all.")
@click.option("--shadow", is_flag=True,
              help="Before the ramp, a step where the candidate answers copies of live requests, unseen by users, "
                   "scored beside the champion's answers (docs/rollout.md).")
@click.option("--false-rollback-rate", type=float,
              help="Chance of rolling back a candidate that is within the margins. Default 0.05.")
@click.option("--force", is_flag=True,
              help="--model: promote without a benchmark or below 0.9 × the champion's quality. "
                   "--candidate: ramp even when the compatibility check says no.")
@click.option("--json", "as_json", is_flag=True)
def promote(
    route: str, candidate: str | None, model: str | None, version: int | None, ramp: str | None,
    step_seconds: float | None, min_samples: int | None, min_ratio: float | None, speed_ratio: float | None,
    check_every_s: float | None, benchmark_limit: int | None, shadow: bool, false_rollback_rate: float | None,
    force: bool, as_json: bool,
) -> None:
    """Make a version the champion of ROUTE: gradually (--candidate) or at once (--model/--version)."""
    rollout_flags = {"--ramp": ramp, "--step-seconds": step_seconds, "--min-samples": min_samples,
                     "--min-ratio": min_ratio, "--speed-ratio": speed_ratio, "--check-every": check_every_s,
                     "--benchmark-limit": benchmark_limit, "--shadow": shadow or None,
                     "--false-rollback-rate": false_rollback_rate}
    if candidate is None:
        if model is None or version is None:
            raise UserError("give --candidate NAME/VERSION for a gradual rollout, or --model NAME --version N to promote at once")
        given = [flag for flag, value in rollout_flags.items() if value is not None]
        if given:
            raise UserError(f"{', '.join(given)} shape a gradual rollout; use --candidate {model}/{version} with them")
        contract = context.tasks().contract(route)  # a version that cannot serve the route's task is refused
        _print(context.routes().promote(route, model, version, force=force, contract=contract), as_json)
        return
    if model is not None or version is not None:
        raise UserError("--candidate and --model/--version are two ways to promote; give one of them")
    policy = RolloutPolicy.parse(
        ramp=ramp, step_seconds=step_seconds, min_samples=min_samples, min_ratio=min_ratio, speed_ratio=speed_ratio,
        check_every_s=check_every_s, benchmark_limit=benchmark_limit, force=force or None, shadow=shadow or None,
        false_rollback_rate=false_rollback_rate,
    )
    catalog = context.catalog()
    Rollout(catalog).check_request(route, candidate)  # bad input is refused before Prefect starts
    # The lock before Prefect starts: a second promotion is refused at once, and two processes
    # never start Prefect's temporary server on one database together (its migrations collide).
    # That server ends with this command, even a killed one (registry/cli/prefect_server.py).
    with route_lock(catalog.settings.home, route, purpose=f"promotion of {candidate}"), prefect_api(catalog.settings):
        from flows.promote import promote_flow

        status = promote_flow(route=route, candidate=candidate, policy=policy.model_dump(mode="json"),
                              home=str(catalog.settings.home), lock_held=True)
    _print_status(status, as_json)
    phase = status["rollout"]["phase"]
    if phase in EXIT_CODES:  # a script can tell a promotion from a rollback without parsing
        sys.exit(EXIT_CODES[phase])


# `routes promote --candidate` ends 0 when the candidate was promoted, else with its outcome.
EXIT_CODES = {"rolled_back": 5, "refused": 6}


@routes.command("status")
@click.argument("route")
@click.option("--json", "as_json", is_flag=True)
def status(route: str, as_json: bool) -> None:
    """Show ROUTE's champion, challenger, share, rollout step and last check."""
    _print_status(Rollout(context.catalog()).status(route), as_json)


@routes.command("abort")
@click.argument("route")
@click.option("--reason", default="aborted by hand", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def abort(route: str, reason: str, as_json: bool) -> None:
    """Stop ROUTE's rollout now: the challenger's share drops to 0 and it is rolled back."""
    _print_status(Rollout(context.catalog()).abort(route, reason), as_json)


def _print_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(status)
        return
    click.echo(f"route {status['route']}")
    for alias in ("champion", "challenger", "previous"):
        target = status[alias]
        click.echo(f"  {alias:>10}: {target['model']}/{target['version']}" if target else f"  {alias:>10}: —")
    click.echo(f"  {'share':>10}: {status['share']}%")
    rollout = status["rollout"]
    if rollout is None:
        click.echo("  no rollout yet")
        return
    running = "running" if status["running"] else "not running"
    where = (f"step {rollout['step'] + 1} of {len(rollout['policy']['ramp'])} at {rollout['share']}%, "
             if rollout["phase"] == "ramp" else "shadow step at 0%, " if rollout["phase"] == "shadow" else "")
    click.echo(f"  rollout {rollout['id']}: {rollout['candidate']} vs {rollout['champion']}, phase {rollout['phase']}"
               f" ({where}{running})")
    check = rollout.get("last_check")
    if check:
        click.echo(f"  last check {check['at']}: {check['action']} — {'; '.join(check['reasons'])}")
        for name, test in check.get("figures", {}).get("signals", {}).items():
            role = "gates" if test["gating"] else "shown only"
            click.echo(f"    {name} ({role}): {test['decision']} — {test['reason']}")
        judge = check.get("figures", {}).get("judge")
        if judge:
            click.echo(f"    judge: {judge['reason']}")
    for reason in rollout.get("outcome", {}).get("reasons", []):
        click.echo(f"  outcome: {reason}")


@routes.command("rollback")
@click.argument("route")
@click.option("--json", "as_json", is_flag=True)
def rollback(route: str, as_json: bool) -> None:
    """Swap ROUTE's champion and previous."""
    _print(context.routes().rollback(route), as_json)
