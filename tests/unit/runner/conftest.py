"""Fixtures for the runner tests: a skip when no redis-server can be found."""

from __future__ import annotations

import pytest

from distcluster_worker.runner.redis_server import RedisNotFoundError, find_redis_server


@pytest.fixture
def redis_binary() -> str:
    try:
        return find_redis_server()
    except RedisNotFoundError as exc:
        pytest.skip(str(exc))
