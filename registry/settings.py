"""One settings object: argument, then ``ARBITER_*`` environment variable, then a default.

Paths default under ``ARBITER_HOME`` (the current directory, which is the repo for ``make demo``)
so a clone is self-contained: ``mlruns/`` holds the MLflow store, ``results/`` the Parquet tables,
``models/`` the GGUF files made at set-up time. Nothing is created until a command needs it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from registry.errors import ConfigError, one_line

_REGISTRY_URI = re.compile(r"^(https?|sqlite|postgresql(\+\w+)?|mysql(\+\w+)?|mssql(\+\w+)?)://\S+$")
# What a browser sends in ``Origin``: scheme://host[:port], nothing after; ``*`` stands for any characters.
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+$")
_HOST_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
SHIPPED_DATASETS = Path(__file__).resolve().parent.parent / "datasets"  # the tasks the project ships


def default_threads() -> int:
    """All cores but one. llama.cpp's worker threads spin at each barrier: when another process
    takes one of the cores they need (a Prefect server, a test runner), generation drops from
    ~100 to ~1 token/s (seen on 2 cores). One core left free keeps it steady."""
    return max(1, (os.cpu_count() or 2) - 1)


def default_memory_budget_mb() -> int:
    """Half the memory available at start: room for several warm versions without pushing the
    machine into swap, where every model on it would slow to a crawl."""
    import psutil

    return int(psutil.virtual_memory().available / (1024 * 1024) / 2)


class Settings(BaseSettings):
    """Where arbiter keeps its state and how it runs models.

    Example::

        settings = Settings(home=tmp_path)      # tests
        settings.tracking_uri                   # 'sqlite:////tmp/.../mlruns/mlflow.db'
    """

    model_config = SettingsConfigDict(env_prefix="ARBITER_", frozen=True)

    home: Path = Field(default_factory=Path.cwd, description="Root of mlruns/, results/, models/.")
    n_threads: int = Field(default_factory=lambda: default_threads(), ge=1)
    n_ctx: int = Field(default=2048, ge=256, description="Context size given to llama.cpp (capped by the model's).")
    seed: int = 0
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="A registry shared by several machines: an MLflow server (http://host:5000) or its SQL database "
                    "(postgresql://…). Unset: the sqlite store under home/mlruns.",
    )
    n_gpu_layers: int | None = Field(
        default=None, ge=-1,
        description="Layers llama.cpp puts on the GPU (-1 all, 0 none); unset: all when the build and a GPU allow.",
    )
    cpu_watts_per_core: float = Field(
        default=12.0, gt=0, allow_inf_nan=False,
        description="Watts one busy core draws, for the energy estimate when RAPL cannot be read (cpu_ms x W); "
                    "a laptop or desktop core under llama.cpp's load draws roughly 5-20 W.",
    )

    # --- gateway (``arbiter serve``) ---------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Bind address; anything but loopback needs admin_token.")
    port: int = Field(default=11434, ge=1, le=65535, description="Ollama's port, so unchanged clients find us.")
    admin_token: str | None = Field(default=None, description="Bearer token for admin endpoints (and all, off loopback).")
    # NoDecode: these two are comma-separated in the environment (as OLLAMA_ORIGINS is), not JSON.
    origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Browser origins whose pages may call the gateway (CORS), comma-separated: scheme://host[:port], "
                    "`*` in one matching any characters (http://localhost:*), `*` alone any origin. Unset: no page "
                    "on another origin, not even another local port.",
    )
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Host names a gateway on loopback answers besides localhost, *.localhost and loopback addresses, "
                    "comma-separated (`*.example.lan` for every subdomain, `*` for any). Off loopback, with its token, "
                    "it answers any Host.",
    )
    replicas: int = Field(default=1, ge=1, le=16, description="Instances per version; a route's tag can override.")
    queue_depth: int = Field(default=8, ge=0, description="Requests that may wait per instance; more get 429.")
    remote_concurrency: int = Field(default=4, ge=1, description="Requests at once per instance of a remote model.")
    queue_timeout_s: float = Field(default=120.0, gt=0, description="Longest wait for a busy instance before 503.")
    keep_alive_s: float = Field(default=300.0, ge=0, description="Idle time before a non-champion instance unloads.")
    memory_budget_mb: int = Field(default_factory=lambda: default_memory_budget_mb(), ge=1)
    alias_poll_s: float = Field(default=1.0, gt=0, description="How often aliases are re-read from MLflow.")
    health_interval_s: float = Field(default=10.0, gt=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    calls_flush_s: float = Field(default=1.0, gt=0, description="Calls rows are written at least this often.")
    results_retain_days: int | None = Field(
        default=None, ge=1,
        description="Keep this many days of calls and feedback rows (unset: keep everything); runs, events, learnings and "
                    "calibrations are never dropped (docs/results.md).",
    )
    live_judge: Literal["off", "rollout", "always"] = Field(
        default="rollout",
        description="When the judge scores live answers of a task that asks for it: never, while the route has a "
                    "challenger (rollout or shadow), or always. Each judgement is a generation on the judge's instance.",
    )
    feedback_per_s: float = Field(default=50.0, gt=0, description="Feedback posts a second the gateway accepts (429 past it).")
    feedback_burst: int = Field(default=200, ge=1, description="Feedback posts accepted at once before the rate applies.")
    results_commit_s: float = Field(default=5.0, gt=0, description="How often serve moves staged results into their tables.")
    results_compact_s: float = Field(default=60.0, gt=0, description="How often serve looks for small files to compact.")
    breaker_failures: int = Field(default=3, ge=1, description="Consecutive failures that open a breaker.")
    breaker_open_s: float = Field(default=5.0, gt=0, description="How long an open breaker refuses before a probe.")
    auto_swap: bool = Field(default=False, description="Roll back or swap a degraded champion by itself (serve).")
    auto_swap_check_s: float = Field(default=5.0, gt=0, description="How often serve checks each route's champion.")
    auto_swap_cooldown_s: float = Field(default=300.0, ge=0, description="Least time between two auto-swaps of a route.")
    auto_swap_min_dwell_s: float = Field(default=600.0, ge=0, description="Least time a champion serves before it is swapped.")
    auto_swap_min_samples: int = Field(default=10, ge=1, description="Calls of the champion before it is judged.")
    auto_swap_success_threshold: float = Field(default=0.8, gt=0, le=1)
    auto_swap_quality_factor: float = Field(default=0.9, gt=0, le=1, description="× the route's quality threshold.")
    auto_swap_window_s: float = Field(default=300.0, gt=0, description="How far back the champion's calls are read.")
    judge_min_accuracy: float = Field(
        default=0.75, ge=0, le=1,
        description="The judge's calibrated pass/fail accuracy it needs before its live scores may gate a swap.",
    )
    judge_min_spearman: float = Field(
        default=0.5, ge=-1, le=1,
        description="The judge's calibrated Spearman correlation with the labels it needs before it may gate a swap.",
    )

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _registry_uri(cls, value: str | None) -> str | None:
        if value is not None and not _REGISTRY_URI.match(value):
            raise ValueError("must be an MLflow server URL (http://host:5000) or a SQL database URI "
                             "(postgresql://user@host/db, mysql://…, sqlite:////abs/path/mlflow.db)")
        return value

    @field_validator("origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> tuple[str, ...]:
        origins = _comma_list(value)
        for origin in origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port] with no path or trailing "
                                 "slash, as a browser sends it (http://localhost:3000), or *")
        return origins

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _allowed_hosts(cls, value: Any) -> tuple[str, ...]:
        hosts = tuple(host.removeprefix("[").removesuffix("]") for host in _comma_list(value))
        for host in hosts:
            if host != "*" and not _HOST_NAME.match(host.removeprefix("*.")) and not _is_ip(host):
                raise ValueError(f"{host!r} is not a host name: write a name or address without scheme or port "
                                 "(gateway.lan, *.lan, 192.168.1.5), or *")
        return hosts

    @cached_property
    def mlruns_dir(self) -> Path:
        return self.home / "mlruns"

    @cached_property
    def artifacts_dir(self) -> Path:
        return self.mlruns_dir / "artifacts"

    @cached_property
    def results_dir(self) -> Path:
        return self.home / "results"

    @cached_property
    def models_dir(self) -> Path:
        return self.home / "models"

    @cached_property
    def datasets_dir(self) -> Path:
        """Bundled validation sets: ``ARBITER_HOME/datasets`` if present, else the repo's own."""
        local = self.home / "datasets"
        return local if local.is_dir() else SHIPPED_DATASETS

    @cached_property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlruns_dir / 'mlflow.db'}"

    @property
    def local_registry(self) -> bool:
        """True for the default sqlite store under ``home``: artifacts then live beside it, in
        ``mlruns/artifacts``; a shared registry keeps them where its server says."""
        return self.mlflow_tracking_uri is None


def _comma_list(value: Any) -> tuple[str, ...]:
    """``"a, b,"`` from the environment or a sequence from code: trimmed, lower-cased (browsers send
    origins and host names in lower case), empty items dropped."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip().lower() for item in items if item.strip())


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides winning.

    Raises ``ConfigError`` naming the ``ARBITER_*`` variable and what it must be, so a typo in the
    environment is one line, not a pydantic trace.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        errors = exc.errors()
        inputs = {tuple(e["loc"]): e.get("input") for e in errors}
        problems = one_line(errors, where=lambda loc: f"ARBITER_{'_'.join(map(str, loc)).upper()}={inputs[loc]!r}")
        raise ConfigError(f"invalid setting: {problems}") from None
