"""A user's own trained ONNX model behind the Provider protocol, run by onnxruntime.

A classifier (a text classifier, or a token-id classifier fed by its tokenizer, label = the argmax
of its logits) answers one text with one label (``Generation.text``), so a classification route can
be served, benchmarked and rolled out like any LLM route, by unchanged clients. A token-id embedder
answers ``embed`` (``/v1/embeddings``, ``/api/embed``) and nothing else. A classifier cannot chat: a
request it cannot answer honestly (tools, a response format, earlier assistant turns, several user
turns) is a :class:`UserError` naming what it can do, raised before the model runs. System turns
are allowed and not read: clients often send a default one, and no instruction could change which
of its fixed labels a classifier picks.

One ``InferenceSession`` per provider: ``run`` is thread-safe, so concurrent requests share it
(``load`` and ``unload`` take a lock). The file's sha256 is checked on load, as for a GGUF file, and
so is a token-id model's tokenizer's. A text over the tokens the model takes (its tokenizer's
truncation length) is refused, as llama.cpp's embedder refuses one; an embedding asked with
``truncate`` (Ollama's ``/api/embed`` default) embeds its first tokens instead.
Execution providers: CUDA first where this onnxruntime build has it and NVML sees a GPU, then CPU;
the one the session actually uses is recorded (``execution_provider``, in ``health``).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import Any

from registry.errors import ContextOverflowError, ProviderError, UserError
from registry.machine.hardware import accelerators_available
from registry.providers.base import Embedded, Generation, GenerationRequest, Health, run_to_end
from registry.providers.gguf_file import verify_file, verify_recorded
from registry.providers.onnx_graph import first_line
from registry.providers.onnx_tokens import TOKEN_EMBEDDER, TokenIds, load_tokenizer
from registry.spec import ModelSpec

MAX_TEXT_BYTES = 64 * 1024  # a classifier reads one text; past this it is a document, not a request
_CUDA, _CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class OnnxProvider:
    """Serve one registered ONNX model (kind ``onnx``): a text or token-id classifier, or a token-id embedder.

    Example::

        provider = OnnxProvider(spec, n_threads=2)
        provider.load()
        provider.generate(GenerationRequest(prompt="my card was charged twice")).text  # 'billing'
    """

    def __init__(self, spec: ModelSpec, *, n_threads: int) -> None:
        self.spec = spec
        self.load_ms: float | None = None
        self.execution_provider: str | None = None  # what load() got from onnxruntime
        self._n_threads = n_threads
        self._lock = threading.Lock()
        self._session: Any = None
        self._batched_input = True  # [N, 1] (skl2onnx's shape) or [N]
        provenance = spec.provenance
        self._token_ids = TokenIds.from_provenance(provenance) if "onnx_output" in provenance else None
        self._tokenizer: Any = None  # a token-id model's, loaded with the session; it never truncates
        self._truncating: Any = None  # the same, cutting at the model's length (for embed's truncate)

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            path = verify_file(self.spec)
            tokenizers = self._load_tokenizers()
            import onnxruntime  # lazy: the native library loads only when an ONNX model is served

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self._n_threads
            options.inter_op_num_threads = 1
            # Idle workers spin by default; on a few shared cores that CPU time lands in other calls' costs.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3  # errors only: a CUDA fallback is recorded, not printed
            started = time.perf_counter()
            try:
                session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                                       providers=execution_providers())
            except Exception as exc:  # onnxruntime's pybind errors share no base class of ours
                raise ProviderError(f"{self.spec.name}: onnxruntime could not load {path}: {first_line(exc)}") from exc
            self.load_ms = (time.perf_counter() - started) * 1000
            self._check_contract(session)
            self._batched_input = len(session.get_inputs()[0].shape or ()) != 1
            self.execution_provider = session.get_providers()[0]
            self._tokenizer, self._truncating = tokenizers
            self._session = session

    def generate(self, request: GenerationRequest) -> Generation:
        return run_to_end(self.stream(request))

    def stream(self, request: GenerationRequest) -> Generator[str, None, Generation]:
        """The label as one fragment. Timings: the label is the whole answer and arrives at once, so
        the time to first token is the whole call and there is no decode phase (``tokens_per_s`` is
        None, not a rate of a decoding that never happened). Tokens: ``completion_tokens`` is 1 (one
        label, so energy "per 1,000 tokens" reads as per 1,000 answers); ``prompt_tokens`` is a
        token-id model's token count, and for a text classifier the text's whitespace-separated
        words, about what a TF-IDF vectorizer reads (the model keeps no tokenizer arbiter could ask)."""
        if self._is_embedder:
            raise UserError(f"{self.spec.name} is an embedder: it answers embeddings (/v1/embeddings, /api/embed), "
                            "not generations")
        text = self._text_of(request)
        session = self._require_loaded()
        started = time.perf_counter()
        if self._token_ids is None:
            label, prompt_tokens = self._classify(session, text), len(text.split())
        else:
            label, prompt_tokens = self._classify_tokens(session, text)
        elapsed_ms = (time.perf_counter() - started) * 1000
        yield label
        return Generation(text=label, prompt_tokens=prompt_tokens, completion_tokens=1,
                          time_to_first_token_ms=elapsed_ms, generation_ms=elapsed_ms, finish_reason="stop",
                          n_threads=self._n_threads)

    def embed(self, texts: list[str], *, truncate: bool = False) -> Embedded:
        """One vector per text, batched (padding masked out), and the tokens read. Only an embedder
        embeds: a classifier's logits are no vector anyone should search by."""
        token_ids = self._token_ids
        if token_ids is None or not self._is_embedder:
            raise self._cannot("embeddings")
        session = self._require_loaded()
        encoded = [self._encode(text, truncate=truncate) for text in texts]
        if token_ids.attention_mask is None:  # padding would be read as tokens: one text at a time
            vectors = [row for ids in encoded for row in self._run_tokens(session, [ids])]
        else:
            vectors = list(self._run_tokens(session, encoded))
        return Embedded([vector.tolist() for vector in vectors], sum(len(ids) for ids in encoded))

    def health(self) -> Health:
        if self._session is None:
            return Health(ok=False, detail="not loaded")
        return Health(ok=True, detail="loaded", extra={"execution_provider": str(self.execution_provider),
                                                       "n_threads": str(self._n_threads)})

    def unload(self) -> None:
        with self._lock:
            self._session = None  # a run still holding it finishes; the session is freed after

    @property
    def _is_embedder(self) -> bool:
        return self.spec.provenance.get("onnx_contract") == TOKEN_EMBEDDER

    def _load_tokenizers(self) -> tuple[Any, Any]:
        """A token-id model's tokenizer, as is and truncating, refused when its file changed since
        registration (Nones for a text classifier)."""
        token_ids = self._token_ids
        if token_ids is None:
            return None, None
        path = verify_recorded(self.spec.name, token_ids.tokenizer, token_ids.tokenizer_sha256, what="tokenizer")
        tokenizer, limit = load_tokenizer(path)
        from tokenizers import Tokenizer

        truncating = Tokenizer.from_str(tokenizer.to_str())
        truncating.enable_truncation(max_length=limit)
        return tokenizer, truncating

    def _check_contract(self, session: Any) -> None:
        """The inputs and output the version was registered with are in the session: a file
        with the right sha256 always has them, so a miss is a spec registered by other means."""
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        provenance, token_ids = self.spec.provenance, self._token_ids
        wanted_in = ([provenance.get("onnx_input")] if token_ids is None else
                     ["input_ids", *filter(None, (token_ids.attention_mask, token_ids.token_type_ids))])
        wanted_out = provenance.get("onnx_label_output") if token_ids is None else token_ids.output
        if sorted(inputs) != sorted(wanted_in) or wanted_out not in outputs:
            raise ProviderError(
                f"{self.spec.name}: the model's inputs {inputs} and outputs {outputs} do not match its registered "
                f"contract (inputs {wanted_in}, output {wanted_out!r}); register the file again "
                "(arbiter models register FILE.onnx --kind onnx)"
            )

    def _classify(self, session: Any, text: str) -> str:
        import numpy as np

        rows = np.array([[text]] if self._batched_input else [text], dtype=object)
        try:
            (labels,) = session.run([self.spec.provenance["onnx_label_output"]], {self.spec.provenance["onnx_input"]: rows})
        except Exception as exc:  # a model that fails on a valid text is the backend's fault
            raise ProviderError(f"{self.spec.name}: onnxruntime failed: {first_line(exc)}") from exc
        label = labels.reshape(-1)[0]
        return label.decode() if isinstance(label, bytes) else str(label)  # an int64 label is its label's text

    def _classify_tokens(self, session: Any, text: str) -> tuple[str, int]:
        """A token-id classifier's label (the argmax of its logits, named by the registered labels) and the tokens read."""
        ids = self._encode(text, truncate=False)
        (logits,) = self._run_tokens(session, [ids])
        return self.spec.labels[int(logits.argmax())], len(ids)

    def _encode(self, text: str, *, truncate: bool) -> list[int]:
        """A text's ids; past the model's length a :class:`ContextOverflowError`, or with ``truncate`` its first ids."""
        assert self._token_ids is not None and self._tokenizer is not None
        ids = self._tokenizer.encode(text).ids
        limit = self._token_ids.max_tokens
        if not ids:  # a mean over no tokens is no vector, and a classifier would read nothing
            raise UserError(f"{self.spec.name}: the text {text[:40]!r} has no tokens for its tokenizer; send some text")
        if len(ids) <= limit:
            return ids
        if not truncate:
            raise ContextOverflowError(f"{self.spec.name}: the text is {len(ids)} tokens; it takes at most {limit} "
                                       "(its tokenizer's truncation length): shorten it")
        return self._truncating.encode(text).ids  # the tokenizer's own cut keeps its closing special tokens

    def _run_tokens(self, session: Any, encoded: list[list[int]]) -> Any:
        """Run rows of ids padded to the longest (pad positions masked 0); one pooled row per text."""
        token_ids = self._token_ids
        assert token_ids is not None
        length = max(len(ids) for ids in encoded)
        rows = [ids + [0] * (length - len(ids)) for ids in encoded]
        masks = [[1] * len(ids) + [0] * (length - len(ids)) for ids in encoded]
        try:
            (output,) = session.run([token_ids.output], token_ids.feeds(rows, masks))
        except Exception as exc:  # a model that fails on its own tokenizer's ids is the backend's fault
            raise ProviderError(f"{self.spec.name}: onnxruntime failed: {first_line(exc)}") from exc
        return token_ids.pooled(output, masks)

    def _require_loaded(self) -> Any:
        session = self._session
        if session is None:
            raise ProviderError(f"{self.spec.name}: generate called before load()")
        return session

    def _text_of(self, request: GenerationRequest) -> str:
        """The one text a classifier reads: the prompt, or the chat's one user turn (system turns
        allowed, not read). Anything else is refused by name."""
        if request.tools:
            raise self._cannot("tools")
        if request.json_schema is not None:
            raise self._cannot("a response format (its answer is always one of its labels)")
        if request.prompt is not None:
            text = request.prompt
        else:
            roles = [str(turn.get("role")) for turn in request.messages]
            others = sorted(set(roles) - {"system", "user"})
            if others:
                raise self._cannot(f"{' or '.join(repr(r) for r in others)} turns (no conversation history)")
            if roles.count("user") != 1:
                raise self._cannot(f"{roles.count('user')} user turns (send exactly one)")
            text = next(turn.get("content") for turn in request.messages if turn.get("role") == "user")
            if not isinstance(text, str):
                raise self._cannot("content other than text")
        if not text.strip():
            raise UserError(f"{self.spec.name}: the text to classify is empty; send the text whose label you want")
        size = len(text.encode())
        if size > MAX_TEXT_BYTES and self._token_ids is None:  # a token-id model's bound is its tokens
            raise ContextOverflowError(f"{self.spec.name}: the text is {size} bytes; a text classifier takes at most "
                                       f"{MAX_TEXT_BYTES} (64 KiB): shorten it")
        return text

    def _cannot(self, what: str) -> UserError:
        return UserError(f"{self.spec.name} is {what_it_does(self.spec)}; it cannot take {what}")


