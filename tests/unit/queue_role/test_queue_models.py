"""Request models and QUEUE_* settings of the queue role."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from distcluster_worker.queue_role.models import AckRequest, ConsumeRequest, PublishRequest
from distcluster_worker.queue_role.settings import QueueSettings, load_queue_settings
from distcluster_worker.shell.config import ConfigError


def test_publish_accepts_strings_objects_and_batches() -> None:
    assert PublishRequest.model_validate({"topic": "a.b:c-1", "message": "x"}).bodies() == ["x"]
    batch = PublishRequest.model_validate({"topic": "t", "messages": ["x", {"k": 1}]})
    assert batch.bodies() == ["x", {"k": 1}]


@pytest.mark.parametrize(
    "body",
    [
        {"topic": "t", "message": 1},
        {"topic": "t", "message": [1]},
        {"topic": "t"},
        {"topic": "t", "message": "x", "messages": ["y"]},
        {"topic": "t", "messages": []},
        {"topic": "a b", "message": "x"},
        {"topic": "t" * 201, "message": "x"},
        {"topic": "t", "message": "x", "idempotency_key": "bad key"},
        {"topic": "t", "message": "x", "unknown": 1},
    ],
)
def test_publish_refuses(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PublishRequest.model_validate(body)


def test_consume_and_ack_are_strict() -> None:
    ok = ConsumeRequest.model_validate({"topic": "t", "group": "g", "consumer": "c"})
    assert (ok.max, ok.visibility_ms, ok.block_ms) == (10, None, 0)
    for bad in ({"max": "5"}, {"max": 0}, {"block_ms": -1}, {"visibility_ms": 1.5}):
        with pytest.raises(ValidationError):
            ConsumeRequest.model_validate({"topic": "t", "group": "g", "consumer": "c", **bad})
    with pytest.raises(ValidationError):
        AckRequest.model_validate({"topic": "t", "group": "g", "ids": ["1-x"]})
    with pytest.raises(ValidationError):
        AckRequest.model_validate({"topic": "t", "group": "g", "ids": []})


def test_settings_defaults_and_clear_errors() -> None:
    assert load_queue_settings({}) == QueueSettings()
    assert load_queue_settings({"QUEUE_MAX_DELIVERIES": "7"}).max_deliveries == 7
    with pytest.raises(ConfigError) as info:
        load_queue_settings({"QUEUE_MAX_DELIVERIES": "0", "QUEUE_VNODES": "x"})
    assert len(info.value.problems) == 2
    assert any(p.startswith("QUEUE_MAX_DELIVERIES:") for p in info.value.problems)
    with pytest.raises(ConfigError, match="QUEUE_HEARTBEAT_MS"):
        load_queue_settings({"QUEUE_HEARTBEAT_MS": "5000"})
