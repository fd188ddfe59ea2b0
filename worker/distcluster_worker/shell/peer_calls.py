"""Node-to-node calls multiplexed on one WebSocket per peer (``GET /peer-calls``).

A request forwarded to a peer over HTTP costs a whole client request and a whole server
request: connection pool, headers written and parsed, a response object on each side.
Measured on one machine, that is about ten times the CPU of a message on an open
WebSocket (~280 against ~25 µs for both sides), and a forwarding node pays it on every
request it does not own. So a node keeps one WebSocket to each peer it forwards to, and
sends every call on it as one binary frame; answers come back on the same socket, matched
by a call id, in any order (the peer serves calls concurrently).

Frames (all integers big-endian):

* call:   ``id u64 | path length u16 | path (UTF-8) | body`` (the body is the request's
  JSON, passed through as bytes, never decoded here);
* answer: ``id u64 | status u16 | body`` (JSON).

Failures are the caller's to handle, as with `RpcClient`: a call that cannot be sent, a
socket that closes with calls in flight, or an answer that does not come within the
call's timeout raises `RpcError` (the effect of the call is then unknown). A broken
socket is dialled again by the next call; dialling is bounded by the connect timeout.
The serving side runs each call through ``dispatch(path, body) -> (status, body)``; an
`ApiError` it raises is answered in the JSON error shape, any other failure is logged and
answered 500 (a forwarded call never kills the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web

from distcluster_worker.shell.errors import ApiError, error_body
from distcluster_worker.shell.rpc import RpcError

PEER_CALLS_PATH = "/peer-calls"
MAX_FRAME_BYTES = 16 * 1024 * 1024
_CALL = struct.Struct("!QH")
_ANSWER = struct.Struct("!QH")

Dispatch = Callable[[str, bytes], Awaitable[tuple[int, bytes]]]


def encode_call(call_id: int, path: str, body: bytes) -> bytes:
    raw_path = path.encode()
    return _CALL.pack(call_id, len(raw_path)) + raw_path + body


def decode_call(frame: bytes) -> tuple[int, str, bytes]:
    """(id, path, body) of a call frame; ValueError if the frame is malformed."""
    if len(frame) < _CALL.size:
        raise ValueError("call frame shorter than its header")
    call_id, path_len = _CALL.unpack_from(frame)
    end = _CALL.size + path_len
    if len(frame) < end:
        raise ValueError("call frame shorter than its path")
    return call_id, frame[_CALL.size : end].decode(), frame[end:]


def encode_answer(call_id: int, status: int, body: bytes) -> bytes:
    return _ANSWER.pack(call_id, status) + body


def decode_answer(frame: bytes) -> tuple[int, int, bytes]:
    if len(frame) < _ANSWER.size:
        raise ValueError("answer frame shorter than its header")
    call_id, status = _ANSWER.unpack_from(frame)
    return call_id, status, frame[_ANSWER.size :]


class _Link:
    """One open WebSocket to a peer and the calls waiting for their answers."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        try:
            async for message in self.ws:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    break
                try:
                    call_id, status, body = decode_answer(message.data)
                except ValueError:
                    break
                future = self.pending.pop(call_id, None)
                if future is not None and not future.done():
                    future.set_result((status, body))
        finally:
            self.fail(RpcError("the peer-calls socket closed"))

    def fail(self, error: RpcError) -> None:
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    @property
    def usable(self) -> bool:
        return not self.ws.closed and self.reader is not None and not self.reader.done()


class PeerCalls:
    """The calling side: ``call(url, path, body)`` over one socket per peer URL."""

    def __init__(self, connect_timeout_s: float) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._links: dict[str, _Link] = {}
        self._dialing: dict[str, asyncio.Lock] = {}
        self._ids = itertools.count(1)

    async def call(
        self, url: str, path: str, body: bytes, *, timeout_s: float
    ) -> tuple[int, bytes]:
        """The peer's (status, JSON body) for `path`; RpcError when there is no answer."""
        link = await self._link(url)
        call_id = next(self._ids)
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        link.pending[call_id] = future
        try:
            await link.ws.send_bytes(encode_call(call_id, path, body))
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise RpcError(f"{url}{path}: no answer within {timeout_s} s") from None
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise RpcError(f"{url}{path}: {type(exc).__name__}: {exc}", cause=exc) from None
        finally:
            link.pending.pop(call_id, None)

    async def _link(self, url: str) -> _Link:
        link = self._links.get(url)
        if link is not None and link.usable:
            return link
        lock = self._dialing.setdefault(url, asyncio.Lock())
        async with lock:
            link = self._links.get(url)
            if link is not None and link.usable:
                return link
            link = await self._dial(url)
            self._links[url] = link
            return link

    async def _dial(self, url: str) -> _Link:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                ws = await self._session.ws_connect(
                    url + PEER_CALLS_PATH,
                    heartbeat=self._connect_timeout_s * 5,
                    max_msg_size=MAX_FRAME_BYTES,
                    compress=0,
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RpcError(f"{url}{PEER_CALLS_PATH}: cannot connect: {exc!r}", cause=exc) from None
        link = _Link(ws)
        link.reader = asyncio.create_task(link.read(), name=f"peer-calls {url}")
        return link

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            link.fail(RpcError("closing"))
            await link.ws.close()
            if link.reader is not None:
                link.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await link.reader
        if self._session is not None:
            await self._session.close()
            self._session = None


class PeerCallServer:
    """The serving side: answers every call of every peer's socket with ``dispatch``."""

    def __init__(
        self,
        dispatch: Dispatch,
        heartbeat_s: float,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._log = log if log is not None else logging.getLogger(__name__)
        self._heartbeat_s = heartbeat_s
        self._sockets: set[web.WebSocketResponse] = set()
        self._calls: set[asyncio.Task[None]] = set()
        self._closing = False

    async def serve(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            heartbeat=self._heartbeat_s, compress=False, max_msg_size=MAX_FRAME_BYTES
        )
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    break
                if self._closing:
                    continue  # Never run: its caller sees the socket close and retries.
                try:
                    call = decode_call(message.data)
                except ValueError:
                    break
                task = asyncio.create_task(self._answer(ws, *call))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
        finally:
            self._sockets.discard(ws)
        return ws

    async def _answer(
        self, ws: web.WebSocketResponse, call_id: int, path: str, body: bytes
    ) -> None:
        try:
            status, answer = await self._dispatch(path, body)
        except ApiError as exc:
            status = exc.status
            answer = orjson.dumps(error_body(exc.code, exc.message, **exc.extra))
        except Exception:  # noqa: BLE001 - a forwarded call must never kill the socket
            self._log.exception("forwarded call failed", extra={"path": path})
            status, answer = (
                500,
                orjson.dumps(error_body("internal", "internal error; see the log")),
            )
        if not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_bytes(encode_answer(call_id, status, answer))

    async def close(self, grace_s: float) -> None:
        """Stop taking calls, let those in flight answer (at most `grace_s`), close.

        A call that arrives after this began is not run; its caller sees the socket close
        and serves the request some other way, so nothing is done twice.
        """
        self._closing = True
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=grace_s)
        sockets = list(self._sockets)
        await asyncio.gather(
            *(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY) for ws in sockets),
            return_exceptions=True,
        )
        for task in list(self._calls):
            task.cancel()
