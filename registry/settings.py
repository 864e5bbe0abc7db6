"""One settings object: argument, then ``ARBITER_*`` environment variable, then a default.

Paths default under ``ARBITER_HOME`` (the current directory, which is the repo for ``make demo``)
so a clone is self-contained: ``mlruns/`` holds the MLflow store, ``results/`` the Parquet tables,
``models/`` the GGUF files made at set-up time. Nothing is created until a command needs it.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_threads() -> int:
    """All cores but one. llama.cpp's worker threads spin at each barrier: when another process
    takes one of the cores they need (a Prefect server, a test runner), generation drops from
    ~100 to ~1 token/s (seen on 2 cores). One core left free keeps it steady."""
    return max(1, (os.cpu_count() or 2) - 1)


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
        return local if local.is_dir() else Path(__file__).resolve().parent.parent / "datasets"

    @cached_property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlruns_dir / 'mlflow.db'}"


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides winning."""
    return Settings(**overrides)  # type: ignore[arg-type]
