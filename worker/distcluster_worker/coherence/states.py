"""The vocabulary of MESI: line states, the events a line sees, and the actions they cause.

The values are short lowercase strings (the letters for states) because the shell puts them
on the wire and in `/cache/lines` and metrics labels; `StrEnum` keeps them comparable to
those strings without conversion code.
"""

from __future__ import annotations

from enum import StrEnum


class MesiState(StrEnum):
    """The state of one node's copy of one key.

    M: the only valid copy besides memory's, written by this node (memory may be behind if the
       shell ever defers the write-through, hence the write-back on every way out of M).
    E: the only cached copy, equal to memory; may become M without telling peers.
    S: one of possibly several read-only copies, equal to memory.
    I: no valid copy.
    """

    M = "M"
    E = "E"
    S = "S"
    I = "I"  # noqa: E741 - the letter is the protocol's name for the state

    @property
    def valid(self) -> bool:
        """Whether a node may answer a read from this copy (while its lease lasts)."""
        return self is not MesiState.I

    @property
    def exclusive(self) -> bool:
        return self is MesiState.M or self is MesiState.E


class Event(StrEnum):
    """What happens to one node's line: its own reads and writes, peers' requests, and loss."""

    LOCAL_READ = "local_read"
    LOCAL_WRITE = "local_write"
    BUS_READ = "bus_read"  # a peer reads the key
    BUS_INVALIDATE = "bus_invalidate"  # a peer writes (or deletes) the key
    EVICT = "evict"  # the node drops the line for room
    LEASE_EXPIRED = "lease_expired"  # the node could not renew its lease in time


class Action(StrEnum):
    """What the shell must do, in the order a transition lists them."""

    READ_MEMORY = "read_memory"  # fetch the value from Redis
    READ_PEER = "read_peer"  # fetch the value from the peer that the home names
    SUPPLY_DATA = "supply_data"  # answer a peer's bus_read with this copy's value
    WRITE_BACK = "write_back"  # a version-fenced write of this copy to Redis
    INVALIDATE_OTHERS = "invalidate_others"  # ask the home to invalidate every other copy
    WRITE_THROUGH = "write_through"  # store the new value in Redis before answering the PUT
    NOTIFY_HOME = "notify_home"  # tell the home the copy is gone, so it stops counting it
