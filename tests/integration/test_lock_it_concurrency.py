"""Many clients at once: no overlapping grants, deadlock refusal, expiry hand-over.

Every grant is recorded with the interval during which the client *certainly* held it:
from the moment the grant reply arrived to the moment the client sent its release (or the
lease's `expires_at_ms`, whichever is first). True holding intervals contain these, so two
overlapping certain intervals for conflicting modes prove a double grant; the check can
miss a violation but never reports a false one. Times are wall-clock milliseconds, the
clock the leader stamps `expires_at_ms` with (all processes share this machine's clock).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import pytest
from lock_it_harness import LockCluster, Reply, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

CLIENTS = 20
ROUNDS = 12
RESOURCES = ("hot-a", "hot-b", "hot-c")


@dataclass
class Grant:
    resource: str
    owner: str
    mode: str
    token: int
    requested_ms: float
    granted_ms: float
    expires_at_ms: float
    released_ms: float | None = None

    @property
    def certain_end_ms(self) -> float:
        end = self.expires_at_ms
        return end if self.released_ms is None else min(end, self.released_ms)


def now_ms() -> float:
    return time.time() * 1000.0


def _conflict(a: Grant, b: Grant) -> bool:
    if a.mode == "shared" and b.mode == "shared":
        return False
    return a.granted_ms < b.certain_end_ms and b.granted_ms < a.certain_end_ms


def check_history(grants: list[Grant]) -> None:
    """Raise on a double grant, a repeated token or tokens out of real-time order."""
    by_resource: dict[str, list[Grant]] = {}
    for g in grants:
        by_resource.setdefault(g.resource, []).append(g)
    for resource, items in by_resource.items():
        _check_tokens_unique(resource, items)
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                assert not _conflict(a, b), f"{resource}: overlapping grants {a} and {b}"
                first, second = (a, b) if a.granted_ms < b.requested_ms else (b, a)
                if first.granted_ms < second.requested_ms:
                    assert first.token < second.token, f"tokens out of order: {first} {second}"


def _check_tokens_unique(resource: str, items: list[Grant]) -> None:
    """A token is the index of the entry that granted: one release may admit several
    queued readers at once (one token), but an exclusive grant owns its token alone."""
    by_token: dict[int, list[Grant]] = {}
    for g in items:
        by_token.setdefault(g.token, []).append(g)
    for token, same in by_token.items():
        if len(same) > 1:
            assert all(g.mode == "shared" for g in same), f"{resource}: token {token} twice: {same}"
            assert len({g.owner for g in same}) == len(same), f"{resource}: {same}"


async def _client(cluster: LockCluster, index: int, grants: list[Grant], seed: int) -> int:
    """One client: acquire, hold briefly, release (or let a short lease lapse)."""
    rng = random.Random(seed)
    refused = 0
    for round_no in range(ROUNDS):
        node = cluster.ids[(index + round_no) % len(cluster.ids)]
        resource = rng.choice(RESOURCES)
        mode = "shared" if rng.random() < 0.4 else "exclusive"
        lapse = rng.random() < 0.1
        ttl_ms = 400 if lapse else 10000
        owner = f"c{index}-{round_no}"
        requested = now_ms()
        reply = await cluster.acquire(
            node, resource, owner, mode=mode, ttl_ms=ttl_ms, wait_ms=3000, timeout_s=20
        )
        if reply.status != 200:
            assert reply.status == 423 and reply.code == "locked", reply
            refused += 1
            continue
        grant = _grant(reply, resource, owner, mode, requested)
        grants.append(grant)
        await asyncio.sleep(rng.uniform(0, 0.03))
        if not lapse:
            grant.released_ms = now_ms()
            released = await cluster.release(node, resource, owner, grant.token)
            assert released.status in (200, 409), released
    return refused


def _grant(reply: Reply, resource: str, owner: str, mode: str, requested: float) -> Grant:
    assert reply.field("granted") is True, reply
    return Grant(
        resource=resource,
        owner=owner,
        mode=mode,
        token=int(reply.field("token")),
        requested_ms=requested,
        granted_ms=now_ms(),
        expires_at_ms=float(reply.field("expires_at_ms")),
    )


async def _watch_holders(cluster: LockCluster, stop: asyncio.Event) -> int:
    """Poll GET /lock for every resource; the server must never show a conflict."""
    checks = 0
    while not stop.is_set():
        for resource in RESOURCES:
            reply = await cluster.get_lock(cluster.ids[checks % len(cluster.ids)], resource)
            assert reply.status == 200, reply
            modes = [h["mode"] for h in reply.field("holders")]
            assert "exclusive" not in modes or len(modes) == 1, f"{resource}: {reply.body}"
            checks += 1
        await asyncio.sleep(0.02)
    return checks


async def test_concurrent_clients_never_overlap(cluster3: LockCluster) -> None:
    grants: list[Grant] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_holders(cluster3, stop))
    refused = await asyncio.gather(
        *(_client(cluster3, i, grants, seed=1000 + i) for i in range(CLIENTS))
    )
    stop.set()
    assert await watcher > 0
    check_history(grants)
    assert len(grants) >= CLIENTS * ROUNDS // 2, (
        f"only {len(grants)} grants, {sum(refused)} refused"
    )
    modes = {g.mode for g in grants}
    assert modes == {"shared", "exclusive"}


def test_checker_catches_overlap() -> None:
    """The history checker itself must flag a double grant (else the test above is blind)."""
    a = Grant("r", "a", "exclusive", 5, 0, 10, 1e12, released_ms=50)
    b = Grant("r", "b", "exclusive", 7, 20, 30, 1e12, released_ms=60)
    with pytest.raises(AssertionError):
        check_history([a, b])
    c = Grant("r", "c", "exclusive", 9, 55, 70, 1e12, released_ms=80)
    check_history([a, c])
    with pytest.raises(AssertionError):
        check_history([a, Grant("r", "d", "exclusive", 3, 55, 70, 1e12, released_ms=80)])
    readers = [Grant("r", o, "shared", 11, 90, 95, 1e12, released_ms=99) for o in "xy"]
    check_history([a, c, *readers])
    with pytest.raises(AssertionError):
        check_history([Grant("r", "w", "exclusive", 11, 200, 210, 1e12, released_ms=220), *readers])


async def _until_waiting(cluster: LockCluster, resource: str, owner: str) -> None:
    await wait_for(
        lambda: cluster.get_lock(cluster.ids[0], resource),
        lambda r: r.status == 200 and owner in [w["owner"] for w in r.field("waiters")],
        10,
        f"{owner} queued on {resource}",
    )


async def test_deadlock_refuses_only_the_request_closing_the_cycle(cluster3: LockCluster) -> None:
    n1, n2, n3 = cluster3.ids
    r1 = await cluster3.acquire(n1, "dl-1", "a")
    r2 = await cluster3.acquire(n2, "dl-2", "b")
    assert r1.status == 200 and r2.status == 200
    a_waits = asyncio.create_task(cluster3.acquire(n3, "dl-2", "a", wait_ms=15000, timeout_s=30))
    await _until_waiting(cluster3, "dl-2", "a")
    closing = await cluster3.acquire(n1, "dl-1", "b", wait_ms=15000, timeout_s=30)
    assert closing.status == 409 and closing.code == "deadlock", closing
    assert set(closing.body["error"]["cycle"]) == {"a", "b"}
    assert not a_waits.done(), "the first waiter must keep waiting"
    assert (await cluster3.release(n2, "dl-2", "b", r2.field("token"))).status == 200
    handed = await a_waits
    assert handed.status == 200 and handed.field("token") > r2.field("token"), handed


async def test_expired_lease_lets_the_waiter_in(cluster3: LockCluster) -> None:
    n1, n2, n3 = cluster3.ids
    first = await cluster3.acquire(n1, "lease", "sleepy", ttl_ms=600)
    assert first.status == 200, first
    start = time.monotonic()
    second = await cluster3.acquire(n2, "lease", "eager", wait_ms=10000, timeout_s=20)
    waited_s = time.monotonic() - start
    assert second.status == 200, second
    assert second.field("token") > first.field("token")
    assert 0.2 <= waited_s < 5, f"handed over after {waited_s:.2f}s"
    assert now_ms() >= first.field("expires_at_ms") - 50
    stale = await cluster3.renew(n3, "lease", "sleepy", first.field("token"), ttl_ms=10000)
    assert stale.status == 409 and stale.code == "not_holder", stale
    late_release = await cluster3.release(n3, "lease", "sleepy", first.field("token"))
    assert late_release.status == 409 and late_release.code == "not_holder", late_release
    holders = (await cluster3.get_lock(n3, "lease")).field("holders")
    assert [(h["owner"], h["token"]) for h in holders] == [("eager", second.field("token"))]
