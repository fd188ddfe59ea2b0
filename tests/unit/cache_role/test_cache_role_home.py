"""The home's shell (`cache_role/home.py`) on a fake clock, memory and network: a grace
period that waits for every live peer's acknowledgement, a home that leaves the cluster
or loses a key in the middle of a transaction, and writes that wait out the grace.

The slot leases come in through a fake gate (`Slots`): a home that does not hold a key's
slot refuses it (naming the holder), grants nothing in the grace of a slot it just
acquired, and writes nothing once its tenure is no longer the slot's (the fenced write).

Each rule closes a window in which two nodes could both act as a key's home (a node that
joins while its peers have not heard of it yet; a home still busy with a key that moved
on; a home that is leaving): the new home would grant a copy or complete a write that the
other does not know of, and a reader would keep serving a value a later write replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest

from distcluster_worker.cache_role.home import Home, HomeTimes
from distcluster_worker.shell.errors import ApiError

pytestmark = pytest.mark.timeout(30)

LEASE, GRACE, TXN = 1000, 1200, 5000
Send = Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, Any]]]


class Clock:
    """The home's monotonic clock in ms, moved by the test."""

    def __init__(self) -> None:
        self.t = 10_000

    def __call__(self) -> int:
        return self.t


class Memory:
    """Redis as main memory: (value, version) per key, every write recorded."""

    async def read(self, key: str) -> tuple[str | None, int]:
        return self.values.get(key, (None, 0))

    def __init__(self) -> None:
        self.values: dict[str, tuple[str | None, int]] = {}
        self.writes: list[tuple[str, str | None]] = []
        self.slot_tenure = "me|1"  # what the slot key holds (another home may take it)

    async def write(self, key: str, value: str | None, fence: tuple[str, str]) -> int | None:
        if fence[1] != self.slot_tenure:
            return None
        version = self.values.get(key, (None, 0))[1] + 1
        self.values[key] = (value, version)
        self.writes.append((key, value))
        return version


