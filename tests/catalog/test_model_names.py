"""Model names: the prefixes MLflow shares with routes and the tasks' prompts are refused in one line."""

from __future__ import annotations

import pytest

from registry.errors import UserError
from registry.spec import validate_model_name

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("name", "reserved_for"), [("route.qa", "routes"), ("task.qa", "the tasks' prompts")])
def test_reserved_prefixes_are_refused_with_what_they_are_for(name: str, reserved_for: str) -> None:
    with pytest.raises(UserError, match=f"reserved for {reserved_for}") as raised:
        validate_model_name(name)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("name", ["smollm2-135m", "tasks-model", "my.route.model"])
def test_other_names_pass(name: str) -> None:
    assert validate_model_name(name) == name
