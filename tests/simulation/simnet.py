"""A deterministic packet simulator for Raft messages (after TigerBeetle's packet simulator).

Every message handed to the network gets a delivery step drawn from the seeded random
stream, so messages are delayed, reordered (two sends can swap their delivery steps),
duplicated or lost. Links are directed: a partition is a set of cut `(src, dst)` pairs,
which expresses symmetric splits, one-way cuts and isolation alike. A cut link drops
a message both when it is sent and when it would be delivered, as a broken wire would.

Nothing here knows about Raft beyond the `src`/`dst` fields of a message.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass

from distcluster_worker.raft.messages import Message


@dataclass
class NetConfig:
    """How badly the network behaves. Delays are in simulation steps and at least 1."""

    loss: float = 0.0
    duplication: float = 0.0
    min_delay: int = 1
    max_delay: int = 1


@dataclass
class NetStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    cut: int = 0
    duplicated: int = 0
    dropped_to_crashed: int = 0


class SimNetwork:
    """Messages in flight, ordered by delivery step, over directed links that can be cut."""

    def __init__(self, node_ids: Iterable[str], rng: random.Random, config: NetConfig) -> None:
        self.node_ids = tuple(node_ids)
        self.config = config
        self.stats = NetStats()
        self._rng = rng
        self._cut: set[tuple[str, str]] = set()
        self._in_flight: list[tuple[int, int, Message]] = []
        self._seq = 0

    # -- sending and delivering ---------------------------------------------------

    def send(self, msg: Message, now: int) -> None:
        self.stats.sent += 1
        if self.is_cut(msg.src, msg.dst):
            self.stats.cut += 1
            return
        if self._rng.random() < self.config.loss:
            self.stats.lost += 1
            return
        self._enqueue(msg, now)
        if self._rng.random() < self.config.duplication:
            self.stats.duplicated += 1
            self._enqueue(msg, now)

    def _enqueue(self, msg: Message, now: int) -> None:
        delay = self._rng.randint(self.config.min_delay, max(1, self.config.max_delay))
        self._seq += 1
        heapq.heappush(self._in_flight, (now + max(1, delay), self._seq, msg))

    def due(self, now: int) -> list[Message]:
        """Pop every message whose delivery step has come, in delivery order."""
        out: list[Message] = []
        while self._in_flight and self._in_flight[0][0] <= now:
            _, _, msg = heapq.heappop(self._in_flight)
            if self.is_cut(msg.src, msg.dst):
                self.stats.cut += 1
                continue
            out.append(msg)
        self.stats.delivered += len(out)
        return out

    def drop_to(self, node_id: str) -> None:
        """A crashed node loses whatever was on its way to it."""
        kept = [item for item in self._in_flight if item[2].dst != node_id]
        self.stats.dropped_to_crashed += len(self._in_flight) - len(kept)
        heapq.heapify(kept)
        self._in_flight = kept

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- partitions ---------------------------------------------------------------

    def is_cut(self, src: str, dst: str) -> bool:
        return (src, dst) in self._cut

    def cut_one_way(self, src: str, dst: str) -> None:
        self._cut.add((src, dst))

    def cut(self, a: str, b: str) -> None:
        self._cut.add((a, b))
        self._cut.add((b, a))

    def isolate(self, node_id: str) -> None:
        for other in self.node_ids:
            if other != node_id:
                self.cut(node_id, other)

    def split(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups (nodes left out form one more group)."""
        sets = [set(g) for g in groups]
        named = set().union(*sets)
        rest = {n for n in self.node_ids if n not in named}
        if rest:
            sets.append(rest)
        for i, left in enumerate(sets):
            for right in sets[i + 1 :]:
                for a in left:
                    for b in right:
                        self.cut(a, b)

    def deafen(self, node_id: str) -> None:
        """The node can still send to everyone but hears from no one."""
        for other in self.node_ids:
            if other != node_id:
                self.cut_one_way(other, node_id)

    def heal(self) -> None:
        self._cut.clear()

    def describe_cuts(self) -> str:
        return ",".join(f"{a}>{b}" for a, b in sorted(self._cut)) or "none"
