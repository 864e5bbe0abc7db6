"""Build the registry objects a command needs from the environment's settings."""

from __future__ import annotations

from registry.catalog.routes import Routes
from registry.catalog.versions import Catalog
from registry.evaluation.tasks import TaskCatalog
from registry.settings import get_settings


def catalog() -> Catalog:
    return Catalog(get_settings())


def routes() -> Routes:
    return Routes(catalog())


def tasks() -> TaskCatalog:
    return TaskCatalog(get_settings())
