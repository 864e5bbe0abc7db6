"""Prefect flows: thin orchestration over the ``registry`` package."""
