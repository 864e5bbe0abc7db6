"""`arbiter routes promote --candidate | status | abort` refusing bad input: one clean line, the
right exit code, and nothing changed on the route."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from registry.catalog.route_model import TAG_ROLLOUT
from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.cli.main import cli

pytestmark = pytest.mark.e2e


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def route(catalog: Catalog, smollm2) -> Catalog:
    catalog.register(smollm2.path, name="smollm2-135m", capabilities=list(smollm2.capabilities))
    catalog.register(smollm2.path, name="smollm2-plain", capabilities=["text-generation"])
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    return catalog


@pytest.mark.parametrize(
    ("args", "exit_code", "expected"),
    [
        (["--candidate", "nothing/1"], 3, "nothing"),
        (["--candidate", "smollm2-135m/1"], 2, "already the champion"),
        (["--candidate", "smollm2-plain/1"], 2, "lacks the route's capabilities"),
        (["--candidate", "smollm2-plain/1", "--ramp", "50,10,100"], 2, "must increase"),
        (["--candidate", "smollm2-plain/1", "--ramp", "10,50,150"], 2, "between 1 and 100"),
        (["--candidate", "smollm2-plain/1", "--min-ratio", "2"], 2, "--min-ratio: "),
        (["--candidate", "smollm2-plain/1", "--model", "smollm2-plain", "--version", "1"], 2, "give one of them"),
        ([], 2, "give --candidate"),
        (["--model", "smollm2-plain", "--version", "1", "--ramp", "10,100"], 2, "--ramp shape a gradual rollout"),
    ],
)
def test_bad_promotions_are_one_line_and_change_nothing(route: Catalog, args: list[str], exit_code: int, expected: str) -> None:
    code, _, err = run("routes", "promote", "qa", *args)

    assert code == exit_code, err
    assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1
    model = route.client.get_registered_model("route.qa")
    assert TAG_ROLLOUT not in model.tags and "challenger" not in model.aliases
    assert route.store.query("select count(*) as n from events where kind like 'rollout.%'")[0]["n"] == 0


def test_unknown_route_and_nothing_to_abort(route: Catalog) -> None:
    code, _, err = run("routes", "promote", "nope", "--candidate", "smollm2-135m/1")
    assert code == 3 and "unknown route 'nope'" in err
    code, _, err = run("routes", "abort", "qa")
    assert code == 2 and "no rollout in progress" in err


def test_status_before_any_rollout(route: Catalog) -> None:
    code, out, _ = run("routes", "status", "qa", "--json")
    status = json.loads(out)
    assert code == 0 and status["champion"]["model"] == "smollm2-135m"
    assert status["share"] == 0 and status["rollout"] is None and status["running"] is False