async def unreachable(node: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    return 0, None


class Ring:
    """Whether the home owns a key, and its live peers; the test changes both."""

    def __init__(self, peers: Iterable[str]) -> None:
        self.peers = list(peers)
        self.owned = True

    def owns(self, key: str) -> bool:
        return self.owned


class Slots:
    """The slot leases as the home sees them; the test changes them."""

    def __init__(self) -> None:
        self.held = True
        self.since = 0  # grants_from
        self.other: str | None = "p2"

    def acting(self, key: str) -> bool:
        return self.held

    def grants_from(self, key: str) -> int:
        return self.since if self.held else 1 << 62

    def holder(self, key: str) -> str | None:
        return "me" if self.held else self.other

    def fence(self, key: str) -> tuple[str, str] | None:
        return ("slot-key", "me|1") if self.held else None


def make_home(
    clock: Clock, ring: Ring, send: Send = unreachable, slots: Slots | None = None
) -> tuple[Home, Memory]:
    memory = Memory()
    memory.values["k"] = ("v0", 1)
    home = Home(
        "me",
        epoch=7,
        times=HomeTimes(lease_ms=LEASE, grace_ms=GRACE, stall_ms=10**9, txn_timeout_ms=TXN),
        mono=clock,
        store=memory,  # type: ignore[arg-type]
        send=send,
        owns=ring.owns,
        slots=slots if slots is not None else Slots(),
        peers=lambda: ring.peers,
    )
    return home, memory


async def settled(
    clock: Clock, ring: Ring, send: Send = unreachable, slots: Slots | None = None
) -> tuple[Home, Memory]:
    """A home past its start-up grace: every peer acknowledged, a lease passed."""
    home, memory = make_home(clock, ring, send, slots)
    for peer in ring.peers:
        home.acked(peer, clock.t)
    clock.t += GRACE
    return home, memory


async def test_a_new_home_grants_no_copy_until_every_peer_acked_and_a_lease_passed() -> None:
    clock, ring = Clock(), Ring(["p1", "p2"])
    home, _ = make_home(clock, ring)
    clock.t += GRACE  # the fixed part is over, but nobody acknowledged us yet
    assert (await home.read("k", "p1"))["state"] == "I"
    home.acked("p1", clock.t)
    assert (await home.read("k", "p1"))["state"] == "I"  # p2 may still be the key's home
    home.acked("p2", clock.t - GRACE - 1)  # the answer to a beat sent before the grace
    assert (await home.read("k", "p1"))["state"] == "I"
    assert home.unacked() == ["p2"]
    home.acked("p2", clock.t)
    acked_at = clock.t
    clock.t = acked_at + LEASE - 1  # what p2 granted before it heard of us may still run
    assert (await home.read("k", "p1"))["state"] == "I"
    clock.t = acked_at + LEASE
    assert (await home.read("k", "p1"))["state"] == "E"


async def test_a_ring_change_waits_for_the_peers_on_the_new_ring_only() -> None:
    clock, ring = Clock(), Ring(["p1", "p2"])
    home, _ = await settled(clock, ring)
    assert (await home.read("k", "p1"))["state"] == "E"
    ring.peers = ["p1"]  # p2 left: its keys may move here
    home.start_grace()
    clock.t += GRACE
    assert (await home.read("k", "p1"))["state"] == "I"
    home.acked("p1", clock.t)
    clock.t += LEASE
    assert (await home.read("k", "p1"))["state"] == "E"


async def test_a_write_in_grace_writes_memory_only_once_the_grace_is_over() -> None:
    clock, ring = Clock(), Ring(["p1"])
    home, memory = make_home(clock, ring)
    write = asyncio.create_task(home.write("k", "w", "v1"))
    clock.t += GRACE
    await asyncio.sleep(0.25)  # the write polls the clock every 100 ms at most
    assert memory.writes == [] and not write.done()  # p1 has not acknowledged us
    home.acked("p1", clock.t)
    clock.t += LEASE - 1
    await asyncio.sleep(0.25)
    assert memory.writes == [] and not write.done()
    clock.t += 1
    answer = await asyncio.wait_for(write, 5)
    assert memory.writes == [("k", "v1")] and answer["state"] == "M"


async def test_a_write_gives_up_when_a_peer_never_acknowledges() -> None:
    clock, ring = Clock(), Ring(["p1"])
    home, memory = make_home(clock, ring)
    write = asyncio.create_task(home.write("k", "w", "v1"))
    await asyncio.sleep(0.05)
    clock.t += TXN + GRACE
    with pytest.raises(ApiError) as info:
        await asyncio.wait_for(write, 5)
    assert (info.value.status, info.value.code) == (503, "busy")
    assert memory.writes == []
    assert home.directory.active("k") is None  # the key is not left locked


async def test_a_leaving_home_grants_renews_and_completes_nothing() -> None:
    clock, ring = Clock(), Ring(["p1", "p2"])
    home, memory = await settled(clock, ring)
    granted = await home.read("k", "p1")
    assert granted["state"] == "E"
    epoch, txn = granted["grant"]
    assert home.renew("p1", [("k", epoch, txn)]) == [True]
    # p2 writes; p1 never answers the invalidation, so the write waits for its lease.
    write = asyncio.create_task(home.write("k", "p2", "v1"))
    await asyncio.sleep(0.05)
    home.leave()
    with pytest.raises(ApiError) as info:
        await asyncio.wait_for(write, 5)
    assert (info.value.status, info.value.code) == (503, "not_home")
    assert memory.writes == []
    assert home.renew("p1", [("k", epoch, txn)]) == [False]
    for request in (home.read("k", "p2"), home.write("k", "p2", "v2")):
        with pytest.raises(ApiError) as info:
            await request
        assert (info.value.status, info.value.code) == (503, "not_home")


async def test_a_write_whose_key_moved_on_while_it_waited_is_not_written() -> None:
    clock, ring = Clock(), Ring(["p1"])
    home, memory = await settled(clock, ring)
    assert (await home.read("k", "p1"))["state"] == "E"
    write = asyncio.create_task(home.write("k", "p2", "v1"))  # waits for p1's lease
    await asyncio.sleep(0.05)
    ring.owned = False  # a node joined and took the key
    clock.t += LEASE
    with pytest.raises(ApiError) as info:
        await asyncio.wait_for(write, 5)
    assert (info.value.status, info.value.code) == (503, "not_home")
    assert memory.writes == []


async def test_a_read_whose_key_moved_on_while_it_ran_grants_no_copy() -> None:
    supplied = asyncio.Event()

    async def slow_supplier(node: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        await supplied.wait()
        return 200, {"value": "v0", "version": 1}

    clock, ring = Clock(), Ring(["p1", "p2"])
    home, _ = await settled(clock, ring, slow_supplier)
    assert (await home.read("k", "p1"))["state"] == "E"
    read = asyncio.create_task(home.read("k", "p2"))  # p1 supplies the line
    await asyncio.sleep(0.05)
    ring.owned = False
    supplied.set()
    answer = await asyncio.wait_for(read, 5)
    assert (answer["value"], answer["state"]) == ("v0", "I")
    assert "p2" not in home.directory.copies("k")


async def test_a_peer_that_left_is_no_longer_waited_for() -> None:
    clock, ring = Clock(), Ring(["p1", "p9"])  # p9: discovered, never heard, then gone
    home, _ = make_home(clock, ring)
    home.acked("p1", clock.t)
    clock.t += GRACE
    assert (await home.read("k", "p1"))["state"] == "I"
    home.forget_peers(["p9"])
    forgotten_at = clock.t
    clock.t = forgotten_at + LEASE - 1
    assert (await home.read("k", "p1"))["state"] == "I"
    clock.t = forgotten_at + LEASE
    assert (await home.read("k", "p1"))["state"] == "E"


# -- slot leases ------------------------------------------------------------------------------


async def test_a_home_without_the_slot_refuses_and_names_the_holder() -> None:
    clock, ring, slots = Clock(), Ring(["p1"]), Slots()
    home, memory = await settled(clock, ring, slots=slots)
    granted = await home.read("k", "p1")
    assert granted["state"] == "E"
    slots.held = False  # its view still names it, but p2 holds the slot in Redis
    for request in (home.read("k", "p1"), home.write("k", "p1", "v1")):
        with pytest.raises(ApiError) as info:
            await request
        assert (info.value.status, info.value.code) == (503, "not_home")
        assert info.value.extra == {"holder": "p2"}
    assert home.renew("p1", [("k", *granted["grant"])]) == [False]  # renewals stop
    assert memory.writes == []


async def test_a_slot_just_acquired_grants_no_copy_and_completes_no_write_in_its_grace() -> None:
    clock, ring, slots = Clock(), Ring(["p1"]), Slots()
    home, memory = await settled(clock, ring, slots=slots)
    slots.since = clock.t + LEASE  # the previous holder's copies may run until then
    assert (await home.read("k", "p1"))["state"] == "I"
    write = asyncio.create_task(home.write("k", "w", "v1"))
    await asyncio.sleep(0.25)
    assert memory.writes == [] and not write.done()
    clock.t += LEASE
    answer = await asyncio.wait_for(write, 5)
    assert memory.writes == [("k", "v1")] and answer["state"] == "M"  # a copy, now


async def test_a_write_after_the_slot_changed_hands_in_redis_writes_nothing() -> None:
    """The home still counts its slot (its local lease has not run out) but Redis gave it
    to another node: the fenced write refuses, and the write ends in 503 not_home."""
    clock, ring = Clock(), Ring(["p1"])
    home, memory = await settled(clock, ring)
    memory.slot_tenure = "p2|2"
    with pytest.raises(ApiError) as info:
        await home.write("k", "p1", "v1")
    assert (info.value.status, info.value.code) == (503, "not_home")
    assert memory.writes == [] and home.directory.active("k") is None
