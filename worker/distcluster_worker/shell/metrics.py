"""Prometheus metrics of one node, in a registry of its own.

A per-node ``CollectorRegistry`` (not the process-global default) lets tests run several
nodes in one process and lets each test start from zero. The shell records every HTTP
request (count by method, route and status; latency by method and route); roles add their
own metrics to ``NodeMetrics.registry``.

The ``route`` label is the matched route's canonical path (``/lock/{resource}``), never the
raw URL, so a client cannot grow the number of series; requests that match no route are
counted under ``route="unmatched"``. Latency is measured with the event loop's clock, the
only clock shell code reads besides the node's injected one.

Recording runs on every request, so it is kept cheap: the two HTTP metrics are plain
counters in `HttpStats`, a collector that prometheus-client reads at scrape time (the
client's own `Counter.inc` and `Histogram.observe` take a lock and scan the buckets on
every call: 1.4 µs a request against 0.25), and the DEBUG request line is only built
when DEBUG is on.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

UNMATCHED_ROUTE = "unmatched"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class _Latency:
    """One route's latency histogram: a count per bucket (not cumulative) and the sum (the
    count is the +Inf bucket's cumulative value, which the histogram family derives)."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(_LATENCY_BUCKETS) + 1))
    total: float = 0.0


class Counts(Collector):
    """A Prometheus counter kept as plain numbers, one per tuple of label values, for
    counting on every request or applied entry (`Counter.inc` takes a lock each time).

    The node is single-threaded (one event loop), so no lock is needed.
    """

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self._name, self._doc, self._labels = name, documentation, labels
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, *values: str) -> None:
        self.counts[values] = self.counts.get(values, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._labels)
        for values, count in self.counts.items():
            family.add_metric(list(values), count)
        yield family


class HttpStats(Collector):
    """Requests served (by method, route, status) and their latency (by method, route),
    kept as plain numbers and exposed as a Prometheus counter and histogram when scraped.

    The node is single-threaded (one event loop), so no lock is needed.
    """

    def __init__(self) -> None:
        self._requests = Counts(
            "distcluster_http_requests",
            "HTTP requests served, by method, route and status.",
            ["method", "route", "status"],
        )
        self._latency: dict[tuple[str, str], _Latency] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.inc(method, route, str(status))
        series = self._latency.get((method, route))
        if series is None:
            series = self._latency[(method, route)] = _Latency()
        series.buckets[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        series.total += seconds

    def collect(self) -> Iterator[Metric]:
        yield from self._requests.collect()
        latency = HistogramMetricFamily(
            "distcluster_http_request_duration_seconds",
            "Time to serve an HTTP request, by method and route.",
            labels=["method", "route"],
        )
        bounds = [*(str(b) for b in _LATENCY_BUCKETS), "+Inf"]
        for (method, route), series in self._latency.items():
            cumulative, running = [], 0
            for bound, count in zip(bounds, series.buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([method, route], cumulative, series.total)
        yield latency


class NodeMetrics:
    """The node's registry and the shell's own HTTP metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.http = HttpStats()
        self.registry.register(self.http)
        self.node_info = Gauge(
            "distcluster_node_info",
            "Always 1; labels say which node and role this is.",
            ["node_id", "role"],
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http.observe(method, route, status, seconds)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return _generate_latest(self.registry)


def route_label(request: web.Request) -> str:
    """The canonical path of the route that matched ``request``, bounded in cardinality."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED_ROUTE
    return resource.canonical


def metrics_response(metrics: NodeMetrics) -> web.Response:
    """The ``GET /metrics`` answer."""
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
