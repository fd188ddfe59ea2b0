"""The pieces of the Raft stream transport that need no socket: frames, queues, backoff.

A frame is one WebSocket binary message whose payload is the body `/raft-append` takes,
`{"messages": [wire...]}` in the codec of `raft.messages`, so both transports speak the
same language and a frame can be read by eye in a packet capture. WebSocket does the
length prefixing; this module only checks what a frame says: every message must come
from the peer at the other end of the connection (a connection is opened by one node
and says which in its URL), so a confused or hostile peer cannot speak for another.

`BoundedQueue` holds the messages waiting for a link (or for the driver). Raft
retransmits whatever is lost, so when a link is slower than the node the right answer is
to forget the oldest messages, not to grow: the count of forgotten ones is kept for the
metrics. `Backoff` spaces reconnection attempts (doubling up to a cap, reset by a
success) so that a dead peer costs a few attempts a second, not a busy loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from distcluster_worker.raft.messages import Message, WireError, message_from_wire, message_to_wire

_BACKOFF_MAX_EXPONENT = 16
"""2**16 times the base is far past any cap; stops the exponent (and float) growing."""


def encode_frame(messages: Sequence[Message]) -> bytes:
    """The payload of one frame carrying `messages` (in order)."""
    return orjson.dumps({"messages": [message_to_wire(m) for m in messages]})


def decode_frame(payload: bytes, src: str) -> list[Message]:
    """The messages of a frame received from `src`; `WireError` on anything malformed."""
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"frame is not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("messages"), list):
        raise WireError('frame must be {"messages": [...]}')
    messages = [message_from_wire(item) for item in raw["messages"]]
    for msg in messages:
        if msg.src != src:
            raise WireError(f"a frame from {src!r} carries a message from {msg.src!r}")
    return messages


class BoundedQueue:
    """Messages in arrival order, at most `limit`: a full queue forgets its oldest."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        self.limit = limit
        self.dropped = 0
        self._items: deque[Message] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: Message) -> None:
        if len(self._items) >= self.limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(msg)

    def extend(self, messages: Sequence[Message]) -> None:
        for msg in messages:
            self.put(msg)

    def take(self) -> list[Message]:
        """Everything queued, oldest first; the queue is empty afterwards."""
        items = list(self._items)
        self._items.clear()
        return items

    def clear(self) -> int:
        """Forget everything queued (counted as dropped); returns how many."""
        count = len(self._items)
        self.dropped += count
        self._items.clear()
        return count


@dataclass
class Backoff:
    """Delays between reconnection attempts: base, 2x base, ... up to cap; `reset` on success."""

    base_s: float
    cap_s: float
    attempts: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got {self.base_s}, {self.cap_s}")

    def next_delay_s(self) -> float:
        exponent = min(self.attempts, _BACKOFF_MAX_EXPONENT)
        self.attempts += 1
        return min(self.cap_s, self.base_s * (1 << exponent))

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class LinkStats:
    """Counters of one directed link, read by the metrics endpoint and by tests."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    frames_sent: int = 0
    messages_sent: int = 0
    frames_received: int = 0
    dropped_when_full: int = 0
    """Batches refused because the connection's write buffer was over its bound."""
