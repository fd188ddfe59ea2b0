"""Node environments, node processes and the local cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from distcluster_worker.runner.cluster import LocalCluster, free_port, node_env, port_is_free
from distcluster_worker.runner.process import NodeProcess
from distcluster_worker.shell.config import load_settings


def _lock_role_available() -> bool:
    try:
        from distcluster_worker.roles import node_class

        node_class("lock_manager")
    except Exception:
        return False
    return True


def test_node_env_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOMETHING_ELSE", "kept")
    env = node_env(
        role="lock_manager",
        node_id="node2",
        port=8002,
        peers={"node1": "127.0.0.1:8001", "node3": "127.0.0.1:9003"},
        redis_url="redis://127.0.0.1:6400/0",
        cluster_name="blue",
        extra={"RAFT_TICK_MS": "20"},
    )
    assert env["SOMETHING_ELSE"] == "kept"
    settings = load_settings(env)
    assert settings.node_id == "node2" and settings.port == 8002
    assert settings.peer_urls == {
        "node1": "http://127.0.0.1:8001",
        "node3": "http://127.0.0.1:9003",
    }
    assert settings.raft_tick_ms == 20
    assert settings.cluster_name == "blue"


def test_cluster_wiring_with_a_peer_address_function(tmp_path: Path) -> None:
    cluster = LocalCluster(
        nodes=3,
        base_port=9101,
        redis_url="redis://127.0.0.1:1/0",
        workdir=tmp_path,
        peer_address=lambda src, dst: f"127.0.0.1:{7000 + int(src[-1]) * 10 + int(dst[-1])}",
    )
    assert cluster.redis is None
    assert cluster.urls == {
        "node1": "http://127.0.0.1:9101",
        "node2": "http://127.0.0.1:9102",
        "node3": "http://127.0.0.1:9103",
    }
    settings = load_settings(cluster.nodes["node2"].env)
    assert settings.port == 9102
    assert settings.peer_urls == {
        "node1": "http://127.0.0.1:7021",
        "node3": "http://127.0.0.1:7023",
    }


def test_ports() -> None:
    port = free_port()
    assert port_is_free(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_is_free(port)


@pytest.mark.integration
def test_node_process_with_bad_configuration_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "PORT": "abc", "NODE_ID": "bad id"}
    proc = NodeProcess("node1", env, log_path=tmp_path / "node1.log")
    proc.start()
    with pytest.raises(RuntimeError, match="exited with code 2"):
        proc.wait_healthy(f"http://127.0.0.1:{free_port()}", timeout_s=15)
    assert proc.returncode == 2 and not proc.alive
    log = (tmp_path / "node1.log").read_text()
    assert "distcluster: invalid configuration:" in log
    assert "PORT: must be an integer between 1 and 65535, got 'abc'" in log
    assert "NODE_ID:" in log


@pytest.mark.integration
def test_node_process_refuses_bad_role_settings(tmp_path: Path) -> None:
    env = {**os.environ, "NODE_TYPE": "cache", "CACHE_POLICY": "fifo"}
    env["PORT"] = str(free_port())
    proc = NodeProcess("node1", env, log_path=tmp_path / "node1.log")
    proc.start()
    try:
        with pytest.raises(RuntimeError, match="exited with code 2"):
            proc.wait_healthy(f"http://127.0.0.1:{env['PORT']}", timeout_s=15)
    finally:
        proc.stop()
    log = (tmp_path / "node1.log").read_text()
    assert "invalid configuration" in log and "CACHE_POLICY" in log


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=2) as response:
        body: dict[str, object] = json.loads(response.read())
        return body


@pytest.mark.integration
@pytest.mark.skipif(not _lock_role_available(), reason="the lock_manager role is not built")
def test_local_cluster_starts_restarts_and_leaves_nothing(
    redis_binary: str, tmp_path: Path
) -> None:
    base_port = free_port()
    if not all(port_is_free(base_port + i) for i in range(3)):
        pytest.skip("ports taken")
    cluster = LocalCluster(nodes=3, base_port=base_port, log_dir=tmp_path / "logs")
    with cluster:
        pids = {n: p.pid for n, p in cluster.nodes.items()}
        for node_id, url in cluster.urls.items():
            health = _get(url + "/health")
            assert health["node_id"] == node_id and health["pid"] == pids[node_id]
        assert cluster.redis is not None and cluster.redis.alive
        cluster.restart_node("node2")
        assert cluster.nodes["node2"].pid != pids["node2"]
        cluster.nodes["node3"].pause()
        cluster.nodes["node3"].resume()
        cluster.wait_ready(timeout_s=30)
    for proc in cluster.nodes.values():
        assert not proc.alive
        assert proc.returncode == 0  # Graceful SIGTERM shutdown.
    assert cluster.redis is not None and not cluster.redis.alive
    assert (tmp_path / "logs" / "node1.log").read_text().count("node started") == 1


@pytest.mark.integration
def test_module_entry_point_prints_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "distcluster_worker.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "distcluster 0.1.0"
