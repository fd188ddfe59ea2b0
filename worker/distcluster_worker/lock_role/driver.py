"""Drives a pure `RaftNode` with real time, real storage and a real network.

All access to the node goes through one asyncio lock, and whoever changes the node
(a tick, a received message, a batch of proposals) drains every `Ready` before letting
go: persist (one Redis transaction), then hand messages to the network, then apply
committed entries, then `advance`. Because a received request is stepped and its
`Ready` persisted under the same lock, the reply the node produced can be returned in
the HTTP response to that very request, and it is never sent before it is durable. A
follower applies what an append commits on the next event-loop turn, after its answer
left (the leader is waiting for that answer; the entries are durable on a majority, so
applying them can wait, as etcd's raft allows); `applied_index` and `wait_applied` count
what the state machine applied, and a snapshot is only taken once nothing is deferred.

Proposals wait in a queue while the lock is busy persisting the previous batch, so
under load many client commands share one AppendEntries and one Redis write.

The network is one `PeerLink` per peer, made by a `LinkFactory`. By default (the HTTP
transport) each peer has sender tasks (two requests in flight, so replication is
pipelined) that post whatever accumulated for the peer in one request and step its
replies back in. A factory may instead build links that deliver replies whenever they
arrive (the stream transport): those land in one inbox, and everything that arrived
from every peer while the lock was busy is stepped together under one acquisition, so a
leader counts both followers' acknowledgements in one `Ready`. Every queue is bounded
because Raft retransmits anything lost, so a dead peer costs memory for only a few
messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from distcluster_worker.lock_role.frames import BoundedQueue
from distcluster_worker.lock_role.storage import RaftStorage
from distcluster_worker.raft.messages import (
    RESPONSE_TYPES,
    AppendRequest,
    Entry,
    HardState,
    Message,
    Ready,
    SnapshotRequest,
    VoteRequest,
)
from distcluster_worker.raft.node import ConfChange, NotLeader, RaftNode

SendBatch = Callable[[str, str, list[Message]], Awaitable[list[Message]]]
"""(peer id, path, messages) -> the peer's reply messages; raises on any failure."""
Refuse = Callable[[BaseException], None]
"""Told why a submitted command could not be proposed (NotLeader)."""

VOTE_PATH = "/raft-vote"
APPEND_PATH = "/raft-append"
PEER_QUEUE_LIMIT = 256
MAILBOX_LIMIT = 256
INBOX_LIMIT = 1024
"""Replies delivered by links and not yet stepped; the oldest go first when full."""
LEADER_COMPACTION_DEFER = 4
"""A busy leader compacts at the latest after this many times `snapshot_entries`."""
PEER_INFLIGHT_REQUESTS = 2
"""Requests in flight to one peer: the core pipelines appends, the transport keeps up."""
REPLICATION_TYPES = (AppendRequest, SnapshotRequest)


class PeerLink(Protocol):
    """Carries this node's messages to one peer; never blocks the caller."""

    def enqueue(self, msg: Message) -> None: ...

    def start(self) -> list[asyncio.Task[None]]: ...


Deliver = Callable[[list[Message]], None]
LinkFactory = Callable[[str, Deliver], PeerLink]
"""(peer id, where to deliver the peer's replies) -> the link to that peer."""


class StateMachine(Protocol):
    def apply(self, entry: Entry) -> None: ...

    def restore(self, data: str) -> None: ...

    def snapshot(self) -> str: ...


