"""A task's prompt: its Jinja2 templates compiled once, rendered in a sandbox for each item.

A template comes from a user's task file, so it runs in Jinja2's ``ImmutableSandboxedEnvironment``:
no attribute starting with ``_``, no mutation of the item, no access to Python beyond the item's own
values (``{{ ''.__class__ }}`` raises ``SecurityError``). ``StrictUndefined`` turns a misspelt field
into an error rather than an empty string. Every model sees the same prompt for an item, so quality
differences are the models' own; worked examples are rendered once, when the task is compiled.
"""

from __future__ import annotations

import math
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from registry.errors import DatasetError
from registry.evaluation.taskspec import PromptSpec

Messages = list[dict[str, str]]

MAX_REPEAT = 100_000
"""The longest string or list ``*`` may make in a template (a prompt is never that big), and the
most bits ``**`` may make: ``{{ ticket * 10**9 }}`` would otherwise take gigabytes while a task is added."""
MAX_POWER_BITS = 256


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with ``*`` and ``**`` refused past those sizes."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int) and len(sequence) * times > MAX_REPEAT:
                    raise SecurityError(f"repeating {len(sequence)} items {times} times is larger than a prompt needs")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * math.log2(abs(left)) > MAX_POWER_BITS:
                raise SecurityError(f"{left} ** {right} is larger than a prompt needs")
        return super().call_binop(context, operator, left, right)


_ENVIRONMENT = _BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class PromptTemplate:
    """The compiled prompt of one task: ``messages(fields)`` is what a model is asked for an item."""

    def __init__(self, prompt: PromptSpec, fields: set[str], source: str) -> None:
        self._source = source
        self._template = self._compile("prompt.template", prompt.template, fields)
        self._system = self._compile("prompt.system", prompt.system, fields) if prompt.system else None
        # A system message that names no field is the same for every item: rendered once, here.
        self._fixed_system = (
            self._render(self._system, {}, "prompt.system")
            if prompt.system and not meta.find_undeclared_variables(_ENVIRONMENT.parse(prompt.system)) else None
        )
        self._preamble: Messages = []
        for number, example in enumerate(prompt.examples, start=1):
            where = f"prompt.examples.{number}"
            self._preamble.append({"role": "user", "content": self._render(self._template, example.item, where)})
            self._preamble.append({"role": "assistant", "content": example.answer})

    def _compile(self, where: str, text: str, fields: set[str]) -> Any:
        try:
            parsed = _ENVIRONMENT.parse(text)
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            raise DatasetError(
                f"{self._source}: {where}{f' line {line}' if line else ''} is not a valid Jinja2 template ({exc.message})"
            ) from None
        unknown = sorted(meta.find_undeclared_variables(parsed) - fields)
        if unknown:
            raise DatasetError(
                f"{self._source}: {where} names {', '.join(unknown)}, which data.fields does not declare; "
                f"declare it or use one of {', '.join(sorted(fields))}"
            )
        return _ENVIRONMENT.from_string(text)

    def _render(self, template: Any, fields: dict[str, Any], where: str) -> str:
        try:
            return template.render(fields)
        except SecurityError as exc:
            raise DatasetError(f"{self._source}: {where}: the template reaches outside its sandbox ({exc}); "
                               "use only the item's fields and Jinja2 filters") from None
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise DatasetError(f"{self._source}: {where}: the template failed ({type(exc).__name__}: {exc})") from None

    def messages(self, fields: dict[str, Any], where: str = "item") -> Messages:
        """System message (if any), the worked examples, then this item's prompt."""
        system = self._fixed_system
        if system is None and self._system is not None:
            system = self._render(self._system, fields, f"prompt.system for {where}")
        head = [{"role": "system", "content": system}] if system is not None else []
        content = self._render(self._template, fields, f"prompt.template for {where}")
        return [*head, *self._preamble, {"role": "user", "content": content}]
