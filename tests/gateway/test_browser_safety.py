"""Browser safety, tried as an attacker's page and a user's browser app would: the Host check against
DNS rebinding, the Origin check against cross-site requests, CORS for the origins the user lists — by
httpx, by the real ``openai`` and ``ollama`` clients, and by headless Chromium running a page's
``fetch()`` — and unknown paths answering in each API's own error shape.

One gateway on loopback serves the module, on the shipped SmolLM2 (route ``qa``), with one page origin
listed in ``origins``; a page served from another loopback port stands for a site the user did not list.
A second gateway, with no model, binds 0.0.0.0 with a token for the off-loopback rules.
"""

from __future__ import annotations

import contextlib
import html
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from support import free_port

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.errors import ConfigError
from registry.gateway import Gateway
from registry.gateway.background import gateway_in_background
from registry.gateway.browser import BrowserPolicy
from registry.settings import get_settings

e2e = pytest.mark.e2e
unit = pytest.mark.unit
TOKEN = "browser-test-token"
EVIL = "http://evil.example"
CHAT = {"model": "qa", "messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 4,
        "temperature": 0}
GENERATE = {"model": "qa", "prompt": "Capital of France?", "stream": False, "options": {"num_predict": 4}}

# The page a browser app would be: the openai packages' kind of request (JSON, a bearer header, an
# x-stainless-* header: a preflight first), then a cross-site "simple" text/plain POST (no preflight).
PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
const gateway = "%(gateway)s";
async function call(path, headers, body) {
  try {
    const answer = await fetch(gateway + path, {method: "POST", headers: headers, body: JSON.stringify(body)});
    return {status: answer.status, body: await answer.json(), call_id: answer.headers.get("x-arbiter-call-id")};
  } catch (error) {
    return {error: String(error)};
  }
}
(async () => {
  const out = {};
  out.chat = await call("/v1/chat/completions",
    {"Content-Type": "application/json", "Authorization": "Bearer unused", "x-stainless-os": "Linux"}, %(chat)s);
  out.plain = await call("/api/generate", {"Content-Type": "text/plain"}, %(generate)s);
  document.getElementById("out").textContent = JSON.stringify(out);
})();
</script></body></html>"""


class _Pages(http.server.ThreadingHTTPServer):
    """The page above on a loopback port of its own: a site of its own to the browser."""

    daemon_threads = True

    def __init__(self, gateway_url: str) -> None:
        page = (PAGE % {"gateway": gateway_url, "chat": json.dumps(CHAT), "generate": json.dumps(GENERATE)}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 — http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def gateway_port() -> int:
    """Chosen before the gateway starts: the pages name it, and the gateway lists one page's origin."""
    return free_port()


@pytest.fixture(scope="module")
def pages(gateway_port: int) -> Iterator[dict[str, _Pages]]:
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    servers = {"listed": _Pages(gateway_url), "unlisted": _Pages(gateway_url)}
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers.values()]
    for thread in threads:
        thread.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path, shipped, gateway_port: int,
           pages: dict[str, _Pages]) -> Iterator[tuple[str, Gateway]]:
    home = tmp_path_factory.mktemp("browser-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, port=gateway_port, admin_token=TOKEN, keep_alive_s=600,
                            origins=(pages["listed"].url, "https://*.app.example"),
                            allowed_hosts=("gateway.lan", "*.corp.lan"))
    catalog = Catalog(settings)
    catalog.register(shipped[0].path, name="smollm2-135m", capabilities=list(shipped[0].capabilities))
    Routes(catalog).promote("qa", "smollm2-135m", 1, force=True)
    with gateway_in_background(settings) as running:
        yield running


def _calls(gateway: Gateway) -> int:
    gateway.recorder.flush()
    return gateway.store.query("select count(*) as n from calls")[0]["n"]


# --- Host: DNS rebinding -------------------------------------------------------------------------------


@e2e
def test_a_rebound_host_is_refused_in_each_api_shape_before_any_model_runs(url: str, gateway: Gateway) -> None:
    before = _calls(gateway)
    port = url.rsplit(":", 1)[1]
    ollama_api = httpx.post(f"{url}/api/generate", json=GENERATE, headers={"Host": f"evil.example:{port}"})
    openai_api = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"Host": "evil.example"})
    assert ollama_api.status_code == openai_api.status_code == 403
    assert ollama_api.json() == {"error": f"Host 'evil.example:{port}' is not allowed: a gateway on loopback answers "
                                          "only loopback names (localhost, 127.0.0.1, [::1]); list other names in "
                                          "ARBITER_ALLOWED_HOSTS"}
    error = openai_api.json()["error"]
    assert error["type"] == "permission_error" and error["code"] == 403 and "ARBITER_ALLOWED_HOSTS" in error["message"]
    for host in ("localhost.evil.example", "127.0.0.1.nip.io", "corp.lan.evil.example", "10.0.0.8"):
        assert httpx.get(f"{url}/api/tags", headers={"Host": host}).status_code == 403, host
    assert _calls(gateway) == before


