"""Fixtures for integration tests: real Redis, real node processes, a proxy per link.

`lock_cluster` is a factory so a test can ask for its own size or settings
(`await lock_cluster(nodes=3, extra_env={...})`); every cluster it made is stopped at
teardown, paused nodes are resumed first, and when the test failed the tail of every
node log is printed so the report shows what the nodes saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import aiohttp
import pytest
from lock_it_harness import ClusterFactory, LockCluster, build_cluster, log_tails

from run_reports import test_failed


@pytest.fixture
async def lock_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ClusterFactory]:
    made: list[LockCluster] = []

    async def make(
        nodes: int = 3, extra_env: Mapping[str, str] | None = None, joiners: Sequence[str] = ()
    ) -> LockCluster:
        workdir = tmp_path / f"cluster{len(made) + 1}"
        workdir.mkdir()
        try:
            built = await asyncio.to_thread(build_cluster, nodes, workdir, extra_env, joiners)
        except BaseException:
            print(f"\n===== node logs (start failed) =====\n{log_tails(workdir / 'logs')}")
            raise
        cluster, mesh, redis = built
        session = aiohttp.ClientSession()
        handle = LockCluster(cluster, mesh, redis, session, workdir / "logs")
        handle.down.update(joiners)
        made.append(handle)
        return handle

    yield make
    for handle in made:
        if test_failed(request):
            print(f"\n===== node logs of {handle.log_dir} =====\n{handle.log_tails()}")
        await handle.close()


@pytest.fixture
async def cluster3(lock_cluster: ClusterFactory) -> LockCluster:
    """A 3-node cluster with a settled leader (the common case)."""
    cluster = await lock_cluster(nodes=3)
    await cluster.stable_leader()
    return cluster
