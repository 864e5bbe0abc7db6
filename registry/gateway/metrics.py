"""Prometheus metrics for ``/metrics``: requests, latency, time to first token, tokens, pool and breakers.

One ``CollectorRegistry`` per gateway (not the global one), so two gateways in one process — the
tests run several — never share counters. Pool and breaker states are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
_BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class GatewayMetrics:
    def __init__(self, pool_snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "arbiter_requests", "Requests answered, by API, endpoint and HTTP status.",
            ["api", "endpoint", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "arbiter_request_seconds", "End-to-end request time inside the gateway.",
            ["api", "endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.ttft = Histogram(
            "arbiter_time_to_first_token_seconds", "Time to the first generated token.",
            ["route", "model"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.overhead = Histogram(
            "arbiter_overhead_seconds", "Time spent outside the model (the x-arbiter-overhead-ms header).",
            buckets=_OVERHEAD_BUCKETS, registry=self.registry,
        )
        self.tokens = Counter(
            "arbiter_tokens", "Tokens processed, by route, model version and kind (prompt/completion).",
            ["route", "model", "kind"], registry=self.registry,
        )
        self.failovers = Counter(
            "arbiter_failovers", "Requests answered by another instance or version than the first chosen.",
            ["route"], registry=self.registry,
        )
        self.resumed_streams = Counter(
            "arbiter_resumed_streams", "Streams that failed after sending text and were finished by a fallback.",
            ["route"], registry=self.registry,
        )
        self.events = Counter(
            "arbiter_events", "Pool, breaker and swap events.", ["kind"], registry=self.registry,
        )
        self.registry.register(_PoolCollector(pool_snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    def __init__(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        instances = self._snapshot()
        states = GaugeMetricFamily("arbiter_pool_instances", "Instances by state.", labels=["state"])
        for state in ("cold", "loading", "ready", "failed"):
            states.add_metric([state], sum(1 for i in instances if i["state"] == state))
        yield states
        breakers = GaugeMetricFamily(
            "arbiter_breaker_state", "Circuit breaker per instance: 0 closed, 1 half-open, 2 open.",
            labels=["instance"],
        )
        queue = GaugeMetricFamily("arbiter_instance_queue", "Requests running or waiting per instance.",
                                  labels=["instance"])
        for instance in instances:
            breakers.add_metric([instance["instance"]], _BREAKER_VALUE[instance["breaker"]])
            queue.add_metric([instance["instance"]], instance["in_flight"] + instance["waiting"])
        yield breakers
        yield queue
