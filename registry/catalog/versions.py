"""The catalog: model families as MLflow registered models, each version one immutable ModelSpec.

A version is written once — spec tags, the whole spec as the ``arbiter.spec`` tag (read back
without an artifact download), and a ``spec.json`` artifact in an MLflow run for provenance —
and never edited. Only ``arbiter.status`` moves (testing → active → deprecated). Registering the
same model again under the same name returns the existing version: the same file (sha256), or
for a model another server serves, the same kind, name on the server and URL (``arbiter.identity``).
"""

from __future__ import annotations

import math
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from registry.catalog.mlflow_client import experiment_id, make_client, registered_model_or_none, retry_locked
from registry.errors import NotFoundError, ProviderError, UserError, one_line
from registry.providers import describe_remote
from registry.providers.chat_template import inspect_chat_template, template_sha256
from registry.providers.coreml_package import inspect_mlpackage, package_sha256
from registry.providers.gguf_file import inspect_gguf, sha256_of
from registry.providers.onnx_model import inspect_onnx
from registry.providers.onnx_tokens import TOKEN_CLASSIFIER
from registry.results.events import event_row
from registry.results.store import ResultsStore
from registry.settings import Settings
from registry.spec import (
    NAME_PATTERN,
    REMOTE_KINDS,
    ROUTE_PREFIX,
    Hardware,
    ModelKind,
    ModelSpec,
    Status,
    VersionRecord,
    normalize_base_url,
    parse_ref,
    remote_identity,
    validate_model_name,
)

TAG_ROLE = "arbiter.role"
TAG_SPEC = "arbiter.spec"
TAG_STATUS = "arbiter.status"
TAG_SHA = "arbiter.sha256"
TAG_IDENTITY = "arbiter.identity"
TAG_PROVENANCE = "arbiter.provenance."  # + each provenance key: what the MLflow UI shows and a search can filter on
METRIC_PREFIX = "metric."  # provenance keys that are training metrics, also logged on the registration run
REGISTRATIONS_EXPERIMENT = "arbiter-registrations"
# llama.cpp needs about the file's size mapped plus context and scratch buffers.
_RUNTIME_OVERHEAD_MB = 150
# A text classifier reads one text, not tokens in a window: a nominal bound (the ONNX provider refuses a
# text over 64 KiB). A token-id model's window is its tokenizer's truncation length.
ONNX_CONTEXT_WINDOW = 8192
# Characters MLflow takes in both a tag key and a metric name, so every provenance key is valid as either.
_PROVENANCE_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,200}$")


