"""Bad input gets a 4xx JSON error with its code, and the node keeps serving."""

from __future__ import annotations

import json
from typing import Any

import pytest
from lock_it_harness import LockCluster, Reply

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

VALID = {"resource": "bad-in", "owner": "o", "mode": "exclusive", "ttl_ms": 1000}

# JSON that is not an object: the API allows either code for these.
NOT_OBJECTS: list[Any] = [[1, 2], "acquire", 7, None, True]

BAD_ACQUIRE_BODIES: list[tuple[str, Any]] = [
    ("missing resource", {"owner": "o"}),
    ("missing owner", {"resource": "r"}),
    ("resource not a string", {**VALID, "resource": 5}),
    ("empty resource", {**VALID, "resource": ""}),
    ("owner not a string", {**VALID, "owner": ["x"]}),
    ("unknown mode", {**VALID, "mode": "sideways"}),
    ("mode not a string", {**VALID, "mode": 1}),
    ("negative ttl", {**VALID, "ttl_ms": -5}),
    ("ttl not a number", {**VALID, "ttl_ms": "long"}),
    ("ttl a boolean", {**VALID, "ttl_ms": True}),
    ("negative wait", {**VALID, "wait_ms": -1}),
    ("request_id not a string", {**VALID, "request_id": {"a": 1}}),
]

BAD_OTHER_BODIES: list[tuple[str, str, Any]] = [
    ("release without token", "/lock/release", {"resource": "r", "owner": "o"}),
    ("release token a string", "/lock/release", {"resource": "r", "owner": "o", "token": "1"}),
    (
        "renew negative ttl",
        "/lock/renew",
        {"resource": "r", "owner": "o", "token": 1, "ttl_ms": -1},
    ),
]


def _assert_error(reply: Reply, status: int | None, code: str | None) -> None:
    assert 400 <= reply.status < 500, reply
    if status is not None:
        assert reply.status == status, reply
    assert isinstance(reply.body, dict) and isinstance(reply.body.get("error"), dict), reply
    assert isinstance(reply.body["error"].get("message"), str), reply
    assert reply.code is not None, reply
    if code is not None:
        assert reply.code == code, reply


async def _still_serving(cluster: LockCluster, node: str, resource: str) -> None:
    health = await cluster.call(node, "GET", "/health")
    assert health.status == 200 and health.body["status"] == "ok", health
    ok = await cluster.acquire(node, resource, "after-bad-input", ttl_ms=1000)
    assert ok.status == 200 and ok.field("granted") is True, ok


async def test_malformed_json_is_bad_json(cluster3: LockCluster) -> None:
    node = cluster3.ids[1]
    for raw in ("{", "{'single': 'quotes'}", "not json", "", "\xff\xfe"):
        reply = await cluster3.call(node, "POST", "/lock/acquire", data=raw.encode("latin-1"))
        _assert_error(reply, 400, None)
        assert reply.code in ("bad_json", "bad_request"), reply
    reply = await cluster3.call(node, "POST", "/lock/acquire", data=b"{")
    _assert_error(reply, 400, "bad_json")
    await _still_serving(cluster3, node, "after-malformed")


async def test_json_that_is_not_an_object(cluster3: LockCluster) -> None:
    node = cluster3.ids[0]
    for path in ("/lock/acquire", "/lock/release", "/lock/renew"):
        for body in NOT_OBJECTS:
            reply = await cluster3.call(node, "POST", path, data=json.dumps(body))
            _assert_error(reply, 400, None)
            assert reply.code in ("bad_json", "bad_request"), (path, body, reply)
    await _still_serving(cluster3, node, "after-not-objects")


async def test_bad_acquire_bodies_are_bad_request(cluster3: LockCluster) -> None:
    node = cluster3.ids[0]
    wrong: list[str] = []
    for name, body in BAD_ACQUIRE_BODIES:
        reply = await cluster3.call(node, "POST", "/lock/acquire", data=json.dumps(body))
        if reply.status != 400 or reply.code != "bad_request":
            wrong.append(f"{name}: {reply.status} {reply.body!r}")
    assert not wrong, "\n".join(wrong)
    check = await cluster3.get_lock(node, "bad-in")
    assert check.status == 200 and check.field("holders") == [], "a bad request granted"
    await _still_serving(cluster3, node, "after-bad-acquire")


async def test_bad_release_and_renew_bodies(cluster3: LockCluster) -> None:
    node = cluster3.ids[2]
    for name, path, body in BAD_OTHER_BODIES:
        reply = await cluster3.call(node, "POST", path, data=json.dumps(body))
        assert reply.status == 400, name
        _assert_error(reply, 400, "bad_request")
    await _still_serving(cluster3, node, "after-bad-release")


async def test_oversized_body_is_too_large(cluster3: LockCluster) -> None:
    node = cluster3.ids[0]
    huge = json.dumps({**VALID, "owner": "x" * 200_000})
    reply = await cluster3.call(node, "POST", "/lock/acquire", data=huge)
    _assert_error(reply, 413, "too_large")
    await _still_serving(cluster3, node, "after-huge")


async def test_unknown_route_and_wrong_method(cluster3: LockCluster) -> None:
    node = cluster3.ids[1]
    _assert_error(await cluster3.call(node, "GET", "/no/such/route"), 404, None)
    _assert_error(await cluster3.call(node, "POST", "/lock/nothing-here", VALID), 405, None)
    _assert_error(await cluster3.call(node, "DELETE", "/raft/status"), 405, None)
    await _still_serving(cluster3, node, "after-routes")
