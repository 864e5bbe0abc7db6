"""A GGUF's chat template rendered in llama-cpp-python's sandbox with sample conversations, bounded in
time, memory and output: the shipped template passes; the issue's two templates, a syntax error, a
template that never ends and one with huge output are each refused in one line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psutil
import pytest

from registry.catalog.shipped import smollm2_path
from registry.providers.chat_template import (
    MAX_OUTPUT_CHARS,
    TemplateCheck,
    check_chat_template,
    inspect_chat_template,
    template_sha256,
)
from registry.providers.gguf_file import inspect_gguf

pytestmark = pytest.mark.unit

NEVER_ENDS = "{% for i in range(99999) %}{% for j in range(99999) %}{{ '' }}{% endfor %}{% endfor %}"
"""Each range under the sandbox's MAX_RANGE (100000): ~10^10 turns, stopped only by the deadline."""
EACH_TURN = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"


def test_the_shipped_smollm2_template_serves_a_chat_and_says_it_takes_no_tool_turns() -> None:
    info = inspect_gguf(smollm2_path())
    assert info.chat_template is not None
    found = inspect_chat_template(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
    assert found.error is None
    # It concatenates message['content'], which a tool-call turn leaves None: recorded, not refused,
    # because arbiter renders past calls and results as plain turns for any template.
    assert list(found.unsupported) == ["tool call turn", "tool result turn"]
    assert found.unsupported["tool call turn"] == (
        'a tool call turn fails (TypeError: can only concatenate str (not "NoneType") to str)')


@pytest.mark.parametrize(("template", "expected"), [
    pytest.param("{{ cycler.__init__.__globals__.os.popen('id').read() }}",
                 "one user turn: the sandbox refused it (SecurityError: access to attribute '__init__'", id="cycler-popen"),
    pytest.param("{{ lipsum.__globals__['os'].popen('id').read() }}", "one user turn: the sandbox refused it (SecurityError: access to attribute '__globals__'",
                 id="lipsum-globals"),
    pytest.param("{% for i in range(999999999) %}x{% endfor %}",
                 "one user turn: the sandbox refused it (Range too big.", id="range-too-big"),
    pytest.param("{% for m in messages %}{{ m.content }\n{% endfor %}", "line 1: not valid Jinja2 (unexpected '}')",
                 id="syntax-error"),
    pytest.param("{% for i in range(100000) %}{{ 'abcdefghij' * 10 }}{% endfor %}",
                 f"one user turn renders 10,000,000 characters, more than the {MAX_OUTPUT_CHARS:,} a prompt may hold",
                 id="huge-output"),
    pytest.param("{{ 'x' * 10**10 }}", "one user turn: rendering needs more than 256 MiB of memory", id="huge-string"),
    pytest.param("{{ messages[0].content + 1 }}", "one user turn fails (TypeError:", id="fails-on-a-user-turn"),
    pytest.param("{% for m in messages %}{% if m.role == 'assistant' %}{{ raise_exception('no history') }}"
                 "{% endif %}{{ m.content }}{% endfor %}",
                 "a user-assistant-user exchange fails (ValueError: no history)", id="fails-on-history"),
    pytest.param("{% if tools %}{{ cycler.__init__.__globals__.os }}{% endif %}" + EACH_TURN,
                 "a tool call turn: the sandbox refused it (SecurityError", id="unsafe-only-with-tools"),
])
def test_a_template_that_cannot_serve_is_refused_in_one_line(template: str, expected: str) -> None:
    reason = check_chat_template(template, bos_token="<s>", eos_token="</s>")
    assert reason is not None and reason.startswith(expected), reason
    assert "\n" not in reason and len(reason) <= 240


def test_a_template_that_never_ends_is_stopped_at_the_deadline_and_its_renderer_reaped() -> None:
    before = {child.pid for child in psutil.Process().children()}
    assert check_chat_template(NEVER_ENDS, timeout_s=0.5) == (
        "rendering the sample conversations took longer than 0.5 s (a loop that does not end?)")
    assert {child.pid for child in psutil.Process().children()} == before  # killed and waited for: no zombie


def test_the_sandbox_stops_the_command_before_it_runs(tmp_path: Path) -> None:
    witness = tmp_path / "ran"
    reason = check_chat_template(f"{{{{ cycler.__init__.__globals__.os.popen('touch {witness}').read() }}}}")
    assert reason is not None and "SecurityError" in reason
    assert not witness.exists()


def test_named_templates_are_compiled_but_not_rendered() -> None:
    # llama-cpp-python compiles every tokenizer.chat_template.<name> at load: one that does not compile
    # makes the model unloadable, whatever --chat-format says; nothing selects one to render.
    broken = {"tool_use": "{% if %}"}
    assert check_chat_template(EACH_TURN, named_templates=broken) == (
        "its named template tokenizer.chat_template.tool_use, line 1: not valid Jinja2 "
        "(Expected an expression, got 'end of statement block')")
    assert check_chat_template(EACH_TURN, named_templates={"rag": "{{ raise_exception('needs documents') }}"}) is None


def test_a_template_that_refuses_a_system_turn_serves_chats_and_says_so() -> None:
    # Gemma 2's template raises on a system role; a chat without one is still served.
    template = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
                "{% endif %}<start_of_turn>{{ m.role }}\n{{ m.content }}<end_of_turn>\n{% endfor %}")
    found = inspect_chat_template(template)
    assert found.error is None
    assert found.unsupported == {"system turn": "a system turn fails (ValueError: System role not supported)"}


def test_a_template_that_renders_every_turn_passes_with_nothing_unsupported() -> None:
    found = inspect_chat_template(EACH_TURN + "{{ bos_token }}{% if add_generation_prompt %}assistant:{% endif %}",
                                  bos_token="<s>", eos_token="</s>")
    assert (found.error, found.unsupported) == (None, {})


def test_template_sha256_is_the_sha256_of_its_utf8_text() -> None:
    template = "{{ messages[0].content }} — é"
    assert template_sha256(template) == hashlib.sha256(template.encode("utf-8")).hexdigest()


class _Forked(Exception):
    """Raised by a stand-in for os.fork: tells whether a check renders again."""


def _no_fork() -> int:
    raise _Forked


def test_a_verdict_is_kept_for_the_process_but_a_deadline_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    template = EACH_TURN + "{# kept #}"
    first = inspect_chat_template(template)
    first.unsupported["mutated"] = "by a caller"
    monkeypatch.setattr("os.fork", _no_fork)
    assert inspect_chat_template(template) == TemplateCheck(None, {})  # no new render, and a fresh copy
    monkeypatch.undo()
    assert check_chat_template(NEVER_ENDS + "{# once #}", timeout_s=0.01) is not None
    monkeypatch.setattr("os.fork", _no_fork)
    with pytest.raises(_Forked):  # the machine may have been busy: rendered again
        check_chat_template(NEVER_ENDS + "{# once #}", timeout_s=0.01)
