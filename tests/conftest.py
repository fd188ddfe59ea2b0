"""Fixtures shared by every suite: a real Redis server for the tests that need one, and
a server that takes commands and never answers, for the bounds on waiting for Redis."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Generator, Iterator
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


@pytest.fixture
async def mute_redis_url() -> AsyncIterator[str]:
    """The URL of a server that accepts connections, reads commands, never answers."""

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            await reader.read(65536)
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.close()
        await server.wait_closed()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/e2e needs a Docker engine and a built image: only `make e2e` runs it (it sets
    DISTCLUSTER_E2E=1 after checking both), never `make test`."""
    if collection_path.name == "e2e" and collection_path.parent.name == "tests":
        return os.environ.get("DISTCLUSTER_E2E") != "1"
    return None
