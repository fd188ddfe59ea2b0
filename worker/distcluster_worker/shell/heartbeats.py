"""Heartbeats between nodes, fed into a `ClusterView` (the queue and cache roles use it).

Every `interval_ms` a node posts `{node_id, incarnation}` to each peer at `path`; a peer
that answers with its own id is heard, one that does not is reported unreachable. A
heartbeat received is answered the same way. The incarnation is the node's start time
(epoch ms), so a restarted peer is told apart from a late message of its past life.
Times given to the detector come from the event loop's monotonic clock.

With discovery on, a heartbeat also carries the sender's URL: a node that just joined
introduces itself with its first beat, so the receiver adds it at once (``learn``) instead
of answering 403 until its next registry read. Without discovery a stranger is refused.

An answer is also an acknowledgement: the peer marked this node heard *before* it
answered, so from then on this node is on its ring. ``on_ack(peer, sent_ms)`` tells the
role, with the time the beat was sent (the cache's homes wait for it; see
``cache_role/home.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, StrictStr

from distcluster_worker.membership import Changes
from distcluster_worker.shell.cluster_view import ClusterView
from distcluster_worker.shell.errors import ApiError
from distcluster_worker.shell.node import BaseNode
from distcluster_worker.shell.rpc import RpcClient, RpcError


class Heartbeat(BaseModel):
    """The body of a heartbeat (and of its answer)."""

    model_config = ConfigDict(extra="forbid")

    node_id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,63}$")]
    incarnation: NonNegativeInt
    url: Annotated[StrictStr, Field(pattern=r"^https?://[^/?#\s]{1,253}$")] | None = None


def loop_ms() -> int:
    """The event loop's monotonic clock in milliseconds."""
    return int(asyncio.get_running_loop().time() * 1000)


class Heartbeats:
    """Sends, receives and accounts heartbeats for one node."""

    def __init__(
        self,
        *,
        node_id: str,
        peer_urls: Mapping[str, str],
        rpc: Callable[[], RpcClient],
        view: ClusterView,
        path: str,
        interval_ms: int,
        incarnation: int,
        on_changes: Callable[[Changes], None],
        url: str | None = None,
        learn: Callable[[str, str], None] | None = None,
        on_ack: Callable[[str, int], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self._url = url
        self._learn = learn
        self._on_ack = on_ack
        self._peer_urls = peer_urls
        self._rpc = rpc
        self._view = view
        self._path = path
        self._interval_ms = interval_ms
        self._on_changes = on_changes

    @classmethod
    def for_node(
        cls,
        node: BaseNode,
        view: ClusterView,
        *,
        path: str,
        interval_ms: int,
        incarnation: int,
        on_changes: Callable[[Changes], None],
        on_ack: Callable[[str, int], None] | None = None,
    ) -> Heartbeats:
        """Heartbeats to the node's peers (``node.peer_urls``) over its RPC client; with
        discovery on, they carry the node's URL and strangers who send theirs are added."""
        discovering = node.settings.discovery == "redis"
        return cls(
            node_id=node.settings.node_id,
            peer_urls=node.peer_urls,
            rpc=lambda: node.rpc,
            view=view,
            path=path,
            interval_ms=interval_ms,
            incarnation=incarnation,
            on_changes=on_changes,
            url=node.settings.advertised_url if discovering else None,
            learn=node.learn_peer if discovering else None,
            on_ack=on_ack,
        )

    async def run(self, each_round: Callable[[], Awaitable[None]] | None = None) -> None:
        """Beat every peer (and run `each_round`) once per interval, forever."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            beats = [self.beat(peer, url) for peer, url in list(self._peer_urls.items())]
            extra = [each_round()] if each_round is not None else []
            await asyncio.gather(*extra, *beats)
            elapsed_s = loop.time() - started
            await asyncio.sleep(max(0.0, self._interval_ms / 1000 - elapsed_s))

    async def beat(self, peer: str, url: str) -> None:
        body = self._own_body()
        sent_ms = loop_ms()
        try:
            status, reply = await self._rpc().post_json(
                url, self._path, body, timeout_ms=self._interval_ms, retries=0
            )
        except RpcError:
            status, reply = 0, None
        if status == 200 and isinstance(reply, dict) and reply.get("node_id") == peer:
            incarnation = reply.get("incarnation")
            known = incarnation if isinstance(incarnation, int) else None
            self._on_changes(self._view.heard(peer, loop_ms(), known))
            if self._on_ack is not None:
                self._on_ack(peer, sent_ms)
        else:
            self._on_changes(self._view.unreachable(peer, loop_ms()))

    def receive(self, beat: Heartbeat) -> dict[str, Any]:
        """Account a heartbeat; the answer to send back (403 for strangers)."""
        sender = beat.node_id
        if sender not in self._peer_urls and self._learn is not None and beat.url is not None:
            self._learn(sender, beat.url)
        if sender not in self._peer_urls:
            raise ApiError(403, "forbidden", f"{sender!r} is not a known peer")
        self._on_changes(self._view.heard(sender, loop_ms(), beat.incarnation))
        return self._own_body()

    def _own_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"node_id": self.node_id, "incarnation": self.incarnation}
        if self._url is not None:
            body["url"] = self._url
        return body