class RaftDriver:
    """The I/O shell around one Raft node. See the module docstring for the protocol."""

    def __init__(
        self,
        node: RaftNode,
        storage: RaftStorage,
        send: SendBatch,
        machine: StateMachine,
        *,
        tick_ms: int,
        snapshot_entries: int,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        on_tick: Callable[[], None] | None = None,
        links: LinkFactory | None = None,
        addressable: Collection[str] | None = None,
    ) -> None:
        self.node = node
        self._storage = storage
        self._send = send
        self._machine = machine
        self._tick_s = tick_ms / 1000
        self._snapshot_entries = snapshot_entries
        self._ticks = 0
        self._proposed_at_tick = -2
        self._compaction_stagger = zlib.crc32(node.node_id.encode()) % (snapshot_entries // 2 + 1)
        self._log = log
        self._on_tick = on_tick
        self._mu = asyncio.Lock()
        self._proposals: list[tuple[str, asyncio.Future[int] | Refuse]] = []
        self._proposal_wakeup = asyncio.Event()
        self._reads: dict[int, asyncio.Future[int]] = {}
        self._read_ctx = itertools.count(1)
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Entries a follower committed and the core counts as applied, but that wait for
        # the next event-loop turn: the follower answers the append first (see `_drain`).
        self._deferred: list[Entry] = []
        self._flush_scheduled = False
        self._mailbox: dict[str, deque[Message]] = {}
        self._links = links
        self._senders: dict[str, PeerLink] = {}
        self._sender_tasks: dict[str, list[asyncio.Task[None]]] = {}
        # Kept by reference: discovery adds peers' addresses while the node runs.
        self._addressable = addressable
        self._linked_members: tuple[str, ...] | None = None
        self._running = False
        self._inbox = BoundedQueue(INBOX_LIMIT)
        self._inbox_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.storage_healthy = True
        self._durable_hard_state: HardState | None = None
        self._lagging_hard_state: HardState | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="raft-tick"),
            asyncio.create_task(self._proposal_loop(), name="raft-proposals"),
            asyncio.create_task(self._inbox_loop(), name="raft-inbox"),
        ]
        self.sync_links()

    @property
    def linked_peers(self) -> list[str]:
        return sorted(self._senders)

    def sync_links(self) -> None:
        """Keep one link per other member of the configuration in force (voter or
        learner) that this node can address; called whenever a Ready is handled, since
        a configuration is in force from the moment its entry is appended."""
        members = self.node.membership.members
        if members == self._linked_members or not self._running:
            return
        self._linked_members = members
        me = self.node.node_id
        wanted = {
            p for p in members if p != me and (self._addressable is None or p in self._addressable)
        }
        for peer in sorted(wanted - self._senders.keys()):
            sender = self._senders[peer] = self._make_link(peer)
            self._sender_tasks[peer] = sender.start()
        for peer in sorted(self._senders.keys() - wanted):
            del self._senders[peer]
            for task in self._sender_tasks.pop(peer, []):
                task.cancel()
        self._log.info("raft peer links", extra={"peers": sorted(self._senders)})

    def refresh_links(self) -> None:
        """The set of addressable peers changed (discovery): link to those now known."""
        self._linked_members = None
        self.sync_links()

    def _make_link(self, peer: str) -> PeerLink:
        if self._links is not None:
            return self._links(peer, self.deliver)
        return _PeerSender(
            peer,
            send=self._send,
            on_replies=self._step_replies,
            log=self._log,
            retry_delay_s=self._tick_s,
        )

    async def stop(self) -> None:
        self._running = False
        tasks = [*self._tasks, *(t for ts in self._sender_tasks.values() for t in ts)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._sender_tasks = {}

    # -- inputs ------------------------------------------------------------------

    async def receive(self, messages: list[Message]) -> list[Message]:
        """Step messages from one peer; return the replies, already persisted."""
        src = messages[0].src
        async with self._mu:
            for msg in messages:
                self.node.step(msg)
            await self._drain()
        box = self._mailbox.pop(src, None)
        return list(box) if box else []

    async def propose(self, data: str) -> int:
        """Append a command through the leader; returns its index (NotLeader otherwise)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._proposals.append((data, future))
        self._proposal_wakeup.set()
        return await future

    def submit(self, data: str, refuse: Refuse) -> None:
        """Queue a command for the next batch without waiting for its index (its outcome
        comes through the state machine); `refuse` gets NotLeader if it cannot be
        proposed. A client request costs no future and no callback this way."""
        self._proposals.append((data, refuse))
        self._proposal_wakeup.set()

    async def read_index(self) -> int:
        """Confirm leadership with a quorum; returns the index a linearizable read needs."""
        ctx = next(self._read_ctx)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[ctx] = future
        try:
            async with self._mu:
                self.node.read_index(ctx)
                await self._drain()
            return await future
        finally:
            self._reads.pop(ctx, None)

    async def propose_conf_change(self, change: ConfChange) -> int:
        """Append a configuration entry (leader only); returns its index. The core's
        errors (NotLeader, ConfChangeInProgress, InvalidConfChange) propagate."""
        async with self._mu:
            index = self.node.propose_conf_change(change)
            await self._drain()
        return index

    async def transfer_leadership(self, target: str) -> None:
        async with self._mu:
            self.node.transfer_leadership(target)
            await self._drain()

    def deliver(self, replies: list[Message]) -> None:
        """Queue a peer's replies for the inbox loop; never blocks (links call it)."""
        self._inbox.extend(replies)
        self._inbox_wakeup.set()

    async def _step_replies(self, replies: list[Message]) -> None:
        """Step a peer's replies to what this node sent it."""
        mine = [m for m in replies if m.dst == self.node.node_id]
        if not mine:
            return
        async with self._mu:
            for msg in mine:
                self.node.step(msg)
            await self._drain()

    @property
    def applied_index(self) -> int:
        """The last index the state machine applied (the core may count deferred ones)."""
        return self.node.applied_index - len(self._deferred)

    async def wait_applied(self, index: int) -> None:
        """Return once the state machine applied `index`."""
        if self.applied_index >= index:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, future))
        await future

    # -- the loops -----------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self._ticks += 1
            try:
                async with self._mu:
                    self.node.tick()
                    await self._drain()
                if self._on_tick is not None:
                    self._on_tick()
            except Exception:  # noqa: BLE001 - the loop must survive a Redis outage
                self._log.warning("raft tick failed", exc_info=True)

    async def _proposal_loop(self) -> None:
        while True:
            await self._proposal_wakeup.wait()
            # One more turn of the event loop: requests whose bytes arrived with the one
            # that woke us are parsed in it and join this batch (one append, one write).
            await asyncio.sleep(0)
            self._proposal_wakeup.clear()
            batch, self._proposals = self._proposals, []
            if not batch:
                continue
            self._proposed_at_tick = self._ticks
            try:
                async with self._mu:
                    self._propose_locked(batch)
                    await self._drain()
            except Exception:  # noqa: BLE001 - callers time out; entries persist later
                self._log.warning("persisting proposals failed", exc_info=True)

    async def _inbox_loop(self) -> None:
        while True:
            await self._inbox_wakeup.wait()
            self._inbox_wakeup.clear()
            replies = self._inbox.take()
            if not replies:
                continue
            try:
                await self._step_replies(replies)
            except Exception:  # noqa: BLE001 - a storage failure; Raft will retry
                self._log.warning("stepping replies failed", exc_info=True)

    def _propose_locked(self, batch: list[tuple[str, asyncio.Future[int] | Refuse]]) -> None:
        try:
            indexes = self.node.propose_many([data for data, _ in batch])
        except NotLeader as exc:
            for _, answer in batch:
                if not isinstance(answer, asyncio.Future):
                    answer(NotLeader(exc.leader_id))
                elif not answer.done():
                    answer.set_exception(NotLeader(exc.leader_id))
            return
        for (_, answer), index in zip(batch, indexes, strict=True):
            if isinstance(answer, asyncio.Future) and not answer.done():
                answer.set_result(index)

    # -- Ready -----------------------------------------------------------------------

    async def _drain(self) -> None:
        """Handle every pending Ready; the caller holds the lock."""
        while self.node.has_ready():
            ready = self.node.ready()
            self.sync_links()
            # A leader may replicate while it writes its own log (Raft thesis 10.2.1):
            # it counts itself towards a commit only once `advance` marks the entries
            # stable. Every other message (votes, replies) waits for the write.
            early = self.node.state == "leader"
            if early:
                for msg in ready.messages:
                    if isinstance(msg, REPLICATION_TYPES):
                        self._dispatch(msg)
            await self._persist(ready)
            if ready.snapshot is not None:
                self._apply_deferred()
                self._machine.restore(ready.snapshot.data)
            for msg in ready.messages:
                if not (early and isinstance(msg, REPLICATION_TYPES)):
                    self._dispatch(msg)
            if early:
                self._apply(ready.committed_entries)
            elif ready.committed_entries:
                # A follower's answer to the append that told it these entries are
                # committed need not wait for them to be applied (the leader is waiting
                # for that answer, the entries are already durable on a majority):
                # they are applied on the next event-loop turn, after the answer left.
                self._deferred.extend(ready.committed_entries)
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    asyncio.get_running_loop().call_soon(self._flush_deferred)
            for state in ready.read_states:
                future = self._reads.get(state.ctx)
                if future is not None and not future.done():
                    future.set_result(state.index)
            self.node.advance(ready)
            self._wake_applied()
            await self._maybe_compact()

    async def _persist(self, ready: Ready) -> None:
        hard_state = self._hard_state_to_write(ready)
        if hard_state is None and not ready.entries and ready.snapshot is None:
            return
        kept: list[Entry] = []
        if ready.snapshot is not None:
            kept = self.node.entries_from(ready.snapshot.last_index + 1, self.node.last_index + 1)
        try:
            await self._storage.save(hard_state, ready.entries, ready.snapshot, kept)
        except Exception:
            self.storage_healthy = False
            raise
        self.storage_healthy = True
        if hard_state is not None:
            self._durable_hard_state, self._lagging_hard_state = hard_state, None

    def _hard_state_to_write(self, ready: Ready) -> HardState | None:
        """The hard state this write must carry, or None when it can wait.

        Term and vote must be durable before any message leaves. The commit index need
        not be (Raft keeps it volatile: a restarted node learns it again from the
        leader, and the core takes the snapshot index as a floor), so a hard state that
        only moves the commit index is not written at all: it rides along with the next
        change of term or vote. A steady leader's or follower's write is then one RPUSH.
        """
        latest = ready.hard_state or self._lagging_hard_state
        if latest is None:
            return None
        durable = self._durable_hard_state
        only_commit = durable is not None and (latest.term, latest.voted_for) == (
            durable.term,
            durable.voted_for,
        )
        if only_commit:
            self._lagging_hard_state = latest
            return None
        return latest

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, RESPONSE_TYPES):
            box = self._mailbox.setdefault(msg.dst, deque(maxlen=MAILBOX_LIMIT))
            box.append(msg)
            return
        sender = self._senders.get(msg.dst)
        if sender is not None:
            sender.enqueue(msg)

    def _apply(self, entries: list[Entry]) -> None:
        """Apply committed `entries`, after any still deferred (`_drain` wakes waiters
        once `advance` counted them)."""
        self._apply_deferred()
        for entry in entries:
            self._machine.apply(entry)

    def _apply_deferred(self) -> None:
        if not self._deferred:
            return
        entries, self._deferred = self._deferred, []
        for entry in entries:
            self._machine.apply(entry)
        self._wake_applied()

    def _flush_deferred(self) -> None:
        self._flush_scheduled = False
        self._apply_deferred()

    def _wake_applied(self) -> None:
        if not self._applied_waiters:
            return
        applied = self.applied_index
        waiting: list[tuple[int, asyncio.Future[None]]] = []
        for index, future in self._applied_waiters:
            if future.done():
                continue  # its waiter was cancelled
            if index <= applied:
                future.set_result(None)
            else:
                waiting.append((index, future))
        self._applied_waiters = waiting

    def _compaction_due(self) -> bool:
        applied = self.node.applied_index

        def followers_have_it() -> bool:
            progress = self.node.status().get("progress", {})
            return all(p["next"] > applied for p in progress.values())

        return compaction_due(
            applied - self.node.first_index + 1,
            self._snapshot_entries,
            leader=self.node.state == "leader",
            stagger=self._compaction_stagger,
            busy=self._ticks - self._proposed_at_tick <= 1,
            followers_have_it=followers_have_it,
        )

    async def _maybe_compact(self) -> None:
        if not self._compaction_due():
            return
        self._apply_deferred()  # the snapshot must hold every entry the core counts applied
        applied = self.node.applied_index
        self.node.compact(applied, self._machine.snapshot())
        snapshot = self.node.snapshot
        if snapshot is not None:
            await self._storage.compact(snapshot)
            self._log.info("log compacted", extra={"snapshot_index": snapshot.last_index})


