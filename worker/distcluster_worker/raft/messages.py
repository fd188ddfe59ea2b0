"""Raft log entries, persistent state and the messages nodes exchange.

Everything here is an immutable value with a JSON-safe wire form, so the shell can
send it over HTTP and the simulator can copy it freely. Payloads (`Entry.data`,
`Snapshot.data`) are opaque text: the state machine's JSON, except the data of a
`config` entry, which is the new cluster membership (`confchange.encode_membership`).

Compatibility. The same codec writes the snapshots and log entries the lock role keeps
in Redis, and nodes of two versions talk during a rolling upgrade, so a field added
later has a default and may be missing on the wire: a snapshot without `learners`
(written before membership changes existed) decodes with none, a `VoteRequest` without
`transfer` is an ordinary one.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, get_args

from distcluster_worker.raft.confchange import decode_membership

EntryKind = Literal["noop", "command", "config"]
ENTRY_KINDS: tuple[str, ...] = get_args(EntryKind)


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `noop` entries are appended by a new leader to commit its term;
    `config` entries carry a whole new membership (see `confchange`)."""

    term: int
    index: int
    kind: EntryKind
    data: str = ""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must reach stable storage before the node answers any message."""

    term: int = 0
    voted_for: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of `last_index` (inclusive), which had term `last_term`.

    `voters` and `learners` are the membership as of `last_index`; no voters means the
    snapshot records none (the node then falls back to its bootstrap configuration).
    """

    last_index: int
    last_term: int
    data: str
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """RequestVote. `transfer` marks the election a leader asked for (`TimeoutNow`):
    voters grant it even while they still hear from that leader (thesis 3.10)."""

    src: str
    dst: str
    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    src: str
    dst: str
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """AppendEntries; a heartbeat is one with no entries. `read_seq` confirms ReadIndex."""

    src: str
    dst: str
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """On success `match_index` is the last index known to match the leader's log.

    On rejection `conflict_index`/`conflict_term` let the leader skip a whole term of
    mismatched entries at once (fast back-off, Raft paper section 5.3).
    """

    src: str
    dst: str
    term: int
    success: bool
    match_index: int = 0
    conflict_index: int = 0
    conflict_term: int = 0
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """InstallSnapshot, sent whole (the lock table is small)."""

    src: str
    dst: str
    term: int
    snapshot: Snapshot
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    src: str
    dst: str
    term: int
    match_index: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the leader tells an up-to-date voter to start an election now."""

    src: str
    dst: str
    term: int


Message = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | SnapshotRequest
    | SnapshotResponse
    | TimeoutNow
)
REQUEST_TYPES = (VoteRequest, AppendRequest, SnapshotRequest, TimeoutNow)
RESPONSE_TYPES = (VoteResponse, AppendResponse, SnapshotResponse)


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed ReadIndex: once `index` is applied, a read for `ctx` is linearizable."""

    ctx: int
    index: int


