"""Node-to-node JSON over HTTP, with bounded retries on the transport only.

One ``aiohttp.ClientSession`` per node, with a keep-alive connection pool, serves every
peer: Raft sends many small messages, and a TCP handshake per message would dominate.

Retries happen only when no HTTP answer arrived (connection refused or reset, timeout):
such a failure says nothing about the request's effect, and every node-to-node call of
DistCluster is safe to repeat (Raft messages are idempotent, forwarded client requests carry
their own identity). An HTTP answer, whatever its status, is returned as is: the caller
knows what a 409 or 503 means, the transport does not. Between attempts the client sleeps a
short, growing delay through ``asyncio.sleep`` (so tests with a controlled loop stay in
control). When every attempt fails, ``RpcError`` says which peer, path and cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from distcluster_worker.shell import jsonio

_BACKOFF_BASE_S = 0.02
_BACKOFF_MAX_S = 0.2


class RpcError(Exception):
    """No usable answer from a peer: every attempt failed (or a caller says so).

    ``RpcError("message")`` is enough for callers that reject an answer themselves; the
    client fills in ``url``, ``path``, ``attempts`` and ``cause``.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        path: str = "",
        attempts: int = 0,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.path = path
        self.attempts = attempts
        self.cause = cause


class RpcClient:
    """A pooled JSON-over-HTTP client; ``start()`` it inside the running loop."""

    def __init__(
        self,
        timeout_ms: int,
        retries: int,
        pool_size: int = 100,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if timeout_ms <= 0 or retries < 0 or pool_size <= 0:
            raise ValueError("timeout_ms and pool_size must be positive, retries >= 0")
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._sleep = sleep if sleep is not None else asyncio.sleep

    async def start(self) -> None:
        """Create the session and its connection pool (needs a running event loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.pool_size, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=jsonio.dumps, raise_for_status=False
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_json(
        self,
        url: str,
        path: str,
        body: Any,
        *,
        timeout_ms: int | None = None,
        retries: int | None = None,
    ) -> tuple[int, Any]:
        """POST ``body`` as JSON to ``url + path``; return (status, decoded JSON or None)."""
        return await self._call("POST", url, path, body, timeout_ms, retries)

    async def get_json(
        self,
        url: str,
        path: str,
        *,
        timeout_ms: int | None = None,
        retries: int | None = None,
    ) -> tuple[int, Any]:
        """GET ``url + path``; return (status, decoded JSON or None)."""
        return await self._call("GET", url, path, None, timeout_ms, retries)

    async def delete_json(
        self,
        url: str,
        path: str,
        *,
        timeout_ms: int | None = None,
        retries: int | None = None,
    ) -> tuple[int, Any]:
        """DELETE ``url + path``; return (status, decoded JSON or None)."""
        return await self._call("DELETE", url, path, None, timeout_ms, retries)

    async def _call(
        self,
        method: str,
        url: str,
        path: str,
        body: Any,
        timeout_ms: int | None,
        retries: int | None,
    ) -> tuple[int, Any]:
        await self.start()
        attempts = 1 + (self.retries if retries is None else max(0, retries))
        timeout = aiohttp.ClientTimeout(total=(timeout_ms or self.timeout_ms) / 1000)
        full_url = url.rstrip("/") + path
        last: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                await self._sleep(min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2 ** (attempt - 1)))
            try:
                return await self._once(method, full_url, body, timeout)
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = exc
        if last is None:  # Unreachable: attempts >= 1; kept as an invariant check.
            raise RuntimeError("RpcClient made no attempt")
        message = (
            f"{full_url}: no answer after {attempts} attempt(s): {type(last).__name__}: {last}"
        )
        raise RpcError(message, url=url, path=path, attempts=attempts, cause=last)

    async def _once(
        self, method: str, url: str, body: Any, timeout: aiohttp.ClientTimeout
    ) -> tuple[int, Any]:
        session = self._session
        if session is None:
            raise RuntimeError("RpcClient is closed")
        kwargs: dict[str, Any] = {"timeout": timeout}
        if method != "GET":
            kwargs["json"] = body
        async with session.request(method, url, **kwargs) as response:
            raw = await response.read()
            return response.status, _decode(raw)


def _decode(raw: bytes) -> Any:
    """The decoded JSON body, or None when it is empty or not JSON."""
    if not raw:
        return None
    try:
        return jsonio.loads(raw)
    except ValueError:
        return None
