"""The HTTP providers against real servers: llama-cpp-python's OpenAI-compatible server, and our
own gateway (``arbiter serve``) speaking the Ollama API — and the OpenAI API, the one server here
that sends the usage chunk. Each server runs as a subprocess on a free loopback port; the fault
tests SIGKILL servers of their own, so the shared ones stay up for every other test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from registry.catalog.shipped import smollm2_path
from registry.catalog.versions import TAG_IDENTITY, Catalog
from registry.cli.main import cli
from registry.errors import ProviderError, UserError
from registry.providers import Generation, GenerationRequest, Provider, provider_for
from registry.providers.ollama import OllamaProvider
from registry.providers.openai_compat import OpenAICompatProvider
from registry.settings import get_settings
from registry.spec import ModelSpec, VersionRecord

pytestmark = pytest.mark.integration

QUESTION = ({"role": "user", "content": "What is the capital of France?"},)
PROMPT = "The capital of France is"
REQUESTS = (GenerationRequest(messages=QUESTION, max_tokens=16), GenerationRequest(prompt=PROMPT, max_tokens=8))
SERVED_NAME = "smollm2"  # the id llama_cpp.server lists (--model_alias)
SERVER_CONTEXT = 2048


@dataclass
class Server:
    """A server subprocess in its own process group, and where its output goes."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """The end of what the server printed: what a failed start-up is diagnosed from."""
        return self.log.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL the whole group: no goodbye, as when a machine or container dies."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(command: list[str], *, port: int, ready_path: str, log: Path, timeout_s: float,
            env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start ``command``, poll ``ready_path`` until it answers 200, yield it, kill it at the end."""
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(url=url, process=process, log=log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                pytest.fail(f"{command[:3]} exited with {process.returncode}:\n{server.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + ready_path, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"{command[:3]} did not answer {ready_path} in {timeout_s:.0f} s:\n{server.output()}")
            time.sleep(0.2)
        yield server
    finally:
        server.kill()


def drain(stream) -> tuple[list[str], Generation]:
    """Every fragment of a provider stream, and its return value."""
    fragments: list[str] = []
    while True:
        try:
            fragments.append(next(stream))
        except StopIteration as done:
            return fragments, done.value


# --- the OpenAI-compatible server ---------------------------------------------------------


# llama-cpp-python's server, started as `python -m llama_cpp.server` would be, after the AMX guard our own
# provider applies on load (registry.providers.llamacpp.skip_amx_repack: AMX repacking segfaults in these VMs).
LLAMA_CPP_SERVER = [
    sys.executable, "-c",
    "import runpy, sys; from registry.providers.llamacpp import skip_amx_repack; skip_amx_repack(); "
    "sys.argv[0] = 'llama_cpp.server'; runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)",
]


@contextlib.contextmanager
def llama_cpp_server(log_dir: Path) -> Iterator[Server]:
    port = _free_port()
    command = [
        *LLAMA_CPP_SERVER, "--model", str(smollm2_path()), "--model_alias", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(SERVER_CONTEXT),
        "--n_threads", "1", "--n_threads_batch", "1",
        "--interrupt_requests", "False",  # else a second request cuts a stream in progress (shared/STACK.md)
    ]
    log = log_dir / "llama_cpp_server.log"
    with serving(command, port=port, ready_path="/v1/models", log=log, timeout_s=60) as server:
        yield server


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with llama_cpp_server(tmp_path_factory.mktemp("openai-server")) as server:
        yield server


def _register_openai(catalog: Catalog, url: str, name: str = "smollm2-served") -> VersionRecord:
    record, _ = catalog.register_remote(kind="openai", name=name, source=SERVED_NAME, base_url=url,
                                        context_window=SERVER_CONTEXT)
    return record


@pytest.fixture
def openai_provider(catalog: Catalog, openai_server: Server) -> Iterator[Provider]:
    provider = provider_for(_register_openai(catalog, openai_server.url).spec, n_threads=1, n_ctx=512)
    provider.load()
    yield provider
    provider.unload()


def test_register_openai_is_idempotent_and_keeps_the_spec_artifact(catalog: Catalog, openai_server: Server) -> None:
    record, created = catalog.register_remote(
        kind="openai", name="smollm2-served", source=SERVED_NAME, base_url=openai_server.url,
        context_window=SERVER_CONTEXT, capabilities=["chat"],
    )
    assert created and record.version == 1
    spec = record.spec
    assert (spec.kind, spec.source, spec.base_url) == ("openai", SERVED_NAME, f"{openai_server.url}/v1")
    assert spec.sha256 is None and spec.hardware.min_memory_mb == 0 and spec.context_window == SERVER_CONTEXT
    # the same server written with /v1 and a trailing slash is the same version
    again, created_again = catalog.register_remote(
        kind="openai", name="smollm2-served", source=SERVED_NAME, base_url=f"{openai_server.url}/v1/",
        context_window=SERVER_CONTEXT,
    )
    assert (created_again, again.version) == (False, 1)
    version = catalog.client.get_model_version("smollm2-served", "1")
    assert version.tags[TAG_IDENTITY] == f"openai:{SERVED_NAME}@{openai_server.url}/v1"
    local = catalog.client.download_artifacts(record.run_id, "model/spec.json")
    assert ModelSpec.model_validate_json(Path(local).read_text()) == spec
    assert record.as_json()["base_url"] == f"{openai_server.url}/v1"


def test_register_openai_refuses_what_cannot_work(catalog: Catalog, openai_server: Server) -> None:
    with pytest.raises(UserError, match="--context-window"):
        catalog.register_remote(kind="openai", name="x", source=SERVED_NAME, base_url=openai_server.url)
    with pytest.raises(UserError, match=r"does not serve 'nope' \(it lists: smollm2\); check the model name"):
        catalog.register_remote(kind="openai", name="x", source="nope", base_url=openai_server.url, context_window=512)
    nobody = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(UserError, match=rf"'smollm2' at {nobody}/v1: cannot connect \(is the server running"):
        catalog.register_remote(kind="openai", name="x", source=SERVED_NAME, base_url=nobody, context_window=512)
    assert catalog.list_versions() == []


def test_generate_chat_and_completion_match_the_servers_own_answer(
    openai_provider: Provider, openai_server: Server
) -> None:
    assert isinstance(openai_provider, OpenAICompatProvider) and isinstance(openai_provider, Provider)
    assert openai_provider.load_ms is not None and openai_provider.load_ms > 0
    for request, path, field in (
        (GenerationRequest(messages=QUESTION, max_tokens=16), "chat/completions", {"messages": list(QUESTION)}),
        (GenerationRequest(prompt=PROMPT, max_tokens=8), "completions", {"prompt": PROMPT}),
    ):
        generation = openai_provider.generate(request)
        # the server's non-streamed answer to the same request: the reference text and counts
        reference = httpx.post(
            f"{openai_server.url}/v1/{path}", timeout=60,
            json={"model": SERVED_NAME, "max_tokens": request.max_tokens, "temperature": 0, "seed": 0, **field},
        ).json()
        choice = reference["choices"][0]
        assert generation.text == (choice["message"]["content"] if request.messages else choice["text"])
        assert generation.completion_tokens == reference["usage"]["completion_tokens"]
        assert generation.finish_reason == choice["finish_reason"]
        # llama-cpp-python's server ignores stream_options.include_usage: the prompt count is unknown
        assert generation.prompt_tokens == 0
        assert 0 < generation.time_to_first_token_ms <= generation.generation_ms


def test_stream_fragments_join_to_the_generated_text(openai_provider: Provider) -> None:
    for request in (GenerationRequest(prompt=PROMPT, max_tokens=8),
                    GenerationRequest(messages=QUESTION, max_tokens=12, stop=("Paris",))):
        whole = openai_provider.generate(request)
        fragments, finished = drain(openai_provider.stream(request))
        assert len(fragments) >= 1 and all(fragments)
        assert "".join(fragments) == whole.text == finished.text
        assert (finished.completion_tokens, finished.finish_reason) == (whole.completion_tokens, whole.finish_reason)
        assert finished.completion_tokens > 0


def test_closing_a_stream_early_leaves_the_provider_usable(openai_provider: Provider) -> None:
    stream = openai_provider.stream(GenerationRequest(prompt="Count: one, two, three,", max_tokens=16))
    assert next(stream)
    stream.close()  # a client that hung up mid-stream
    assert openai_provider.generate(GenerationRequest(prompt=PROMPT, max_tokens=4)).completion_tokens == 4


def test_lifecycle_and_health(catalog: Catalog, openai_server: Server) -> None:
    provider = OpenAICompatProvider(_register_openai(catalog, openai_server.url).spec)
    assert provider.health().detail == "not loaded"
    with pytest.raises(ProviderError, match="before load"):
        provider.generate(GenerationRequest(prompt="hi", max_tokens=2))
    provider.load()
    provider.load()  # idempotent
    health = provider.health()
    assert health.ok and health.extra["base_url"] == f"{openai_server.url}/v1"
    provider.unload()
    provider.unload()  # idempotent
    assert not provider.health().ok
    provider.load()  # and loadable again after an unload, as the pool does
    assert provider.generate(GenerationRequest(prompt=PROMPT, max_tokens=2)).completion_tokens == 2
    provider.unload()


def test_a_killed_server_is_a_provider_error_never_an_httpx_one(catalog: Catalog, tmp_path: Path) -> None:
    with llama_cpp_server(tmp_path) as server:
        provider = provider_for(_register_openai(catalog, server.url, name="doomed").spec, n_threads=1, n_ctx=512)
        provider.load()
        assert provider.health().ok
        stream = provider.stream(GenerationRequest(prompt="Count: one, two, three,", max_tokens=16))
        assert next(stream)
        server.kill()  # mid-stream: the response is cut before `data: [DONE]`
        with pytest.raises(ProviderError, match=r"doomed \('smollm2' at http://127\.0\.0\.1:\d+/v1\)"):
            drain(stream)
        with pytest.raises(ProviderError, match="cannot connect"):
            provider.generate(GenerationRequest(messages=QUESTION, max_tokens=4))
        with pytest.raises(ProviderError, match=f"{server.url}/v1"):
            drain(provider.stream(GenerationRequest(prompt=PROMPT, max_tokens=4)))
        health = provider.health()
        assert not health.ok and "cannot connect" in health.detail
        provider.unload()


# --- the Ollama API, served by our own gateway ---------------------------------------------


@pytest.fixture(scope="module")
def gateway_home(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path) -> Path:
    """A registry whose route ``qa`` is served by SmolLM2 (forced: there is no benchmark here)."""
    from registry.catalog.routes import Routes

    home = tmp_path_factory.mktemp("gateway-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    catalog = Catalog(get_settings(home=home))
    catalog.register(smollm2_path(), name="smollm2-135m", capabilities=["chat", "text-generation"])
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    return home


@contextlib.contextmanager
def arbiter_gateway(home: Path, log_dir: Path) -> Iterator[Server]:
    port = _free_port()
    env = {**os.environ, "ARBITER_HOME": str(home)}
    command = [str(Path(sys.executable).with_name("arbiter")), "serve", "--host", "127.0.0.1", "--port", str(port),
               "--no-webhook"]
    log = log_dir / "gateway.log"
    with serving(command, port=port, ready_path="/api/version", log=log, timeout_s=120, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(gateway_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with arbiter_gateway(gateway_home, tmp_path_factory.mktemp("gateway")) as server:
        yield server


@pytest.fixture
def ollama_provider(catalog: Catalog, gateway: Server) -> Iterator[Provider]:
    record, _ = catalog.register_remote(kind="ollama", name="qa-gateway", source="qa", base_url=gateway.url)
    provider = provider_for(record.spec, n_threads=1, n_ctx=512)
    provider.load()
    yield provider
    provider.unload()


def test_register_ollama_reads_the_context_window_from_the_server(catalog: Catalog, gateway: Server) -> None:
    record, created = catalog.register_remote(kind="ollama", name="qa-gateway", source="qa", base_url=gateway.url + "/")
    assert created and (record.spec.kind, record.spec.source, record.spec.base_url) == ("ollama", "qa", gateway.url)
    assert record.spec.context_window == 8192  # SmolLM2's, as the gateway's /api/show reports it
    assert record.spec.hardware.min_memory_mb == 0
    again, created_again = catalog.register_remote(kind="ollama", name="qa-gateway", source="qa", base_url=gateway.url)
    assert (created_again, again.version) == (False, record.version)
    with pytest.raises(UserError, match="does not know this model"):
        catalog.register_remote(kind="ollama", name="nope", source="nope", base_url=gateway.url)


def test_ollama_generate_and_stream(ollama_provider: Provider) -> None:
    assert isinstance(ollama_provider, OllamaProvider)
    for request in REQUESTS:
        whole = ollama_provider.generate(request)
        assert whole.text.strip() and whole.prompt_tokens > 0 and 0 < whole.completion_tokens <= request.max_tokens
        assert whole.finish_reason in ("stop", "length")
        assert 0 < whole.time_to_first_token_ms <= whole.generation_ms
        fragments, finished = drain(ollama_provider.stream(request))
        assert "".join(fragments) == whole.text == finished.text
        assert (finished.prompt_tokens, finished.completion_tokens) == (whole.prompt_tokens, whole.completion_tokens)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_through_the_gateway_answers_match_the_model_in_process(
    kind: str, catalog: Catalog, gateway: Server, session_pool
) -> None:
    """Through either API of the gateway or in-process, the same version gives the same answer and
    the same token counts at temperature 0 (the gateway's OpenAI API sends the usage chunk, so
    this is the path where an OpenAI-compatible server reports its own counters)."""
    record, _ = catalog.register_remote(kind=kind, name=f"qa-{kind}", source="qa", base_url=gateway.url,
                                        context_window=8192 if kind == "openai" else None)
    remote = provider_for(record.spec, n_threads=1, n_ctx=512)
    remote.load()
    local = session_pool.get(catalog.register(smollm2_path(), name="smollm2-135m")[0])
    try:
        for request in REQUESTS:
            served, direct = remote.generate(request), local.generate(request)
            assert (served.text, served.prompt_tokens, served.completion_tokens, served.finish_reason) == (
                direct.text, direct.prompt_tokens, direct.completion_tokens, direct.finish_reason)
    finally:
        remote.unload()


def test_a_request_the_server_refuses_is_the_callers_error_not_a_backend_fault(ollama_provider: Provider) -> None:
    """The gateway answers 400 for a prompt over the context: that must not open a breaker or fail over."""
    with pytest.raises(UserError, match="refused the request.*shorten the prompt") as refused:
        ollama_provider.generate(GenerationRequest(prompt="word " * 3000, max_tokens=4))
    assert not isinstance(refused.value, ProviderError)


def test_ollama_health_and_closing_a_stream_early(ollama_provider: Provider) -> None:
    assert ollama_provider.health().ok
    stream = ollama_provider.stream(GenerationRequest(prompt="Count: one, two, three,", max_tokens=16))
    assert next(stream)
    stream.close()
    assert ollama_provider.generate(GenerationRequest(prompt=PROMPT, max_tokens=4)).completion_tokens > 0


def test_a_killed_gateway_is_a_provider_error(catalog: Catalog, gateway_home: Path, tmp_path: Path) -> None:
    with arbiter_gateway(gateway_home, tmp_path) as server:
        record, _ = catalog.register_remote(kind="ollama", name="doomed", source="qa", base_url=server.url)
        provider = provider_for(record.spec, n_threads=1, n_ctx=512)
        provider.load()
        assert provider.health().ok
        stream = provider.stream(GenerationRequest(prompt="Count: one, two, three,", max_tokens=16))
        assert next(stream)
        server.kill()
        with pytest.raises(ProviderError, match=rf"doomed \('qa' at {server.url}\)"):
            drain(stream)
        with pytest.raises(ProviderError, match="cannot connect"):
            provider.generate(GenerationRequest(messages=QUESTION, max_tokens=4))
        with pytest.raises(ProviderError, match=server.url):
            drain(provider.stream(GenerationRequest(prompt=PROMPT, max_tokens=4)))
        assert not provider.health().ok
        provider.unload()


# --- bad input ------------------------------------------------------------------------------


def test_register_remote_refuses_bad_input_before_asking_any_server(catalog: Catalog) -> None:
    for kind in ("gguf", "onnx", "nope"):
        with pytest.raises(UserError, match=f"kind '{kind}' is not a served model; use ollama or openai"):
            catalog.register_remote(kind=kind, name="x", source="m", base_url="http://127.0.0.1:1")
    with pytest.raises(UserError, match="needs its server's URL: pass --base-url"):
        catalog.register_remote(kind="openai", name="x", source="m", context_window=512)
    for url in ("127.0.0.1:8000", "ftp://host/v1", "http://host:port/v1", "http:///v1", "http://host/v1?key=1"):
        with pytest.raises(UserError, match="invalid base URL"):
            catalog.register_remote(kind="openai", name="x", source="m", base_url=url, context_window=512)
    with pytest.raises(UserError, match="invalid model name"):
        catalog.register_remote(kind="ollama", name="Bad Name", source="m")
    assert catalog.list_versions() == []


def test_specs_stored_before_base_url_existed_still_parse() -> None:
    stored = ('{"name":"smollm2-135m","kind":"gguf","source":"/m.gguf","sha256":"' + "a" * 64 + '",'
              '"size_bytes":1,"capabilities":["chat"],"context_window":8192,"hardware":{"min_memory_mb":150}}')
    spec = ModelSpec.model_validate_json(stored)
    assert spec.base_url is None and spec.identity == "a" * 64


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("m.gguf", "--base-url", "http://127.0.0.1:8000"), "--base-url and --context-window are for served models"),
        (("m.gguf", "--context-window", "512"), "--base-url and --context-window are for served models"),
        (("qa", "--kind", "ollama", "--chat-format", "gemma"), "--chat-format is for GGUF files"),
        (("m", "--kind", "openai"), "pass --base-url"),
        (("m", "--kind", "openai", "--base-url", "localhost:8000", "--context-window", "512"), "invalid base URL"),
    ],
)
def test_cli_bad_combinations_are_one_clean_line(args: tuple[str, ...], expected: str) -> None:
    result = CliRunner().invoke(cli, ["models", "register", *args, "--name", "x"], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_registers_a_served_model(openai_server: Server) -> None:
    args = ["models", "register", SERVED_NAME, "--kind", "openai", "--name", "smollm2-served",
            "--base-url", openai_server.url, "--context-window", str(SERVER_CONTEXT), "--json"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    again = CliRunner().invoke(cli, args[:-1], catch_exceptions=False)
    assert again.exit_code == 0
    assert again.stdout.startswith("already registered as smollm2-served/1 (openai 'smollm2' at")
    payload = json.loads(first.stdout)
    assert (payload["created"], payload["kind"], payload["base_url"]) == (True, "openai", f"{openai_server.url}/v1")
