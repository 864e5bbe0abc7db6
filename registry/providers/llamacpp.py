"""The embedded default backend: a GGUF file run in-process by llama.cpp (llama-cpp-python).

A ``Llama`` object is not thread-safe (concurrent calls segfault, see shared/STACK.md), so each
provider holds one lock around every use; parallelism comes from replicas, not threads.
The file's sha256 is checked on load: a version is immutable, and a file that changed since
registration is refused rather than silently served under the old version's name.

Consecutive requests share their prompt's prefix through llama.cpp's own cache (see :meth:`_fragments`):
a chat template's opening, a system prompt, the tools' block are evaluated once, not per request.

GPU offload (``n_gpu_layers``) is decided at load by :func:`plan_offload`: every layer when this
llama.cpp build can offload and a GPU is here, none otherwise, ``ARBITER_N_GPU_LAYERS`` to choose.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from typing import Any

from registry.errors import ContextOverflowError, ProviderError, UserError
from registry.machine.gpu import gpu_names
from registry.machine.hardware import accelerators_available, cpu_flags
from registry.providers import tools
from registry.providers.base import (
    Embedded,
    Generation,
    GenerationRequest,
    Health,
    StreamTimer,
    Tool,
    ToolCall,
    run_to_end,
)
from registry.providers.gguf_file import verify_file
from registry.settings import get_settings
from registry.spec import ModelSpec

# llama-cpp-python chat formats that drop a system message without a word (its "gemma" keeps user and
# model turns only): there the system text opens the first user turn instead.
_NO_SYSTEM_ROLE = frozenset({"gemma"})


class LlamaCppProvider:
    """Serve one registered GGUF version through llama.cpp.

    Example::

        provider = LlamaCppProvider(spec, n_threads=2, n_ctx=2048)
        provider.load()
        provider.generate(GenerationRequest(messages=({"role": "user", "content": "Hi"},)))
    """

    def __init__(
        self, spec: ModelSpec, *, n_threads: int, n_ctx: int, seed: int = 0, n_gpu_layers: int | None = None
    ) -> None:
        self.spec = spec
        self.load_ms: float | None = None
        self._n_gpu_layers = n_gpu_layers  # None: the setting, else all or none (see plan_offload)
        self.offload: Offload | None = None  # what load() decided
        self._n_threads = n_threads
        self._n_ctx = min(n_ctx, spec.context_window)
        self._seed = seed
        self._lock = threading.Lock()
        self._llm: Any = None

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def load(self) -> None:
        with self._lock:
            if self._llm is not None:
                return
            path = verify_file(self.spec)
            from llama_cpp._utils import suppress_stdout_stderr  # lazy: importing llama_cpp loads the library

            offload = offload_here(self._n_gpu_layers)
            skip_amx_repack()
            started = time.perf_counter()
            try:
                # llama.cpp prints some context notes straight to stderr, past verbose=False.
                with suppress_stdout_stderr(disable=False):
                    self._llm = _prompt_counting_llama()(
                        model_path=str(path),
                        n_gpu_layers=offload.n_gpu_layers,
                        n_ctx=self._n_ctx,
                        n_threads=self._n_threads,
                        n_threads_batch=self._n_threads,  # else prompt processing takes every core
                        seed=self._seed,
                        chat_format=self.spec.chat_format,
                        verbose=False,
                        **self._embedding_params(),
                    )
            except (ValueError, RuntimeError) as exc:
                raise ProviderError(f"{self.spec.name}: llama.cpp could not load {path}: {exc}") from exc
            self.load_ms = (time.perf_counter() - started) * 1000
            self.offload = offload

    def generate(self, request: GenerationRequest) -> Generation:
        return run_to_end(self.stream(request))

    def stream(self, request: GenerationRequest) -> Generator[str, None, Generation]:
        """With tools, the answer is first decoded in the call format and held back, so a client never
        sees the format. Under ``auto`` an answer with no whole call (``[]``: no function is needed; or
        a call cut by ``max_tokens``) is followed by a text answer decoded without tools, streamed; both
        passes count in the tokens. Under ``required`` or a name, a call cut before it was whole is
        an empty answer with ``finish_reason "length"``."""
        timer = StreamTimer()
        grammar = self._grammar_for(request)  # before the lock and any decoding: a bad schema is the caller's
        calls: tuple[ToolCall, ...] = ()
        finish_reason: str | None = None
        tally = _Tally()
        with self._lock:
            llm = self._require_loaded()
            _check_parses(llm, grammar)
            if request.uses_tools:
                calls, finish_reason, first_at = self._calls(llm, request, grammar, tally)
                if request.tool_choice == "auto" and (not calls or tools.repeats_history(calls, request.messages)):
                    # "[]", a call max_tokens cut before it was whole, or only calls already answered: answer in text
                    calls, request, grammar, finish_reason = (), replace(request, tool_choice="none"), None, None
                elif calls:
                    timer.mark_first(at=first_at)
            if finish_reason is None:
                for fragment, finish in self._fragments(llm, request, grammar, tally):
                    if finish is not None:
                        finish_reason = finish
                        continue
                    timer.add(fragment)  # an empty first fragment still marks the first token
                    if fragment:
                        yield fragment
        completion_tokens = tally.fed + (1 if finish_reason == "length" else 0)  # the last token, sampled unfed
        return timer.generation(prompt_tokens=tally.prompt, completion_tokens=completion_tokens,
                                finish_reason="tool_calls" if calls else finish_reason, n_threads=self._n_threads,
                                n_gpu_layers=self.offload.n_gpu_layers if self.offload else None, tool_calls=calls)

    def _calls(
        self, llm: Any, request: GenerationRequest, grammar: Any, tally: _Tally
    ) -> tuple[tuple[ToolCall, ...], str | None, float | None]:
        """The answer decoded in the call format and held: its calls (those it completed, when
        ``max_tokens`` cut it), llama.cpp's finish reason, and when its first token came."""
        held: list[str] = []
        first_at: float | None = None
        finish_reason: str | None = None
        for fragment, finish in self._fragments(llm, request, grammar, tally):
            if finish is not None:
                finish_reason = finish
                continue
            first_at = first_at or time.perf_counter()
            held.append(fragment)
        calls, _ = tools.parse_calls("".join(held))
        return calls, finish_reason, first_at

    def _grammar_for(self, request: GenerationRequest) -> Any:
        """The grammar the answer is decoded under: the JSON schema's, the tools', or none."""
        if request.uses_tools:
            if request.json_schema is not None:
                raise UserError(f"{self.spec.name}: a structured-output format and tools cannot be used together "
                                "(llama.cpp decodes under one grammar at a time); drop one of them")
            return _tools_grammar(request.tools, request.tool_choice, request.parallel_tool_calls)
        if request.json_schema is not None:
            return _grammar(request.json_schema)
        return None

    def embed(self, texts: list[str], *, truncate: bool = False) -> Embedded:
        """One mean-pooled vector per text (versions registered with the ``embedding`` capability).
        llama.cpp embeds at most ``n_batch`` (512) tokens of one input; past that it cuts the text
        silently unless told not to, so a vector never stands for text it did not read unless asked."""
        if "embedding" not in self.spec.capabilities:
            raise ProviderError(f"{self.spec.name} was not registered with the 'embedding' capability")
        with self._lock:
            llm = self._require_loaded()
            try:
                vectors, tokens = llm.embed(texts, truncate=truncate, return_count=True)
            except ValueError as exc:  # "Requested tokens (700) exceed batch size of 512"
                llm.reset()  # embed() cleared the KV cache of what the prompt cache says is there
                raise ContextOverflowError(f"{self.spec.name}: {exc}; shorten the input") from None
        return Embedded(vectors, int(tokens))

    def _embedding_params(self) -> dict[str, Any]:
        """An embedding version is loaded as one: llama.cpp decides at load time what a context computes."""
        if "embedding" not in self.spec.capabilities:
            return {}
        import llama_cpp

        return {"embedding": True, "pooling_type": llama_cpp.LLAMA_POOLING_TYPE_MEAN}

    def health(self) -> Health:
        if self._llm is None:
            return Health(ok=False, detail="not loaded")
        extra = {"n_ctx": str(self._n_ctx)}
        if self.offload is not None:
            extra["n_gpu_layers"] = str(self.offload.n_gpu_layers)
        return Health(ok=True, detail="loaded", extra=extra)

    def unload(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    def _require_loaded(self) -> Any:
        if self._llm is None:
            raise ProviderError(f"{self.spec.name}: generate called before load()")
        return self._llm

    def _fragments(
        self, llm: Any, request: GenerationRequest, grammar: Any, tally: _Tally
    ) -> Iterator[tuple[str, str | None]]:
        """Yield ``(text, None)`` per generated token, then ``("", finish_reason)``; add the pass's
        prompt and fed-back tokens to ``tally``.

        No ``reset()`` first: llama.cpp keeps the last prompt and answer in its KV cache, and
        llama-cpp-python evaluates only what follows their longest common prefix with the new prompt,
        so a chat template's opening, a system prompt and the tools' block (about 300 tokens) are not
        read again on every request. The answer stays the same: the sampler is rebuilt and re-seeded on
        each call, and a token's logits do not depend on how its prefix was batched (checked greedy and
        sampled, cached against reset, on both shipped models; tests/providers/test_llamacpp_provider.py).
        What changes is speed: a request that shares a prefix with the one before is faster, which is
        what serving it costs. A decode that failed part-way leaves the cache reset, never half-written.
        """
        params: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": self._seed if request.seed is None else request.seed,
            "stop": list(request.stop) or None,
            "stream": True,
        }
        if grammar is not None:  # decoding constrained by a grammar (a JSON schema's or the tools')
            params["grammar"] = grammar
        try:
            if request.messages:
                messages = tools.chat_messages(request, system_role=self.spec.chat_format not in _NO_SYSTEM_ROLE)
                for chunk in llm.create_chat_completion(messages=messages, **params):
                    choice = chunk["choices"][0]
                    if choice.get("finish_reason") is not None:
                        yield "", choice["finish_reason"]
                    elif "content" in choice["delta"]:
                        yield choice["delta"]["content"] or "", None
            else:
                for chunk in llm.create_completion(prompt=request.prompt, **params):
                    choice = chunk["choices"][0]
                    if choice.get("finish_reason") is not None:
                        yield "", choice["finish_reason"]
                    else:
                        yield choice["text"], None
        except ValueError as exc:
            if "exceed context window" in str(exc):  # "Requested tokens (…) exceed context window of …"
                raise ContextOverflowError(
                    f"{self.spec.name}: {exc}; shorten the prompt or lower max_tokens"
                ) from None
            llm.reset()
            raise ProviderError(f"{self.spec.name}: {exc}") from exc
        except RuntimeError as exc:
            llm.reset()
            raise ProviderError(f"{self.spec.name}: {exc}") from exc
        tally.add(llm)


