"""The lock API through every node: forwarding, modes, renew, release, tokens, retries."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import pytest
from lock_it_harness import LockCluster, Reply, wait_for

from distcluster_worker.shell.peer_calls import PeerCalls

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _granted(reply: Reply) -> int:
    """The token of a grant; fail with the reply otherwise."""
    assert reply.status == 200, reply
    assert reply.field("granted") is True, reply
    token = reply.field("token")
    assert isinstance(token, int), reply
    return token


def _holders(reply: Reply) -> list[tuple[str, str, int]]:
    assert reply.status == 200, reply
    return sorted((h["owner"], h["mode"], h["token"]) for h in reply.field("holders"))


async def test_every_node_serves_acquire_get_release(cluster3: LockCluster) -> None:
    tokens: list[int] = []
    for i, node in enumerate(cluster3.ids):
        resource = f"fwd-{i}"
        reply = await cluster3.acquire(node, resource, f"owner-{i}")
        token = _granted(reply)
        assert reply.field("resource") == resource
        assert reply.field("owner") == f"owner-{i}"
        assert reply.field("mode") == "exclusive"
        tokens.append(token)
        for reader in cluster3.ids:
            holders = _holders(await cluster3.get_lock(reader, resource))
            assert holders == [(f"owner-{i}", "exclusive", token)], reader
        other = cluster3.ids[(i + 1) % len(cluster3.ids)]
        released = await cluster3.release(other, resource, f"owner-{i}", token)
        assert released.status == 200, released
        assert released.field("released") is True
        assert _holders(await cluster3.get_lock(node, resource)) == []
    assert tokens == sorted(set(tokens))


async def test_exclusive_excludes_everyone(cluster3: LockCluster) -> None:
    a, b, c = cluster3.ids
    token = _granted(await cluster3.acquire(a, "ex", "alice"))
    refused = await cluster3.acquire(b, "ex", "bob")
    assert refused.status == 423, refused
    assert refused.code == "locked"
    assert "alice" in str(refused.body["error"].get("holders"))
    shared = await cluster3.acquire(c, "ex", "carol", mode="shared")
    assert shared.status == 423, shared
    assert _holders(await cluster3.get_lock(c, "ex")) == [("alice", "exclusive", token)]


async def test_shared_holders_together_then_exclusive_waits(cluster3: LockCluster) -> None:
    a, b, c = cluster3.ids
    t1 = _granted(await cluster3.acquire(a, "sh", "r1", mode="shared"))
    t2 = _granted(await cluster3.acquire(b, "sh", "r2", mode="shared"))
    assert t2 > t1
    holders = _holders(await cluster3.get_lock(c, "sh"))
    assert holders == [("r1", "shared", t1), ("r2", "shared", t2)]
    writer = await cluster3.acquire(c, "sh", "w", mode="exclusive")
    assert writer.status == 423, writer
    assert (await cluster3.release(c, "sh", "r1", t1)).status == 200
    assert (await cluster3.acquire(a, "sh", "w")).status == 423  # r2 still reads
    assert (await cluster3.release(a, "sh", "r2", t2)).status == 200
    t3 = _granted(await cluster3.acquire(b, "sh", "w"))
    assert t3 > t2


async def test_waiter_is_handed_the_lock_on_release(cluster3: LockCluster) -> None:
    a, b, c = cluster3.ids
    t1 = _granted(await cluster3.acquire(a, "hand", "first"))
    waiting = asyncio.create_task(cluster3.acquire(b, "hand", "second", wait_ms=10000))
    await _until_waiting(cluster3, c, "hand", "second")
    assert (await cluster3.release(c, "hand", "first", t1)).status == 200
    t2 = _granted(await waiting)
    assert t2 > t1
    assert _holders(await cluster3.get_lock(a, "hand")) == [("second", "exclusive", t2)]


async def _until_waiting(cluster: LockCluster, node: str, resource: str, owner: str) -> None:
    await wait_for(
        lambda: cluster.get_lock(node, resource),
        lambda r: r.status == 200 and owner in [w["owner"] for w in r.field("waiters")],
        10,
        f"{owner} queued on {resource}",
    )


async def test_renew_extends_and_checks_the_token(cluster3: LockCluster) -> None:
    a, b, _ = cluster3.ids
    first = await cluster3.acquire(a, "ren", "owner", ttl_ms=5000)
    token = _granted(first)
    renewed = await cluster3.renew(b, "ren", "owner", token, ttl_ms=60000)
    assert renewed.status == 200, renewed
    assert renewed.field("renewed") is True
    assert renewed.field("token") == token
    assert renewed.field("expires_at_ms") > first.field("expires_at_ms") + 40000
    wrong = await cluster3.renew(a, "ren", "owner", token + 1000, ttl_ms=1000)
    assert wrong.status == 409 and wrong.code == "not_holder", wrong
    stranger = await cluster3.renew(a, "ren", "mallory", token, ttl_ms=1000)
    assert stranger.status == 409 and stranger.code == "not_holder", stranger


async def test_release_by_non_holder_is_refused(cluster3: LockCluster) -> None:
    a, b, _ = cluster3.ids
    token = _granted(await cluster3.acquire(a, "rel", "owner"))
    for owner, tok in (("mallory", token), ("owner", token + 7)):
        reply = await cluster3.release(b, "rel", owner, tok)
        assert reply.status == 409 and reply.code == "not_holder", reply
    assert _holders(await cluster3.get_lock(b, "rel")) == [("owner", "exclusive", token)]


async def test_tokens_strictly_increase_per_resource(cluster3: LockCluster) -> None:
    nodes = itertools.cycle(cluster3.ids)
    last = 0
    for i in range(15):
        token = _granted(await cluster3.acquire(next(nodes), "mono", f"o{i}"))
        assert token > last
        last = token
        assert (await cluster3.release(next(nodes), "mono", f"o{i}", token)).status == 200


async def test_retry_with_same_request_id_never_double_grants(cluster3: LockCluster) -> None:
    a, b, c = cluster3.ids
    first = await cluster3.acquire(a, "idem", "owner", request_id="req-1")
    token = _granted(first)
    again = await cluster3.acquire(b, "idem", "owner", request_id="req-1")
    assert again.status == 200, again
    assert again.field("token") == token
    assert _holders(await cluster3.get_lock(c, "idem")) == [("owner", "exclusive", token)]


async def test_forwarded_commands_are_served_on_the_peer_calls_socket(
    cluster3: LockCluster,
) -> None:
    """What a follower sends its leader: one frame per command on `/peer-calls`, answered
    as the HTTP route would be; bad frames get JSON errors and the socket keeps serving."""
    leader, _ = await cluster3.stable_leader()
    follower = next(n for n in cluster3.ids if n != leader)
    calls = PeerCalls(connect_timeout_s=5.0)
    urls = cluster3.cluster.urls

    async def call(node: str, path: str, body: object) -> tuple[int, Any]:
        status, raw = await calls.call(urls[node], path, orjson.dumps(body), timeout_s=10.0)
        return status, orjson.loads(raw)

    try:
        acquire = {"resource": "pc", "owner": "ann", "ttl_ms": 30_000, "request_id": "pc-1"}
        status, grant = await call(leader, "/lock/acquire?hops=1", acquire)
        assert status == 200 and grant["granted"] is True, grant
        again = await call(leader, "/lock/acquire?hops=1", acquire)  # same request id
        assert again == (200, grant)
        status, bad = await call(leader, "/lock/acquire?hops=1", {"resource": "pc"})
        assert status == 400 and bad["error"]["code"] == "bad_request", bad
        status, unknown = await call(leader, "/lock/nothing?hops=1", {})
        assert status == 404 and unknown["error"]["code"] == "not_found", unknown
        # A follower never forwards a call that already made MAX_HOPS hops.
        release = {"resource": "pc", "owner": "ann", "token": grant["token"]}
        status, refused = await call(follower, "/lock/release?hops=2", release)
        assert status == 503 and refused["error"]["code"] == "unavailable", refused
        # One hop: the follower forwards it to the leader, which releases.
        status, released = await call(follower, "/lock/release?hops=1", release)
        assert status == 200 and released["released"] is True, released
    finally:
        await calls.close()
    assert _holders(await cluster3.get_lock(follower, "pc")) == []
