"""Prometheus metrics of one node, in a registry of its own.

A per-node ``CollectorRegistry`` (not the process-global default) lets tests run several
nodes in one process and lets each test start from zero. The shell records every HTTP
request (count by method, route and status; latency by method and route); roles add their
own metrics to ``NodeMetrics.registry``.

The ``route`` label is the matched route's canonical path (``/lock/{resource}``), never the
raw URL, so a client cannot grow the number of series; requests that match no route are
counted under ``route="unmatched"``. Latency is measured with the event loop's clock, the
only clock shell code reads besides the node's injected one.

Recording runs on every request, so it is kept cheap: the labelled series are looked up
once per (method, route, status) and kept (the key space is bounded, as above), and the
DEBUG request line is only built when DEBUG is on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest

from distcluster_worker.shell.logs import get_logger

UNMATCHED_ROUTE = "unmatched"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_log = get_logger("distcluster.http")


class NodeMetrics:
    """The node's registry and the shell's own HTTP metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.http_requests = Counter(
            "distcluster_http_requests",
            "HTTP requests served, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "distcluster_http_request_duration_seconds",
            "Time to serve an HTTP request, by method and route.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.node_info = Gauge(
            "distcluster_node_info",
            "Always 1; labels say which node and role this is.",
            ["node_id", "role"],
            registry=self.registry,
        )
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = (
                self.http_requests.labels(method, route, str(status)),
                self.http_latency.labels(method, route),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return _generate_latest(self.registry)


def route_label(request: web.Request) -> str:
    """The canonical path of the route that matched ``request``, bounded in cardinality."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED_ROUTE
    return resource.canonical


def metrics_middleware(metrics: NodeMetrics) -> Middleware:
    """A middleware counting and timing every request, and logging it at DEBUG."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            # The client went away or the node is shutting down (nginx's 499).
            status = 499
            raise
        finally:
            seconds = loop.time() - started
            route = route_label(request)
            metrics.observe_request(request.method, route, status, seconds)
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug(
                    "request",
                    extra={
                        "method": request.method,
                        "path": request.path,
                        "route": route,
                        "status": status,
                        "ms": round(seconds * 1000, 3),
                    },
                )

    return middleware


def metrics_response(metrics: NodeMetrics) -> web.Response:
    """The ``GET /metrics`` answer."""
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