@dataclass(slots=True)
class Ready:
    """Work for the shell, in this order: persist, send, apply, then `advance`.

    `entries` replace the stored log from `entries[0].index` on (any stored entry at
    or after that index is dropped first). `snapshot`, when set, was received from the
    leader: persist it, drop the stored log up to its index, restore the state machine.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)


_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        VoteRequest,
        VoteResponse,
        AppendRequest,
        AppendResponse,
        SnapshotRequest,
        SnapshotResponse,
        TimeoutNow,
    )
}
_BOOLEANS = ("success", "granted", "pre_vote", "transfer")
# Each type's fields as (name, required), read once: `dataclasses.fields` per message
# cost more than decoding a small message's fields.
_FIELD_SPECS: dict[type[Any], tuple[tuple[str, bool], ...]] = {
    cls: tuple((spec.name, spec.default is MISSING) for spec in fields(cls))
    for cls in _TYPES.values()
}


class WireError(ValueError):
    """A message on the wire that does not decode; the shell answers it with a 400."""


def entry_to_wire(entry: Entry) -> list[Any]:
    return [entry.term, entry.index, entry.kind, entry.data]


def entry_from_wire(raw: Any) -> Entry:
    # Every replicated entry passes here on every follower (and again from Redis on a
    # restart), so the checks are spelled out: `type(x) is int` also refuses bool.
    if type(raw) is not list or len(raw) != 4:
        raise WireError("entry must be [term, index, kind, data]")
    term, index, kind, data = raw
    if (
        type(term) is not int
        or type(index) is not int
        or term < 0
        or index < 0
        or kind not in ENTRY_KINDS
    ):
        raise WireError("entry has a bad term, index or kind")
    if type(data) is not str:
        raise WireError("entry data must be text")
    if kind == "config":
        try:
            decode_membership(data)
        except ValueError as exc:
            raise WireError(f"config entry {index}: {exc}") from None
    return Entry(term, index, kind, data)


def snapshot_to_wire(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "last_index": snapshot.last_index,
        "last_term": snapshot.last_term,
        "data": snapshot.data,
        "voters": list(snapshot.voters),
        "learners": list(snapshot.learners),
    }


def snapshot_from_wire(raw: Any) -> Snapshot:
    if not isinstance(raw, dict):
        raise WireError("snapshot must be an object")
    try:
        last_index, last_term, data = raw["last_index"], raw["last_term"], raw["data"]
        voters, learners = raw.get("voters", []), raw.get("learners", [])
    except KeyError as exc:
        raise WireError(f"snapshot lacks {exc}") from None
    if not (_is_count(last_index) and _is_count(last_term) and isinstance(data, str)):
        raise WireError("snapshot has a bad index, term or data")
    for group in (voters, learners):
        if not isinstance(group, list) or not all(isinstance(v, str) and v for v in group):
            raise WireError("snapshot voters and learners must be lists of node ids")
    distinct = len(set(voters) | set(learners)) == len(voters) + len(learners)
    if not distinct or (learners and not voters):
        raise WireError("snapshot membership is inconsistent")
    return Snapshot(
        last_index=last_index,
        last_term=last_term,
        data=data,
        voters=tuple(sorted(voters)),
        learners=tuple(sorted(learners)),
    )


def message_to_wire(msg: Message) -> dict[str, Any]:
    """A JSON-safe dict naming the message type; inverse of `message_from_wire`."""
    body: dict[str, Any] = {"type": type(msg).__name__}
    for name in msg.__slots__:
        value = getattr(msg, name)
        if name == "entries":
            value = [entry_to_wire(e) for e in value]
        elif name == "snapshot":
            value = snapshot_to_wire(value)
        body[name] = value
    return body


def message_from_wire(raw: Any) -> Message:
    """Decode and type-check a message; raises `WireError` on anything malformed."""
    if not isinstance(raw, dict):
        raise WireError("message must be an object")
    cls = _TYPES.get(raw.get("type", ""))
    if cls is None:
        raise WireError(f"unknown message type {raw.get('type')!r}")
    kwargs: dict[str, Any] = {}
    for name, required in _FIELD_SPECS[cls]:
        if name in raw:
            kwargs[name] = _field_from_wire(name, raw[name])
        elif required:
            raise WireError(f"{cls.__name__} lacks {name!r}")
    message: Message = cls(**kwargs)
    return message


def _field_from_wire(name: str, value: Any) -> Any:
    if name == "entries":
        if not isinstance(value, list):
            raise WireError("entries must be a list")
        return tuple([entry_from_wire(e) for e in value])
    if name == "snapshot":
        return snapshot_from_wire(value)
    if name in ("src", "dst"):
        if not isinstance(value, str) or not value:
            raise WireError(f"{name} must be a node id")
        return value
    if name in _BOOLEANS:
        if not isinstance(value, bool):
            raise WireError(f"{name} must be a boolean")
        return value
    if not _is_count(value):
        raise WireError(f"{name} must be a non-negative integer")
    return value


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
