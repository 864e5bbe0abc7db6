"""The shipped `extract` task's live scorer: does the answer hold the JSON object the prompt asks for?

A live call has no reference answer, but the task's prompt names what it wants: "Reply with ONLY a
JSON object with exactly these keys: name (string), age (integer), city (string)." So the answer
can be checked against the prompt itself, like the benchmark's `json` scorer against the item:
0.3 for a JSON object, plus 0.7 times the share of asked keys present with a value of the asked
type (an integer: 34, 34.0 or "34"; a string: any non-empty text or number). Whether the values are
*right* needs the reference; that is the benchmark's job (extract.yaml's `scoring`).

A prompt that does not list its keys this way (a client writing its own prompt to route `extract`)
cannot be scored: the function raises, and the call's live score is recorded as failed, never
guessed.
"""

from __future__ import annotations

import re
from typing import Any

from registry.evaluation.scorers import first_json_object

_ASKED = re.compile(r"with exactly these keys:\s*(?P<keys>[^\n]*?)\.(?:\s|$)", re.IGNORECASE)
_KEY = re.compile(r"^\s*(?P<key>[^()]+?)\s*\((?P<kind>string|integer)\)\s*$", re.IGNORECASE)
_INTEGER = re.compile(r"\s*[-+]?\d+\s*")


def asked_keys(item: dict[str, Any], answer: str) -> float:
    """0.3 for a JSON object, plus 0.7 × the share of the prompt's keys present with their type."""
    asked = keys_asked(item["prompt"])
    found = first_json_object(answer)
    if found is None:
        return 0.0
    by_key = {str(key).strip().casefold(): value for key, value in found.items()}
    hits = sum(key.casefold() in by_key and _of_kind(by_key[key.casefold()], kind) for key, kind in asked.items())
    return (3 + 7 * hits / len(asked)) / 10  # exact at a full answer: 1.0, not 0.9999999999999999


def keys_asked(prompt: str) -> dict[str, str]:
    """The keys the prompt asks for and their kind (``string`` or ``integer``); ``ValueError`` if it names none."""
    match = _ASKED.search(prompt)
    if match is None:
        raise ValueError("the prompt names no keys ('with exactly these keys: name (string), …'), so the answer "
                         "cannot be checked against it")
    asked = {}
    for part in match.group("keys").split(","):
        key = _KEY.match(part)
        if key is None:
            raise ValueError(f"the prompt's key {part.strip()!r} is not written as 'key (string|integer)'")
        asked[key.group("key")] = key.group("kind").lower()
    return asked


def _of_kind(value: Any, kind: str) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if kind == "integer":
        return ((isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
                or (isinstance(value, str) and _INTEGER.fullmatch(value) is not None))
    return (isinstance(value, str) and bool(value.strip())) or isinstance(value, int | float)
