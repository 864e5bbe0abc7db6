"""A GGUF's chat template is code: render it at registration, in llama-cpp-python's own sandbox.

llama-cpp-python compiles ``tokenizer.chat_template`` when it loads a model and renders it on every
chat request, in Jinja2's ``ImmutableSandboxedEnvironment``. A template that reaches for
``cycler.__init__.__globals__.os.popen`` or loops ``range(999999999)`` is stopped there — but only
when a request comes, as a 503, so a registry that accepted it holds a model that can never answer.
Here the template is rendered with sample conversations by the very class the provider uses
(``Jinja2ChatFormatter``: the same environment, filters and globals), in a forked child process, so a
template that never ends is killed at a deadline and one that allocates without bound meets a
memory limit, while the registering process stays untouched.

What refuses a template, and what is only recorded:

* refused: a syntax error, in the template or in any named one the file carries beside it
  (``tokenizer.chat_template.tool_use``; llama-cpp-python compiles them all at load, so the model
  could not even load), anything the sandbox stops (an unsafe
  attribute, a range past its bound), a render that runs out of time or memory or writes more than a
  prompt may hold — on any sample, since a request of that shape would hang or fail the server —
  and any failure of the conversations every chat model must take: one user turn, and a
  user–assistant–user exchange;
* recorded (:attr:`TemplateCheck.unsupported`): a template that refuses a system turn, a tool call
  turn or a tool result turn (Gemma's raise on roles they do not know through ``raise_exception``; SmolLM2's
  concatenates ``content``, which a tool-call turn leaves empty). arbiter never sends a template
  those turns on its own: tool calls and results are rendered as plain turns (providers/tools.py).

Example::

    >>> check_chat_template("{{ cycler.__init__.__globals__.os.popen('id').read() }}")
    "one user turn: the sandbox refused it (SecurityError: access to attribute '__init__' of 'type' object is unsafe.)"
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import select
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_OUTPUT_CHARS = 256 * 1024
"""The longest prompt a sample may render: far past any real template's few hundred characters."""
TIMEOUT_S = 2.0
"""The time all samples together may take (SmolLM2's take 50–90 ms on a busy 2-core VM, the fork included)."""
MEMORY_MB = 256
"""Memory the renderer may allocate beyond what the registering process already maps."""
_REASON_CHARS = 240


@dataclass(frozen=True)
class _Sample:
    """A conversation rendered with ``add_generation_prompt``, as llama-cpp-python renders a request."""

    name: str
    messages: list[dict[str, Any]]
    required: bool
    tools: list[dict[str, Any]] | None = None


_CALL = {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
_SAMPLES = (
    _Sample("one user turn", [{"role": "user", "content": "What is the capital of France?"}], required=True),
    _Sample("a user-assistant-user exchange", [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ], required=True),
    _Sample("a system turn", [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ], required=False),
    _Sample("a tool call turn", [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [_CALL]},
    ], required=False, tools=[_TOOL]),
    _Sample("a tool result turn", [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"celsius": 18}'},
    ], required=False, tools=[_TOOL]),
)


@dataclass(frozen=True)
class TemplateCheck:
    """What rendering the samples found: ``error`` (one line) when the template cannot serve a chat,
    else None; ``unsupported`` maps each optional turn it refuses (e.g. ``"tool call turn"``) to the
    one-line reason."""

    error: str | None
    unsupported: dict[str, str] = field(default_factory=dict)


def template_sha256(template: str) -> str:
    """The template's identity among a version's tags: two files with the same template share it."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def check_chat_template(template: str, *, bos_token: str = "", eos_token: str = "",
                        named_templates: Mapping[str, str] | None = None, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when the template serves a chat within bounds, else the one-line reason it cannot."""
    return inspect_chat_template(template, bos_token=bos_token, eos_token=eos_token,
                                 named_templates=named_templates, timeout_s=timeout_s).error


def inspect_chat_template(template: str, *, bos_token: str = "", eos_token: str = "",
                          named_templates: Mapping[str, str] | None = None,
                          timeout_s: float = TIMEOUT_S) -> TemplateCheck:
    """Render every sample in a child process killed at ``timeout_s``; see the module docstring for
    which failures refuse the template and which are only recorded. ``named_templates`` (a GGUF's
    ``named_chat_templates``) are only compiled: nothing selects them (``--chat-format`` names
    llama-cpp-python's built-in formats), but a model whose named template does not compile cannot load.

    A verdict the template itself decides is kept for the process: the shipped SmolLM2 is registered
    under several names and in many tests, and rendering is deterministic. A deadline or a dead
    renderer may be the machine's doing, so those are tried again next time."""
    named = dict(sorted((named_templates or {}).items()))
    key = (template, bos_token, eos_token, tuple(named.items()))
    with _VERDICTS_LOCK:
        kept = _VERDICTS.get(key)
    if kept is not None:
        return _check(kept)
    # Imported here, before the fork: the child then renders without importing anything, and
    # importing llama_cpp loads the native library (~0.1 s), which only a check needs.
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def render_all() -> dict[str, Any]:
        return _render_samples(Jinja2ChatFormatter, template, bos_token, eos_token, named)

    found = _in_child(render_all, timeout_s)
    if "unsupported" in found:  # the child's own verdict
        with _VERDICTS_LOCK:
            if len(_VERDICTS) >= _KEPT_VERDICTS:
                _VERDICTS.pop(next(iter(_VERDICTS)))
            _VERDICTS[key] = found
    return _check(found)


