"""What applying a command produced: immutable values the shell turns into replies.

Every node applies the same entries and so produces the same outcomes; only the node
that received the client's request answers it, matching outcomes by `request_id`.
Outcomes of finished requests are also stored in the table's dedup map (so a retry gets
the same answer), which is why each has a JSON form (`to_dict`) and a way back
(`outcome_from_dict`) for snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeAlias

Mode = Literal["exclusive", "shared"]
EXCLUSIVE: Mode = "exclusive"
SHARED: Mode = "shared"
MODES: tuple[Mode, ...] = (EXCLUSIVE, SHARED)

RefusalCode = Literal["locked", "timeout", "deadlock", "not_holder", "invalid"]
REFUSAL_CODES: tuple[RefusalCode, ...] = ("locked", "timeout", "deadlock", "not_holder", "invalid")


def _as_dict(outcome: Any, kind: str) -> dict[str, Any]:
    """The JSON form: the fields plus `type`; tuples become lists.

    Fields are read from the slots directly: `dataclasses.asdict` deep-copies, and a
    snapshot encodes every outcome of the dedup map.
    """
    data: dict[str, Any] = {}
    for key in outcome.__slots__:
        value = getattr(outcome, key)
        data[key] = list(value) if isinstance(value, tuple) else value
    data["type"] = kind
    return data


@dataclass(frozen=True, slots=True)
class Granted:
    """The owner holds the lock; `token` is the fencing token to send with every write."""

    request_id: str
    resource: str
    owner: str
    mode: Mode
    token: int
    expires_at_ms: int

    def to_dict(self) -> dict[str, Any]:
        # Spelled out (three times faster than `_as_dict`): grants and releases fill
        # nearly all of the dedup map, which every snapshot encodes whole.
        return {
            "request_id": self.request_id,
            "resource": self.resource,
            "owner": self.owner,
            "mode": self.mode,
            "token": self.token,
            "expires_at_ms": self.expires_at_ms,
            "type": "granted",
        }


@dataclass(frozen=True, slots=True)
class Queued:
    """The request waits; `position` is 1 for the head of the resource's queue."""

    request_id: str
    resource: str
    position: int

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self, "queued")


@dataclass(frozen=True, slots=True)
class Refused:
    """The request failed; `cycle` is set for "deadlock", `holders` for "locked"/"timeout"."""

    request_id: str
    code: RefusalCode
    message: str
    cycle: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self, "refused")


@dataclass(frozen=True, slots=True)
class Released:
    request_id: str
    resource: str
    owner: str
    token: int

    def to_dict(self) -> dict[str, Any]:
        # Spelled out, as `Granted.to_dict` is.
        return {
            "request_id": self.request_id,
            "resource": self.resource,
            "owner": self.owner,
            "token": self.token,
            "type": "released",
        }


@dataclass(frozen=True, slots=True)
class Renewed:
    request_id: str
    resource: str
    owner: str
    token: int
    expires_at_ms: int

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self, "renewed")


@dataclass(frozen=True, slots=True)
class Expired:
    """A lease ran out; no client request caused it, so `request_id` is empty."""

    resource: str
    owner: str
    token: int
    request_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self, "expired")


@dataclass(frozen=True, slots=True)
class Cancelled:
    """A waiting acquire was withdrawn by its client; it is also the request's final outcome."""

    request_id: str
    resource: str

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self, "cancelled")


Outcome: TypeAlias = Granted | Queued | Refused | Released | Renewed | Expired | Cancelled

_KINDS: dict[str, type[Outcome]] = {
    "granted": Granted,
    "queued": Queued,
    "refused": Refused,
    "released": Released,
    "renewed": Renewed,
    "expired": Expired,
    "cancelled": Cancelled,
}

# The JSON type each field must have; checked on the way back so a corrupt snapshot fails
# at restore instead of producing odd replies later.
_FIELD_TYPES: dict[str, type] = {
    "request_id": str,
    "resource": str,
    "owner": str,
    "mode": str,
    "token": int,
    "expires_at_ms": int,
    "position": int,
    "code": str,
    "message": str,
    "cycle": list,
    "holders": list,
}


def outcome_from_dict(data: Mapping[str, Any]) -> Outcome:
    """Rebuild an outcome from `to_dict()` output; raises ValueError on anything else."""
    if not isinstance(data, Mapping):
        raise ValueError("an outcome must be a JSON object")
    kind = data.get("type")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown outcome type {data.get('type')!r}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        value: Any = data.get(f.name)
        wanted = _FIELD_TYPES[f.name]
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise ValueError(f"outcome field {f.name!r} is not a {wanted.__name__}")
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise ValueError(f"outcome field {f.name!r} must list strings")
            value = tuple(value)
        kwargs[f.name] = value
    bad_mode = kwargs.get("mode", EXCLUSIVE) not in MODES
    if bad_mode or kwargs.get("code", "invalid") not in REFUSAL_CODES:
        raise ValueError("outcome has an unknown mode or refusal code")
    return cls(**kwargs)