@dataclass
class _Tally:
    """Prompt and completion tokens of one request, summed over its passes (a tools pass, then text).

    Stream chunks are not tokens: llama-cpp-python joins the tokens of a multi-byte character into one
    chunk (an emoji answer of 24 tokens arrives as 8 chunks), and its perf counters count only what was
    evaluated, the prompt's cached prefix not among it. After a pass the context holds the whole prompt
    and each generated token fed back — all of them, except the last when generation stopped at
    ``max_tokens`` (the caller adds it) — so the prompt's length and ``n_tokens`` say both."""

    prompt: int = 0
    fed: int = 0

    def add(self, llm: Any) -> None:
        self.prompt += llm.prompt_tokens
        self.fed += llm.n_tokens - llm.prompt_tokens


@functools.cache
def _prompt_counting_llama() -> type:
    """``Llama`` that keeps the length of the prompt it was last asked to continue (``prompt_tokens``).
    The prompt is tokenized inside ``create_*completion`` (after the chat template), and ``generate`` is
    the one place it passes whole, before the cached prefix is cut from it."""
    from llama_cpp import Llama

    class PromptCountingLlama(Llama):  # type: ignore[misc]
        prompt_tokens = 0

        def generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
            self.prompt_tokens = len(tokens)
            self._evaluate_two_at_least(tokens)
            return super().generate(tokens, *args, **kwargs)

        def _evaluate_two_at_least(self, tokens: Any) -> None:
            """Leave at least the prompt's last two tokens to evaluate. When all but one are cached
            (the same prompt again), llama-cpp-python evaluates that one alone, and ggml computes a
            one-token batch with other kernels than a longer one: the last bits of its logits differ,
            enough to flip a greedy choice (seen: the same request twice, two answers). Two or more
            take the batch path a fresh prompt takes."""
            if len(tokens) - Llama.longest_token_prefix(self._input_ids.tolist(), list(tokens)) >= 2:
                return
            if len(tokens) > 2:
                self.n_tokens = len(tokens) - 2  # generate() then keeps this prefix and evaluates the rest
            else:
                self.reset()

    return PromptCountingLlama


