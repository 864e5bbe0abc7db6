"""A custom scorer for the `support` example task (docs/tasks.md, "Your own scorer").

A triage answer should be the team's name and nothing else: a router reads it, not a person.
"""


def one_word(item: dict, answer: str) -> float:
    """1.0 for an answer of one or two words, less for each word beyond, 0.0 from twelve words on.

    ``item`` holds the item's declared fields (unused: this scorer needs no reference answer).
    """
    words = len(answer.split())
    if words == 0:
        return 0.0
    return max(0.0, 1.0 - max(0, words - 2) / 10)
