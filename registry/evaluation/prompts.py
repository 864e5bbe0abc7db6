"""Prompts: how a validation item is put to a model, and how long its answer may be.

Every model sees the same prompt for an item, so quality differences are the models' own. Each
prompt shows one worked example first (see ``_DEMOS``): tiny base models only answer in form after one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from registry.evaluation.tasks import Item, unknown_task

_MAX_TOKENS: dict[str, int] = {"qa": 24, "extract": 64, "classify": 8, "summarize": 60}

WARMUP_MESSAGES: tuple[list[dict[str, str]], ...] = (
    [{"role": "user", "content": "Say hello in one short sentence."}],
    [{"role": "user", "content": "Count from one to five."}],
)
"""Unscored prompts sent before timing starts, so a model's first-call costs (weights paged in,
buffers allocated) do not land on the first scored item."""


def build_messages(item: Item) -> list[dict[str, str]]:
    """Chat messages asking the model for an answer in the form ``score`` expects.

    Example::

        build_messages(Item("qa-001", "qa", {"question": "What is 2 plus 2?", "references": ["4"]}))
        # [{'role': 'user', 'content': '...Question: What is the capital of England?'},
        #  {'role': 'assistant', 'content': 'London'},
        #  {'role': 'user', 'content': 'Answer the question in a few words, ...Question: What is 2 plus 2?'}]
    """
    if item.task not in _PROMPTS:
        raise unknown_task(item.task)
    prompt = _PROMPTS[item.task]
    demo, answer = _DEMOS[item.task]
    return [
        {"role": "user", "content": prompt(demo)},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": prompt(item.data)},
    ]


def _extract_prompt(data: dict[str, Any]) -> str:
    keys = ", ".join(f"{key} ({'integer' if isinstance(v, int) else 'string'})" for key, v in data["fields"].items())
    return (
        f"Extract facts from the text. Reply with ONLY a JSON object with exactly these keys: {keys}.\n\n"
        f"Text: {data['text']}"
    )


_PROMPTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "qa": lambda d: f"Answer the question in a few words, with no explanation.\n\nQuestion: {d['question']}",
    "extract": _extract_prompt,
    "classify": lambda d: (
        f"Classify the text. Reply with exactly one of these labels: {', '.join(d['labels'])}.\n\nText: {d['text']}"
    ),
    "summarize": lambda d: f"Summarize the text in one short sentence, using only facts it states.\n\nText: {d['text']}",
}


# One worked example per task, in the dataset's own schema, shown as an earlier turn. Measured on the
# bundled sets (temperature 0), mean quality qa/extract/classify: Gemma 3 270M, a base model, only
# echoes the instruction without it (0.01/0.00/0.00) and answers in form with it (0.07/0.65/0.00);
# SmolLM2-135M-Instruct goes from 0.70/0.65/0.29 to 0.70/0.83/0.71.
_DEMOS: dict[str, tuple[dict[str, Any], str]] = {
    "qa": ({"question": "What is the capital of England?", "references": ["London"]}, "London"),
    "extract": (
        {"text": "Ali Khan, 27, lives in Dubai.", "fields": {"name": "Ali Khan", "age": 27, "city": "Dubai"}},
        '{"name": "Ali Khan", "age": 27, "city": "Dubai"}',
    ),
    "classify": (
        {"text": "A red car drove past.", "labels": ["animal", "plant", "vehicle"], "label": "vehicle"},
        "vehicle",
    ),
    "summarize": (
        {"text": "The town library will close for repairs from 3 to 17 March. Books can be returned at the "
                 "town hall during that time, and fines will not be charged."},
        "The library closes for repairs from 3 to 17 March; return books at the town hall, with no fines.",
    ),
}


def max_tokens_for(task: str) -> int:
    """Generation budget per task: enough for a right answer, small enough that rambling is cut."""
    if task not in _MAX_TOKENS:
        raise unknown_task(task)
    return _MAX_TOKENS[task]
