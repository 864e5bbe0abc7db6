"""The catalog: MLflow's registry as immutable model versions, and the routes whose aliases say
which version serves a task.

``Catalog`` (versions.py) registers, lists and shows versions; ``Routes`` (routes.py) promotes and
rolls back through a route's aliases; ``mlflow_client`` is the one place MLflow's client is made
and its sqlite locks retried; ``shipped`` prepares the models PyPI packages carry.
"""

from registry.catalog.routes import Routes, RouteState, RouteTarget
from registry.catalog.versions import Catalog
from registry.spec import VersionRecord, parse_ref  # the catalog's record type, re-exported where it was defined before

__all__ = ["Catalog", "RouteState", "RouteTarget", "Routes", "VersionRecord", "parse_ref"]
