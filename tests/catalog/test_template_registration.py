"""A GGUF's chat template checked at registration, on a real MLflow store with real copies of SmolLM2:
a template that fails in llama-cpp-python's sandbox is refused in one line and nothing is registered;
``--allow-template-errors`` registers it with the reason as a warning tag; every version whose file has a
template records its sha256 (``arbiter.provenance.chat_template_sha256``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf_copies import with_chat_template
from support import assert_clean_error, run

from registry.catalog.shipped import ShippedModel
from registry.catalog.versions import Catalog
from registry.errors import UserError
from registry.providers.chat_template import TIMEOUT_S, template_sha256
from registry.providers.gguf_file import inspect_gguf

pytestmark = pytest.mark.integration

POPEN = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
"""The issue's first template: reaches for a shell through a global's function."""
NEVER_ENDS = "{% for i in range(99999) %}{% for j in range(99999) %}{{ '' }}{% endfor %}{% endfor %}"
SANDBOX_REFUSAL = "one user turn: the sandbox refused it (SecurityError: access to attribute '__init__'"


@pytest.fixture(scope="module")
def copies(smollm2: ShippedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SmolLM2 as a user's edited copies: whole files, tensors and all (98 MB each, made once)."""
    folder = tmp_path_factory.mktemp("templates")
    return {
        "popen": with_chat_template(smollm2.path, folder / "smollm2-popen.gguf", POPEN),
        "never-ends": with_chat_template(smollm2.path, folder / "smollm2-loop.gguf", NEVER_ENDS),
        "named-broken": with_chat_template(smollm2.path, folder / "smollm2-named.gguf", "{% if %}",
                                           key="tokenizer.chat_template.tool_use"),
    }


def version_tags(catalog: Catalog, name: str, version: int) -> dict[str, str]:
    return catalog.client.get_model_version(name, str(version)).tags


def test_the_shipped_versions_pass_and_record_their_template_sha256(catalog: Catalog, shipped) -> None:
    smollm2, _, gemma, _ = shipped
    record, _ = catalog.register(smollm2.path, name=smollm2.name)
    expected = template_sha256(inspect_gguf(smollm2.path).chat_template)
    assert record.spec.provenance["chat_template_sha256"] == expected
    assert "chat_template_error" not in record.spec.provenance
    # its template concatenates content, which a tool-call turn leaves None: recorded, not refused
    assert record.spec.provenance["chat_template_unsupported"] == "tool call turn, tool result turn"
    assert version_tags(catalog, record.name, record.version)["arbiter.provenance.chat_template_sha256"] == expected
    # Gemma's file carries no template (it is served with llama-cpp-python's built-in 'gemma' format):
    # nothing to render, nothing to record.
    assert inspect_gguf(gemma.path).chat_template is None
    gemma_record, _ = catalog.register(gemma.path, name=gemma.name, chat_format=gemma.chat_format)
    assert not {"chat_template_sha256", "chat_template_error"} & set(gemma_record.spec.provenance)


def test_the_checked_template_and_tokens_are_what_llama_cpp_python_reads(copies: dict[str, Path]) -> None:
    from llama_cpp import Llama

    llm = Llama(str(copies["popen"]), vocab_only=True, verbose=False)
    info = inspect_gguf(copies["popen"])
    assert llm.metadata["tokenizer.chat_template"] == info.chat_template == POPEN
    text = llm._model.token_get_text  # what Llama() hands Jinja2ChatFormatter as bos_token / eos_token
    assert (text(llm.token_bos()), text(llm.token_eos())) == (info.bos_token, info.eos_token)


def test_a_template_the_sandbox_refuses_is_refused_and_nothing_is_registered(catalog: Catalog, copies) -> None:
    with pytest.raises(UserError) as refused:
        catalog.register(copies["popen"], name="smollm2-popen")
    message = str(refused.value)
    assert message.startswith(f"{copies['popen']}: its chat template fails in llama-cpp-python's sandbox: "
                              f"{SANDBOX_REFUSAL}")
    assert message.endswith("; fix the template or pass --allow-template-errors") and "\n" not in message
    assert catalog.list_versions() == []
    assert catalog.client.search_registered_models(filter_string="name = 'smollm2-popen'") == []


def test_allowed_template_errors_register_with_the_reason_as_a_warning_tag(catalog: Catalog, copies) -> None:
    record, created = catalog.register(copies["popen"], name="smollm2-popen", allow_template_errors=True)
    assert created
    reason = record.spec.provenance["chat_template_error"]
    assert reason.startswith(SANDBOX_REFUSAL)
    tags = version_tags(catalog, record.name, record.version)
    assert tags["arbiter.provenance.chat_template_error"] == reason
    assert tags["arbiter.provenance.chat_template_sha256"] == template_sha256(POPEN)


def test_the_cli_refuses_a_template_that_never_ends_in_one_line_and_warns_when_errors_are_allowed(
    catalog: Catalog, copies
) -> None:
    code, _, stderr = run("models", "register", str(copies["never-ends"]), "--name", "smollm2-loop")
    assert_clean_error(code, stderr, f"took longer than {TIMEOUT_S:g} s (a loop that does not end?); "
                                     "fix the template or pass --allow-template-errors")
    assert catalog.list_versions() == []
    code, stdout, stderr = run("models", "register", str(copies["popen"]), "--name", "smollm2-popen",
                               "--allow-template-errors")
    assert code == 0, stderr
    assert SANDBOX_REFUSAL in stdout + stderr  # the warning says why the template fails
    (record,) = catalog.list_versions()
    assert record.spec.provenance["chat_template_error"].startswith(SANDBOX_REFUSAL)


def test_a_named_template_that_does_not_compile_is_refused(catalog: Catalog, copies) -> None:
    # llama-cpp-python compiles it at load even under an explicit --chat-format: the model could not load
    with pytest.raises(UserError, match=r"its named template tokenizer\.chat_template\.tool_use, line 1: "
                                        r"not valid Jinja2"):
        catalog.register(copies["named-broken"], name="smollm2-named", chat_format="chatml")
    assert catalog.list_versions() == []
