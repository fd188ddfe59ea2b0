"""Fixtures of the docker compose e2e scenarios (run by `make e2e`, see docker/e2e.sh).

`E2E_IMAGE` names the node image to run (built by `make e2e`) and `E2E_REDIS_IMAGE` the
Redis image (any image with redis-server and redis-cli, such as the local base image).
Each test gets its own compose project, up with node1..3 ready, taken down with its
volumes afterwards; when the test failed, the tail of every container's log is printed
first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from compose_harness import NODES, ComposeCluster

from run_reports import test_failed


@pytest.fixture
def compose_cluster(request: pytest.FixtureRequest) -> Iterator[Callable[[str], ComposeCluster]]:
    made: list[ComposeCluster] = []

    def make(role: str) -> ComposeCluster:
        cluster = ComposeCluster(
            role=role,
            project=f"dce2e{uuid.uuid4().hex[:8]}",
            image=os.environ.get("E2E_IMAGE", "distcluster/node:0.1.0"),
            redis_image=os.environ.get("E2E_REDIS_IMAGE", "redis:7-bookworm"),
        )
        made.append(cluster)
        try:
            cluster.up()
            for node in NODES:
                cluster.wait_ready(node)
        except BaseException:
            print(f"\n===== compose logs ({role}, start failed) =====\n{cluster.logs()}")
            raise
        return cluster

    yield make
    for cluster in made:
        if test_failed(request):
            print(f"\n===== compose logs ({cluster.role}) =====\n{cluster.logs()}")
        cluster.down()