@functools.cache
def skip_amx_repack() -> bool:
    """Load every model without llama.cpp's extra CPU buffer types where the CPU advertises AMX.

    On an AMX machine ggml repacks Q4/Q8 weights into AMX tiles; in the VMs we run on (Xeon with
    ``amx_int8`` in its flags) the first batched decode then dies with SIGSEGV, every prompt longer
    than a couple of tokens (seen 5/5; ``n_batch=1`` or no extra buffer types both avoid it). A crash
    takes the whole gateway down, a slower matmul does not, so correctness wins on every AMX CPU.
    Llama() builds its model parameters itself, so the default it starts from is what we change
    (process-wide, once: the decision is the machine's)."""
    if not {"amx_tile", "amx_int8"} & cpu_flags():
        return False
    import llama_cpp.llama_cpp as native

    defaults = native.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    native.llama_model_default_params = without_extra_buffers
    return True


@functools.lru_cache(maxsize=32)
def _grammar(json_schema: str) -> Any:
    """llama.cpp's grammar for a JSON Schema, built once per schema (it costs milliseconds)."""
    from llama_cpp import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(json_schema, verbose=False)
    except (ValueError, KeyError, TypeError, AssertionError, RecursionError) as exc:  # llama.cpp asserts on some
        raise UserError(f"the JSON schema cannot be turned into a grammar: {exc}; "
                        "use a JSON Schema of objects, arrays, strings, numbers, booleans and enums") from None