@e2e
def test_loopback_names_and_the_listed_hosts_are_answered(url: str) -> None:
    port = url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LocalHost.", f"[::1]:{port}", "127.0.0.2",
                 f"ui.localhost:{port}", "gateway.lan", f"box.corp.lan:{port}"):
        assert httpx.get(f"{url}/api/tags", headers={"Host": host}).status_code == 200, host


# --- Origin: cross-site requests -----------------------------------------------------------------------


@e2e
def test_a_cross_site_text_plain_post_never_reaches_the_model(url: str, gateway: Gateway) -> None:
    before = _calls(gateway)
    for origin in (EVIL, "null", "http://127.0.0.1:1", "https://app.example", "https://x.app.example.evil.example"):
        refused = httpx.post(f"{url}/api/generate", content=json.dumps(GENERATE),
                             headers={"Content-Type": "text/plain", "Origin": origin})
        assert refused.status_code == 403, origin
        assert refused.json() == {"error": f"Origin '{origin}' is not allowed to call this gateway from a browser; "
                                           "list it in ARBITER_ORIGINS (comma-separated)"}
        assert "access-control-allow-origin" not in refused.headers  # the page cannot even read the refusal
    openai_api = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"Origin": EVIL})
    assert openai_api.status_code == 403 and openai_api.json()["error"]["type"] == "permission_error"
    preflight = httpx.options(f"{url}/v1/chat/completions",
                              headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    assert _calls(gateway) == before


@e2e
def test_a_listed_origin_gets_preflights_and_cors_headers(url: str, pages: dict[str, _Pages]) -> None:
    origin = pages["listed"].url
    asked = "authorization, content-type, x-stainless-os, x-stainless-retry-count, x-arbiter-token"
    preflight = httpx.options(f"{url}/v1/chat/completions", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": asked})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == asked
    assert "Origin" in preflight.headers["vary"]
    answer = httpx.post(f"{url}/api/generate", json=GENERATE, headers={"Origin": origin}, timeout=60)
    assert answer.status_code == 200 and answer.json()["response"]
    assert answer.headers["access-control-allow-origin"] == origin and "Origin" in answer.headers["vary"]
    assert "x-arbiter-call-id" in answer.headers["access-control-expose-headers"]
    wildcard = httpx.get(f"{url}/api/tags", headers={"Origin": "https://ui.app.example"})
    assert wildcard.headers["access-control-allow-origin"] == "https://ui.app.example"
    # the token check sits inside CORS: a browser app reads why it was refused
    unauthorized = httpx.get(f"{url}/admin/routes", headers={"Origin": origin})
    assert unauthorized.status_code == 401 and unauthorized.headers["access-control-allow-origin"] == origin


@e2e
def test_clients_without_an_origin_are_unaffected(url: str) -> None:
    chat = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0).chat.completions.create(**CHAT)
    assert chat.choices[0].message.content
    assert "qa" in [m.model for m in ollama.Client(host=url).list().models]
    same_origin = httpx.get(f"{url}/api/tags", headers={"Origin": url})  # a page the gateway served itself
    assert same_origin.status_code == 200


# --- a real browser --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (Debian: apt-get install --no-install-recommends chromium)")
    return found


def _open_in_browser(chromium: str, page_url: str) -> dict:
    """The page's result as headless Chromium leaves it in the DOM, once its fetches are done (virtual
    time waits for the network). Run in a session of its own, so no renderer outlives the test."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        browser = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=60000", "--dump-dom", page_url],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            dom, _ = browser.communicate(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):  # its whole session, if any of it is left
                os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert found is not None and found.group(1) != "pending", f"the page did not finish: {dom[-500:]}"
    return json.loads(html.unescape(found.group(1)))


@e2e
def test_a_page_on_a_listed_origin_gets_its_answers_in_a_real_browser(
        chromium: str, url: str, pages: dict[str, _Pages]) -> None:
    out = _open_in_browser(chromium, pages["listed"].url)
    assert out["chat"]["status"] == 200 and out["chat"]["body"]["choices"][0]["message"]["content"]
    assert re.fullmatch(r"[0-9a-f]{32}", out["chat"]["call_id"])  # an exposed header the app can read
    assert out["plain"]["status"] == 200 and out["plain"]["body"]["response"]


@e2e
def test_a_page_on_another_local_port_is_refused_in_a_real_browser(
        chromium: str, url: str, gateway: Gateway, pages: dict[str, _Pages]) -> None:
    before = _calls(gateway)
    out = _open_in_browser(chromium, pages["unlisted"].url)
    assert out == {"chat": {"error": "TypeError: Failed to fetch"}, "plain": {"error": "TypeError: Failed to fetch"}}
    assert _calls(gateway) == before  # the text/plain POST reached the gateway, and no model ran


# --- unknown paths, in each API's shape ------------------------------------------------------------------


@e2e
def test_unknown_paths_and_methods_answer_in_each_api_shape(url: str) -> None:
    openai_404 = httpx.post(f"{url}/v1/nowhere", json={})
    assert openai_404.status_code == 404
    error = openai_404.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "not_found_error"
    assert error["message"].startswith("no endpoint POST /v1/nowhere; this gateway serves ")
    assert "/v1/chat/completions" in error["message"] and "/api/" not in error["message"]
    with pytest.raises(openai.NotFoundError, match="no endpoint GET /v1/nowhere"):
        openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0).get("/nowhere", cast_to=object)

    ollama_404 = httpx.post(f"{url}/api/nowhere", json={})
    assert ollama_404.status_code == 404 and set(ollama_404.json()) == {"error"}
    assert "/api/chat" in ollama_404.json()["error"] and "/v1/" not in ollama_404.json()["error"]
    with pytest.raises(ollama.ResponseError, match="no endpoint POST /ollama/api/chat: the Ollama API is under") as refused:
        ollama.Client(host=f"{url}/ollama").chat(model="qa", messages=CHAT["messages"])  # a base URL with a path
    assert refused.value.status_code == 404

    wrong_method = httpx.get(f"{url}/api/chat")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json() == {"error": "GET is not allowed on /api/chat; use POST"}
    openai_405 = httpx.get(f"{url}/v1/chat/completions").json()["error"]
    assert openai_405["message"] == "GET is not allowed on /v1/chat/completions; use POST"
    elsewhere = httpx.get(f"{url}/nowhere")
    assert elsewhere.status_code == 404
    assert elsewhere.json() == {"error": "no endpoint GET /nowhere: the Ollama API is under /api/, the OpenAI API under /v1/"}


# --- off loopback, with a token ----------------------------------------------------------------------------


@e2e
def test_a_gateway_bound_off_loopback_with_a_token_answers_any_host(
        tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path) -> None:
    home = tmp_path_factory.mktemp("public-home")
    (home / "mlruns").mkdir()
    shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")
    settings = get_settings(home=home, host="0.0.0.0", port=free_port(), admin_token=TOKEN)
    with gateway_in_background(settings):
        url = f"http://127.0.0.1:{settings.port}"
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{url}/api/tags", headers={"Host": "gateway.example.com", **bearer}).status_code == 200
        assert httpx.get(f"{url}/api/tags", headers={"Host": "gateway.example.com"}).status_code == 401
        cross_site = httpx.get(f"{url}/api/tags", headers={"Host": "gateway.example.com", "Origin": EVIL, **bearer})
        assert cross_site.status_code == 403  # origins are checked wherever the gateway binds
        rebound = httpx.get(f"{url}/api/tags", headers={"Host": "evil.example", "Origin": EVIL, **bearer})
        assert rebound.status_code == 403  # a rebound page's own origin is not ours


# --- the rules and their settings, without a server -------------------------------------------------------


@unit
def test_the_policy_in_short() -> None:
    policy = BrowserPolicy.of(hosts=("gateway.lan",), origins=("http://localhost:*",), any_host=False)
    assert policy.refusal(host=None, origin=None, scheme="http") is None  # HTTP/1.0 without Host: not a browser
    assert policy.refusal(host="[::1]", origin="http://localhost:5173", scheme="http") is None
    assert policy.refusal(host="127.0.0.1:11434", origin="http://localhost.evil.example", scheme="http")
    assert policy.refusal(host="127.0.0.1:11434", origin="http://localhost:1/x", scheme="http")  # * stops at /
    assert "…" in policy.refusal(host="x" * 500, origin=None, scheme="http")  # a long value is cut, one line
    anyone = BrowserPolicy.of(hosts=(), origins=("*",), any_host=False)
    assert anyone.refusal(host="localhost", origin="https://anything.example", scheme="http") is None


@unit
def test_origins_and_hosts_come_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_ORIGINS", " http://localhost:3000, HTTPS://*.Example.com ,")
    monkeypatch.setenv("ARBITER_ALLOWED_HOSTS", "gateway.lan,[::1],*.corp.lan")
    settings = get_settings()
    assert settings.origins == ("http://localhost:3000", "https://*.example.com")
    assert settings.allowed_hosts == ("gateway.lan", "::1", "*.corp.lan")
    assert get_settings(origins=["*"]).origins == ("*",) and get_settings().model_copy().origins == settings.origins


@unit
@pytest.mark.parametrize(("name", "value", "expected"), [
    ("ORIGINS", "http://localhost:3000/", "ARBITER_ORIGINS='http://localhost:3000/': 'http://localhost:3000/' is not "
                                          "an origin: write scheme://host[:port] with no path or trailing slash"),
    ("ORIGINS", "localhost:3000", "is not an origin"),
    ("ORIGINS", "null", "is not an origin"),
    ("ALLOWED_HOSTS", "http://gateway.lan", "ARBITER_ALLOWED_HOSTS='http://gateway.lan': 'http://gateway.lan' is not a "
                                            "host name: write a name or address without scheme or port"),
    ("ALLOWED_HOSTS", "gateway.lan:11434", "is not a host name"),
])
def test_a_bad_origin_or_host_setting_is_one_line(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                  expected: str) -> None:
    monkeypatch.setenv(f"ARBITER_{name}", value)
    with pytest.raises(ConfigError, match=re.escape(expected)) as refused:
        get_settings()
    assert len(str(refused.value).splitlines()) == 1