def compaction_due(
    logged: int,
    threshold: int,
    *,
    leader: bool,
    stagger: int,
    busy: bool,
    followers_have_it: Callable[[], bool],
) -> bool:
    """Whether a node with `logged` applied entries since its snapshot compacts now.

    Taking the lock table's snapshot costs tens of milliseconds (it carries the whole
    dedup map), during which the node answers nothing, and every node reaches
    `threshold` at about the same index. So followers stagger it (each by its own fixed
    `stagger`, up to half the threshold) and never all pause at once. A leader waits
    until it is not `busy` (its pause would hold up every client request in flight) and
    until every follower was sent the entries it is about to drop (one still needing
    them would get the whole snapshot instead), but never past `LEADER_COMPACTION_DEFER`
    times the threshold.
    """
    if not leader:
        return logged >= threshold + stagger
    if logged < threshold:
        return False
    if logged >= threshold * LEADER_COMPACTION_DEFER:
        return True
    return not busy and followers_have_it()


class _PeerSender:
    """Posts the messages queued for one peer and hands its replies back to the driver."""

    def __init__(
        self,
        peer: str,
        *,
        send: SendBatch,
        on_replies: Callable[[list[Message]], Awaitable[None]],
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        retry_delay_s: float,
    ) -> None:
        self.peer = peer
        self._send = send
        self._on_replies = on_replies
        self._log = log
        self._retry_delay_s = retry_delay_s
        self._queue: deque[Message] = deque(maxlen=PEER_QUEUE_LIMIT)
        self._wakeup = asyncio.Event()
        self.failures = 0

    def start(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._run(), name=f"raft-send-{self.peer}-{lane}")
            for lane in range(PEER_INFLIGHT_REQUESTS)
        ]

    def enqueue(self, msg: Message) -> None:
        self._queue.append(msg)
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch = list(self._queue)
            self._queue.clear()
            if not batch:
                continue
            votes: list[Message] = [m for m in batch if isinstance(m, VoteRequest)]
            others: list[Message] = [m for m in batch if not isinstance(m, VoteRequest)]
            for path, msgs in ((VOTE_PATH, votes), (APPEND_PATH, others)):
                if msgs:
                    await self._post(path, msgs)

    async def _post(self, path: str, msgs: list[Message]) -> None:
        try:
            replies = await self._send(self.peer, path, msgs)
        except Exception as exc:  # noqa: BLE001 - Raft retransmits; log the first failure
            self.failures += 1
            if self.failures == 1:
                self._log.warning("peer unreachable", extra={"peer": self.peer, "error": repr(exc)})
            await asyncio.sleep(self._retry_delay_s)
            return
        if self.failures:
            self._log.info("peer reachable again", extra={"peer": self.peer})
        self.failures = 0
        try:
            await self._on_replies(replies)
        except Exception:  # noqa: BLE001 - a storage failure; Raft will retry
            self._log.warning("stepping replies failed", exc_info=True)
