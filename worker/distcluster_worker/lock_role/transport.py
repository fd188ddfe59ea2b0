"""The stream transport of one node: its WebSocket session, links, incoming streams, metrics.

`StreamTransport` is what `LockNode` holds when `RAFT_TRANSPORT=stream`: `link` is the
driver's `LinkFactory`, `serve` answers `GET /raft-stream`, `close_inbound` runs on the
server's shutdown (a WebSocket handler would otherwise hold a graceful stop for its whole
grace period), `close` after the driver stopped.

One timeout, `dead_after_s` (the node's `RPC_TIMEOUT_MS`), bounds the handshake, the
closing handshake and, through the heartbeat, how long a silent link is trusted; the
redial backoff starts at one Raft tick and doubles up to `BACKOFF_CAP_S`, so a healed
link carries heartbeats again well within one election timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

import aiohttp
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from distcluster_worker.lock_role.driver import Deliver
from distcluster_worker.lock_role.frames import Backoff
from distcluster_worker.lock_role.stream import (
    MAX_FRAME_BYTES,
    STREAM_PATH,
    Connect,
    FrameConn,
    InboundStream,
    Log,
    Receive,
    StreamLink,
    WsConn,
)
from distcluster_worker.shell.errors import error_response

BACKOFF_CAP_S = 0.5


class StreamTransport:
    """See the module docstring."""

    def __init__(
        self,
        node_id: str,
        peer_urls: Mapping[str, str],
        *,
        dead_after_s: float,
        tick_s: float,
        log: Log,
    ) -> None:
        self.node_id = node_id
        self.peer_urls = peer_urls  # by reference: discovery adds peers at run time
        self.dead_after_s = dead_after_s
        self.links: dict[str, StreamLink] = {}
        self.inbound: dict[InboundStream, web.WebSocketResponse] = {}
        self._tick_s = tick_s
        self._log = log
        self._session: aiohttp.ClientSession | None = None
        self._closing: set[asyncio.Task[bool]] = set()

    def link(self, peer: str, deliver: Deliver) -> StreamLink:
        """The driver's `LinkFactory`: this node's stream to `peer`."""
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        # Node ids match NODE_ID_RE (URL-safe), so the query needs no escaping.
        url = f"{self.peer_urls[peer]}{STREAM_PATH}?src={self.node_id}"
        link = StreamLink(
            peer,
            ws_connector(self._session, url, self.dead_after_s),
            on_replies=deliver,
            log=self._log,
            backoff=Backoff(self._tick_s, max(self._tick_s, BACKOFF_CAP_S)),
        )
        self.links[peer] = link
        return link

    async def serve(self, request: web.Request, receive: Receive | None) -> web.StreamResponse:
        """`GET /raft-stream?src=<peer>`: upgrade, then step the peer's frames until it closes."""
        src = request.query.get("src", "")
        if src not in self.peer_urls:
            return error_response(403, "forbidden", f"{src!r} is not a peer")
        if receive is None:
            return error_response(503, "not_ready", "Raft state is still loading")
        ws, conn = await accept_stream(request, self.dead_after_s)
        stream = InboundStream(conn, src, receive, log=self._log)
        # A peer keeps one link to this node, so an older stream from it is stale (the
        # peer restarted or gave up on it): close it, or replies could go down it.
        stale = [old for s, old in self.inbound.items() if s.src == src]
        self.inbound[stream] = ws
        for old in stale:
            self._closing.add(asyncio.create_task(old.close(code=aiohttp.WSCloseCode.GOING_AWAY)))
            self._closing = {t for t in self._closing if not t.done()}
        try:
            await stream.run()
        finally:
            self.inbound.pop(stream, None)
        return ws

    async def close_inbound(self) -> None:
        """Close every incoming stream (the peers redial another node or this one later)."""
        sockets = list(self.inbound.values())
        await asyncio.gather(
            *(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY) for ws in sockets),
            return_exceptions=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def ws_connector(session: aiohttp.ClientSession, url: str, dead_after_s: float) -> Connect:
    """Dial `url` (the peer's `/raft-stream?src=...`) as a WebSocket, within `dead_after_s`."""

    async def connect() -> FrameConn:
        async with asyncio.timeout(dead_after_s):
            ws = await session.ws_connect(
                url,
                heartbeat=dead_after_s,
                max_msg_size=MAX_FRAME_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=dead_after_s),
            )
        return WsConn(ws)

    return connect


async def accept_stream(
    request: web.Request, dead_after_s: float
) -> tuple[web.WebSocketResponse, WsConn]:
    """Upgrade `request` to the receiving end of a Raft stream."""
    ws = web.WebSocketResponse(
        timeout=dead_after_s,
        heartbeat=dead_after_s,
        compress=False,
        max_msg_size=MAX_FRAME_BYTES,
    )
    await ws.prepare(request)
    return ws, WsConn(ws)


class StreamCollector(Collector):
    """Prometheus view of the links' counters, read at scrape time (nothing per message)."""

    def __init__(self, transport: StreamTransport) -> None:
        self._transport = transport

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        links = self._transport.links
        counters = {
            "connects": "Raft stream connections opened to a peer",
            "connect_failures": "Raft stream dial attempts that failed",
            "disconnects": "Raft stream connections to a peer that ended",
            "frames_sent": "Raft stream frames written to a peer",
            "messages_sent": "Raft messages written to a peer",
            "frames_received": "Raft stream reply frames read from a peer",
        }
        for field, doc in counters.items():
            family = CounterMetricFamily(f"distcluster_raft_stream_{field}", doc, labels=["peer"])
            for peer, link in links.items():
                family.add_metric([peer], getattr(link.stats, field))
            yield family
        dropped = CounterMetricFamily(
            "distcluster_raft_stream_dropped_messages",
            "Raft messages to a peer dropped by a full queue or write buffer",
            labels=["peer"],
        )
        connected = GaugeMetricFamily(
            "distcluster_raft_stream_connected",
            "1 while the stream to a peer is open",
            labels=["peer"],
        )
        for peer, link in links.items():
            dropped.add_metric([peer], link.dropped)
            connected.add_metric([peer], 1.0 if link.connected else 0.0)
        yield dropped
        yield connected