_PARSED: set[str] = set()  # grammars llama.cpp has parsed once (parsing depends on the text alone)


def _check_parses(llm: Any, grammar: Any) -> None:
    """``UserError`` when llama.cpp cannot parse ``grammar``. Its sampler for a grammar it cannot
    parse is NULL, which llama-cpp-python adds to the chain as it is: the first token then segfaults
    the whole process. The converter's output should always parse; a schema with an odd regex
    ``pattern`` is where it might not, so it is checked once per grammar, before any decoding."""
    if grammar is None or grammar._grammar in _PARSED:
        return
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar._grammar.encode(), grammar._root.encode())
    if not sampler:
        raise UserError("llama.cpp cannot parse the grammar made from the schema (a regex pattern it cannot "
                         "express?); simplify the schema's patterns")
    llama_cpp.llama_sampler_free(sampler)
    if len(_PARSED) >= 256:  # bounded: every new set of tools a client sends is a new grammar
        _PARSED.clear()
    _PARSED.add(grammar._grammar)


@functools.lru_cache(maxsize=32)
def _tools_grammar(declared: tuple[Tool, ...], choice: str, parallel: bool) -> Any:
    """llama.cpp's grammar for a set of tools and a choice (``tools.grammar_text``), built once."""
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(tools.grammar_text(declared, choice, parallel), verbose=False)


@dataclass(frozen=True)
class LlamaBuild:
    """What the installed llama.cpp was built with: its backends and their flags (parsed from
    ``llama_print_system_info``), and whether it can offload layers to a GPU at all — a CPU-only
    wheel silently ignores ``n_gpu_layers``, so this is the only way to know."""

    version: str
    gpu_offload: bool
    max_devices: int
    mmap: bool
    mlock: bool
    backends: dict[str, dict[str, str]]
    system_info: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def llama_build() -> LlamaBuild:
    """This process's llama.cpp build (it cannot change under a running process)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    return LlamaBuild(
        version=metadata.version("llama-cpp-python"),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        max_devices=int(llama_cpp.llama_max_devices()),
        mmap=bool(llama_cpp.llama_supports_mmap()),
        mlock=bool(llama_cpp.llama_supports_mlock()),
        backends=parse_system_info(info),
        system_info=info,
    )


def parse_system_info(info: str) -> dict[str, dict[str, str]]:
    """``"CUDA : ARCHS = 890 | USE_GRAPHS = 1 | CPU : SSE3 = 1 | AVX2 = 1 |"`` →
    ``{"CUDA": {"ARCHS": "890", "USE_GRAPHS": "1"}, "CPU": {"SSE3": "1", "AVX2": "1"}}``.

    A backend name is the word before ``:``; it opens the pair it is written in front of."""
    backends: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for part in filter(None, (p.strip() for p in info.split("|"))):
        if ":" in part:
            name, _, part = part.partition(":")
            current = backends.setdefault(name.strip(), {})
            part = part.strip()
        key, _, value = part.partition("=")
        if current is not None and key.strip():
            current[key.strip()] = value.strip()
    return backends


@dataclass(frozen=True)
class Offload:
    """How many layers llama.cpp is asked to put on the GPU (-1: all, 0: none), and why."""

    n_gpu_layers: int
    why: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_offload(requested: int | None, *, build_offloads: bool, gpus: list[str]) -> Offload:
    """The offload decision, from what was asked (``None``: decide), whether the llama.cpp build
    has a GPU backend and which GPUs are here (NVIDIA, or ``"Apple GPU"`` for Metal).

    Without a GPU backend the build ignores ``n_gpu_layers``, so 0 is recorded whatever was
    asked, with the reason: a figure that claims offload must mean the GPU did the work."""
    if not build_offloads:
        asked = f"; n_gpu_layers={requested} was asked for and has no effect" if requested else ""
        return Offload(0, f"none: this llama.cpp build has no GPU backend (a CPU-only build){asked}")
    if requested is not None:
        return Offload(requested, f"as asked: n_gpu_layers={requested} (ARBITER_N_GPU_LAYERS or the caller)")
    if not gpus:
        return Offload(0, "none: the build can offload but no GPU is here")
    return Offload(-1, f"all layers: the build offloads and {', '.join(gpus)} is here")


def offload_here(requested: int | None = None) -> Offload:
    """:func:`plan_offload` for this machine, ``requested`` defaulting to the setting."""
    if requested is None:
        requested = get_settings().n_gpu_layers
    gpus = gpu_names() + (["Apple GPU"] if "metal" in accelerators_available() else [])
    return plan_offload(requested, build_offloads=llama_build().gpu_offload, gpus=gpus)
