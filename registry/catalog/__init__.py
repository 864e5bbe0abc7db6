"""The catalog: MLflow's registry as immutable model versions, and the routes whose aliases say
which version serves a task.

``Catalog`` (versions.py) registers, lists and shows versions; ``RouteModel`` (route_model.py)
alone reads and writes a route's aliases and ``arbiter.*`` tags; ``Routes`` (routes.py) promotes and
rolls back through it; ``tracking`` logs MLflow runs and webhooks for the other wings, which never
hold MLflow's client; ``mlflow_client`` is the one place that client is made and its sqlite locks
retried; ``shipped`` prepares the models PyPI packages carry.
"""

from registry.catalog.route_model import RouteModel, RouteTarget
from registry.catalog.routes import Routes, RouteState
from registry.catalog.versions import Catalog
from registry.spec import VersionRecord, parse_ref  # the catalog's record type, re-exported where it was defined before

__all__ = ["Catalog", "RouteModel", "RouteState", "RouteTarget", "Routes", "VersionRecord", "parse_ref"]
