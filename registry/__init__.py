"""arbiter: a local-first model registry and hot-swap router for LLMs.

The documented Python API, importable from here::

    from registry import ArbiterModelManager, Catalog, Routes, get_settings

    catalog = Catalog(get_settings())
    Routes(catalog).show("qa")

Nothing happens at import time: no directories are created, no tracking URI is set, and no heavy
library (MLflow, DuckDB, llama.cpp) is imported until a name that needs it is first used
(PEP 562), so ``import registry.errors`` stays cheap.

The code lives in wings, each a subsystem whose imports point only down the layers
(ARCHITECTURE.md; checked by import-linter in ``make test``)::

    cli → gateway → rollout → manager → quality → evaluation → serving → catalog → selection, providers
        → machine → results → spec, settings → errors

Modules that moved into the wings keep their old import paths (``registry.store``,
``registry.judge``, ``registry.routes`` …) as aliases of the new ones, so code written against
them keeps working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = importlib.metadata.version("arbiter-registry")

# name → the module that defines it (the public surface; tests/test_exported_members.py holds it to this)
_EXPORTS = {
    "ArbiterModelManager": "registry.manager",
    "Catalog": "registry.catalog.versions",
    "Criteria": "registry.selection.criteria",
    "FeedbackBook": "registry.results.feedback",
    "LocalModelSelector": "registry.selection.selector",
    "ModelBasedJudge": "registry.evaluation.judge",
    "ModelSpec": "registry.spec",
    "PerformanceTrackerBridge": "registry.selection.tracker",
    "ResultsStore": "registry.results.store",
    "Rollout": "registry.rollout.promotion",
    "Routes": "registry.catalog.routes",
    "Settings": "registry.settings",
    "TaskCatalog": "registry.evaluation.tasks",
    "TaskVersion": "registry.evaluation.tasks",
    "VersionRecord": "registry.spec",
    "gateway_in_background": "registry.gateway.background",
    "get_settings": "registry.settings",
}

# old flat path → where the module lives now
_MOVED = {
    "registry.store": "registry.results.store",
    "registry.recorder": "registry.results.recorder",
    "registry.gpu": "registry.machine.gpu",
    "registry.hardware": "registry.machine.hardware",
    "registry.energy": "registry.machine.energy",
    "registry.costs": "registry.machine.costs",
    "registry.cost_profile": "registry.machine.cost_profile",
    "registry.gguf_file": "registry.providers.gguf_file",
    "registry.coreml_package": "registry.providers.coreml_package",
    "registry.routes": "registry.catalog.routes",
    "registry.mlflow_client": "registry.catalog.mlflow_client",
    "registry.shipped": "registry.catalog.shipped",
    "registry.pool": "registry.serving.pool",
    "registry.breaker": "registry.serving.breaker",
    "registry.router": "registry.serving.router",
    "registry.calls": "registry.serving.calls",
    "registry.tasks": "registry.evaluation.tasks",
    "registry.datasets": "registry.evaluation.datasets",
    "registry.scoring": "registry.evaluation.scoring",
    "registry.benchmark": "registry.evaluation.benchmark",
    "registry.judge": "registry.evaluation.judge",
    "registry.rubrics": "registry.evaluation.rubrics",
    "registry.calibration": "registry.evaluation.calibration",
    "registry.compat_matrix": "registry.evaluation.compat_matrix",
    "registry.profiles": "registry.selection.profiles",
    "registry.learnings": "registry.selection.learnings",
    "registry.tracker": "registry.selection.tracker",
    "registry.rl_export": "registry.selection.rl_export",
    "registry.rollout_policy": "registry.rollout.policy",
    "registry.locks": "registry.rollout.locks",
    "registry.live": "registry.rollout.live",
    "registry.autoswap": "registry.rollout.autoswap",
    "registry.compatibility": "registry.rollout.compatibility",
}

__all__ = [
    "ArbiterModelManager",
    "Catalog",
    "Criteria",
    "FeedbackBook",
    "LocalModelSelector",
    "ModelBasedJudge",
    "ModelSpec",
    "PerformanceTrackerBridge",
    "ResultsStore",
    "Rollout",
    "Routes",
    "Settings",
    "TaskCatalog",
    "TaskVersion",
    "VersionRecord",
    "gateway_in_background",
    "get_settings",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once resolved, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``import registry.store`` (and every other old flat path) as the module that now holds
    it: the same module object, so its classes and state are shared, not copied."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module: Any) -> None:
        """The module is already executed under its new name."""


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())

if TYPE_CHECKING:
    from registry.catalog.routes import Routes
    from registry.catalog.versions import Catalog
    from registry.evaluation.judge import ModelBasedJudge
    from registry.evaluation.tasks import TaskCatalog, TaskVersion
    from registry.gateway.background import gateway_in_background
    from registry.manager import ArbiterModelManager
    from registry.results.store import ResultsStore
    from registry.rollout.promotion import Rollout
    from registry.selection.criteria import Criteria
    from registry.selection.selector import LocalModelSelector
    from registry.selection.tracker import PerformanceTrackerBridge
    from registry.settings import Settings, get_settings
    from registry.spec import ModelSpec, VersionRecord
