"""The three-node in-process driver cluster, over both transports, for the driver and the
membership tests (one fixture, so both suites start and stop clusters the same way)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from test_lock_role_driver import IDS, Cluster


@pytest.fixture(params=["http", "stream"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    c = Cluster(transport=request.param)
    for seed, node_id in enumerate(IDS):
        await c.start(node_id, seed)
    yield c
    for node_id in list(c.drivers):
        await c.stop(node_id)
    for task in c.inbound:
        task.cancel()
    await asyncio.gather(*c.inbound, return_exceptions=True)
