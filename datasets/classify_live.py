"""The shipped `classify` task's live scorer: does the answer name exactly one of the labels offered?

A live call has no reference label, but the task's prompt lists the choices: "Reply with exactly
one of these labels: positive, negative, neutral." So the answer can be checked against the prompt
itself: 1.0 when it names exactly one of them (as whole words, after the same normalization as the
benchmark's `label` scorer: case, punctuation and articles do not matter), 0.0 when it names none,
or hedges between several ("positive or negative" is no choice). A label inside a longer one that
is named does not count on its own: "not spam" names `not spam`, not `spam` too. Whether the label
is the *right* one needs the reference; that is the benchmark's job (classify.yaml's `scoring`).

A prompt that does not list its labels this way (a client writing its own prompt to route
`classify`) cannot be scored: the function raises, and the call's live score is recorded as
failed, never guessed.
"""

from __future__ import annotations

import re
from typing import Any

from registry.evaluation.scorers import normalize

_OFFERED = re.compile(r"exactly one of these labels:\s*(?P<labels>[^\n]*?)\.(?:\s|$)", re.IGNORECASE)


def one_label(item: dict[str, Any], answer: str) -> float:
    """1.0 if the answer names exactly one of the prompt's labels, else 0.0."""
    return float(len(labels_named(labels_offered(item["prompt"]), answer)) == 1)


def labels_offered(prompt: str) -> list[str]:
    """The labels the prompt lists; ``ValueError`` if it lists fewer than two."""
    match = _OFFERED.search(prompt)
    labels = [label.strip() for label in match.group("labels").split(",") if label.strip()] if match else []
    if len(labels) < 2:
        raise ValueError("the prompt lists no labels ('Reply with exactly one of these labels: a, b.'), so the "
                         "answer cannot be checked against it")
    return labels


def labels_named(labels: list[str], answer: str) -> set[str]:
    """The labels the answer names as whole words, a label inside a longer named one not counted."""
    words = normalize(answer).split()
    spans = []  # (start, end, label) of every whole-word occurrence
    for label in labels:
        needle = normalize(label).split()
        spans += [(i, i + len(needle), label) for i in range(len(words) - len(needle) + 1)
                  if needle and words[i:i + len(needle)] == needle]
    return {label for start, end, label in spans
            if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)}
