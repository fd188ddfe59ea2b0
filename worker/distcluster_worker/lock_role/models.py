"""Request and response bodies of the lock API (validated with pydantic).

Names are restricted to a URL-safe charset so that `GET /lock/{resource}` needs no
escaping and log lines stay readable. Types are strict: `"5"` is not a TTL.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

NAME_PATTERN = r"^[A-Za-z0-9._:@-]{1,200}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"

Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
RequestId = Annotated[StrictStr, Field(pattern=REQUEST_ID_PATTERN)]
PositiveMs = Annotated[StrictInt, Field(gt=0)]
NonNegativeMs = Annotated[StrictInt, Field(ge=0)]
Token = Annotated[StrictInt, Field(gt=0)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AcquireRequest(_Body):
    resource: Name
    owner: Name
    mode: Literal["exclusive", "shared"] = "exclusive"
    ttl_ms: PositiveMs | None = Field(default=None, description="lease; LOCK_DEFAULT_TTL_MS")
    wait_ms: NonNegativeMs = Field(default=0, description="how long to wait in the queue")
    request_id: RequestId | None = Field(default=None, description="retries reuse it")


class ReleaseRequest(_Body):
    resource: Name
    owner: Name
    token: Token
    request_id: RequestId | None = None


class RenewRequest(_Body):
    resource: Name
    owner: Name
    token: Token
    ttl_ms: PositiveMs | None = None
    request_id: RequestId | None = None


class GrantResponse(BaseModel):
    granted: bool
    resource: str
    owner: str
    mode: str
    token: int
    expires_at_ms: int
    request_id: str


class ReleaseResponse(BaseModel):
    released: bool
    resource: str
    owner: str
    token: int


class RenewResponse(BaseModel):
    renewed: bool
    resource: str
    owner: str
    token: int
    expires_at_ms: int


class Holder(BaseModel):
    owner: str
    mode: str
    token: int
    expires_at_ms: int


class Waiter(BaseModel):
    owner: str
    mode: str
    request_id: str


class LockView(BaseModel):
    resource: str
    holders: list[Holder]
    waiters: list[Waiter]
    read_index: int


class RaftStatus(BaseModel):
    node_id: str
    state: str
    term: int
    leader_id: str | None
    commit_index: int
    last_applied: int
    last_index: int
    snapshot_index: int
