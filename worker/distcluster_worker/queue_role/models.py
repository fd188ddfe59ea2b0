"""Request and response bodies of the queue API (validated with pydantic).

Names (topics, groups, consumers, idempotency keys) use ``[A-Za-z0-9._:-]{1,200}`` so they
fit in a URL path and a Redis key without escaping. Types are strict: ``"5"`` is not a
count. Message bodies are JSON strings or JSON objects: those are what applications send
(text, or a document), and refusing bare numbers, booleans, nulls and arrays keeps a
mistaken ``{"message": null}`` from being stored as a real message. Batch sizes are
bounded by ``QUEUE_MAX_BATCH``, which the node checks (the model cannot see settings).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

NAME_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"
NAME_RE = re.compile(NAME_PATTERN)
ENTRY_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"

Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
EntryId = Annotated[StrictStr, Field(pattern=ENTRY_ID_PATTERN)]
Body = StrictStr | dict[str, Any]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopicBody(_Body):
    """A request about one topic (what the ring routes on)."""

    topic: Name


class PublishRequest(TopicBody):
    topic: Name
    message: Body | None = Field(default=None, description="one message")
    messages: list[Body] | None = Field(default=None, description="a batch, in order")
    idempotency_key: Name | None = Field(default=None, description="retries return first ids")

    @model_validator(mode="after")
    def _one_of(self) -> PublishRequest:
        if (self.message is None) == (self.messages is None):
            raise ValueError("give exactly one of message or messages")
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        return self

    def bodies(self) -> list[str | dict[str, Any]]:
        if self.messages is not None:
            return list(self.messages)
        if self.message is None:  # Excluded by the validator; kept as a check.
            raise ValueError("no message")
        return [self.message]


class ConsumeRequest(TopicBody):
    topic: Name
    group: Name
    consumer: Name
    max: PositiveInt = Field(default=10, description="at most this many messages")
    visibility_ms: PositiveInt | None = Field(default=None, description="QUEUE_VISIBILITY_MS")
    block_ms: NonNegativeInt = Field(default=0, description="wait for new messages")


class AckRequest(TopicBody):
    topic: Name
    group: Name
    ids: Annotated[list[EntryId], Field(min_length=1)]


class PublishResponse(BaseModel):
    ids: list[str]
    owner: str
    duplicate: bool


class Delivery(BaseModel):
    id: str
    body: Any
    deliveries: int


class ConsumeResponse(BaseModel):
    messages: list[Delivery]
    owner: str


class AckResponse(BaseModel):
    acked: int
    not_found: list[str]
    owner: str


class NackResponse(BaseModel):
    nacked: int
    not_found: list[str]
    owner: str


class GroupStats(BaseModel):
    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    oldest_pending_id: str | None
    oldest_pending_age_ms: int | None


class TopicStats(BaseModel):
    topic: str
    length: int
    dead_letters: int
    groups: list[GroupStats]
    owner: str


class RingView(BaseModel):
    node_id: str
    members: list[str]
    configured: list[str]
    states: dict[str, str]
    vnodes_per_member: int
    points: int
    share: dict[str, float]


class RingLookup(BaseModel):
    topic: str
    owner: str
    members: list[str]
