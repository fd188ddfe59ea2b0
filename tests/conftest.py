"""Fixtures shared by every suite: a real Redis server for the tests that need one."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from distcluster_worker.runner.redis_server import RedisServer


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, for `run_reports.test_failed`."""
    report: pytest.TestReport = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One embedded redis-server (AOF on) for the session; tests use distinct keys."""
    data_dir: Path = tmp_path_factory.mktemp("redis")
    server = RedisServer(data_dir=data_dir, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/e2e needs a Docker engine and a built image: only `make e2e` runs it (it sets
    DISTCLUSTER_E2E=1 after checking both), never `make test`."""
    if collection_path.name == "e2e" and collection_path.parent.name == "tests":
        return os.environ.get("DISTCLUSTER_E2E") != "1"
    return None