class Catalog:
    """Register, list, show and move the status of model versions.

    Example::

        catalog = Catalog(get_settings())
        record, created = catalog.register(Path("models/smollm2.gguf"), name="smollm2-135m",
                                           capabilities=["chat", "text-generation"])
        catalog.set_status(record.name, record.version, Status.ACTIVE)
    """

    def __init__(self, settings: Settings, store: ResultsStore | None = None) -> None:
        self.settings = settings
        self.store = store or ResultsStore(settings.results_dir)
        self._client = None

    @property
    def client(self):  # mlflow.MlflowClient, built on first use
        """MLflow's client, for the catalog's own modules and for tests checking what was written.
        Other wings ask by name instead (``RouteModel``, ``tracking``, ``set_version_tag``), so the
        lock retry and the tag formats stay in the catalog."""
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    # --- registration -------------------------------------------------------------------

    def register(
        self,
        path: Path,
        *,
        name: str,
        capabilities: list[str] | None = None,
        chat_format: str | None = None,
        family: str | None = None,
        provenance: dict[str, str] | None = None,
        needs: dict[str, Any] | None = None,
        allow_template_errors: bool = False,
    ) -> tuple[VersionRecord, bool]:
        """Register a GGUF file; returns ``(record, created)`` — ``created`` is False when the
        same file was already registered under ``name``. ``needs`` declares hardware needs beyond
        the memory the file implies (e.g. ``{"cpu_flags": ["avx2"]}``, see ``spec.Hardware``).

        The file's chat template is code llama-cpp-python runs on every chat, so it is rendered
        now with sample conversations in the same sandbox (``providers/chat_template``): one that
        fails is refused, or with ``allow_template_errors`` registered with the reason as its
        ``chat_template_error`` provenance; its sha256 is always recorded (``chat_template_sha256``)."""
        validate_model_name(name)
        path = path.expanduser().resolve()
        info = inspect_gguf(path)
        sha = sha256_of(path)
        size = path.stat().st_size
        hardware = Hardware(min_memory_mb=size // (1024 * 1024) + _RUNTIME_OVERHEAD_MB).declared(needs)  # checked first
        existing = self._find_by_identity(name, sha)
        if existing is not None:
            if needs and existing.spec.hardware != hardware:  # silently keeping the old needs would mislead
                raise UserError(
                    f"{existing.ref} is this file already, registered with other hardware needs "
                    f"({_needs_text(existing.spec.hardware)}); a version is immutable: register it under another "
                    "name to declare different needs"
                )
            return existing, False
        if chat_format is not None:
            _check_chat_format(chat_format)
        template = _template_provenance(path, info, allow_template_errors)
        spec = _build_spec(
            name=name,
            kind=ModelKind.GGUF,
            source=str(path),
            sha256=sha,
            size_bytes=size,
            # tools: a chat version calls them under our grammar (ModelSpec.can_call_tools says why)
            capabilities=tuple(capabilities or ("text-generation", "chat", "tools")),
            context_window=info.context_window,
            architecture=info.architecture,
            quantization=info.quantization,
            family=family or name,  # a catalog model is a family; the architecture has its own field
            chat_format=chat_format,
            hardware=hardware,
            provenance={"gguf_name": info.model_name or "", **template, **(provenance or {})},
        )
        if chat_format is None and not info.has_chat_template and "chat" in spec.capabilities:
            raise UserError(
                f"{path} has no chat template; pass --chat-format (e.g. 'gemma', 'chatml') "
                "or register it without the 'chat' capability"
            )
        return self._create_version(spec), True

    def register_remote(
        self,
        *,
        kind: str,
        name: str,
        source: str,
        base_url: str | None = None,
        capabilities: list[str] | None = None,
        context_window: int | None = None,
        family: str | None = None,
        provenance: dict[str, str] | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Register a model another server serves: ``kind`` ``ollama`` (``source`` is its Ollama
        name, ``base_url`` the host, None for ``OLLAMA_HOST``) or ``openai`` (``source`` is the
        model id, ``base_url`` the API root, ``/v1`` added to a bare host).

        The server is asked now, so a typo fails here rather than at the first request: it must
        answer and know the model. The context window comes from Ollama's ``/api/show``; the
        OpenAI API has no such field, so an ``openai`` model needs ``context_window``. Returns
        ``(record, created)``; the same kind, source and URL under ``name`` again is not a new
        version. Example::

            catalog.register_remote(kind="openai", name="llama3-vllm", source="meta-llama/Llama-3.2-1B",
                                    base_url="http://127.0.0.1:8000/v1", context_window=8192)
        """
        validate_model_name(name)
        if kind not in REMOTE_KINDS:
            raise UserError(
                f"kind {kind!r} is not a served model; use ollama or openai (a GGUF file is registered by its path)"
            )
        if kind == ModelKind.OPENAI and base_url is None:
            raise UserError("an openai model needs its server's URL: pass --base-url, e.g. http://127.0.0.1:8000/v1")
        base_url = normalize_base_url(kind, base_url)
        existing = self._find_by_identity(name, remote_identity(kind, source, base_url))
        if existing is not None:
            return existing, False
        if kind == ModelKind.OPENAI and context_window is None:
            raise UserError(
                "the OpenAI API does not report a model's context window: pass --context-window N "
                "(the server's context size, e.g. vLLM's --max-model-len or llama.cpp's --n_ctx)"
            )
        try:
            served = describe_remote(kind, source, base_url)
        except ProviderError as exc:
            raise UserError(f"cannot register {name}: {exc}") from None
        window = context_window or served.context_window
        if window is None:
            raise UserError(f"{source!r}: the server does not report its context length; pass --context-window N")
        spec = _build_spec(
            name=name,
            kind=kind,
            source=source,
            base_url=base_url,
            capabilities=tuple(capabilities or ("text-generation", "chat")),
            context_window=window,
            architecture=served.architecture,
            quantization=served.quantization,
            family=family or name,
            hardware=Hardware(accelerators=("remote",), min_memory_mb=0),  # the memory is the server's
            provenance={"served_by": base_url or "OLLAMA_HOST", **(provenance or {})},
        )
        return self._create_version(spec), True

    def register_coreml(
        self,
        path: Path,
        *,
        name: str,
        capabilities: list[str] | None = None,
        context_window: int | None = None,
        family: str | None = None,
        provenance: dict[str, str] | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Register a CoreML package (a ``.mlpackage`` directory); ``(record, created)`` as for a
        GGUF file, its identity the sha256 over the package's files (``coreml_package``).

        It is validated here (manifest, spec, referenced weights) so a damaged copy registers
        nothing, and it needs macOS on Apple Silicon (accelerator ``ane``): the selector excludes
        it elsewhere, saying so. Its context window is its ``input_ids`` input's length, else
        ``context_window`` must be given. Example::

            catalog.register_coreml(Path("smollm2.mlpackage"), name="smollm2-coreml")
        """
        validate_model_name(name)
        path = path.expanduser().resolve()
        info = inspect_mlpackage(path)
        sha = package_sha256(path)
        existing = self._find_by_identity(name, sha)
        if existing is not None:
            return existing, False
        window = context_window or info.context_window
        if window is None:
            raise UserError(
                f"{path} has no input_ids input of bounded length (its inputs: {'; '.join(info.inputs)}), so its "
                "context window is unknown; pass --context-window N (the most tokens the model takes)"
            )
        spec = _build_spec(
            name=name,
            kind=ModelKind.COREML,
            source=str(path),
            sha256=sha,
            size_bytes=info.size_bytes,
            capabilities=tuple(capabilities or ("text-generation",)),  # chat needs a template a package lacks
            context_window=window,
            architecture=info.model_type,
            quantization=info.weight_dtype,
            family=family or name,
            hardware=info.hardware(),
            provenance={**info.provenance(), **(provenance or {})},
        )
        return self._create_version(spec), True

    def register_onnx(
        self,
        path: Path,
        *,
        name: str,
        labels: list[str] | None = None,
        tokenizer: Path | None = None,
        family: str | None = None,
        provenance: dict[str, str] | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Register an ONNX model (a user's own trained model); ``(record, created)`` as for a GGUF
        file, its identity the file's sha256.

        The file is validated as the provider will run it (``providers/onnx_model`` and
        ``onnx_tokens``: checker, opsets, one of the contracts, a real onnxruntime session), so a
        model that could never answer registers nothing. A text classifier's ``labels``, when given, must be the model's
        labels (as a set; the model's order is kept). A token-id model (``input_ids`` in) needs its
        ``tokenizer`` (a ``tokenizer.json``, whose path and sha256 the version records and its
        provider checks on load); a token-id classifier needs ``labels`` in its logits' order and
        serves classification, an embedder ``embedding``. ``provenance`` (training data, code, ``metric.<name>``
        entries…) is merged over what the file says about itself; each entry becomes an
        ``arbiter.provenance.<key>`` version tag and each metric a metric of the registration run.
        The same file again under ``name`` is the same version, and must not claim other
        provenance. Example::

            catalog.register_onnx(Path("ticket-topic.onnx"), name="ticket-topic-clf",
                                  labels=["billing", "technical", "account", "shipping"],
                                  provenance={"training_code": "git:4f2a9c1", "metric.accuracy": "0.94"})
        """
        validate_model_name(name)
        path = path.expanduser().resolve()
        info = inspect_onnx(path, tokenizer=None if tokenizer is None else tokenizer.expanduser().resolve(),
                            labels=labels)
        if info.token_ids is None and labels is not None and set(labels) != set(info.labels):
            raise UserError(
                f"{path}: its labels are {', '.join(info.labels)}, not the given {', '.join(labels)}; "
                "pass --labels as the model's labels, or retrain it on the labels you mean"
            )
        sha = sha256_of(path)
        merged = {**info.provenance(), **(provenance or {})}
        existing = self._find_by_identity(name, sha)
        if existing is not None:
            _same_provenance(existing, merged)
            return existing, False
        spec = _build_spec(
            name=name,
            kind=ModelKind.ONNX,
            source=str(path),
            sha256=sha,
            size_bytes=info.size_bytes,
            capabilities=info.capabilities,
            context_window=ONNX_CONTEXT_WINDOW if info.token_ids is None else info.token_ids.max_tokens,
            architecture=info.contract,
            family=family or name,
            hardware=Hardware(accelerators=("cpu", "cuda"), min_memory_mb=info.min_memory_mb()),
            labels=info.labels,
            provenance=merged,
        )
        return self._create_version(spec), True

    def _create_version(self, spec: ModelSpec) -> VersionRecord:
        spec_json = _fitting_spec_json(spec)  # these three are checked before anything is written
        provenance_tags = _provenance_tags(spec.provenance)
        metrics = _training_metrics(spec.provenance)
        client = self.client
        if registered_model_or_none(client, spec.name) is None:
            retry_locked(lambda: client.create_registered_model(spec.name, tags={TAG_ROLE: "catalog"}))
        run_id = self._log_spec_run(spec, metrics)
        tags = {
            TAG_SPEC: spec_json,
            TAG_STATUS: Status.TESTING.value,
            TAG_SHA: spec.sha256 or "",
            TAG_IDENTITY: spec.identity,
            "arbiter.kind": str(spec.kind),
            "arbiter.capabilities": ",".join(spec.capabilities),
            "arbiter.context_window": str(spec.context_window),
            "arbiter.quantization": spec.quantization or "",
            **provenance_tags,
        }
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        created = retry_locked(
            lambda: client.create_model_version(
                spec.name, source=source, run_id=run_id, tags=tags, description=_description(spec),
            )
        )
        record = self._record(created)
        self.store.append("events", [event_row(
            "register", model=spec.name, version=record.version,
            detail={"sha256": spec.sha256, "source": spec.source, "base_url": spec.base_url},
        )])
        return record

    def _log_spec_run(self, spec: ModelSpec, metrics: dict[str, float]) -> str:
        """An MLflow run holding ``spec.json`` and the training ``metrics``: the version's provenance,
        and what an MLflow server needs."""
        client = self.client
        exp = experiment_id(client, self.settings, REGISTRATIONS_EXPERIMENT)
        run = retry_locked(lambda: client.create_run(exp, run_name=f"register-{spec.name}", tags={"arbiter.model": spec.name}))
        with tempfile.TemporaryDirectory() as folder:
            spec_file = Path(folder) / "spec.json"
            spec_file.write_text(spec.model_dump_json(indent=2))
            client.log_artifact(run.info.run_id, str(spec_file), artifact_path="model")
        for key, value in metrics.items():
            retry_locked(lambda key=key, value=value: client.log_metric(run.info.run_id, key, value))
        retry_locked(lambda: client.set_terminated(run.info.run_id))
        return run.info.run_id

    def _find_by_identity(self, name: str, identity: str) -> VersionRecord | None:
        return next((r for r in self._versions_of(name) if r.spec.identity == identity), None)

    # --- queries ------------------------------------------------------------------------

    def list_versions(
        self, *, capability: str | None = None, status: str | None = None, name: str | None = None
    ) -> list[VersionRecord]:
        """All catalog versions (routes excluded), filtered, ordered by name then version."""
        if status is not None and status not in {s.value for s in Status}:
            raise UserError(f"unknown status {status!r}; use one of: {', '.join(s.value for s in Status)}")
        names = [name] if name else self._catalog_names()
        records = [r for n in names for r in self._versions_of(n)]
        if capability:
            records = [r for r in records if r.spec.has_capability(capability)]
        if status:
            records = [r for r in records if r.status == status]
        return sorted(records, key=lambda r: (r.name, r.version))

    def get(self, name: str, version: int | None = None) -> VersionRecord:
        """One version; the newest when ``version`` is None. Raises NotFoundError with what exists."""
        versions = [] if name.startswith(ROUTE_PREFIX) else self._versions_of(name)
        if not versions:
            known = ", ".join(self._catalog_names()) or "none registered yet"
            raise NotFoundError(f"unknown model {name!r}; known models: {known}")
        if version is None:
            return versions[-1]
        for record in versions:
            if record.version == version:
                return record
        raise NotFoundError(
            f"{name} has no version {version}; its versions: {', '.join(str(r.version) for r in versions)}"
        )

    def get_ref(self, ref: str) -> VersionRecord:
        name, version = parse_ref(ref)
        return self.get(name, version)

    def set_status(self, name: str, version: int, status: Status) -> VersionRecord:
        """Move a version's lifecycle status (the one mutable thing about a version)."""
        record = self.get(name, version)
        if record.status != status.value:
            self.set_version_tag(name, version, TAG_STATUS, status.value)
            self.store.append("events", [event_row(f"status.{status.value}", model=name, version=version,
                                                   detail={"from": record.status})])
        return self.get(name, version)

    def set_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        """Set one tag on a version: what other wings may add about it (``arbiter.compatibility``);
        the spec tags are written once, at registration, and never through this."""
        retry_locked(lambda: self.client.set_model_version_tag(name, str(version), key, value))

    def _catalog_names(self) -> list[str]:
        models = self.client.search_registered_models(max_results=1000)
        return sorted(
            m.name for m in models if not m.name.startswith(ROUTE_PREFIX) and m.tags.get(TAG_ROLE) == "catalog"
        )

    def _versions_of(self, name: str) -> list[VersionRecord]:
        if not NAME_PATTERN.match(name):  # also keeps quotes out of the search filter
            return []
        found = retry_locked(lambda: self.client.search_model_versions(f"name = '{name}'", max_results=10000))
        return sorted((self._record(mv) for mv in found if TAG_SPEC in mv.tags), key=lambda r: r.version)

    @staticmethod
    def _record(mv: Any) -> VersionRecord:
        spec = ModelSpec.model_validate_json(mv.tags[TAG_SPEC])
        return VersionRecord(
            name=mv.name,
            version=int(mv.version),
            status=mv.tags.get(TAG_STATUS, Status.TESTING.value),
            spec=spec,
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
            run_id=mv.run_id,
        )


def _build_spec(**fields: Any) -> ModelSpec:
    """A ModelSpec, with pydantic's validation errors turned into one actionable line."""
    try:
        return ModelSpec(**fields)
    except ValidationError as exc:
        raise UserError(f"invalid model spec: {one_line(exc.errors())}") from None


def _description(spec: ModelSpec) -> str:
    """The one line the MLflow UI shows under a version."""
    if spec.sha256 is None:
        return f"{spec.kind} model {spec.source!r} served at {spec.base_url or 'OLLAMA_HOST'}"
    if spec.kind == ModelKind.ONNX and "embedding" in spec.capabilities:
        return f"ONNX token-id embedder ({spec.provenance.get('onnx_width')} dims), {spec.size_bytes} bytes, sha256 {spec.sha256}"
    if spec.labels:
        what = "token-id classifier" if spec.architecture == TOKEN_CLASSIFIER else "text classifier"
        return f"ONNX {what} ({', '.join(spec.labels)}), {spec.size_bytes} bytes, sha256 {spec.sha256}"
    return f"{spec.architecture} {spec.quantization}, {spec.size_bytes} bytes, sha256 {spec.sha256}"


def _template_provenance(path: Path, info: Any, allow_errors: bool) -> dict[str, str]:
    """The chat template's provenance for a GGUF file (``info``: its ``GGUFInfo``): its sha256,
    and the reason it fails when ``allow_errors`` lets such a file register; refused otherwise."""
    if info.chat_template is None:
        return {}
    found = {"chat_template_sha256": template_sha256(info.chat_template)}
    checked = inspect_chat_template(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token,
                                    named_templates=info.named_chat_templates)
    if checked.unsupported:  # recorded, not refused: a chat without those turns is served (chat_template.py)
        found["chat_template_unsupported"] = ", ".join(checked.unsupported)
    reason = checked.error
    if reason is not None:
        if not allow_errors:
            raise UserError(
                f"{path}: its chat template fails in llama-cpp-python's sandbox: {reason}; "
                "fix the template or pass --allow-template-errors"
            )
        found["chat_template_error"] = reason
    return found


def _fitting_spec_json(spec: ModelSpec) -> str:
    """The spec as the ``arbiter.spec`` tag holds it, refused when MLflow would not keep it whole
    (only long provenance values can make it so; each provenance tag is then short enough too)."""
    from mlflow.utils.validation import MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH

    spec_json = spec.model_dump_json()
    if len(spec_json) > MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH:
        longest = max(spec.provenance, key=lambda key: len(spec.provenance[key]), default="?")
        raise UserError(
            f"the version's spec is {len(spec_json)} characters, over MLflow's tag limit of "
            f"{MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH}: shorten its provenance (the longest: {longest}), "
            "e.g. give a reference instead of a text"
        )
    return spec_json


def _provenance_tags(provenance: dict[str, str]) -> dict[str, str]:
    """Each provenance entry as an ``arbiter.provenance.<key>`` version tag."""
    bad = sorted(key for key in provenance if not _PROVENANCE_KEY.match(key))
    if bad:
        raise UserError(
            f"invalid provenance key {bad[0]!r}: use 1-200 letters, digits, '_', '-', '.' or '/' "
            "(e.g. training_data, metric.f1)"
        )
    return {f"{TAG_PROVENANCE}{key}": value for key, value in provenance.items()}


def _training_metrics(provenance: dict[str, str]) -> dict[str, float]:
    """The ``metric.<name>`` provenance entries as numbers, for the registration run's metrics."""
    metrics = {}
    for key, value in provenance.items():
        if key.startswith(METRIC_PREFIX):
            name = key.removeprefix(METRIC_PREFIX)
            if not name:
                raise UserError("a training metric needs a name: give it as name=value, e.g. accuracy=0.93")
            try:
                metrics[name] = float(value)
            except ValueError:
                metrics[name] = math.nan
            if not math.isfinite(metrics[name]):
                raise UserError(f"training metric {name} is {value!r}, not a finite number; give it as {name}=0.93")
    return metrics


def _same_provenance(existing: VersionRecord, provenance: dict[str, str]) -> None:
    """A file registered again must not claim another history: a version is immutable."""
    differs = sorted(key for key, value in provenance.items() if existing.spec.provenance.get(key) != value)
    if differs:
        key = differs[0]
        raise UserError(
            f"{existing.ref} is this file already, registered with {key} {existing.spec.provenance.get(key, '(none)')!r}"
            f", not {provenance[key]!r}; a version is immutable: retrain or register it under another name"
        )


def _check_chat_format(chat_format: str) -> None:
    """Refuse a chat format llama.cpp does not know now, not at the first chat of an immutable version."""
    from llama_cpp.llama_chat_format import LlamaChatCompletionHandlerRegistry

    known = sorted(LlamaChatCompletionHandlerRegistry()._chat_handlers)
    if chat_format not in known:
        raise UserError(f"unknown chat format {chat_format!r}; llama.cpp knows: {', '.join(known)}")


def _needs_text(hardware: Hardware) -> str:
    """A version's hardware needs in one line, for messages."""
    return ", ".join(f"{key} {value}" for key, value in hardware.model_dump().items() if value not in ((), 0, None))