def what_it_does(spec: ModelSpec) -> str:
    """What a classifier can do, for every message that refuses it something:
    ``'a text classifier (labels a, b): it answers one text with its label'``."""
    return f"a text classifier (labels {', '.join(spec.labels) or 'unknown'}): it answers one text with its label"


def execution_providers() -> list[str]:
    """The execution providers a session asks for, best first: CUDA where this onnxruntime build
    has it (onnxruntime-gpu) and NVML sees an NVIDIA GPU, then always CPU."""
    return ([_CUDA] if ort_build().model_runs_on == _CUDA else []) + [_CPU]


@dataclass(frozen=True)
class OrtBuild:
    """The installed onnxruntime: its version, the execution providers the build has, which one an
    ONNX model would run on here (the first of :func:`execution_providers`), and why."""

    version: str
    device: str
    available_providers: tuple[str, ...]
    model_runs_on: str
    why: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def ort_build() -> OrtBuild:
    """This process's onnxruntime build (it cannot change under a running process)."""
    import onnxruntime

    available = tuple(onnxruntime.get_available_providers())
    built, gpu = _CUDA in available, "cuda" in accelerators_available()
    why = ("this onnxruntime has CUDA and NVML finds an NVIDIA GPU" if built and gpu
           else "this onnxruntime has CUDA, but NVML finds no NVIDIA GPU" if built
           else "this onnxruntime build has no CUDA (onnxruntime-gpu has it)")
    return OrtBuild(version=onnxruntime.__version__, device=onnxruntime.get_device(), available_providers=available,
                    model_runs_on=_CUDA if built and gpu else _CPU, why=why)
