"""Request bodies of the cache endpoints (strict: wrong types are 400, never coerced).

Values are JSON strings (a client that caches objects serializes them itself); keys match
``[A-Za-z0-9._:-]{1,200}`` and are not one of `RESERVED_KEYS` (the names of the debug
routes ``/cache/stats`` and ``/cache/lines``, which would shadow them). A grant or
transaction id on the wire is ``[epoch, txn]``: the home's start time in epoch ms and the
directory's transaction number.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    StrictBool,
    StrictStr,
    model_validator,
)

KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"
KEY_RE = re.compile(KEY_PATTERN)
RESERVED_KEYS = frozenset({"stats", "lines"})


def key_problem(key: str) -> str | None:
    """Why `key` cannot name a cache entry, or None when it can."""
    if KEY_RE.fullmatch(key) is None:
        return "key must match [A-Za-z0-9._:-]{1,200}"
    if key in RESERVED_KEYS:
        return f"key {key!r} is reserved (GET /cache/{key} is a debug route)"
    return None


Key = Annotated[StrictStr, Field(pattern=KEY_PATTERN)]
NodeId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,63}$")]
GrantWire = Annotated[list[NonNegativeInt], Field(min_length=2, max_length=2)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PutBody(_Body):
    value: StrictStr


class HomeRead(_Body):
    key: Key
    node: NodeId


class HomeWrite(_Body):
    key: Key
    node: NodeId
    value: StrictStr | None = None  # None: a delete
    dropped: GrantWire | None = None  # the copy the writer held when it began the write


class HomeEvicted(_Body):
    key: Key
    node: NodeId
    grant: GrantWire


class HomeRenew(_Body):
    """A node's renewal batch to one home: `keys[i]` held under grant `grants[i]`."""

    node: NodeId
    keys: list[Key] = Field(max_length=100_000)
    grants: list[GrantWire] = Field(max_length=100_000)

    @model_validator(mode="after")
    def _same_length(self) -> HomeRenew:
        if len(self.keys) != len(self.grants):
            raise ValueError("keys and grants must have the same length")
        return self


class BusRead(_Body):
    key: Key
    txn: GrantWire
    downgrade: StrictBool = False
    write_back: StrictBool = False


class Invalidate(_Body):
    key: Key
    txn: GrantWire
