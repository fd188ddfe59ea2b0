"""Request bodies of the cache endpoints (strict: wrong types are 400, never coerced).

Values are JSON strings (a client that caches objects serializes them itself); keys match
``[A-Za-z0-9._:-]{1,200}``. A grant or transaction id on the wire is ``[epoch, txn]``: the
home's start time in epoch ms and the directory's transaction number.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, StrictBool, StrictStr

KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"
KEY_RE = re.compile(KEY_PATTERN)

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


class HomeEvicted(_Body):
    key: Key
    node: NodeId
    grant: GrantWire


class BusRead(_Body):
    key: Key
    txn: GrantWire
    downgrade: StrictBool = False
    write_back: StrictBool = False


class Invalidate(_Body):
    key: Key
    txn: GrantWire


class Heartbeat(_Body):
    node_id: NodeId
    incarnation: NonNegativeInt
