"""``arbiter feedback CALL_ID --score S``: score one live answer from the command line, as an
application does with ``POST /arbiter/feedback`` (the same checks, the same row)."""

from __future__ import annotations

import click

from registry.cli.output import emit_json
from registry.results.feedback import FeedbackBook
from registry.results.store import ResultsStore
from registry.settings import get_settings


@click.command()
@click.argument("call_id")
@click.option("--score", type=float, default=None, help="The answer's quality, from 0 (wrong) to 1 (right).")
@click.option("--thumbs", type=click.Choice(["up", "down"]), default=None, help="Instead of --score: up = 1, down = 0.")
@click.option("--source", default="user", show_default=True,
              help="Who judges: your application's or your name. One score per (call, source): a second replaces the first.")
@click.option("--comment", default=None, help="Why, in words (at most 2,000 characters).")
@click.option("--json", "as_json", is_flag=True)
def feedback(call_id: str, score: float | None, thumbs: str | None, source: str, comment: str | None,
             as_json: bool) -> None:
    """Record feedback on the answer CALL_ID (its x-arbiter-call-id header, or its OpenAI id)."""
    row = FeedbackBook(ResultsStore(get_settings().results_dir)).record(
        call_id, score=score, thumbs=thumbs, source=source, comment=comment)
    shown = {key: row[key] for key in ("feedback_id", "call_id", "route", "model", "version", "source", "score")}
    if as_json:
        emit_json(shown)
    else:
        click.echo(f"feedback {row['score']:g} from {source} on call {row['call_id']} "
                   f"({row['model']}/{row['version']} on route {row['route']})")