def _check(found: dict[str, Any]) -> TemplateCheck:
    return TemplateCheck(found["error"], dict(found.get("unsupported", {})))


_VERDICTS: dict[tuple[Any, ...], dict[str, Any]] = {}  # (template, bos, eos, named) → the child's verdict
_VERDICTS_LOCK = threading.Lock()
_KEPT_VERDICTS = 64


def _render_samples(formatter_class: Any, template: str, bos_token: str, eos_token: str,
                    named: dict[str, str]) -> dict[str, Any]:
    """In the child: compile each template once, render each sample, and sort each failure (module docstring)."""
    from jinja2 import TemplateSyntaxError

    try:
        where = ""
        formatter = formatter_class(template=template, eos_token=eos_token, bos_token=bos_token)
        for name, text in named.items():
            where = f"its named template tokenizer.chat_template.{name}, "
            formatter_class(template=text, eos_token=eos_token, bos_token=bos_token)
    except TemplateSyntaxError as exc:
        return {"error": _one_line(f"{where}line {exc.lineno}: not valid Jinja2 ({exc.message})"), "unsupported": {}}
    unsupported: dict[str, str] = {}
    for sample in _SAMPLES:
        error = _render_one(formatter, sample, unsupported)
        if error is not None:
            return {"error": _one_line(error), "unsupported": unsupported}
    return {"error": None, "unsupported": unsupported}


def _render_one(formatter: Any, sample: _Sample, unsupported: dict[str, str]) -> str | None:
    """Why ``sample`` refuses the template, or None; an optional turn's own failure goes to ``unsupported``."""
    from jinja2.sandbox import SecurityError

    try:
        prompt = formatter(messages=sample.messages, tools=sample.tools).prompt
    except SecurityError as exc:
        return f"{sample.name}: the sandbox refused it (SecurityError: {exc})"
    except OverflowError as exc:  # the sandbox's "Range too big" among them
        return f"{sample.name}: the sandbox refused it ({exc})"
    except MemoryError:
        return f"{sample.name}: rendering needs more than {MEMORY_MB} MiB of memory"
    except RecursionError:
        return f"{sample.name}: rendering recursed without end"
    except Exception as exc:  # the template's own failure: raise_exception, a TypeError, an undefined
        reason = f"{sample.name} fails ({type(exc).__name__}: {exc})"
        if sample.required:
            return reason
        unsupported[sample.name.removeprefix("a ")] = _one_line(reason)
        return None
    if len(prompt) > MAX_OUTPUT_CHARS:
        return f"{sample.name} renders {len(prompt):,} characters, more than the {MAX_OUTPUT_CHARS:,} a prompt may hold"
    return None


def _in_child(work: Callable[[], dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    """``work()`` in a forked child with a deadline and a memory limit; its result comes back as JSON.

    A fork costs milliseconds and shares the imported modules (a spawned interpreter would import
    llama_cpp and Jinja2 again, ~0.5 s); a thread could not be stopped inside a loop. The child only renders Jinja2 and
    leaves with ``os._exit``, so nothing of the parent (threads, atexit, buffers) runs twice. A child
    that hangs, on a loop or on a lock another thread held at the fork, is killed at the deadline."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read_end)
            _limit_memory(MEMORY_MB)
            payload = json.dumps(work()).encode()
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline, finished = time.monotonic() + timeout_s, False
    try:
        while select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(read_end, 65536)
            if not chunk:
                finished = True
                break
            chunks.append(chunk)
    finally:  # on the deadline, or an interrupt while waiting: the child must not outlive the check
        os.close(read_end)
        if not finished:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if not finished:
        return {"error": f"rendering the sample conversations took longer than {timeout_s:g} s "
                         "(a loop that does not end?)"}
    if status != 0 or not chunks:
        return {"error": f"rendering the sample conversations ended the renderer ({_how_it_ended(status)}; "
                         f"out of memory past {MEMORY_MB} MiB?)"}
    return json.loads(b"".join(chunks))


def _limit_memory(megabytes: int) -> None:
    """Cap the child's address space at what it maps now plus ``megabytes``, so a template that builds
    a huge string meets a MemoryError instead of the machine's memory. Linux says what a process maps
    in /proc; where it does not, the deadline alone bounds the child."""
    statm = Path("/proc/self/statm")
    if not statm.is_file():
        return
    mapped = int(statm.read_text().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _one_line(text: str) -> str:
    """A reason on one line, short enough for an error message and an MLflow tag."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _REASON_CHARS else flat[: _REASON_CHARS - 1] + "…"
