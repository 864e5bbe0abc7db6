"""docs/clients.md cannot rot: each of its ```python blocks runs, as written, against a real gateway
(only the address changes), and its ```bash block of curl commands runs through ``bash -e``.

A snippet passes when it runs to its end and prints what it got: the clients raise on an HTTP error
(and ``curl -f`` fails), so a route, endpoint or field the doc promises and the gateway lacks fails here.
Where the doc's prose says what a snippet does (a tool called, an agent's turns), its variables are checked.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
DOC_URL = "http://127.0.0.1:11434"  # the address the doc shows: `arbiter serve`'s default
_BLOCK = re.compile(r"^## (?P<heading>.+?)$|^```(?P<lang>python|bash)\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)


def snippets(lang: str) -> dict[str, str]:
    """The doc's blocks in ``lang``, named after their section (``openai-1``, ``openai-2``…)."""
    found: dict[str, str] = {}
    section = "top"
    for match in _BLOCK.finditer(DOC.read_text()):
        if match["heading"]:
            section = re.sub(r"[^a-z0-9]+", "-", match["heading"].lower()).strip("-")
        elif match["lang"] == lang:
            n = 1 + sum(name.rsplit("-", 1)[0] == section for name in found)
            found[f"{section}-{n}"] = match["code"]
    return found


PYTHON = snippets("python")
BASH = snippets("bash")


def test_the_doc_has_a_snippet_for_every_client() -> None:
    assert {name.rsplit("-", 1)[0] for name in PYTHON} == {
        "openai", "ollama", "langchain", "litellm", "dspy", "openai-agents-sdk"}
    assert BASH and all(DOC_URL in code for code in [*PYTHON.values(), *BASH.values()])


def _openai_called_the_tool(snippet: dict) -> None:
    assert snippet["call"].function.name == "get_weather"


def _agent_called_then_answered(snippet: dict) -> None:
    kinds = [type(message).__name__ for message in snippet["result"]["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert snippet["result"]["messages"][1].tool_calls[0]["name"] == "get_weather"


def _dspy_planned_the_call(snippet: dict) -> None:
    assert [call.name for call in snippet["plan"].calls.tool_calls] == ["get_weather"]


# What a snippet's own variables must show beyond running, where the doc's prose claims it.
SAYS = {"openai-2": _openai_called_the_tool, "langchain-1": _agent_called_then_answered,
        "dspy-2": _dspy_planned_the_call}


@pytest.mark.parametrize("name", PYTHON)
def test_python_snippet_runs(name: str, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = PYTHON[name].replace(DOC_URL, url)
    snippet: dict = {"__name__": f"clients_md_{name.replace('-', '_')}"}
    exec(compile(code, f"docs/clients.md ({name})", "exec", dont_inherit=True), snippet)  # as a script runs
    assert capsys.readouterr().out.strip()
    if name in SAYS:
        SAYS[name](snippet)


@pytest.mark.parametrize("name", BASH)
def test_curl_snippet_runs(name: str, url: str) -> None:
    code = BASH[name].replace(DOC_URL, url)
    done = subprocess.run(["bash", "-e", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    documents, text, at = [], done.stdout, 0
    while at < len(text):  # curl prints each answer with no newline after it
        document, at = json.JSONDecoder().raw_decode(text, at)
        documents.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    assert len(documents) == code.count("curl ") and not any(document.get("error") for document in documents)
