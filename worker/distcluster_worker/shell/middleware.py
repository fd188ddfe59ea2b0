"""The node's one middleware: every request is counted, timed, logged at DEBUG, and every
failure of its handler answered in the JSON error shape (see `errors`).

One middleware rather than a metrics one around an error one: each aiohttp middleware is
another coroutine and another wrapper on every request, and this runs on all of them.
The status counted is the final one, after a failure became its JSON answer.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from distcluster_worker.shell.errors import failure_response
from distcluster_worker.shell.logs import get_logger
from distcluster_worker.shell.metrics import NodeMetrics, route_label

_log = get_logger("distcluster.http")


def node_middleware(metrics: NodeMetrics) -> Middleware:
    """A middleware answering every failure as JSON, counting and timing every request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        status = 500
        try:
            try:
                response = await handler(request)
            except Exception as exc:  # noqa: BLE001 - every failure gets its JSON answer
                response = failure_response(request, exc)
            status = response.status
            return response
        except web.HTTPException as exc:  # below 400 (a redirect): aiohttp answers it
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
            log_request(request.method, request.path, route, status, seconds)

    return middleware


def log_request(method: str, path: str, route: str, status: int, seconds: float) -> None:
    """One DEBUG line per request served, by aiohttp or by the fast front."""
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug(
            "request",
            extra={
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "ms": round(seconds * 1000, 3),
            },
        )
